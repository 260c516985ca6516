# Hostile input, socket-free, unchanged on CPython and on the MicroPython unix port: header
# lines that start with a dot (stuffed under DATA, not under BDAT), header names that hide a
# refused one behind dots or case, text that would make a header line longer than 998 octets or
# read back differently, address literals that smuggle envelope parameters, secrets in error
# text, C1 controls and line separators. The seeded random cases check each delivered message
# with a small RFC 5322 / RFC 2047 reader written here (MicroPython has no email package);
# test_hostile_input.py checks the same with CPython's email package and Hypothesis.
# Run directly: `micropython hostile_portable.py` prints one line per test and "N passed, N failed".

import binascii
import gc
import random
import sys

import smtp_duo
import smtp_duo_mime  # noqa: F401 -- headers= loads it anyway: now, before the heap is fragmented
from memserver import MemClient, MemServer

try:
    import smtp_duo_async  # the asyncio client too, for the same reason
except ImportError:  # a port without asyncio
    smtp_duo_async = None

DATE = "Sat, 21 Nov 2026 23:58:21 +0000"
MID = "<hostile.1@example.com>"
EHLO_DATA = b"250-mem.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10000000\r\n"
EHLO_BDAT = (b"250-mem.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
             b"250 SIZE 10000000\r\n")
EHLO_BDAT_ONE_BY_ONE = b"250-mem.test\r\n250-CHUNKING\r\n250 SIZE 10000000\r\n"

# The message of test_header_name_with_a_dot_* as the client builds it (before dot-stuffing).
DOTTED = (b"Date: " + DATE.encode() + b"\r\nFrom: sensor@example.com\r\nTo: rcpt@example.com\r\n"
          b"Subject: alert\r\nMessage-ID: " + MID.encode() + b"\r\n.X-Test: v\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n"
          b"X-Priority: 3 (Normal)\r\nImportance: normal\r\n\r\nx\r\n")

# Refused in headers= (spec A), compared without leading dots and case-blind.
REFUSED = ("date", "from", "to", "cc", "bcc", "subject", "message-id", "mime-version", "x-priority",
           "importance", "return-path", "received")
REFUSED_PREFIXES = ("content-", "resent-")
REFUSED_EXAMPLES = REFUSED + ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                              "Content-Length", "Content-ID", "Content-Description", "content-x",
                              "Resent-From", "Resent-Date", "resent-message-id", "Return-Path", "Received")
ALLOWED_EXAMPLES = ("X-From", "Fromage", "Contents", "Resentment", "X-Content-Type", "X-Received",
                    "Received-SPF", "Comments", "Keywords", "Organization", "In-Reply-To", "References",
                    "X-Mailer", ".X-Test", "..x-dots", ".Comments")
ONCE = ("reply-to", "sender", "in-reply-to", "references")

# Address literals (spec C): RFC 5321 4.1.3.
LITERALS_GOOD = ("[192.0.2.1]", "[0.0.0.0]", "[255.255.255.255]", "[010.001.0.99]", "[IPv6:::1]",
                 "[IPv6:::]", "[IPv6:2001:db8::1]", "[IPv6:2001:DB8:0:0:8:800:200C:417A]",
                 "[IPv6:1:2:3:4:5:6:7:8]", "[IPv6:::ffff:192.0.2.1]", "[IPv6:1:2:3:4:5:6:192.0.2.1]",
                 "[IPv6:1::2:3:4:192.0.2.1]", "[IPv6:fe80::]", "[x-tag:any!thing~]", "[a:b]",
                 "[tag:a:b:c]", "[123:xyz]", "[Z9:{}|^`]")
LITERALS_BAD = ("[127.0.0.1> NOTIFY=NEVER ORCPT=rfc822;x+40evil.example]", "[1.2.3]", "[256.1.1.1]",
                "[1.2.3.4.5]", "[1.2.3.4.]", "[1.2.3.1000]", "[1..3.4]", "[-1.2.3.4]", "[1.2.3.a]",
                "[IPv6:zz::1]", "[IPv6:1::2::3]", "[IPv6:1:2:3:4:5:6:7]", "[IPv6:1:2:3:4:5:6:7:8:9]",
                "[IPv6:12345::1]", "[IPv6:::1%eth0]", "[IPv6:::1.2.3]", "[IPv6:::256.1.1.1]",
                "[IPv6:1.2.3.4]", "[IPv6:]", "[IPv6:::1 ]", "[tag:a b]", "[tag:a<b]", "[tag:a>b]",
                "[tag:a[b]", "[tag:a]b]", "[tag:a\\b]", "[tag:]", "[:x]", "[tag-:x]", "[t_g:x]",
                "[t.g:x]", "[]", "[ ]", "[1.2.3.4", "1.2.3.4]", "[1.2.3.4]x", "[1.2.3.4]]",
                "[[1.2.3.4]]", "[tag:\u00e9]", "[tag:a\tb]", "[ 1.2.3.4]", "[1.2.3.4 ]")
SMUGGLE = "x@[127.0.0.1> NOTIFY=NEVER ORCPT=rfc822;x+40evil.example]"

# Spec E: refused wherever text goes into a header or an address.
SEPARATORS = ("\x85", "\x80", "\x9f", "\u2028", "\u2029")

# What the random cases are made of: runs of blanks, dots, encoded-word markers, line ends,
# NUL, C1, line separators, non-ASCII, long words, brackets, quotes and backslashes.
PIECES = (" ", "  ", "\t", " \t ", " " * 100, ".", "..", ". ", "=?", "?=", "=?utf-8?B?QQ==?=",
          "=?utf-8?q?x?=", "\r", "\n", "\r\n", "\x00", "\x7f", "\x85", "\x80", "\x9f", "\u2028",
          "\u2029", "\x1b", "\x0b", "\x1c", "\u00a0", "\u3000", "\ufeff", "\u00e9", "\u017c\u00f3\u0142w",
          "\u6e29\u5ba4", "\U0001f321", "x" * 66, "x" * 67, "y" * 300, "w" * 700, "[", "]", "<", ">",
          '"', "\\", "(", ")", ",", ";", ":", "@", "a", "Word", "b c", "-", "_", "?", "=", "'")
# Random characters: 1 to 4 UTF-8 octets, from few enough code points that what MicroPython
# interns of them (every character a str iteration yields, here and in the library) stays small.
RANGES = ((0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F),
          (0xA0, 0x17F), (0x2000, 0x206F), (0x4E00, 0x4E3F), (0x1F300, 0x1F33F))
NAME_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\"(),/;<=>?@[\\]{}"
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
LDH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
HEXDIGITS = "0123456789abcdefABCDEF"


