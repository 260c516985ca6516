# The body's hot path against its definition, on random bodies cut into random windows. What
# the scan decides (the size SIZE and BDAT announce, 8-bit, a NUL or a line over 998 octets)
# and the octets each path writes (text, every line end CRLF and leading dots doubled;
# attachments, base64 in CRLF lines of 76) must be those of a slow, obvious definition here, and
# on MicroPython smtp_duo_fast's native code must give exactly what the bytecode gives: the
# scan's state after every window, the plain text and base64 octets, and whole mails through an
# in-memory server (SIZE, DATA and BDAT). Seeded: the same seed makes the same cases.
# Not a test_* file: tests_host/test_hotpath.py runs it on CPython and on the unix port.
# Run directly: `micropython -m hotpath_portable [cases] [seed]` from .mpy; prints one JSON line.

import binascii
import io
import json
import sys

import smtp_duo
from memserver import MemClient, MemServer, rng

MICROPYTHON = sys.implementation.name == "micropython"
FAST = smtp_duo.native()  # what the library would use here (None on CPython)
REPEAT = 8  # a whole mail's body: up to this many random bodies (a board's test uses fewer)
PARTS = 40  # pieces in a random body


def definition(body):
    """(wire, size, eight, long): plain text as RFC 5321 wants it, one octet at a time."""
    wire = bytearray()
    size = 0
    line = bytearray()
    long = False
    ends = []
    i = 0
    while i <= len(body):
        if i == len(body) or body[i] in (10, 13):
            if i < len(body) or line:
                ends.append(bytes(line))
            if i < len(body) and body[i] == 13 and i + 1 < len(body) and body[i + 1] == 10:
                i += 1
            line = bytearray()
        else:
            line.append(body[i])
        i += 1
    for ln in ends:
        dot = ln[:1] == b"."
        long = long or len(ln) + dot > 998
        wire += (b"." if dot else b"") + ln + b"\r\n"
        size += len(ln) + 2
    eight = False
    for c in body:
        eight = eight or c > 127
        long = long or c == 0
    return bytes(wire), size, eight, long


PIECES = (b"a", b"hello world ", b".", b"..", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n.", b"\r\n.\r\n",
          b"\x00", b"\xc3\xa9", b"\xff", b" ", b"\t", b"=")


def body(rnd):
    parts = []
    for _ in range(rnd.randint(0, PARTS)):
        k = rnd.randint(0, 12)
        if k == 0:  # a line about the 998-octet limit, with or without a leading dot
            parts.append(b"\n" + b"." * rnd.randint(0, 1) + b"x" * rnd.randint(990, 1002))
        elif k == 1:
            parts.append(b"y" * rnd.randint(1, 300))
        else:
            parts.append(PIECES[rnd.randint(0, len(PIECES) - 1)])
    return b"".join(parts)


def cuts(rnd, data):
    """data as a list of chunks cut at random places (some empty)."""
    points = sorted(rnd.randint(0, len(data)) for _ in range(rnd.randint(0, 6)))
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


class Source:
    # A seekable binary file whose reads return at most `most` octets (a slow card, a pipe).
    def __init__(self, data, most):
        self.f = io.BytesIO(data)
        self.most = most

    def readinto(self, b):
        return self.f.readinto(memoryview(b)[: self.most])

    def tell(self):
        return self.f.tell()

    def seek(self, *a):
        return self.f.seek(*a)


def as_source(rnd, data):
    k = rnd.randint(0, 2)
    if k == 0:
        return data
    if k == 1:
        return cuts(rnd, data)
    return Source(data, rnd.randint(1, 300))


class Out:
    # Output's interface over a fixed buffer, drained into `wire` whenever full.
    dots = True
    counting = False
    big = None

    def __init__(self, size):
        self.buf = bytearray(size)
        self.n = self.stuffed = 0
        self.wire = bytearray()

    def put(self, data):
        if self.n + len(data) > len(self.buf):
            raise ValueError("overflow")
        self.buf[self.n : self.n + len(data)] = data
        self.n += len(data)

    def stuff(self):
        self.put(b".")
        self.stuffed += 1

    def full(self):
        return self.n >= len(self.buf) // 2 or self.big

    def flush(self):
        self.wire += self.buf[: self.n]
        if self.big:
            self.wire += self.big
        self.n = 0
        self.big = None
        yield from ()

    def value(self):
        return bytes(self.wire + self.buf[: self.n])


class Spy(smtp_duo.Text):
    # A text part that records its scan's state after every window.
    states = None

    def _scan(self, data, i, j):
        smtp_duo.Text._scan(self, data, i, j)
        Spy.states.append((self.size, self.eight, self.long, self._run, self._cr))


