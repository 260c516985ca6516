# smtp_duo_mime: multipart mail for smtp_duo. Attachments streamed in base64 through the
# client's fixed buffers, an HTML alternative to the text, extra headers. smtp_duo imports it
# when a mail uses html=, attachments= or headers=; a board that sends plain text leaves it out.
# It uses smtp_duo's extension surface (README section 3, Extensions). MIT licence.

import binascii
import sys

from smtp_duo import Text, address_list, check_text, header, mailbox, native, phrase, unique

# Refused in headers=: what smtp_duo writes itself (Bcc never: it would show the blind
# copies), every Content-* (the MIME structure is smtp_duo's), and the trace and resent
# fields that only servers and resenders write (RFC 5322 3.6.6, 3.6.7).
_OWN = ("date", "from", "to", "cc", "bcc", "subject", "message-id", "mime-version", "x-priority",
        "importance", "return-path", "received")
_OWN_PREFIXES = ("content-", "resent-")
_ADDRESS_HEADERS = ("reply-to", "sender")
_ONCE = ("reply-to", "sender", "in-reply-to", "references")  # at most one each (RFC 5322 3.6)
_LINE_IN = 57  # octets per base64 line: 76 characters (RFC 2045 6.8)

_b2a = getattr(binascii, "b2a_base64")  # through getattr: the board stubs lack newline=
try:  # newline=False saves a copy per line (MicroPython 1.2x and CPython have it)
    _NO_NEWLINE = _b2a(b"", newline=False) == b""
except TypeError:
    _NO_NEWLINE = False
_CPYTHON = sys.implementation.name != "micropython"  # RAM is no object: whole reads, one join


# -- headers= ------------------------------------------------------------------------------------


def extra_headers(headers):
    """[(name, tokens)] from a dict or a list of (name, value) pairs, checked: RFC 5322 field
    names, no control characters, non-ASCII text as encoded-words; Reply-To and Sender take
    an address (or, Reply-To, a list of them) as from_address does."""
    if not isinstance(headers, (dict, list, tuple)):
        raise ValueError("headers must be a dict or a list of (name, value) pairs")
    items = headers.items() if isinstance(headers, dict) else headers
    out = []
    seen = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError("headers must be a dict or (name, value) pairs")
        name, value = item
        if not isinstance(name, str) or not 0 < len(name) <= 76:
            raise ValueError("header name must be a str of 1 to 76 characters: %r" % (name,))
        for ch in name:
            if not 33 <= ord(ch) <= 126 or ch == ":":  # RFC 5322 2.2: printable ASCII, no colon
                raise ValueError("header name %r: only printable ASCII without ':' is allowed" % name)
        # Compared as the server will read it: case-blind, and without the leading dots that
        # dot-stuffing adds and the server removes.
        key = name.lower()
        while key[:1] == ".":
            key = key[1:]
        if key in _OWN or key.startswith(_OWN_PREFIXES):
            raise ValueError("header %s is written by smtp_duo or a server, not given in headers= "
                             "(use the mail_send arguments)" % name)
        if key in _ONCE:
            if key in seen:
                raise ValueError("header %s may appear only once" % name)
            seen.append(key)
        if key in _ADDRESS_HEADERS:  # one address, or a list of them
            tokens = []
            for n, a in address_list(value, "header " + name):
                if tokens:
                    tokens[-1] = tokens[-1] + b","
                tokens.extend(mailbox(n, a))
        else:
            tokens = phrase(check_text(value, "header " + name))
        out.append((name.encode(), tokens))
    return out


# -- the multipart tree --------------------------------------------------------------------------


def compose(msg, html, attachments, headers, buf):
    """Build the mail's MIME structure (smtp_duo.Message calls this): its extra headers, the
    entity under its header (multipart/alternative for text + HTML, multipart/related around
    the HTML and its inline images, multipart/mixed around it with attachments) and its text
    parts."""
    if headers:
        msg.extra = extra_headers(headers)
    if attachments and not isinstance(attachments, (list, tuple)):
        raise ValueError("attachments must be a list of (filename, source, content_type)")
    files = []
    images = []
    for a in attachments or ():
        # Inline in attachments=, not a new keyword: the core passes only what it has.
        if not isinstance(a, Inline):
            a = Inline(*a) if isinstance(a, (tuple, list)) and len(a) == 4 else _Attachment(a)
        a.buf = buf
        if isinstance(a, Inline):
            key = a.cid.lower()  # clients compare cid: URLs loosely: one spelling per mail
            for b in images:
                if b.cid.lower() == key:
                    raise ValueError("content_id %r is used twice in this mail" % a.cid)
            images.append(a)
        else:
            files.append(a)
    text = msg.text
    texts = [text]
    top = text
    if html is not None:
        texts.append(Text(html, b"html", buf))
        rich = texts[1]
        if images:  # RFC 2387: the HTML first, its images after it
            rich = _Multipart(b'related; type="text/html"', [rich] + images, texts[1:])
        top = _Multipart(b"alternative", [text, rich], texts)
    elif images:
        raise ValueError("inline images need html= that shows them (<img src=\"cid:...\">)")
    if files:
        top = _Multipart(b"mixed", [top] + files, texts)
    msg.top = top
    msg.texts = texts