def check(cond, what=""):
    if not cond:
        raise AssertionError(what)


def collect():
    if sys.implementation.name == "micropython":
        gc.collect()


def rng(seed):
    # MicroPython's random has no Random class: seed the module instead.
    if hasattr(random, "Random"):
        return random.Random(seed)
    random.seed(seed)
    return random


def below(rnd, n):
    return rnd.getrandbits(20) % n


def pick(rnd, seq):
    return seq[below(rnd, len(seq))]


def failure(fn, *args, **kw):
    """The exception fn raises, or None."""
    try:
        fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 -- the caller checks the type
        return e
    return None


# -- oracles: what the specification says, written without the library ---------------------------


def forbidden(text):
    """Control characters (tab aside), DEL, C1 controls, U+2028 and U+2029: always refused.
    Looked for in the UTF-8 octets (iterating a str interns its characters on MicroPython)."""
    b = text.encode()
    for i in range(len(b)):
        c = b[i]
        if (c < 0x20 and c != 0x09) or c == 0x7F:
            return True
        if c == 0xC2 and 0x80 <= b[i + 1] <= 0x9F:  # U+0080 to U+009F
            return True
    return b.find(b"\xe2\x80\xa8") >= 0 or b.find(b"\xe2\x80\xa9") >= 0


def plain(text):
    """May the text go as plain words: printable ASCII, no tab, no "=?", single spaces between
    words, none at either end, no word over 66 characters."""
    if not text or text[:1] == " " or text[-1:] == " " or "  " in text or "=?" in text:
        return False
    b = text.encode()
    for c in b:
        if not 0x20 <= c <= 0x7E:
            return False
    for w in b.split(b" "):
        if len(w) > 66:
            return False
    return True


def ipv4_ok(s):
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not 1 <= len(p) <= 3:
            return False
        for ch in p:
            if not "0" <= ch <= "9":
                return False
        if int(p) > 255:
            return False
    return True


def _hex_ok(g):
    if not 1 <= len(g) <= 4:
        return False
    for ch in g:
        if ch not in HEXDIGITS:
            return False
    return True


def ipv6_ok(s):
    """RFC 5321 IPv6-addr: True, False, or None where RFC 5321 and RFC 4291 parsers disagree
    ("::" standing for a single group; leading zeros in an embedded IPv4 part)."""
    unsure = False
    limit = 8  # groups
    if "." in s:
        i = s.rfind(":")
        if i < 0 or not ipv4_ok(s[i + 1 :]):
            return False
        for p in s[i + 1 :].split("."):
            if len(p) > 1 and p[0] == "0":
                unsure = True
        s = s[: i + 1]
        if s[-2:] != "::":
            s = s[:-1]
        limit = 6
    if s.count("::") > 1:
        return False
    if "::" in s:
        left, right = s.split("::")
        groups = (left.split(":") if left else []) + (right.split(":") if right else [])
        for g in groups:
            if not _hex_ok(g):
                return False
        if len(groups) > limit - 1:
            return False
        if len(groups) == limit - 1:
            unsure = True
    else:
        groups = s.split(":")
        if len(groups) != limit:
            return False
        for g in groups:
            if not _hex_ok(g):
                return False
    return None if unsure else True


def literal_ok(d):
    """An address literal with its brackets: [IPv4], [IPv6:...] or [tag:content]."""
    if len(d) < 2 or d[0] != "[" or d[-1] != "]":
        return False
    s = d[1:-1]
    if ipv4_ok(s):
        return True
    c = s.find(":")
    if c < 0:
        return False
    tag, content = s[:c], s[c + 1 :]
    if tag == "IPv6":
        return ipv6_ok(content)
    if not tag or tag[-1] == "-" or not content:
        return False
    for ch in tag:
        if ch not in LDH:
            return False
    for ch in content:
        if not 33 <= ord(ch) <= 126 or ch in "[]\\<>":
            return False
    if tag.lower() == "ipv6":  # ABNF strings are case-blind: "ipv6:" may be read as "IPv6:"
        return True if ipv6_ok(content) else None
    return True


def _domain_ok(d):
    for label in d.split("."):
        if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if ch not in LDH:
                return False
    return True


def _local_ok(local):
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    for ch in local:
        if ch != "." and ch not in ATEXT:
            return False
    return True


def address_verdict(addr):
    """True: the address must be accepted; False: it must raise ValueError; None: either."""
    if forbidden(addr):
        return False
    for ch in " \t<>":
        if ch in addr:
            return False  # the envelope path can never hold them
    at = addr.rfind("@")
    if at < 0:
        return False
    local, domain = addr[:at], addr[at + 1 :]
    if len(local.encode()) > 64 or len(domain.encode()) > 255 or len(addr.encode()) > 254:
        return False
    if "[" in domain or "]" in domain:
        v = literal_ok(domain)
        if v is False:
            return False
        return True if v and _local_ok(local) else None
    return True if _local_ok(local) and _domain_ok(domain) else None


def header_name_verdict(name):
    """True: accepted in headers=; False: ValueError; None: either (all dots, over 76)."""
    if not name:
        return False
    for ch in name:
        if not 33 <= ord(ch) <= 126 or ch == ":":
            return False
    key = name.lower()
    while key[:1] == ".":
        key = key[1:]
    if key in REFUSED or key.startswith(REFUSED_PREFIXES):
        return False
    if not key or len(name) > 76:
        return None
    return True


# -- reading a message back (RFC 5322 unfolding, RFC 2047 decoding) -----------------------------


def unstuff(wire):
    return b"\r\n".join([line[1:] if line[:1] == b"." else line for line in wire.split(b"\r\n")])


def check_wire(wire, stuffed, what):
    """Every line within 998 octets, CRLF only, and under DATA no line with a single dot.
    (With find(), not split(): a message of several KiB on MicroPython's heap.)"""
    check(wire[-2:] == b"\r\n", (what, wire[-80:]))
    start = 0
    while start < len(wire):
        end = wire.find(b"\r\n", start)
        lf = wire.find(b"\n", start, end)
        cr = wire.find(b"\r", start, end)
        check(lf < 0 and cr < 0, (what, "bare CR or LF", wire[start : end][:80]))
        check(end - start <= 998, (what, end - start, wire[start : start + 80]))
        if stuffed and wire[start : start + 1] == b".":
            check(wire[start : start + 2] == b"..", (what, "unstuffed dot", wire[start : start + 80]))
        start = end + 2