def scan(src, bufsize, fast):
    """The scan with (fast) or without native code: its result, its states, the Text."""
    smtp_duo._F = fast
    Spy.states = []
    t = Spy(src, b"plain", bytearray(bufsize))
    return (t.size, t.eight, t.long), Spy.states, t


def plain(text, fast, window):
    smtp_duo._F = fast
    out = Out(4 * window + 8)  # a window at most doubles; flushed at half full
    for _ in text.feed(smtp_duo._Plain(out), window, out):
        pass
    return out.value(), out.stuffed


def mail(client, server, data_source, attach):
    server.sent = []
    kw = {"message_id": "<1.hot@example.com>", "date": "Mon, 7 Dec 2026 12:00:00 +0000"}
    if attach is not None:
        kw["attachments"] = [("a.bin", attach, "application/octet-stream")]
    client.mail_send("to@example.com", subject="hot", mail_body=data_source, **kw)
    sent = bytes(server.received())
    k = sent.find(b'boundary="')
    if k >= 0:  # a random MIME boundary: the same name in both mails
        k += 10
        sent = sent.replace(sent[k : sent.find(b'"', k)], b"=_boundary")
    return sent


def run(cases=200, seed=1):
    rnd = rng(seed)
    failures = []
    for case in range(cases):
        data = body(rnd)
        want = definition(data)
        bufsize = rnd.randint(16, 600)
        window = rnd.randint(1, 300)
        state = rnd.getrandbits(16)
        results = []
        for fast in [None] + ([FAST] if FAST else []):
            got, states, text = scan(as_source(rng(state), data), bufsize, fast)
            w, stuffed = plain(text, fast, window)
            results.append((got, states, w, stuffed))
            if got != want[1:] or w != want[0] or stuffed != w.count(b"\n..") + w.startswith(b".."):
                failures.append({"case": case, "fast": bool(fast), "len": len(data), "got": list(got),
                                 "want": list(want[1:]), "wire_ok": w == want[0]})
        if len(results) == 2 and results[0] != results[1]:
            failures.append({"case": case, "fast_vs_general": "differ", "len": len(data)})
        rnd = rng(seed + case + 1)  # (MicroPython: as_source's seeding moved the generator)
    failures += run_mails(rnd, max(4, cases // 10))
    failures += run_base64(rnd, max(4, cases // 5))
    smtp_duo._F = FAST
    return {"cases": cases, "seed": seed, "fast": bool(FAST), "failures": failures[:10],
            "failed": len(failures)}


EHLO = {"plain": b"250-mem.test\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 10000000\r\n",
        "chunking": b"250-mem.test\r\n250-8BITMIME\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 10000000\r\n"}


def run_mails(rnd, n):
    """Whole mails through the in-memory server, general and fast: the same octets."""
    failures = []
    for case in range(n):
        data = body(rnd) * rnd.randint(1, REPEAT)
        attach = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 400))) if rnd.randint(0, 2) == 0 else None
        for kind in ("plain", "chunking"):
            server = MemServer({"EHLO": EHLO[kind]})
            client = MemClient(server, buffer_size=rnd.randint(1024, 4096))
            sent = []
            for fast in [None] + ([FAST] if FAST else []):
                smtp_duo._F = fast
                try:
                    sent.append(mail(client, server, data, attach))
                except (ImportError, smtp_duo.SMTPError) as e:  # e.g. long lines: smtp_duo_qp
                    sent.append(repr(e))
            if len(sent) == 2 and sent[0] != sent[1]:
                failures.append({"mail": case, "kind": kind, "fast_vs_general": "differ",
                                 "at": first_difference(sent[0], sent[1])})
    return failures


def first_difference(a, b):
    for k in range(min(len(a), len(b))):
        if a[k] != b[k]:
            return [k, str(a[max(0, k - 60) : k + 20]), str(b[max(0, k - 60) : k + 20])]
    return [min(len(a), len(b)), len(a), len(b)]


def run_base64(rnd, n):
    """Attachment octets: base64 of the source in CRLF lines of 76, general and fast."""
    import smtp_duo_mime

    failures = []
    for case in range(n):
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 3000)))
        want = b"".join(binascii.b2a_base64(data[k : k + 57])[:-1] + b"\r\n" for k in range(0, len(data), 57))
        size = rnd.randint(1024, 4096)
        for fast in [None] + ([FAST] if FAST else []):
            smtp_duo._F = fast
            src = data if rnd.randint(0, 1) else Source(data, rnd.randint(1, 2000))
            part = smtp_duo_mime._Attachment(("a.bin", src), bytearray(size // 2))
            out = Out(size)
            for _ in part.write(out):
                pass
            if out.value() != want:
                failures.append({"base64": case, "fast": bool(fast), "len": len(data)})
    return failures


if __name__ == "__main__" and sys.argv[1:]:
    print(json.dumps(run(*[int(a) for a in sys.argv[1:]])))