def _collides(boundary, texts):
    # A delimiter inside text held in RAM would end the part early (RFC 2046 5.1.1). Text
    # from a file or stream is not read twice for this: 96 random bits do not collide by chance.
    for t in texts:
        chunks = (t.src,) if t.kind == 0 else t.src if t.kind == 1 else ()
        tail = b""  # the end of the chunk before: a boundary split between two chunks
        for c in chunks:
            c = c.encode() if isinstance(c, str) else c
            if (tail + bytes(c[: len(boundary)])).find(boundary) >= 0:
                return True
            tail = (tail + bytes(c[-len(boundary) :]))[1 - len(boundary) :]
            if isinstance(c, memoryview):  # no find(): small overlapping copies, never the whole
                for i in range(0, len(c), 512):
                    if bytes(c[i : i + 512 + len(boundary)]).find(boundary) >= 0:
                        return True
            elif c.find(boundary) >= 0:
                return True
    return False


class _Multipart:
    def __init__(self, kind, parts, texts):
        self.kind = kind
        self.parts = parts
        self.texts = texts
        while True:
            # "=_" never occurs in base64 or quoted-printable output.
            self.boundary = ("=_%s" % unique(12)).encode()
            if not _collides(self.boundary, texts):
                break

    def head(self, out):
        yield from header(out, b"Content-Type",
                           [b"multipart/" + self.kind + b";", b'boundary="' + self.boundary + b'"'])
        for t in self.texts:
            if t.cte == b"8bit":  # RFC 2045 6.4: a multipart is as 8-bit as its parts
                yield from header(out, b"Content-Transfer-Encoding", [b"8bit"])
                break

    def write(self, out):
        for p in self.parts:
            if out.full():
                yield from out.flush()
            out.put(b"--")
            out.put(self.boundary)
            out.put(b"\r\n")
            yield from p.head(out)
            out.put(b"\r\n")
            yield from p.write(out)  # ends with a CRLF; the one below starts the delimiter
            if out.full():
                yield from out.flush()
            out.put(b"\r\n")
        out.put(b"--")
        out.put(self.boundary)
        out.put(b"--\r\n")


# -- attachments ---------------------------------------------------------------------------------


def _content_type(value):
    if not isinstance(value, str) or len(value.encode()) != len(value):
        raise ValueError("attachment content_type must be an ASCII str: %r" % (value,))
    check_text(value, "attachment content_type")
    kind = value.split(";", 1)[0].strip()
    slash = kind.find("/")
    if slash <= 0 or slash == len(kind) - 1 or " " in kind or len(value) > 200:
        raise ValueError("attachment content_type must look like type/subtype: %r" % value)
    return [t.encode() for t in value.split(" ") if t]


_ATTR_CHARS = b"!#$&+-.^_`|~"


def _param_tokens(attr, value):
    """RFC 2231 parameter: quoted when short printable ASCII, else percent-encoded UTF-8 in
    continuations of at most 50 characters, never splitting a character."""
    b = value.encode()
    if len(b) == len(value) and len(b) <= 60 and '"' not in value and "\\" not in value:
        return [attr + b'="' + b + b'"']
    pieces = []
    piece = bytearray()
    i = 0
    while i < len(b):
        j = i + 1
        while j < len(b) and (b[j] & 0xC0) == 0x80:  # the rest of a UTF-8 sequence
            j += 1
        enc = bytearray()
        for c in b[i:j]:
            if 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in _ATTR_CHARS:
                enc.append(c)
            else:
                enc.extend(b"%%%02X" % c)
        if len(piece) + len(enc) > 50:
            pieces.append(bytes(piece))
            piece = bytearray()
        piece.extend(enc)
        i = j
    pieces.append(bytes(piece))
    tokens = []
    for n, p in enumerate(pieces):
        tokens.append(attr + b"*%d*=" % n + (b"utf-8''" if n == 0 else b"") + p + b";")
    tokens[-1] = tokens[-1][:-1]
    return tokens