def _q_decode(t):
    out = bytearray()
    i = 0
    while i < len(t):
        ch = t[i]
        if ch == "_":
            out.append(0x20)
        elif ch == "=":
            out.append(int(t[i + 1 : i + 3], 16))
            i += 2
        else:
            out.append(ord(ch))
        i += 1
    return bytes(out)


def decode_word(w):
    """An RFC 2047 encoded-word's text, or None when w is not one."""
    if len(w) < 8 or w[:2] != "=?" or w[-2:] != "?=":
        return None
    parts = w[2:-2].split("?")
    if len(parts) != 3:
        return None
    charset = parts[0].split("*")[0].lower()
    if charset not in ("utf-8", "us-ascii"):
        return None
    try:
        if parts[1] in ("B", "b"):
            raw = binascii.a2b_base64(parts[2])
        elif parts[1] in ("Q", "q"):
            raw = _q_decode(parts[2])
        else:
            return None
        return str(raw, "utf-8")
    except (ValueError, UnicodeError, IndexError):
        return None


def decode_text(s):
    """(text, words): an unstructured value or a phrase decoded as RFC 2047 says: encoded-words
    decoded, whitespace between two adjacent encoded-words dropped, other whitespace kept; the
    whitespace after the colon is not part of the value. words: [(word, is_encoded)]. Scanned
    as UTF-8 octets (indexing a str is slow on MicroPython)."""
    b = s.encode()
    n = len(b)
    i = 0
    while i < n and b[i] in (0x20, 0x09):
        i += 1
    out = []
    words = []
    ws = b""
    last_ew = False
    while i < n:
        j = i
        while j < n and b[j] not in (0x20, 0x09):
            j += 1
        k = j
        while k < n and b[k] in (0x20, 0x09):
            k += 1
        word = str(b[i:j], "utf-8")
        d = decode_word(word)
        words.append((word, d is not None))
        if d is None:
            out.append(str(ws, "utf-8") + word)
        else:
            out.append(("" if last_ew else str(ws, "utf-8")) + d)
        last_ew = d is not None
        ws = b[j:k]
        i = k
    out.append(str(ws, "utf-8"))
    return "".join(out), words


def _unquote(q):
    r = []
    esc = False
    for ch in q[1:-1]:
        if esc:
            r.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        else:
            r.append(ch)
    return "".join(r)


def mailboxes(value):
    """[(display name or None, addr-spec, name words)] of an address header's value."""
    v = value.encode()  # scanned as octets: the characters that matter are ASCII
    items = []
    start = 0
    quoted = esc = angle = False
    for i in range(len(v)):
        c = v[i]
        if quoted:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x3C:
            angle = True
        elif c == 0x3E:
            angle = False
        elif c == 0x2C and not angle:
            items.append(str(v[start:i], "utf-8"))
            start = i + 1
    items.append(str(v[start:], "utf-8"))
    out = []
    for it in items:
        it = it.strip(" \t")
        if it[-1:] != ">":
            out.append((None, it, []))
            continue
        i = it.rfind("<")
        name = it[:i].strip(" \t")
        if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
            out.append((_unquote(name), it[i + 1 : -1], []))
        else:
            text, words = decode_text(name)
            out.append((text or None, it[i + 1 : -1], words))
    return out


def header_of(message):
    i = message.find(b"\r\n\r\n")
    check(i > 0, message[:200])
    return message[: i + 2], message[i + 4 :]


