# Socket-free tests of smtp_duo_mime that run unchanged on CPython and on the MicroPython unix
# port: attachments base64-encoded through a fixed output buffer, checked against binascii on
# random payloads of random lengths read at random short-read boundaries; RFC 2231 filename
# parameters and RFC 2047 encoded-words on random text in several scripts; headers= checks;
# the multipart boundary avoiding text it would collide with.
# Run directly: `micropython test_mime_portable.py` prints one line per test and "N passed, N failed".

import binascii
import gc
import random
import sys

import smtp_duo
import smtp_duo_chunking
import smtp_duo_mime
from memserver import Collect


def collect():
    # Between cases on MicroPython, whose heap is small; CPython's collector needs no help (and
    # a full collection under pytest costs milliseconds).
    if sys.implementation.name == "micropython":
        gc.collect()


def check(cond, what=""):
    if not cond:
        raise AssertionError(what)


def rng(seed):
    # MicroPython's random has no Random class: seed the module instead.
    if hasattr(random, "Random"):
        return random.Random(seed)
    random.seed(seed)
    return random


def rand_bytes(rnd, n):
    b = bytearray(n)  # filled in place: no list of n ints on a small heap
    for i in range(n):
        b[i] = rnd.getrandbits(8)
    return bytes(b)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    return False


def utf8_ok(b):
    # Whole UTF-8 sequences only (checked here: not every MicroPython port checks in str()).
    i = 0
    while i < len(b):
        c = b[i]
        n = -1  # octets after the lead one
        if c < 0x80:
            n = 0
        elif 0xC2 <= c < 0xE0:
            n = 1
        elif 0xE0 <= c < 0xF0:
            n = 2
        elif 0xF0 <= c < 0xF5:
            n = 3
        if n < 0 or i + n >= len(b) + (1 if n == 0 else 0):
            return False
        for k in range(i + 1, i + 1 + n):
            if b[k] & 0xC0 != 0x80:
                return False
        i += 1 + n
    try:
        str(b, "utf-8")
        return True
    except (UnicodeError, ValueError):
        return False


# The MicroPython unix port runs this in the 192 KiB heap of test_portable, of which the
# library and this file leave under 100 KiB, in pieces: the base64 tests make their big
# buffers once, reuse them from case to case (with what the last case left in them, as the
# client reuses its own); the runner frees them after each test.
_BUFFERS = {}


def buffer(size):
    if size not in _BUFFERS:
        _BUFFERS[size] = bytearray(size)
    return _BUFFERS[size]


def free_buffers():
    _BUFFERS.clear()
    collect()


MAX_PAYLOAD = 5000
MAX_BASE64 = 6846  # _base64_size(5000)


def same(a, b):
    # a == b for memoryviews too (MicroPython compares memoryviews by identity), a piece at a time.
    if len(a) != len(b):
        return False
    for i in range(0, len(a), 256):
        if bytes(a[i : i + 256]) != bytes(b[i : i + 256]):
            return False
    return True


class Out:
    """A fixed buffer like smtp_duo._Out: full() at half, put() past the end fails, flush()
    (a generator, as the client's) copies the bytes to the end of `sent`."""

    counting = False
    dots = True
    big = None  # as Output's: CPython's writers leave a large piece here, sent after buf

    def __init__(self, size, prefill=0, sent=None):
        self.buf = buffer(size)
        self.n = 0
        self.sent = sent if sent is not None else bytearray(4096)
        self.k = 0
        self.flushes = 0
        self.skip = prefill  # not kept in `sent`
        self.stuffed = 0
        self.window = size // 8  # the quoted-printable window
        for _ in range(prefill):  # what a mail holds before the part: headers, a boundary
            self.put1(0x50)

    def put(self, data):
        n = self.n
        k = len(data)
        check(n + k <= len(self.buf), "output buffer overflow: %d + %d > %d" % (n, k, len(self.buf)))
        self.buf[n : n + k] = data
        self.n = n + k

    def put1(self, c):
        check(self.n < len(self.buf), "output buffer overflow")
        self.buf[self.n] = c
        self.n += 1

    def stuff(self):
        self.put1(0x2E)

    def full(self):
        return self.n >= len(self.buf) // 2 or self.big

    def flush(self):
        k = self.k
        m = self.n - self.skip
        check(k + m + len(self.big or b"") <= len(self.sent), "more output than the part can make")
        self.sent[k : k + m] = memoryview(self.buf)[self.skip : self.n]
        k += m
        if self.big:
            self.sent[k : k + len(self.big)] = self.big
            k += len(self.big)
            self.big = None
        m = 0
        self.k = k + m
        self.skip = 0
        self.n = 0
        self.flushes += 1
        yield

    def value(self):
        # What was sent, as a memoryview into `sent` (compare with same()).
        for _ in self.flush():
            pass
        return memoryview(self.sent)[: self.k]