def _base64_size(n):
    full, rest = divmod(n, _LINE_IN)
    return full * 78 + ((rest + 2) // 3 * 4 + 2 if rest else 0)


class _Attachment:
    """(filename, source, content_type): source is bytes, bytearray, memoryview or an open
    binary file, read a buffer at a time and sent base64 in 76-character lines."""

    disposition = b"attachment;"

    def __init__(self, spec, buf=b""):
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError("an attachment is (filename, source, content_type)")
        filename, src = spec[0], spec[1]
        check_text(filename, "attachment filename")
        if not filename.strip() or "/" in filename or "\\" in filename:
            raise ValueError("attachment filename must be a file name without a path: %r" % filename)
        ct = spec[2] if len(spec) == 3 and spec[2] is not None else "application/octet-stream"
        self.type_tokens = _content_type(ct)
        self.filename = filename
        self.buf = buf  # the client's chunk buffer (compose() gives it)
        self.src = src
        self.start = None
        self.size = None
        if isinstance(src, (bytes, bytearray, memoryview)):
            self.size = len(src)
        elif hasattr(src, "readinto") or hasattr(src, "read"):
            try:  # a seekable file: its size now, and the start to return to for a resend
                self.start = src.tell()
                self.size = src.seek(0, 2) - self.start
                src.seek(self.start)
            except (AttributeError, OSError, ValueError, TypeError):
                self.start = self.size = None
        else:
            raise ValueError("attachment source must be bytes or an open binary file: %r" % filename)

    def head(self, out):
        tokens = self.type_tokens[:]
        tokens[-1] = tokens[-1] + b";"
        yield from header(out, b"Content-Type", tokens + _param_tokens(b"name", self.filename))
        yield from header(out, b"Content-Disposition",
                           [self.disposition] + _param_tokens(b"filename", self.filename))
        yield from header(out, b"Content-Transfer-Encoding", [b"base64"])

    def write(self, out):
        if out.counting:
            if self.size is None:
                out.unknown = True
            else:
                out.n += _base64_size(self.size)
            return
        yield from out.flush()  # the part's headers are in the buffer: room for half of it
        lines = 1150 if _CPYTHON else min(len(self.buf) // _LINE_IN, len(out.buf) // 2 // 78)
        step = lines * _LINE_IN  # whole lines per read, at most half the output buffer encoded
        src = self.src
        fast = native()
        mem = isinstance(src, (bytes, bytearray, memoryview))
        if mem:
            mv = memoryview(src)
            total = len(src)
        else:
            if self.start is not None:
                src.seek(self.start)
            mv = memoryview(bytearray(step) if _CPYTHON else self.buf)
            into = hasattr(src, "readinto")
        i = 0
        while True:
            if mem:
                n = min(step, total - i)
                base = i
                i += n
            else:
                n = 0
                base = 0
                while n < step:
                    if into:
                        k = src.readinto(mv[n:step])
                    else:
                        c = src.read(step - n)
                        if isinstance(c, str):
                            raise ValueError("attachment %r: open the file in binary mode" % self.filename)
                        k = len(c) if c else 0
                        mv[n : n + k] = c
                    if not k:
                        break
                    n += k
            done = fast and fast.base64(out, mv, base, base + n)
            if _CPYTHON and n:  # one encoding, one join: sent after the buffer (Output.big)
                enc = _b2a(mv[base : base + n], newline=False)
                out.big = b"\r\n".join([enc[k : k + 76] for k in range(0, len(enc), 76)] + [b""])
                done = True
            for k in range(base, base + n, _LINE_IN) if not done else ():  # small temporaries
                if _NO_NEWLINE:
                    out.put(_b2a(mv[k : min(k + _LINE_IN, base + n)], newline=False))
                else:
                    enc = binascii.b2a_base64(mv[k : min(k + _LINE_IN, base + n)])
                    out.put(memoryview(enc)[: len(enc) - 1])  # without binascii's "\n"
                out.put(b"\r\n")
            if out.full():
                yield from out.flush()
            if n < step:
                return


_CID_CHARS = b"!#$&'*+-./=?^_`{|}~@"  # RFC 5322 atext, "." and "@": no quoting, no % escapes


class Inline(_Attachment):
    """An image shown in the HTML part: Inline(filename, source, content_type, content_id),
    in attachments=. The HTML refers to it as cid:<content_id>; without one, a unique id is
    made (self.cid). Streamed like an attachment, inside multipart/related."""

    disposition = b"inline;"

    def __init__(self, filename, source, content_type="image/jpeg", content_id=None):
        _Attachment.__init__(self, (filename, source, content_type))
        if content_id is None:
            content_id = unique(12) + "@smtp-duo"
        if not isinstance(content_id, str) or not 0 < len(content_id) <= 200:
            raise ValueError("content_id must be a str of 1 to 200 characters: %r" % (content_id,))
        for c in content_id.encode():  # octets: a str's characters would each be interned
            if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in _CID_CHARS):
                raise ValueError("content_id %r: only ASCII letters, digits and %s (no <>, spaces or "
                                 "line breaks)" % (content_id, _CID_CHARS.decode()))
        self.cid = content_id

    def head(self, out):
        yield from _Attachment.head(self, out)
        yield from header(out, b"Content-ID", [b"<" + self.cid.encode() + b">"])


def b64encode_into(src, dst, start=0):
    """Write the base64 encoding of `src` into bytearray `dst` at `start`, without newlines;
    return the end index. ValueError if `dst` is too small. Allocates only small pieces."""
    n = len(src)
    if start + (n + 2) // 3 * 4 > len(dst):
        raise ValueError("base64 buffer too small")
    mv = memoryview(src)
    o = start
    for i in range(0, n, 48):  # 48 octets -> 64 characters per binascii call
        piece = binascii.b2a_base64(mv[i : min(i + 48, n)])
        k = len(piece) - 1  # binascii's newline
        dst[o : o + k] = piece[:k]
        o += k
    return o