def fields(head):
    """[(name, unfolded value)] as str; CRLF before a blank removed, the blank kept."""
    out = []
    for line in head[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            check(out, ("continuation without a field", line))
            out[-1][1] = out[-1][1] + line
        else:
            c = line.find(b":")
            check(c > 0, ("not a header field", line[:80]))
            out.append([line[:c], line[c + 1 :]])
    return [(str(n, "utf-8"), str(v, "utf-8")) for n, v in out]


def check_head_lines(head, what):
    """At most 78 octets a line, but for one holding a single address (up to 256 octets)."""
    for line in head[:-2].split(b"\r\n"):
        if len(line) <= 78:
            continue
        rest = line if line[:1] in (b" ", b"\t") else line[line.find(b":") + 1 :]
        rest = rest.strip()
        check(len(line) <= 998 and len(rest) <= 260 and b" " not in rest and b"\t" not in rest
              and b"@" in rest, (what, "header line over 78 octets", line))


def check_encoded_words(words, what):
    for w, enc in words:
        if enc:
            check(len(w) <= 75, (what, "encoded-word over 75 characters", w))


def check_text(value, text, what):
    """An unstructured value (Subject, X-*) reads back as text, in the form the spec says."""
    got, words = decode_text(value)
    check(got == text, (what, text, got))
    check_encoded_words(words, what)
    if plain(text):
        check(value == " " + text, (what, "plain text not sent as plain words", value))
    else:
        for w, enc in words:
            check(enc, (what, "text sent as plain words", text, value))


# -- sending through the in-memory server ---------------------------------------------------------


class Server(MemServer):
    # Keeps the commands and the message, not a copy of every write: room on a small heap.
    def write(self, mv, deadline):
        MemServer.write(self, mv, deadline)
        self.sent.clear()


def deliver(cfg, mail, ehlo=EHLO_DATA):
    """(error, server): the ValueError raised, with nothing sent, or None and the server that
    took the message."""
    srv = Server({"EHLO": ehlo})
    try:
        c = MemClient(srv, **cfg)
    except ValueError as e:
        return e, srv
    try:
        c.mail_send(**mail)
    except ValueError as e:
        check(srv.connections == 0, ("ValueError after connecting", e))
        return e, srv
    check(len(srv.messages) == 1, srv.commands)
    return None, srv


def mail_size(srv):
    for c in srv.commands:
        if c[:10] == b"MAIL FROM:":
            return int(c.split(b"SIZE=")[1].split(b" ")[0].strip())
    check(False, srv.commands)


def message_of(srv, chunking, what=""):
    """The message as the client built it, checked on the wire: dot-stuffed under DATA (and
    nothing else changed), exact and unstuffed under BDAT, SIZE= its length."""
    wire = srv.messages[0]
    if chunking:
        bdat = [c for c in srv.commands if c[:5] == b"BDAT "]
        check(bdat == [b"BDAT %d LAST\r\n" % len(wire)], (what, bdat))
        message = wire
    else:
        message = unstuff(wire)
    check_wire(wire, not chunking, what)
    check(mail_size(srv) == len(message), (what, "SIZE=", mail_size(srv), len(message)))
    return message


def envelope(srv):
    return [c for c in srv.commands if c[:10] == b"MAIL FROM:" or c[:9] == b"RCPT TO:<"]


def base_mail(**kw):
    mail = {"recipient_address": "rcpt@example.com", "subject": "alert", "mail_body": "x",
            "date": DATE, "message_id": MID}
    mail.update(kw)
    return mail


def raises_nothing_sent(cfg, mail, what):
    e, srv = deliver(cfg, mail)
    check(isinstance(e, ValueError), (what, "accepted", srv.commands[:3]))
    check(srv.connections == 0, what)
    return e


# -- A: dot-stuffed header lines, refused names ---------------------------------------------------


class Blocking:
    def client(self, srv, **kw):
        return MemClient(srv, **kw)

    def send(self, c, **mail):
        return c.mail_send(**mail)


class Async:
    def client(self, srv, **kw):
        from memserver import async_client

        return async_client(srv, **kw)

    def send(self, c, **mail):
        import asyncio

        return asyncio.run(c.mail_send(**mail))


def drivers():
    return [Blocking(), Async()] if smtp_duo_async else [Blocking()]


def test_header_name_with_a_dot_is_stuffed_under_data_only():
    for d in drivers():
        for ehlo, chunking in ((EHLO_DATA, False), (EHLO_BDAT, True), (EHLO_BDAT_ONE_BY_ONE, True)):
            srv = MemServer({"EHLO": ehlo})
            r = d.send(d.client(srv), **base_mail(headers={".X-Test": "v"}))
            check(r.code == 250, r)
            want = DOTTED if chunking else DOTTED.replace(b"\r\n.X-Test", b"\r\n..X-Test")
            check(srv.messages == [want], (ehlo, srv.messages))
            check(mail_size(srv) == len(DOTTED), (ehlo, mail_size(srv)))
            check(srv.received().count(b"X-Test") == 1, ehlo)
            collect()


def test_header_name_with_a_dot_in_a_multipart_mail():
    for ehlo, chunking in ((EHLO_DATA, False), (EHLO_BDAT, True)):
        srv = MemServer({"EHLO": ehlo})
        r = MemClient(srv).mail_send(**base_mail(headers=[("..X-Two", "v"), ("X-Plain", ".v")],
                                                 mail_body=".line\n", html=".<p>x</p>\n",
                                                 attachments=[(".hidden.txt", b"data", "text/plain")]))
        check(r.code == 250, r)
        message = message_of(srv, chunking, ehlo)
        head, body = header_of(message)
        names = [n for n, v in fields(head)]
        check(names.count("..X-Two") == 1 and names.count("X-Plain") == 1, names)
        check(b"\r\n..X-Two: v\r\nX-Plain: .v\r\n" in head, head)
        check(b"\r\n.line\r\n" in body and b"\r\n.<p>x</p>\r\n" in body, body)
        if not chunking:
            check(b"\r\n...X-Two: v\r\n" in srv.messages[0] and b"\r\n..line\r\n" in srv.messages[0], ehlo)


def test_refused_header_names_behind_dots_and_case():
    for base in REFUSED_EXAMPLES:
        for name in (base, base.upper(), base.lower(), "." + base, ".." + base.upper(), "..." + base):
            for value in ("CEO <ceo@bank.example>", "x@evil.example"):
                raises_nothing_sent({}, base_mail(headers={name: value}), name)
                raises_nothing_sent({}, base_mail(headers=[("X-Ok", "1"), (name, value)]), name)
    check(isinstance(failure(MemClient(MemServer()).check_mail, "a@x.org", headers={".From": "x@y.z"}),
                     ValueError))
    collect()


def test_allowed_header_names_keep_their_dots():
    for chunking, ehlo in ((False, EHLO_DATA), (True, EHLO_BDAT)):
        for name in ALLOWED_EXAMPLES:
            e, srv = deliver({}, base_mail(headers={name: "v 1"}), ehlo)
            check(e is None, (name, e))
            head, body = header_of(message_of(srv, chunking, name))
            check([(n, v) for n, v in fields(head) if n == name] == [(name, " v 1")], (name, head))
            collect()
    long_name = "X-" + "n" * 74  # 76 characters: its value goes on the next line
    e, srv = deliver({}, base_mail(headers={long_name: "v 1"}))
    check(e is None, e)
    head, body = header_of(message_of(srv, False))
    check_head_lines(head, long_name)
    check([(n, v) for n, v in fields(head) if n == long_name] == [(long_name, " v 1")], head)
    raises_nothing_sent({}, base_mail(headers={"X-" + "n" * 1000: "v"}), "a name no line can hold")


def test_once_only_headers_refuse_a_second_copy():
    values = {"reply-to": ("a@x.org", "b@x.org"), "sender": ("a@x.org", "b@x.org"),
              "in-reply-to": ("<1@x.org>", "<2@x.org>"), "references": ("<1@x.org>", "<2@x.org>")}
    for key in ONCE:
        v1, v2 = values[key]
        title = "-".join([w[:1].upper() + w[1:] for w in key.split("-")])
        for first, second in ((title, key), (title, title.upper()), (key, "." + title),
                              ("." + key, ".." + key.upper()), (title, title)):
            raises_nothing_sent({}, base_mail(headers=[(first, v1), ("X-Between", "1"), (second, v2)]),
                                (first, second))
        e, srv = deliver({}, base_mail(headers=[(title, v1)]))
        check(e is None, (title, e))
    e, srv = deliver({}, base_mail(headers=[("X-Tag", "1"), ("x-tag", "2"), ("Comments", "a"),
                                            ("Comments", "b"), (".X-Tag", "3")]))
    check(e is None, e)
    head, body = header_of(message_of(srv, False))
    check([(n, v) for n, v in fields(head) if n.lower().endswith(("x-tag", "comments"))] ==
          [("X-Tag", " 1"), ("x-tag", " 2"), ("Comments", " a"), ("Comments", " b"), (".X-Tag", " 3")], head)


# -- C: address literals --------------------------------------------------------------------------


def _in_every_field(addr):
    # (client config, mail) putting addr in each place an address goes.
    return [({"from_address": addr}, base_mail()), ({"from_address": "Me <" + addr + ">"}, base_mail()),
            ({}, base_mail(recipient_address=addr)), ({}, base_mail(recipient_address=["a@x.org", addr])),
            ({}, base_mail(recipient_address="Bob <" + addr + ">")), ({}, base_mail(cc=addr)),
            ({}, base_mail(bcc=[addr])), ({}, base_mail(headers={"Reply-To": addr})),
            ({}, base_mail(headers={"Reply-To": ["a@x.org", "R <" + addr + ">"]})),
            ({}, base_mail(headers={"Sender": addr}))]


def test_bad_address_literals_refused_in_every_field():
    for lit in LITERALS_BAD:
        check(address_verdict("x@" + lit) is False, lit)  # the oracle agrees with the list
        for cfg, mail in _in_every_field("x@" + lit):
            raises_nothing_sent(cfg, mail, (lit, cfg, mail))
        collect()
    for cfg, mail in _in_every_field(SMUGGLE):
        raises_nothing_sent(cfg, mail, SMUGGLE)


def test_good_address_literals_go_into_the_envelope_exactly():
    for lit in LITERALS_GOOD:
        addr = "x@" + lit
        check(address_verdict(addr) is True, lit)
        e, srv = deliver({"from_address": "Me <" + addr + ">"},
                         base_mail(recipient_address=["Bob <" + addr + ">"], cc="c@" + lit,
                                   headers={"Reply-To": addr}))
        check(e is None, (lit, e))
        check(envelope(srv) == [b"MAIL FROM:<" + addr.encode() + b"> SIZE=%d\r\n" % mail_size(srv),
                                b"RCPT TO:<" + addr.encode() + b">\r\n",
                                b"RCPT TO:<c@" + lit.encode() + b">\r\n"], envelope(srv))
        head, body = header_of(message_of(srv, False, lit))
        got = {}
        for n, v in fields(head):
            got[n] = [(nm, a) for nm, a, w in mailboxes(v)] if n in ("From", "To", "Cc", "Reply-To") else v
        check(got["From"] == [("Me", addr)] and got["To"] == [("Bob", addr)], got)
        check(got["Cc"] == [(None, "c@" + lit)] and got["Reply-To"] == [(None, addr)], got)
        collect()


# -- D: secrets ---------------------------------------------------------------------------------------


def pieces(secret):
    return [secret[i : i + 4] for i in range(len(secret) - 3)]


def check_secret_free(texts, secret, what):
    for t in texts:
        for p in pieces(secret):
            check(p not in t, (what, "secret piece %r in %r" % (p, t)))


def _position(text, n):
    i = text.find("position %d" % n)
    return i >= 0 and not "0" <= (text[i + 9 + len(str(n)) : i + 10 + len(str(n))] or "x") <= "9"


def test_credentials_with_control_characters_never_echo_the_secret():
    secret = "Tr0ub4dor&3xyzQ9!k"  # 18 characters, as read from a file with its newline
    for field, value, at in (("password", secret + "\n", 18), ("password", "Kq7v\x00Xw2Lp9Tz", 4),
                             ("password", "\rZm8pWq4Lt", 0), ("password", "Vb6n\x7fYr3Gs", 4),
                             ("password", "Pw9Lk2Jh\x1b", 8), ("username", "al1ce-Zq\r", 8),
                             ("username", "Bo7x\nUq2M", 4)):
        kw = {"username": "alice", "password": "Hj4Gf8Ds", "allow_insecure_auth": True}
        kw[field] = value
        e = failure(MemClient, MemServer(), **kw)
        check(isinstance(e, ValueError), (field, value, e))
        text = str(e)
        check(field in text and _position(text, at), (field, at, text))
        check_secret_free((text, repr(e)), value, field)
    c = MemClient(MemServer(), username="alice", password=secret, allow_insecure_auth=True)
    check_secret_free((repr(c), str(c)), secret, "repr(client)")


def test_token_provider_with_control_characters_fails_authentication_without_the_token():
    token = "ya29.Kq7vXw2Lp9Tz"
    ehlo = b"250-mem.test\r\n250-AUTH PLAIN XOAUTH2\r\n250 8BITMIME\r\n"
    for d in drivers():
        for bad in (token + "\n", token[:6] + "\r\n" + token[6:], "\x00" + token, token + "\x7f"):
            for auth in (smtp_duo.AUTH_XOAUTH2, smtp_duo.AUTH_AUTO):
                lines = []
                srv = MemServer({"EHLO": ehlo})
                c = d.client(srv, username="alice", password=(lambda t=bad: t), authentication_type=auth,
                             allow_insecure_auth=True, debug=lambda direction, line: lines.append(line))
                e = failure(d.send, c, **base_mail())
                check(isinstance(e, smtp_duo.SMTPAuthenticationError), (bad, auth, e))
                check(e.status == smtp_duo.AUTHENTICATION_ERROR and e.temporary is False,
                      (e.status, e.temporary))
                check([x for x in srv.commands if x[:4].upper() == b"AUTH"] == [], srv.commands)
                check(b"MAIL" not in srv.received(), srv.commands)
                check_secret_free([str(e), repr(e), str(e.text)] + lines, bad, "token")
                check_secret_free([str(srv.received())], token, "token on the wire")


# -- E: C1 controls, line separators, non-ASCII date and Message-ID -------------------------------


def test_c1_controls_and_line_separators_refused_everywhere():
    for ch in SEPARATORS:
        cases = [({}, base_mail(subject="temp" + ch + "high")), ({}, base_mail(subject=ch)),
                 ({"from_address": "Sen" + ch + "sor <s@example.com>"}, base_mail()),
                 ({}, base_mail(recipient_address="Bob" + ch + " <b@x.org>")),
                 ({}, base_mail(cc=["C " + ch + "<c@x.org>"])),
                 ({}, base_mail(headers={"X-Note": "a" + ch + "b"})),
                 ({}, base_mail(headers={"Reply-To": "R" + ch + "R <r@x.org>"})),
                 ({"from_address": "s" + ch + "@example.com"}, base_mail()),
                 ({}, base_mail(recipient_address="a" + ch + "b@x.org")),
                 ({}, base_mail(bcc="b@x" + ch + ".org")), ({}, base_mail(cc="c@" + ch + "x.org")),
                 ({}, base_mail(headers={"Sender": "s" + ch + "@x.org"}))]
        for cfg, mail in cases:
            raises_nothing_sent(cfg, mail, (ch, cfg, mail))


def test_non_ascii_date_and_message_id_refused():
    for kw in ({"date": "Sat, 21 Nov 2026 23:58:21 +0000 \u00e9"}, {"date": "Sob, 21 Lis 2026 \u2028"},
               {"date": "\u0421\u0431, 21 Nov 2026 23:58:21 +0000"},
               {"message_id": "<za\u017c\u00f3\u0142\u0107@example.com>"},
               {"message_id": "<1@\u4f8b\u5b50.example>"}, {"message_id": "<\U0001f321@example.com>"}):
        raises_nothing_sent({}, base_mail(**kw), kw)


def test_transcript_message_octets_equal_the_declared_size():
    body = ".a\n..b\nc\n.\n\n.\r\n"
    for d in drivers():
        for ehlo, chunking in ((EHLO_DATA, False), (EHLO_BDAT, True), (EHLO_BDAT_ONE_BY_ONE, True)):
            lines = []
            srv = MemServer({"EHLO": ehlo})
            c = d.client(srv, debug=lambda direction, line: lines.append(direction + " " + line))
            d.send(c, **base_mail(mail_body=body))
            message = message_of(srv, chunking, ehlo)
            notes = [x for x in lines if x[:11] == "> <message:"]
            check(notes == ["> <message: %d octets>" % len(message)], (ehlo, notes, len(message)))


# -- B: text that is not plain words; the longest addresses ---------------------------------------

TEXTS = ("a  b", " lead", "trail ", "\ttab\t", "x" * 67 + " y", "=?utf-8?B?QQ==?=",
         "Za\u017c\u00f3\u0142\u0107  g\u0119\u015bl\u0105", "a" + "\t" * 300 + "b", " ", "w" * 1000,
         '[<"quoted\\">]', "x" * 66 + " " + "y" * 66, "Greenhouse 3:" + " " * 1000 + "41 C")


def test_text_that_is_not_plain_words_reads_back():
    # In the subject, an extra header and the sender's and a recipient's display names.
    for i in range(len(TEXTS)):
        text = TEXTS[i]
        chunking = i % 2 == 1
        collect()
        from_in, from_name = mailbox_input(text, "sensor@example.com")
        to_in, to_name = mailbox_input(text, "bob@example.org")
        extra = [("X-Note", text)]
        mail = base_mail(subject=text, recipient_address=[to_in, "carol@example.org"], headers=extra)
        e, srv = deliver({"from_address": from_in}, mail, EHLO_BDAT if chunking else EHLO_DATA)
        check(e is None, (text, e))
        exp = {"subject": text, "From": [(from_name, "sensor@example.com")],
               "To": [(to_name, "bob@example.org"), (None, "carol@example.org")], "Cc": [], "Reply-To": None,
               "extra": extra, "names": sorted(list(BASE_NAMES) + ["X-Note"])}
        check_text_case(srv, chunking, exp, text[:40])


def test_longest_addresses_stay_on_lines_of_their_own():
    domain = ("d" * 62 + ".") * 2 + "e" * 63  # 189 octets, labels of at most 63
    a = "l" * 64 + "@" + domain  # 254 octets: a path of 256 with its brackets
    b = "m" * 64 + "@" + domain
    c = "c" * 64 + "@" + domain
    check(len(a) == 254)
    e, srv = deliver({"from_address": "Sensor Seven <" + a + ">"},
                     base_mail(recipient_address=[b, "Bob Example <" + c + ">"], cc=["Carol <" + a + ">"],
                               headers={"Reply-To": ["Ops Desk <" + b + ">", c]}))
    check(e is None, e)
    check(envelope(srv) == [b"MAIL FROM:<" + a.encode() + b"> SIZE=%d\r\n" % mail_size(srv),
                            b"RCPT TO:<" + b.encode() + b">\r\n", b"RCPT TO:<" + c.encode() + b">\r\n",
                            b"RCPT TO:<" + a.encode() + b">\r\n"], envelope(srv))
    head, body = header_of(message_of(srv, False))
    check_head_lines(head, "long addresses")
    got = {}
    for n, v in fields(head):
        got[n] = [(nm, ad) for nm, ad, w in mailboxes(v)] if n in ("From", "To", "Cc", "Reply-To") else v
    check(got["From"] == [("Sensor Seven", a)] and got["To"] == [(None, b), ("Bob Example", c)], got)
    check(got["Cc"] == [("Carol", a)] and got["Reply-To"] == [("Ops Desk", b), (None, c)], got)
    for cfg, mail in _in_every_field("l" * 64 + "@" + domain + "e"):  # 255 octets
        raises_nothing_sent(cfg, mail, "address over 254 octets")


# -- F: seeded random cases -----------------------------------------------------------------------


CLEAN_PIECES = tuple([p for p in PIECES if not forbidden(p)])
BAD_PIECES = tuple([p for p in PIECES if forbidden(p)])


def char(o):
    # A character made from its UTF-8 octets: MicroPython interns what the builtin
    # makes, for the rest of the run (thousands of random characters fill the heap).
    if o < 0x80:
        b = bytes([o])
    elif o < 0x800:
        b = bytes([0xC0 | o >> 6, 0x80 | o & 0x3F])
    elif o < 0x10000:
        b = bytes([0xE0 | o >> 12, 0x80 | o >> 6 & 0x3F, 0x80 | o & 0x3F])
    else:
        b = bytes([0xF0 | o >> 18, 0x80 | o >> 12 & 0x3F, 0x80 | o >> 6 & 0x3F, 0x80 | o & 0x3F])
    return str(b, "utf-8")


def rand_char(rnd, clean=False):
    while True:
        lo, hi = pick(rnd, RANGES)
        ch = char(lo + below(rnd, hi - lo + 1))
        if not (clean and forbidden(ch)):
            return ch


def rand_text(rnd, most=6, clean=False):
    parts = []
    for _ in range(below(rnd, most + 1)):
        if rnd.getrandbits(1):
            parts.append(pick(rnd, CLEAN_PIECES if clean else PIECES))
        else:
            parts.append(rand_char(rnd, clean))
    return "".join(parts)


SPOILERS = (0, 10, 13, 31, 127, 128, 133, 159, 0x2028, 0x2029)


def spoil(rnd, text):
    """text with one character that must be refused put in at a random place."""
    i = below(rnd, len(text) + 1)
    bad = pick(rnd, BAD_PIECES) if rnd.getrandbits(1) else char(pick(rnd, SPOILERS))
    return text[:i] + bad + text[i:]


def mailbox_input(name, addr):
    """(what to pass, the display name expected back): unquoted when the name has plain ends,
    else as a quoted-string (without quotes or backslashes inside: how a caller writes it)."""
    if name is None or name == "":
        return addr, None
    b = name.encode()
    simple_ends = 0x21 <= b[0] <= 0x7E and 0x21 <= b[-1] <= 0x7E
    if simple_ends and not (b[0] == 0x22 and b[-1] == 0x22 and len(b) > 1):
        return name + " <" + addr + ">", name
    name = name.replace('"', "").replace("\\", "")
    if not name:
        return addr, None
    return '"' + name + '" <' + addr + ">", name


EXTRA_NAMES = ("X-Test", ".X-Test", "..x-dots", "Comments", "Keywords", "X-Tag", "X-Tag", "x-tag")


def text_case(rnd):
    """(client config, mail, expectations) of a mail whose text fields are random."""
    texts = []  # every text of the mail: all must be clean for it to be accepted
    spoilt = below(rnd, 12) if rnd.getrandbits(1) else -1  # which text gets a refused character

    def t():
        # At most 2000 characters in all: a mail's encoded-words fit MicroPython's test heap.
        s = rand_text(rnd, clean=True)[: max(0, 2000 - sum([len(x) for x in texts]))]
        if len(texts) == spoilt:
            s = spoil(rnd, s)
        texts.append(s)
        return s

    from_name = t()
    from_in, from_exp = mailbox_input(from_name, "sensor@example.com")
    to = []
    for i in range(1 + rnd.getrandbits(1)):
        to.append(mailbox_input(t(), "to%d@example.org" % i))
    cc = [mailbox_input(t(), "cc@example.org")] if rnd.getrandbits(1) else []
    bcc = [mailbox_input(t(), "hidden@example.org")] if rnd.getrandbits(1) else []
    extra = []
    for i in range(below(rnd, 4)):
        extra.append((pick(rnd, EXTRA_NAMES), t()))
    reply = None
    if rnd.getrandbits(1):
        reply = mailbox_input(t(), "reply@example.org")
        extra.append(("Reply-To", reply[0]))
    subject = t()
    mail = base_mail(subject=subject, recipient_address=[x[0] for x in to], cc=[x[0] for x in cc],
                     bcc=[x[0] for x in bcc], headers=extra)
    refuse = False
    for s in texts:
        if forbidden(s):
            refuse = True
    exp = {"subject": subject, "From": [(from_exp, "sensor@example.com")],
           "To": [(n, "to%d@example.org" % i) for i, (x, n) in enumerate(to)],
           "Cc": [(n, "cc@example.org") for x, n in cc], "extra": extra, "refuse": refuse,
           "Reply-To": [(reply[1], "reply@example.org")] if reply else None}
    names = list(BASE_NAMES) + [n for n, v in extra]
    if cc:
        names.append("Cc")
    exp["names"] = sorted(names)
    return {"from_address": from_in}, mail, exp


def check_text_case(srv, chunking, exp, what):
    head, body = header_of(message_of(srv, chunking, what))
    srv.messages = None
    collect()
    check(body == b"x\r\n", (what, body))
    check(head.find(b"hidden@") < 0, (what, "a Bcc address in the header"))
    check_head_lines(head, what)
    fl = fields(head)
    check(sorted([n for n, v in fl]) == exp["names"], (what, [n for n, v in fl], exp["names"]))
    got = {}
    for n, v in fl:
        got.setdefault(n, []).append(v)
    check_text(got["Subject"][0], exp["subject"], (what, "Subject"))
    for n in ("From", "To", "Cc", "Reply-To"):
        if not exp.get(n):
            continue
        boxes = mailboxes(got[n][0])
        check([(nm, a) for nm, a, w in boxes] == exp[n], (what, n, boxes, exp[n]))
        for (nm, a, words), (want, addr) in zip(boxes, exp[n]):
            check_encoded_words(words, (what, n))
            if want is not None and not plain(want):
                for w, enc in words:  # not a quoted-string and not plain words: encoded-words only
                    check(enc, (what, n, "display name not encoded", want, words))
    for name, value in exp["extra"]:
        if name != "Reply-To":
            check_text(got[name].pop(0), value, (what, name))


def test_random_text_fields_read_back_exactly():
    rnd = rng(2047)
    sent = refused = 0
    for case in range(160):
        collect()
        cfg, mail, exp = text_case(rnd)
        chunking = case % 2 == 1
        e, srv = deliver(cfg, mail, EHLO_BDAT if chunking else EHLO_DATA)
        what = (case, cfg, mail)
        if exp["refuse"]:
            check(isinstance(e, ValueError), (what, "not refused"))
            refused += 1
            continue
        check(e is None, (what, e))
        check_text_case(srv, chunking, exp, what)
        sent += 1
    check(sent > 40 and refused > 40, (sent, refused))


def rand_header_name(rnd):
    k = below(rnd, 4)
    if k == 0:
        base = pick(rnd, REFUSED_EXAMPLES + ALLOWED_EXAMPLES)
    elif k == 1:
        base = "X-" + "".join([pick(rnd, NAME_CHARS) for _ in range(below(rnd, 12))])
    elif k == 2:
        base = "".join([pick(rnd, NAME_CHARS) for _ in range(below(rnd, 10))])
    else:
        base = rand_text(rnd, 3)
    if rnd.getrandbits(1):
        base = base.upper() if rnd.getrandbits(1) else base.lower()
    return "." * below(rnd, 3) + base


def test_random_header_names():
    rnd = rng(5322)
    counts = [0, 0]
    for case in range(200):
        collect()
        items = []
        for i in range(1 + below(rnd, 3)):
            name = rand_header_name(rnd)
            key = name.lower()
            while key[:1] == ".":
                key = key[1:]
            if key in ONCE or key == "orig-date":
                name = "X-" + name  # tested on their own above
            items.append((name, "v%d" % i))
        verdicts = [header_name_verdict(n) for n, v in items]
        chunking = case % 2 == 1
        e, srv = deliver({}, base_mail(headers=items), EHLO_BDAT if chunking else EHLO_DATA)
        what = (case, items)
        if False in verdicts:
            check(isinstance(e, ValueError), (what, "not refused"))
            counts[0] += 1
            continue
        if None in verdicts and e is not None:
            check(isinstance(e, ValueError), (what, e))
            continue
        check(e is None, (what, e))
        head, body = header_of(message_of(srv, chunking, what))
        check_head_lines(head, what)
        fl = fields(head)
        check([(n, v) for n, v in fl if n not in BASE_NAMES] == [(n, " " + v) for n, v in items], (what, fl))
        counts[1] += 1
    check(counts[0] > 40 and counts[1] > 40, counts)


BASE_NAMES = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type",
              "Content-Transfer-Encoding", "X-Priority", "Importance")

