# smtp_duo_fast: the body's hot path in native code (MicroPython's viper emitter). smtp_duo and
# smtp_duo_mime use it, when it imports, for text bodies larger than one window and for
# attachments; without it they take the same decisions and write the same octets in bytecode,
# about five times slower. Native code is per architecture: copy the .py to the board (it compiles
# there), freeze it (manifest.py option fast=True), or build its .mpy with mpy-cross -march=.
# It does not import on CPython or on a port built without the native emitter. MIT licence.

# pyright: reportUndefinedVariable=false
# (ptr8 and ptr32 are the viper emitter's types, names only it knows)

import micropython
from array import array

_st = array("i", (0, 0, 0, 0, 0, 0))  # a call's state; nothing yields inside a call


@micropython.viper
def _scan(src: ptr8, i: int, j: int, st: ptr32) -> int:
    # The wire octets of src[i:j] as plain text (every line end CRLF, no stuffed dots); st:
    # [a CR ended the last window, wire octets of the open line (a stuffed dot counted),
    # an 8-bit octet seen, a NUL or a line over 998 octets seen]. A line at a time.
    run = st[1]
    if st[0] and i < j and src[i] == 10:
        i += 1  # the LF of a CRLF split between windows
    st[0] = 0
    n = j - i
    hi = 0
    long = 0
    while i < j:
        if run == 0 and src[i] == 46:
            run = 1
        k = i
        while i < j:
            c = int(src[i])
            if c < 14:
                if c == 10 or c == 13:
                    break
                if c == 0:
                    long = 1
            hi |= c
            i += 1
        run += i - k
        if run > 998:
            long = 1
        if i < j:  # a line end: CRLF on the wire
            run = 0
            n += 1
            if src[i] == 13:
                if i + 1 == j:
                    st[0] = 1
                elif src[i + 1] == 10:
                    i += 1
                    n -= 1
            i += 1
    st[1] = run
    if hi > 127:
        st[2] = 1
    if long:
        st[3] = 1
    return n


@micropython.viper
def _plain(src: ptr8, i: int, j: int, dst: ptr8, n: int, st: ptr32) -> int:
    # As much of src[i:j] as dst holds (to st[5]) into dst at n, every line end CRLF, a line's
    # leading dot doubled when st[2]; st: [a CR ended the last window, at the start of a line,
    # stuffing, dots stuffed, where src stopped, dst's size]. Returns the new end in dst.
    bol = st[1]
    dots = st[2]
    cap = st[5]
    if st[0] and i < j and src[i] == 10:
        i += 1
    st[0] = 0
    while i < j and n <= cap - 2:
        if bol and dots and src[i] == 46:
            dst[n] = 46
            dst[n + 1] = 46
            n += 2
            i += 1
            bol = 0
            st[3] += 1
            continue
        e = i + cap - n  # the octets that fit one for one
        if e > j:
            e = j
        k = i
        while i < e:
            c = int(src[i])
            if c < 14:
                if c == 10 or c == 13:
                    break
            dst[n] = c
            n += 1
            i += 1
        if i > k:
            bol = 0
        if i < e and n <= cap - 2:  # a line end
            dst[n] = 13
            dst[n + 1] = 10
            n += 2
            bol = 1
            if src[i] == 13:
                if i + 1 == j:
                    st[0] = 1
                elif src[i + 1] == 10:
                    i += 1
            i += 1
    st[1] = bol
    st[4] = i
    return n


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@micropython.viper
def _base64(src: ptr8, i: int, j: int, dst: ptr8, n: int) -> int:
    # base64 of src[i:j] into dst at n in lines of 76 characters (57 octets), each ending
    # CRLF, the last one padded. Returns the new end in dst.
    t = ptr8(_B64)
    k = 0
    while i + 3 <= j:
        a = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2]
        dst[n] = t[a >> 18]
        dst[n + 1] = t[(a >> 12) & 63]
        dst[n + 2] = t[(a >> 6) & 63]
        dst[n + 3] = t[a & 63]
        n += 4
        i += 3
        k += 3
        if k == 57:
            dst[n] = 13
            dst[n + 1] = 10
            n += 2
            k = 0
    if i < j:
        a = src[i] << 16
        if i + 1 < j:
            a |= src[i + 1] << 8
        dst[n] = t[a >> 18]
        dst[n + 1] = t[(a >> 12) & 63]
        dst[n + 2] = t[(a >> 6) & 63] if i + 1 < j else 61
        dst[n + 3] = 61
        n += 4
        k += 1
    if k:
        dst[n] = 13
        dst[n + 1] = 10
        n += 2
    return n


def scan(text, data, i, j):
    """smtp_duo.Text's scan of data[i:j]: its size, 8-bit octets, NUL and long lines."""
    st = _st
    st[0] = 1 if text._cr else 0
    st[1] = text._run
    st[2] = 1 if text.eight else 0
    st[3] = 1 if text.long else 0
    text.size += _scan(data, i, j, st)
    text._cr = st[0] == 1
    text._run = st[1]
    text.eight = st[2] == 1
    text.long = st[3] == 1


def plain(sink, data, i, j):
    """smtp_duo's plain text (sink: its _Plain): as much of data[i:j] as the output buffer holds,
    written into it as it goes on the wire. Returns where it stopped in data."""
    out = sink.out
    st = _st
    st[0] = 1 if sink.cr else 0
    st[1] = 1 if sink.bol else 0
    st[2] = 1 if out.dots else 0
    st[3] = out.stuffed
    st[5] = len(out.buf)
    out.n = _plain(data, i, j, out.buf, out.n, st)
    sink.cr = st[0] == 1
    sink.bol = st[1] == 1
    out.stuffed = st[3]
    return st[4]


def base64(out, data, i, j):
    """data[i:j] base64-encoded into the output buffer in CRLF-ended lines of 76 characters;
    False (nothing written) when the buffer would not hold them."""
    if out.n + (j - i + 2) // 3 * 4 + (j - i + 56) // 57 * 2 > len(out.buf):
        return False
    out.n = _base64(data, i, j, out.buf, out.n)
    return True