# -- sources with short reads ----------------------------------------------------------------------


class ShortReader:
    # A non-seekable stream whose readinto returns a random number of octets (at least one).
    def __init__(self, data, rnd):
        self.data = data
        self.pos = 0
        self.rnd = rnd
        self.asked = 0  # the largest read asked for

    def _take(self, n):
        self.asked = max(self.asked, n)
        left = len(self.data) - self.pos
        if n <= 0 or left <= 0:
            return 0
        k = min(n, left, 1 + self.rnd.getrandbits(12) % (1 + (n if self.rnd.getrandbits(1) else 7)))
        self.pos += k
        return k

    def readinto(self, b):
        p = self.pos
        k = self._take(len(b))
        b[:k] = self.data[p : p + k]
        return k


class SeekableShortReader(ShortReader):
    # A file: tell() and seek(), short reads all the same.
    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = pos + (len(self.data) if whence == 2 else self.pos if whence == 1 else 0)
        return self.pos


class NoTell(ShortReader):
    # A stream whose tell() raises, as a socket's or a pipe's does.
    def tell(self):
        raise OSError(29)

    def seek(self, pos, whence=0):
        raise OSError(29)


class ReadOnly:
    # A stream with read() only (no readinto), short reads too.
    def __init__(self, data, rnd):
        self.inner = ShortReader(data, rnd)

    def read(self, n=-1):
        r = self.inner
        p = r.pos
        k = r._take(n)
        return r.data[p : p + k]


# -- base64 attachments ----------------------------------------------------------------------------