LOCALS = ("x", "first.last", "o'neil", "a+tag", "A-Z_09", "!#$%&'*+/=?^_`{|}~-", "l" * 64, "l" * 65,
          "j\u00fcrgen", "\u7528\u6237")
LOCAL_PIECES = ("a", ".", "..", " ", "<", ">", "[", "]", "\\", '"', "(", ")", ",", ";", ":", "@", "\r\n",
                "\x00", "\x85", "\u2028", "\u00e9", "=?", "?=", "%", "!", "\t", "-", "x" * 30)
DOMAINS = ("example.com", "x.org", "b" * 63 + ".example", "b" * 64 + ".example", "xn--d1acpjx3f.xn--p1ai",
           "b\u00fccher.de", "-bad.example", "bad-.example", "a..b", "a.", ".a", "a_b.example",
           "d" * 250 + ".com")


def rand_ipv6(rnd):
    groups = ["%x" % rnd.getrandbits(pick(rnd, (0, 4, 16))) for _ in range(8)]
    k = below(rnd, 4)
    if k == 0:
        s = ":".join(groups)
    elif k == 1:  # a run of groups as "::"
        a = below(rnd, 8)
        b = a + 1 + below(rnd, 8 - a)
        s = ":".join(groups[:a]) + "::" + ":".join(groups[b:])
    elif k == 2:  # six groups and an IPv4 tail, or fewer with "::"
        v4 = ".".join([str(rnd.getrandbits(8)) for _ in range(4)])
        if rnd.getrandbits(1):
            s = ":".join(groups[:6]) + ":" + v4
        else:
            a = below(rnd, 5)
            s = ":".join(groups[:a]) + "::" + ":".join(groups[a : a + below(rnd, 5 - a)]) + ":" + v4
            s = s.replace(":::", "::")
    else:
        s = pick(rnd, ("::", "::1", "1::", "fe80::1", "::ffff:192.0.2.1", "1:2:3:4:5:6:7::",
                       "::2:3:4:5:6:7:8", "1:2:3:4:5::192.0.2.1", "::ffff:01.2.3.4"))
    if rnd.getrandbits(2) == 0:  # a slip of the pen
        i = below(rnd, len(s) + 1)
        slip = pick(rnd, (":", "::", "g", ".", "%", "z", " ", "0", "12345", ""))
        s = s[:i] + slip + s[i + rnd.getrandbits(1) :]
    return s


