# Random server byte streams against the reply reader and the EHLO parser, on the MicroPython
# unix port (fixed heap) and on CPython. The claim checked: whatever a server sends, mail_send()
# returns a 2xx Reply or raises an SMTPError, the connection is closed afterwards, and the heap
# does not grow from one case to the next. Seeded: the same seed makes the same cases.
# Not a test_* file (the portable runner does not collect it): tests_host/test_fuzz.py runs it.
# Run directly: `micropython -X heapsize=192k -m fuzz_portable [cases] [seed]` from .mpy (this
# module and its generator take ~40 KiB of heap themselves); exit status 1 on any failure.

import gc
import random
import sys

import smtp_duo
from memserver import MemClient, MemServer


class Chopped(MemServer):
    """A MemServer whose reads return sizes[0], sizes[1], ... bytes in turn (0: all available)."""

    def __init__(self, script, sizes):
        MemServer.__init__(self, script, 0, False)
        self.sizes = sizes
        self.reads = 0

    def read_into(self, mv, deadline):
        if self.sizes:
            self.segment = self.sizes[self.reads % len(self.sizes)]
        self.reads += 1
        return MemServer.read_into(self, mv, deadline)


class Flood:
    """A server offering `total` bytes: `head`, then `unit` over and over. The bytes are made as
    they are read (nothing the size of the flood is ever stored); `served` counts what the
    client took. Commands the client writes are ignored."""

    def __init__(self, head, unit, total, segment=0):
        self.head = head
        self.unit = unit
        self.total = total
        self.segment = segment
        # Long enough that any read of up to 1 KiB starting inside the first unit fits.
        self.pattern = memoryview(unit * (1024 // len(unit) + 2))
        self.served = 0
        self.writes = 0
        self.closed = False

    def connect(self):
        self.served = 0
        self.closed = False
        return self

    def read_into(self, mv, deadline):
        n = min(len(mv), self.total - self.served)
        if self.segment:
            n = min(n, self.segment)
        if n <= 0:
            return 0  # the whole flood was taken: the server closes
        pos = self.served
        if pos < len(self.head):
            n = min(n, len(self.head) - pos)
            mv[:n] = self.head[pos : pos + n]
        else:
            off = (pos - len(self.head)) % len(self.unit)
            mv[:n] = self.pattern[off : off + n]
        self.served += n
        return n

    def write(self, mv, deadline):
        self.writes += 1

    def readable(self):
        return self.served < self.total

    def close(self):
        self.closed = True


MIB = 1024 * 1024
# (name, head, unit): each offers 8 MiB that no reply may be built from.
FLOODS = (
    ("no line end", b"", b"x"),
    ("lone CRs", b"", b"\r"),
    ("NULs", b"", b"\x00"),
    ("endless greeting", b"", b"220-flood\r\n"),
    ("endless EHLO reply", b"220 ok\r\n", b"250-flood\r\n"),
    ("endless longest lines", b"220 ok\r\n", b"250-" + b"y" * 1018 + b"\r\n"),
)


LINE_MAX = 1024  # the reader's buffer, the longest line it accepts (smtp_duo._LINE_MAX)
REPLY_LINES_MAX = 100  # lines in one reply (smtp_duo._REPLY_LINES_MAX); const()s: no attributes here


def flood_bound(head, unit):
    # What a bounded reader may take before refusing: 100 lines, plus one buffer read ahead.
    return len(head) + REPLY_LINES_MAX * len(unit) + LINE_MAX


def run_flood(head, unit, total=8 * MIB, segment=0):
    """Offer the flood as the server; return (exception, bytes the client read)."""
    srv = Flood(head, unit, total, segment)
    client = MemClient(srv)
    try:
        client.mail_send("a@x.org", smtp_duo.PRIORITY_NORMAL, "s", "b")
    except Exception as e:  # noqa: BLE001 -- the caller checks which
        return e, srv.served
    return None, srv.served


# -- case generation ------------------------------------------------------------------------------

VERBS = ("greeting", "EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT")
CODES = (b"220", b"221", b"235", b"250", b"251", b"334", b"354", b"421", b"450", b"452", b"500",
         b"501", b"502", b"530", b"535", b"550", b"552", b"554", b"199", b"600", b"000")
SEPS = (b" ", b"-", b"", b"\t", b"=", b"\x00", b"--", b"  ", b"\r", b"\xff")
EOLS = (b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r", b"\x00\r\n", b" \r\n", b"\r\n\r\n")
TEXT_BYTES = b"abcXYZ019 .-=+/\t\x00\r\x7f\x80\xc3\xa9\xff"
SOUP = b"0123456789 -\r\n\x00\xff=aA"
UTF8ISH = (b"\xc3\xa9", b"\xe2\x82", b"\xff\xfe", b"\xf0\x9f\x8c\xa1", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80")
KEYWORDS = (b"AUTH", b"SIZE", b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"STARTTLS", b"CHUNKING",
            b"ENHANCEDSTATUSCODES", b"DSN", b"X-EXPS", b"AUTH=LOGIN")
MECHS = (b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2", b"GSSAPI", b"NTLM", b"=", b"PLAIN=", b"")
SIZE_PARAMS = (b"0", b"10", b"35882577", b"-1", b"+5", b"1e6", b"0x1F", b"\xd9\xa1\xd9\xa2", b"",
               b" 12", b"5 6", b"00", b"\x00", b"18446744073709551617")
EHLO_AUTH = (b"250-mem.test\r\n250-AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2\r\n250-ENHANCEDSTATUSCODES\r\n"
             b"250 SIZE 100000\r\n")
AUTH_TYPES = (smtp_duo.AUTH_AUTO, smtp_duo.AUTH_PLAIN, smtp_duo.AUTH_LOGIN, smtp_duo.AUTH_CRAM_MD5,
              smtp_duo.AUTH_XOAUTH2)
AUTH_STEPS = [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 ok\r\n"]


class Gen:
    """Random server replies from a seeded generator with getrandbits only (all MicroPython has
    everywhere)."""

    def __init__(self, rnd):
        self.rnd = rnd

    def below(self, n):
        return self.rnd.getrandbits(24) % n

    def chance(self, k):
        return self.below(k) == 0

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def size(self, cap):
        # Mostly small, sometimes up to cap.
        return self.below(min(cap, 1 << self.below(13)) + 1)

    def raw(self, n, alphabet=None):
        getrandbits = self.rnd.getrandbits
        b = bytearray(n)  # filled in place: no list of n ints on a small heap
        if alphabet:
            k = len(alphabet)
            for i in range(n):
                b[i] = alphabet[getrandbits(16) % k]
        else:
            for i in range(n):
                b[i] = getrandbits(8)
        return bytes(b)

    def recase(self, b):
        out = bytearray(b)
        for i in range(len(out)):
            if 0x41 <= out[i] <= 0x5A and self.chance(2):
                out[i] += 0x20
        return bytes(out)

    def text(self):
        k = self.below(7)
        if k == 0:
            return b""
        if k == 1:
            return self.raw(self.size(1100))  # anything, LF included
        if k == 2:
            return b"t" * (1010 + self.below(20))  # around the 1024-octet line cap
        if k == 3:
            return b"".join([self.pick(UTF8ISH) for _ in range(1 + self.below(8))])
        return self.raw(self.size(80), TEXT_BYTES)

    def code(self):
        k = self.below(9)
        if k < 6:
            return self.pick(CODES)
        if k == 6:
            return str(self.below(1000)).encode()
        if k == 7:
            return self.raw(self.below(5), b"0123456789 -a\r\n")
        return self.raw(self.below(5))

    def line(self, last, code=None, text=None):
        sep = (b" " if last else b"-") if self.below(4) else self.pick(SEPS)
        eol = b"\r\n" if self.below(3) else self.pick(EOLS)
        return (code or self.code()) + sep + (self.text() if text is None else text) + eol

    def reply(self):
        code = self.pick(CODES) if self.below(3) else None  # one code, or each line its own
        if self.chance(8):
            n = 95 + self.below(10)  # around the 100-line cap, with short texts (small heap)
            return b"".join([self.line(i == n - 1, code, self.raw(self.below(8), TEXT_BYTES))
                             for i in range(n)])
        n = 1 + self.below(5)
        return b"".join([self.line(i == n - 1, code) for i in range(n)])

    def ehlo_line(self):
        k = self.below(9)
        if k == 0:
            return self.raw(self.size(120))
        kw = self.recase(self.pick(KEYWORDS))
        if kw.upper() == b"AUTH":
            mechs = [self.recase(self.pick(MECHS)) for _ in range(self.below(6))]
            return kw + self.pick((b" ", b"=", b"  ", b"\t")) + b" ".join(mechs)
        if kw.upper() == b"SIZE":
            if self.chance(4):
                param = b"9" * self.below(1000)
            elif self.chance(3):
                param = str(self.rnd.getrandbits(30)).encode()
            else:
                param = self.pick(SIZE_PARAMS)
            return kw + self.pick((b" ", b"=", b"", b"\t", b"  ")) + param
        if self.chance(3):
            return kw + b" " + self.raw(self.size(40), TEXT_BYTES)
        return kw

    def ehlo(self):
        lines = [b"mem.test" if self.below(4) else self.text()]
        for _ in range(self.below(9)):
            lines.append(self.ehlo_line())
        n = len(lines)
        out = []
        for i in range(n):
            code = b"250" if self.below(12) else self.code()
            out.append(self.line(i == n - 1, code, lines[i]))
        return b"".join(out)

    def mutate(self, data):
        # Bytes slicing only: MicroPython's bytearray cannot delete or grow by slice.
        for _ in range(1 + self.below(4)):
            k = self.below(5)
            i = self.below(len(data) + 1)
            if k == 0 and i < len(data):
                data = data[:i] + bytes([data[i] ^ (1 << self.below(8))]) + data[i + 1 :]
            elif k == 1:
                data = data[:i] + self.raw(1 + self.below(3), SOUP) + data[i:]
            elif k == 2:
                data = data[:i] + data[i + 1 + self.below(4) :]
            elif k == 3:
                data = data[:i] + data[i : i + self.below(64)] + data[i:]
            else:
                data = data[:i]
        return data

    def valid(self):
        return self.pick((b"250 ok\r\n", b"250-a\r\n250 b\r\n", b"354 go\r\n", b"220 mem.test ESMTP\r\n",
                          b"334 VXNlcm5hbWU6\r\n", EHLO_AUTH, b"421 4.3.2 bye\r\n"))

    def stream(self):
        k = self.below(12)
        if k == 0:
            s = self.raw(self.size(1500))
        elif k == 1:
            s = self.raw(self.size(600), SOUP)
        elif k == 2 or k == 3:
            s = self.ehlo()
        elif k == 4 or k == 5:
            s = self.mutate(self.valid() if self.below(2) else self.reply())
        else:
            s = self.reply()
        if self.chance(6):
            s += self.reply()  # more than one reply at once: the rest is read as the next
        return s

    def value(self):
        k = self.below(16)
        if k == 0:
            return None  # the server closes instead of answering
        if k == 1:
            return b""  # the server never answers
        if k < 5:
            return [self.stream() for _ in range(2 + self.below(2))]
        return self.stream()

    def case(self):
        """(script, read sizes, client options, session?, recipients)"""
        kw = {}
        script = {}
        if self.chance(3):
            kw["username"] = "u"
            kw["allow_insecure_auth"] = True
            kw["authentication_type"] = self.pick(AUTH_TYPES)
            kw["password"] = "p"
            if kw["authentication_type"] == smtp_duo.AUTH_XOAUTH2 and self.chance(2):
                kw["password"] = token
            script["EHLO"] = EHLO_AUTH
            script["AUTH"] = AUTH_STEPS
        elif self.chance(3):
            script["EHLO"] = EHLO_AUTH  # enhanced status codes: replies are split differently
        if self.chance(3):
            kw["debug"] = debug
        for _ in range(1 + self.below(3)):
            script[self.pick(VERBS)] = self.value()
        sizes = [0 if self.chance(4) else 1 + self.size(1100) for _ in range(self.below(5))]
        rcpts = ["a@x.org", "b@x.org", "c@x.org"][: 1 + self.below(3)]
        return script, sizes, kw, self.chance(4), rcpts


def token():
    return "ya29.token"


def debug(direction, line):
    # The transcript must always get text, whatever the server sent.
    if direction not in ("<", ">", "*") or not isinstance(line, str):
        raise AssertionError("debug(%r, %r)" % (direction, line))


# -- checks -----------------------------------------------------------------------------------------


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_error(e):
    check(isinstance(e.status, int), "status %r" % (e.status,))
    check(e.code is None or (isinstance(e.code, int) and 200 <= e.code <= 599), "code %r" % (e.code,))
    check(e.temporary is True or e.temporary is False, "temporary %r" % (e.temporary,))
    check(isinstance(str(e), str) and isinstance(e.message, str), "message")
    check(e.text is None or isinstance(e.text, str), "text %r" % (e.text,))


def check_reply(r):
    check(isinstance(r, smtp_duo.Reply) and 200 <= r.code <= 299, "reply %r" % (r,))
    check(isinstance(r.text, str) and isinstance(str(r), str), "reply text")


def check_state(c):
    check(c._link is None and c._rpos == 0 and c._rend == 0, "still connected")
    check(isinstance(c.size_limit, int) and c.size_limit >= 0, "size_limit %r" % (c.size_limit,))
    for kw in KEYWORDS[:8] + (b"DSN", "pipelining", ""):
        check(isinstance(c.has_extension(kw), bool), "has_extension(%r)" % (kw,))


def run_case(case):
    """Run one case; return the name of the outcome. Anything but SMTPError propagates."""
    script, sizes, kw, session, rcpts = case
    c = MemClient(Chopped(script, sizes), **kw)
    outcome = None
    try:
        if session:
            with c.session() as s:
                for _ in range(2):
                    try:
                        check_reply(s.mail_send(rcpts, smtp_duo.PRIORITY_NORMAL, "s", "line\n.dot\n"))
                        outcome = "Reply"
                    except smtp_duo.SMTPError as e:
                        check_error(e)
                        outcome = type(e).__name__
        else:
            check_reply(c.mail_send(rcpts, smtp_duo.PRIORITY_HIGH, "s", b"caf\xc3\xa9\n"))
            outcome = "Reply"
    except smtp_duo.SMTPError as e:
        check_error(e)
        outcome = type(e).__name__
    check_state(c)
    return outcome


def short(v):
    r = repr(v)
    return r if len(r) <= 400 else r[:400] + "..."


def heap():
    if not hasattr(gc, "mem_alloc"):
        return None  # CPython: no figure, and a full collection per case would cost seconds
    gc.collect()
    return gc.mem_alloc()


def rng(seed):
    # MicroPython's random has no Random class: seed the module instead.
    if hasattr(random, "Random"):
        return random.Random(seed)
    random.seed(seed)
    return random


# -- what one reply line costs ----------------------------------------------------------------------

# (name, reply, command): one long line each, of the kinds that cost the reader most.
PROBES = (
    ("ASCII line", b"250 " + b"x" * 1018 + b"\r\n", "MAIL"),
    ("non-UTF-8 line", b"250 " + b"\xff" * 1018 + b"\r\n", "MAIL"),
    ("NUL line", b"250 " + b"\x00" * 1018 + b"\r\n", "MAIL"),
    ("EHLO keyword line", b"250-mem.test\r\n250 X" + b"x" * 1016 + b"\r\n", "EHLO"),
    ("EHLO line of words", b"250-mem.test\r\n250 X" + b" a" * 508 + b"\r\n", "EHLO"),
    ("EHLO AUTH of words", b"250-mem.test\r\n250 AUTH" + b" a" * 505 + b"\r\n", "EHLO"),
    ("EHLO SIZE of digits", b"250-mem.test\r\n250 SIZE " + b"9" * 1013 + b"\r\n", "EHLO"),
)
COST_MAX = 20 * 1024  # heap bytes one reply line of at most 1 KiB may cost, transcript on


def reply_cost(reply, command, debug_on):
    """Heap bytes allocated while the client reads `reply` (to `command`), counted with the GC
    off: nothing is freed, so this is everything the reader and parser asked for. None where
    the runtime cannot tell (CPython: the host test measures with tracemalloc)."""
    if not hasattr(gc, "mem_alloc"):
        return None
    srv = MemServer()
    c = MemClient(srv, debug=debug if debug_on else None)
    c._link = srv.connect()
    c._run(c._reply("greeting"))
    srv.out = reply
    on_line = c._ehlo_line if command == "EHLO" else None
    gc.collect()
    before = gc.mem_alloc()
    gc.disable()
    try:
        c._run(c._reply(command, None, on_line))
    except MemoryError:
        return "MemoryError"  # more than the heap had free
    finally:
        after = gc.mem_alloc()
        gc.enable()
    return after - before


# -- the run -----------------------------------------------------------------------------------------

WARMUP = 50  # cases before the first heap figure: first imports (errno, os) and interning


def run(cases=3000, seed=20240521, verbose=True):
    gen = Gen(rng(seed))
    failures = 0
    outcomes = {}
    first = low = high = None
    case = None
    for i in range(cases):
        case = None
        # Collected before every case, as a board application would before sending: the
        # generator's garbage would otherwise fragment a small heap under the client.
        h = heap()
        if i == WARMUP:
            first = low = high = h
        elif i > WARMUP and h is not None:
            low = min(low, h)
            high = max(high, h)
        case = gen.case()
        try:
            name = run_case(case)
        except Exception as e:  # noqa: BLE001 -- the finding: anything but SMTPError
            failures += 1
            name = "FAIL"
            if verbose and failures <= 5:
                print("FAIL case %d: %r" % (i, e))
                print("  script=%s sizes=%r options=%r session=%r rcpts=%r" % (
                    short(case[0]), case[1], case[2], case[3], case[4]))
                if hasattr(sys, "print_exception"):
                    sys.print_exception(e)
        outcomes[name] = outcomes.get(name, 0) + 1
    case = None
    last = heap()
    floods = []
    for name, head, unit in FLOODS:
        before = heap()
        e, served = run_flood(head, unit)
        after = heap()
        ok = (isinstance(e, smtp_duo.SMTPProtocolError) and e.status == smtp_duo.OVERSIZE_SERVER_REPLY
              and served <= flood_bound(head, unit))
        if not ok:
            failures += 1
            if verbose:
                print("FAIL flood %s: %r after %d bytes" % (name, e, served))
        floods.append((name, served, before, after))
    costs = []
    for name, reply, command in PROBES:
        costs.append((name, reply_cost(reply, command, False), reply_cost(reply, command, True)))
    return {"cases": cases, "failures": failures, "outcomes": outcomes, "heap_first": first,
            "heap_last": last, "heap_low": low, "heap_high": high, "floods": floods, "costs": costs}


def main(argv):
    cases = int(argv[0]) if argv else 3000
    seed = int(argv[1]) if len(argv) > 1 else 20240521
    r = run(cases, seed)
    print("outcomes: " + ", ".join(["%s=%d" % (k, r["outcomes"][k]) for k in sorted(r["outcomes"])]))
    for name, served, before, after in r["floods"]:
        print("flood: %s: 8 MiB offered, %d read, heap %s/%s" % (name, served, before, after))
    for name, quiet, traced in r["costs"]:
        print("cost: %s: %s/%s" % (name, quiet, traced))
    print("heap range %s..%s" % (r["heap_low"], r["heap_high"]))
    print("fuzz: %d cases, %d failures, heap %s/%s" % (r["cases"], r["failures"], r["heap_first"],
                                                        r["heap_last"]))
    return r


if __name__ == "__main__":
    if main(sys.argv[1:])["failures"]:
        sys.exit(1)