OUT_SIZES = (1024, 3000, 8192)
CHUNK_SIZES = (512, 1500, 4096)
B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def expected_base64(payload, into):
    # The whole payload in one binascii call, cut into 76-character CRLF lines in `into`.
    e = binascii.b2a_base64(payload)
    n = len(e) - 1  # without its "\n"
    k = 0
    for i in range(0, n, 76):
        j = min(i + 76, n)
        into[k : k + j - i] = e[i:j]
        k += j - i
        into[k : k + 2] = b"\r\n"
        k += 2
    check(k == n + (n + 75) // 76 * 2)
    return memoryview(into)[:k]


def check_base64_lines(w, payload, what):
    # CRLF lines of 76 characters of the base64 alphabet, the last one 1 to 76; each full line
    # decodes to its 57 octets of the payload, the last one to the rest.
    check(binascii.a2b_base64(w) == payload, what)
    i = j = 0
    while i < len(w):
        e = i
        while e < len(w) and w[e] in B64_ALPHABET:
            e += 1
        check(bytes(w[e : e + 2]) == b"\r\n", (what, i))  # no bare CR or LF, nothing else
        last = e + 2 == len(w)
        check(e - i == 76 or (last and 0 < e - i < 76), (what, i, e - i))
        check(binascii.a2b_base64(w[i:e]) == payload[j : j + 57 if not last else len(payload)], (what, i))
        i = e + 2
        j += 57
    check(j >= len(payload) and j - 57 < len(payload) or not payload, what)


def encode(src, chunk_size, out_size, prefill, sent):
    # -> (the attachment's output, how many flushes it took)
    att = smtp_duo_mime._Attachment(("data.bin", src), buffer(chunk_size))
    out = Out(out_size, prefill, sent)
    for _ in att.write(out):
        pass
    return out.value(), out.flushes


def count(src, chunk_size):
    # What smtp_duo_chunking counts for SIZE= and BDAT; None when it cannot be known first.
    att = smtp_duo_mime._Attachment(("data.bin", src, "application/octet-stream"), buffer(chunk_size))
    c = smtp_duo_chunking._Count()
    for _ in att.write(c):
        pass
    return None if c.unknown else c.n


BASE64_LENGTHS = [0, 1, 2, 3, 4, 55, 56, 57, 58, 59, 113, 114, 115, 171, 57 * 8, 57 * 9 + 1, 57 * 18,
                  57 * 26, 57 * 27 - 1, 57 * 72, 57 * 87, 4999, 5000]


def test_base64_attachments_match_binascii_at_random_read_boundaries():
    rnd = rng(2231)
    lengths = BASE64_LENGTHS + [rnd.getrandbits(13) % (MAX_PAYLOAD + 1) for _ in range(30)]
    framed = buffer(MAX_PAYLOAD + 4)  # the payload in the middle of a buffer, for a memoryview
    want_buf = buffer(MAX_BASE64)
    sent = buffer(MAX_BASE64 + 1)  # one more: output longer than it should be shows
    cases = 0
    for case, n in enumerate(lengths):
        collect()
        for i in range(2, 2 + n):
            framed[i] = rnd.getrandbits(8)
        view = memoryview(framed)[2 : 2 + n]
        payload = bytes(view)
        want = expected_base64(payload, want_buf)
        check(len(want) == smtp_duo_mime._base64_size(n), n)
        sources = [
            ("bytes", lambda: payload, True),
            ("bytearray", lambda: bytearray(payload), True),
            ("memoryview", lambda: view, True),
            ("readinto", lambda: ShortReader(payload, rnd), False),
            ("read", lambda: ReadOnly(payload, rnd), False),
            ("seekable", lambda: SeekableShortReader(payload, rnd), True),
            ("tell-fails", lambda: NoTell(payload, rnd), False),
        ]
        for k, (kind, make, sized) in enumerate(sources):
            collect()
            out_size = OUT_SIZES[(case + k) % 3]
            chunk = CHUNK_SIZES[(case // 3 + k) % 3]
            prefill = rnd.getrandbits(16) % (out_size // 2)  # under half: the writers' contract
            what = (kind, n, out_size, chunk, prefill)
            src = make()
            w, flushes = encode(src, chunk, out_size, prefill, sent)
            check(same(w, want), what)
            if k == 0:
                check_base64_lines(w, payload, what)  # (and so is every w the same as it)
            if isinstance(src, ShortReader) and not smtp_duo_mime._CPYTHON:  # (CPython: 64 KiB reads)
                check(src.asked <= chunk, (what, src.asked))  # reads go into the chunk buffer
            if sized:
                check(count(make(), chunk) == len(want), what)
            else:
                check(count(make(), chunk) is None, what)
            cases += 1
        payload = sources = src = w = want = view = None  # gone before the next case's
    check(cases == len(lengths) * 7)


def test_base64_output_is_flushed_in_bounded_pieces():
    # Each read is whole lines and at most half the output buffer encoded: a 1 KiB buffer
    # takes a 5000-octet attachment in many flushes, never overflowing from any fill under half.
    rnd = rng(7)
    payload = rand_bytes(rnd, MAX_PAYLOAD)
    want = expected_base64(payload, buffer(MAX_BASE64))
    sent = buffer(MAX_BASE64 + 1)
    for out_size in OUT_SIZES:
        for chunk in CHUNK_SIZES:
            for prefill in (0, 1, out_size // 2 - 1):
                collect()
                w, flushes = encode(payload, chunk, out_size, prefill, sent)
                check(same(w, want), (out_size, chunk, prefill))
                if not smtp_duo_mime._CPYTHON:  # (CPython: one piece per 64 KiB read)
                    check(flushes >= (prefill + len(w)) // out_size, (out_size, chunk, flushes))
    w = want = None


def test_base64_seekable_file_starts_where_it_stood_and_resends_the_same():
    rnd = rng(11)
    sent = buffer(MAX_BASE64 + 1)
    for n in (0, 1, 57, 58, 1000, 3001):
        collect()
        data = rand_bytes(rnd, n + 37)
        f = SeekableShortReader(data, rnd)
        f.seek(37)
        att = smtp_duo_mime._Attachment(("f.bin", f), buffer(512))
        c = smtp_duo_chunking._Count()
        for _ in att.write(c):
            pass
        check(c.n == smtp_duo_mime._base64_size(n), n)
        want = expected_base64(data[37:], buffer(MAX_BASE64))
        for _ in range(2):  # sent again (a retry on a new connection): from the start again
            out = Out(1024, 0, sent)
            for _ in att.write(out):
                pass
            check(same(out.value(), want), n)
        want = None


def test_base64_size_formula():
    for n in list(range(0, 400)) + [570, 5699, 5700, 5701]:
        e = len(binascii.b2a_base64(bytes(n))) - 1
        check(smtp_duo_mime._base64_size(n) == e + (e + 75) // 76 * 2, n)
        if n < 400:
            check(smtp_duo_mime._base64_size(n) == len(expected_base64(bytes(n), buffer(MAX_BASE64))), n)


def test_attachment_arguments_refused():
    buf = bytearray(512)
    A = smtp_duo_mime._Attachment
    for bad in (("a/b.txt", b"x"), ("a\\b.txt", b"x"), ("", b"x"), ("  ", b"x"), ("a\r\nb", b"x"),
                ("x.txt", 5), ("x.txt", "text"), ("x.txt", None), ("x.txt",), "x.txt",
                ("x.txt", b"x", "nonsense"), ("x.txt", b"x", "text/plain\r\nBcc: a@b"),
                ("x.txt", b"x", "t\u00e9xt/plain"), ("x.txt", b"x", 5), (5, b"x")):
        check(raises(ValueError, A, bad, buf), bad)

    class TextFile:  # opened in text mode: read() returns str
        def read(self, n=-1):
            return "abc"

    att = A(("t.txt", TextFile()), buf)
    check(raises(ValueError, lambda: [0 for _ in att.write(Out(1024))]))


# -- RFC 2231 parameters ----------------------------------------------------------------------------

SCRIPTS = (
    "zażółć gęślą jaźń ZAŻÓŁĆ GĘŚLĄ JAŹŃ",  # Polish
    "çğıöşü ÇĞİÖŞÜ ıİ",  # Turkish
    "съешь же ещё этих мягких французских булок ЁЖЩ",  # Russian
    "åäö ÅÄÖ smörgåsbord räksmörgås",  # Swedish
    "中文文件名报告数据测试温度传感器",  # Chinese
    "\U0001f600\U0001f389\U0001f4ce\U0001f44d\U0001f3fd\U0001f1f5\U0001f1f1\u2764\ufe0f",  # emoji
    "\"'\\ %*;=()<>@,:?[]!#$&+-.^_`|~",  # quotes, backslashes, specials
    "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .-_",
)
ATTR_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"
HEX = b"0123456789ABCDEF"


def rand_text(rnd, max_len, scripts=SCRIPTS):
    alphabet = ""
    for _ in range(1 + rnd.getrandbits(2) % 3):
        alphabet += scripts[rnd.getrandbits(8) % len(scripts)]
    b = bytearray()  # UTF-8 a character at a time: no list of one-character strings
    for _ in range(1 + rnd.getrandbits(16) % max_len):
        b.extend(alphabet[rnd.getrandbits(16) % len(alphabet)].encode())
    return str(b, "utf-8")


def percent_decode(p, what):
    out = bytearray()
    i = 0
    while i < len(p):
        c = p[i]
        if c == 0x25:  # %XX, upper-case hex
            check(i + 2 < len(p) and p[i + 1] in HEX and p[i + 2] in HEX, (what, p))
            out.append(int(p[i + 1 : i + 3], 16))
            i += 3
        else:
            check(c in ATTR_CHARS, (what, p, c))
            out.append(c)
            i += 1
    return bytes(out)


def check_param(attr, name):
    tokens = smtp_duo_mime._param_tokens(attr, name)
    b = name.encode()
    what = (attr, name)
    for t in tokens:
        check(len(t) <= 76, (what, t))
    if len(b) == len(name) and len(b) <= 60 and '"' not in name and "\\" not in name:
        check(tokens == [attr + b'="' + b + b'"'], (what, tokens))
        return tokens
    pieces = []
    for n, t in enumerate(tokens):
        head = attr + b"*%d*=" % n + (b"utf-8''" if n == 0 else b"")
        check(t[: len(head)] == head, (what, t))
        last = n == len(tokens) - 1
        check((t[-1:] == b";") != last, (what, t))
        piece = percent_decode(t[len(head) : len(t) - (0 if last else 1)], what)
        check(utf8_ok(piece), (what, t))  # a continuation never splits a character
        pieces.append(piece)
    check(b"".join(pieces) == b, (what, tokens))
    return tokens


def check_header_lines(h, what):
    check(h[-2:] == b"\r\n", what)
    for line in h[:-2].split(b"\r\n"):
        check(len(line) + 2 <= 78, (what, line))


def test_rfc2231_filenames_in_random_scripts():
    rnd = rng(2231)
    names = ["report.txt", 'a"b.txt', "a\\b", "x" * 60, "x" * 61, "ząb.txt", "\U0001f600" * 30,
             "中" * 100, "a b c.csv", "%41.txt", "it's.txt", "\u0130stanbul.txt", "x" * 200]
    for i in range(len(names) + 240):  # made one at a time: a small heap holds few of them
        collect()
        name = names[i] if i < len(names) else rand_text(rnd, (5, 20, 60, 200)[i % 4])
        for attr in (b"name", b"filename"):
            check_param(attr, name)
        # The whole attachment head, folded: every line within 78 octets.
        clean = name.replace("/", "_").replace("\\", "_")
        if clean.strip():
            att = smtp_duo_mime._Attachment((clean, b"x", "image/png"), bytearray(512))
            out = Collect()
            for _ in att.head(out):
                pass
            check_header_lines(out.value(), clean)


# -- RFC 2047 encoded-words --------------------------------------------------------------------------


def check_phrase(text):
    tokens = smtp_duo.phrase(text)
    b = text.encode()
    if not text:
        check(tokens == [], tokens)
        return tokens
    encoded = tokens[0][:2] == b"=?"
    if len(b) != len(text):
        check(encoded, text)  # non-ASCII text goes as encoded-words
    if not encoded:
        check(b" ".join(tokens) == b and b"=?" not in b, text)
        for t in tokens:
            check(len(t) <= 66, (text, t))
        return tokens
    decoded = []
    for w in tokens:
        check(len(w) <= 75, (text, w))
        check(w[:10] == b"=?utf-8?B?" and w[-2:] == b"?=", (text, w))
        d = binascii.a2b_base64(w[10:-2])
        check(binascii.b2a_base64(d)[:-1] == w[10:-2], (text, w))  # canonical base64
        check(utf8_ok(d), (text, w))  # a word never splits a character
        decoded.append(d)
    check(b"".join(decoded) == b, (text, tokens))
    return tokens


def test_encoded_words_in_random_scripts():
    rnd = rng(2047)
    texts = ["", "a", "plain ascii subject", "=?utf-8?B?not-a-word?=", "x" * 66, "x" * 67,
             "\U0001f600" * 40, "zażółć gęślą jaźń", "a  b", " lead", "trail "]
    for i in range(len(texts) + 240):
        collect()
        text = texts[i] if i < len(texts) else rand_text(rnd, (3, 30, 120, 400)[i % 4])
        tokens = check_phrase(text)
        if text:
            words = smtp_duo.phrase(text, True)
            check(b"".join([binascii.a2b_base64(w[10:-2]) for w in words]) == text.encode(), text)
        out = Collect()
        for _ in smtp_duo.header(out, b"Subject", tokens):
            pass
        h = out.value()
        check_header_lines(h, text)
        check(h.replace(b"\r\n ", b" ") == b"Subject: " + b" ".join(tokens) + b"\r\n" or not tokens, text)


# -- headers= ---------------------------------------------------------------------------------------


def test_extra_headers_refuse_bad_names_and_values():
    eh = smtp_duo_mime.extra_headers
    for value in ("a\r\nBcc: x@y.z", "a\nb", "a\rb", "a\0b", "a\x7fb", 5, None, b"bytes"):
        check(raises(ValueError, eh, {"X-Note": value}), value)
        check(raises(ValueError, eh, [("X-Note", value)]), value)
    for name in ("X:Note", "X Note", "X-Nöte", "", "x" * 77, "X\tNote", "X\r\nBcc", 5, None, b"X-Note"):
        check(raises(ValueError, eh, [(name, "v")]), name)
    for name in ("Subject", "From", "Bcc", "Content-Type", "subject", "FROM", "bcc", "content-type",
                 "To", "Cc", "Date", "Message-ID", "MIME-Version", "Content-Transfer-Encoding"):
        check(raises(ValueError, eh, {name: "v"}), name)
    for bad in ([("X-A", "v", "w")], ["X-A"], [("X-A",)], [5]):
        check(raises(ValueError, eh, bad), bad)
    for bad in ("not an address", "a@", "Name <a@b", ["a@b.c", "bad"], 5):
        check(raises(ValueError, eh, {"Reply-To": bad}), bad)
    check(raises(ValueError, eh, {"Sender": "nobody"}))


def test_extra_headers_tokens():
    eh = smtp_duo_mime.extra_headers
    check(eh({"X-Mailer": "smtp_duo board 1"}) == [(b"X-Mailer", [b"smtp_duo", b"board", b"1"])])
    check(eh([("x-a", "1"), ("X-A", "2")]) == [(b"x-a", [b"1"]), (b"X-A", [b"2"])])
    check(eh({"Reply-To": "ops@example.com"}) == [(b"Reply-To", [b"ops@example.com"])])
    check(eh({"Reply-To": "Jan Kowalski <jan@example.pl>"}) ==
          [(b"Reply-To", [b"Jan", b"Kowalski", b"<jan@example.pl>"])])
    check(eh({"Reply-To": ["A <a@x.org>", "b@y.org"]}) == [(b"Reply-To", [b"A", b"<a@x.org>,", b"b@y.org"])])
    check(eh({"Sender": '"Ops, Night" <n@x.org>'}) == [(b"Sender", [b'"Ops, Night"', b"<n@x.org>"])])
    name, tokens = eh({"Reply-To": "Zażółć Gęślą <zg@example.pl>"})[0]
    check(name == b"Reply-To" and tokens[-1] == b"<zg@example.pl>", tokens)
    decoded = b"".join([binascii.a2b_base64(w[10:-2]) for w in tokens[:-1]])
    check(decoded == "Zażółć Gęślą".encode(), tokens)
    name, tokens = eh({"X-Location": "Łódź, hala 3"})[0]
    check(b"".join([binascii.a2b_base64(w[10:-2]) for w in tokens]) == "Łódź, hala 3".encode(), tokens)


def test_extra_headers_fold_within_78():
    rnd = rng(5322)
    names = ["Organization", "X-A", "X-Mailer", "X-Device", "Comments", "Keywords"]
    for i in range(300):
        name = names[i % len(names)]
        value = rand_text(rnd, (10, 80, 300)[i % 3])
        for hname, tokens in smtp_duo_mime.extra_headers([(name, value)]):
            out = Collect()
            for _ in smtp_duo.header(out, hname, tokens):
                pass
            h = out.value()
            check_header_lines(h, (name, value))
            check(h.replace(b"\r\n ", b" ") == hname + b": " + b" ".join(tokens) + b"\r\n", value)
    for i in range(100):  # Reply-To lists with display names in any script
        boxes = []
        for k in range(1 + i % 4):
            boxes.append("%s <r%d@example.org>" % (rand_text(rnd, 40).replace("<", "").replace(">", ""), k))
        for hname, tokens in smtp_duo_mime.extra_headers({"Reply-To": boxes}):
            out = Collect()
            for _ in smtp_duo.header(out, hname, tokens):
                pass
            check_header_lines(out.value(), boxes)


# -- multipart boundaries ---------------------------------------------------------------------------

FIRST = "0123456789abcdef01234567"
SECOND = "fedcba9876543210fedcba98"
THIRD = "00112233445566778899aabb"


def with_boundaries(fn):
    calls = []

    def fake(n):
        calls.append(n)
        return (FIRST, SECOND, THIRD)[min(len(calls), 3) - 1]

    real = smtp_duo_mime.unique
    smtp_duo_mime.unique = fake
    try:
        return fn(), calls
    finally:
        smtp_duo_mime.unique = real


class Mail:
    # What smtp_duo_mime.compose() fills in on a smtp_duo.Message.
    def __init__(self, text):
        self.text = text


def compose(body, html=None, attachments=(("a.bin", b"\x00\x01"),)):
    buf = bytearray(512)
    mail = Mail(smtp_duo.Text(body, b"plain", buf))
    smtp_duo_mime.compose(mail, html, list(attachments), None, buf)
    return mail.top, mail.texts


def test_boundary_avoids_text_in_ram():
    hit = "=_" + FIRST
    for body in ("no collision here", b"no collision", ["ab", b"cd"]):
        (top, texts), calls = with_boundaries(lambda: compose(body))
        check(top.boundary == ("=_" + FIRST).encode() and len(calls) == 1, (body, top.boundary))
    for body in ("before " + hit + " after", (hit + "\r\n").encode(), bytearray(hit.encode()),
                 memoryview(("x" + hit).encode()), ["one\r\n", "two " + hit, b"three"],
                 [b"--" + hit.encode()], memoryview(b"y" * 500 + hit.encode() + b"z" * 600),
                 ["split " + hit[:9], hit[9:] + " between chunks"], [hit[:5], hit[5:7], hit[7:], "x"],
                 memoryview(bytearray(b"y" * 1020 + hit.encode()))):
        (top, texts), calls = with_boundaries(lambda: compose(body))
        check(top.boundary == ("=_" + SECOND).encode() and len(calls) == 2, (body, top.boundary))
        for t in texts:
            t.negotiate(False)
        out = Out(1024)
        for _ in top.write(out):
            pass
        w = bytes(out.value())
        check(w.count(b"\r\n--=_" + SECOND.encode() + b"\r\n") == 1, w)  # the attachment's
        check(w[: len("--=_" + SECOND) + 2] == ("--=_" + SECOND + "\r\n").encode(), w)
        end = ("\r\n--=_" + SECOND + "--\r\n").encode()
        check(w[-len(end) :] == end, w)
    # In the HTML alternative: the alternative's boundary moves on, the mixed one is the next.
    (top, texts), calls = with_boundaries(lambda: compose("text", "<p>" + hit + "</p>"))
    check(top.parts[0].boundary == ("=_" + SECOND).encode(), top.parts[0].boundary)
    check(top.boundary == ("=_" + THIRD).encode() and len(calls) == 3, top.boundary)
    (top, texts), calls = with_boundaries(lambda: compose("text", "<p>html</p>", ()))
    check(top.boundary == ("=_" + FIRST).encode() and len(texts) == 2, top.boundary)


# -- runner ----------------------------------------------------------------------------------------


def tests():
    return sorted([n for n in globals() if n.startswith("test_")])


def run(names=None):
    passed = failed = 0
    for name in names or tests():
        try:
            globals()[name]()
            passed += 1
            print("ok", name)
        except Exception as e:
            failed += 1
            print("FAIL", name, repr(e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
        free_buffers()  # a test's buffers, even when it failed: not in the next one's way
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    run(sys.argv[1:])