def rand_literal(rnd):
    k = below(rnd, 7)
    if k == 0:
        return pick(rnd, LITERALS_GOOD + LITERALS_BAD)
    if k == 1:  # IPv4 with numbers about the 255 limit, 1 to 4 digits
        nums = []
        for _ in range(pick(rnd, (4, 4, 4, 3, 5))):
            n = pick(rnd, (0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 255, 256, 299, 999, 1000))
            nums.append(("0" * below(rnd, 3) if rnd.getrandbits(2) == 0 else "") + str(n))
        return "[" + ".".join(nums) + "]"
    if k in (2, 3):
        return "[" + pick(rnd, ("IPv6:", "IPv6:", "IPv6:", "ipv6:", "IPV6:", "")) + rand_ipv6(rnd) + "]"
    if k == 4:  # tag:content
        tag = "".join([pick(rnd, LDH + LDH + "_.:[ ") for _ in range(below(rnd, 5))])
        content = "".join([char(0x20 + below(rnd, 0x60)) for _ in range(below(rnd, 6))])
        return "[" + tag + ":" + content + "]"
    if k == 5:
        return "[" + rand_text(rnd, 3) + "]"
    return "[" + "".join([pick(rnd, LOCAL_PIECES) for _ in range(below(rnd, 4))]) + "]"


def rand_address(rnd):
    k = below(rnd, 4)
    if k < 2:
        local = pick(rnd, LOCALS)
    elif k == 2:
        local = "".join([pick(rnd, LOCAL_PIECES) for _ in range(1 + below(rnd, 4))])
    else:
        local = "x" + rand_text(rnd, 2)
    domain = pick(rnd, DOMAINS) if rnd.getrandbits(1) else rand_literal(rnd)
    return local + "@" + domain


def check_address_case(srv, role, addr, what):
    env = envelope(srv)
    mail = env[0]
    check(mail[:11] == b"MAIL FROM:<" and mail[-2:] == b"\r\n", (what, env))
    path = mail[11 : mail.find(b">")]
    params = mail[mail.find(b">") + 1 : -2]
    for p in params.split(b" ")[1:] if params else ():
        check(p[:5] == b"SIZE=" or p in (b"BODY=8BITMIME", b"SMTPUTF8"), (what, mail))
    check(params[:1] in (b"", b" "), (what, mail))
    rcpts = [c[9:-3] for c in env[1:]]
    for c in env[1:]:
        check(c[:9] == b"RCPT TO:<" and c[-3:] == b">\r\n", (what, c))
    for p in [path] + rcpts:
        check(p.find(b" ") < 0 and p.find(b"<") < 0 and p.find(b">") < 0, (what, env))
    want = addr.encode()
    if role == "from":
        check(path == want and rcpts == [b"rcpt@example.com"], (what, env))
    else:
        check(path == b"sensor@example.com" and rcpts == [b"rcpt@example.com", want], (what, env))
    head, body = header_of(message_of(srv, False, what))
    check_head_lines(head, what)
    got = {}
    for n, v in fields(head):
        got[n] = v
    field = {"from": "From", "to": "To", "cc": "Cc", "reply-to": "Reply-To"}.get(role)
    if field is not None:
        boxes = [(nm, a) for nm, a, w in mailboxes(got[field])]
        check(boxes[-1] == ("Sensor" if role == "from" else None, addr), (what, boxes))
    check(role != "bcc" or "Bcc" not in got, what)


def address_mail(role, addr):
    if role == "from":
        return {"from_address": "Sensor <" + addr + ">"}, base_mail()
    if role == "reply-to":
        return {}, base_mail(headers={"Reply-To": addr})
    return {}, base_mail(**{"recipient_address": ["rcpt@example.com"] + ([addr] if role == "to" else []),
                           "cc": [addr] if role == "cc" else [], "bcc": [addr] if role == "bcc" else []})


def test_random_addresses():
    rnd = rng(5321)
    counts = [0, 0]
    for case in range(240):
        collect()
        addr = rand_address(rnd)
        role = pick(rnd, ("from", "to", "cc", "bcc", "reply-to"))
        verdict = address_verdict(addr)
        cfg, mail = address_mail(role, addr)
        e, srv = deliver(cfg, mail)
        what = (case, role, addr)
        if e is not None:
            check(isinstance(e, ValueError) and verdict is not True, (what, e))
            counts[0] += 1
            continue
        check(verdict is not False, (what, "accepted"))
        if role == "reply-to":
            head, body = header_of(message_of(srv, False, what))
            got = dict(fields(head))
            check([(nm, a) for nm, a, w in mailboxes(got["Reply-To"])] == [(None, addr)], (what, got))
        else:
            check_address_case(srv, role, addr, what)
        counts[1] += 1
    check(counts[0] > 60 and counts[1] > 60, counts)


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
            print("FAIL", name, repr(e)[:2000])
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
        collect()
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    run(sys.argv[1:])
