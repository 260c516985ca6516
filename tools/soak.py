"""Soak: thousands of mails from one MicroPython process with a fixed heap, against a real server.

Run: .venv/bin/python tools/soak.py [--mails 5000] [--heap 120k] [--postfix 1000] [-v] [--json]

The requirement: 5,000 mails sent by one MicroPython unix-port process with a fixed GC heap,
single mails (a connection each) and sessions (several mails over one connection) mixed, leave
no growth of the heap after collection, no growth of open file descriptors, and every mail is
delivered.

How it runs: lib/*.py and the soak script below are cross-compiled to .mpy and run by one
`micropython -X heapsize=...` process against an SMTP server on 127.0.0.1: aiosmtpd in this
process (--mails N), and with --postfix N a private Postfix instance from
hostkit/postfix.py (needs root; its relay port, no AUTH). The script decides
everything from the mail number and a deterministic pseudo-random sequence (--seed): a single
mail_send or a `with client.session()` block of 1-8 mails (now and then 20-59); the body kind
(str, bytes, a file, a generator, a list of chunks) and length (see the sizes below); dot lines,
lone "." lines, CRLF and LF line ends, non-ASCII lines (8bit, or quoted-printable for a
generator) and subjects (RFC 2047); the priority. Every `renew` mails the client object itself is
replaced. Each subject carries the mail's number, body kind and line count, so the server side
accounts for every mail and compares every body with the one the script built.

With refusals (aiosmtpd only: Postfix's relay port takes every recipient), before mail i with
i % 97 == 50 the script makes one extra attempt to a recipient the server refuses (550: the
client raises SMTPRecipientsRefused; inside a session the next mail starts with RSET), and mail
i with i % 89 == 7 also has a Cc the server refuses (delivered; reply.refused names it). The
refused attempts are not among the N mails: all N must arrive.

Every `every` mails, between two connections (never inside one), the script counts its open
file descriptors (/proc/self/fd), runs gc.collect() and prints gc.mem_alloc(). The verdicts:
  delivered  all N mails arrived exactly once, to their recipient, with the body the script
             built; no refused attempt arrived and each raised SMTPRecipientsRefused; the
             script met no other error; (aiosmtpd) the server saw as many connections as the
             script opened.
  heap       no growth: the largest sample of the last quarter is at most HEAP_SLACK bytes
             above the largest of the second quarter (the first quarter is warm-up).
  fds        every sample, from the one taken before the first mail, has the same count.

measure() returns the whole result (--json prints a list of them, one a target);
tests_host/test_soak.py runs the tool with --json and asserts its verdicts. measure(...,
leak="heap"|"fds") (--leak) makes the script itself keep a one-block object every 10th mail /
an open file every 50th mail, to show that the verdicts catch a leak that small.
"""

import argparse
import email
import email.header
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import compile_mpy, micropython_path, mpy_cross_cmd  # noqa: E402
from hostkit.ports import free_port  # noqa: E402
from hostkit.postfix import PostfixServer, strip_received  # noqa: E402

# The heap: the large str and bytes bodies (2.0-4.7 KB) need a free block of their size twice
# (the script's buffer, then the str/bytes, or the library's encode() of a str) in a heap the
# import has already fragmented. Measured over 5000 mails: at 96 KiB 6-15 of them fail with
# MemoryError, at 100-104 KiB 0-2 depending on the seed, from 108 KiB none (the heap never
# grew in any of these runs); 112 KiB left a margin. The pipelining/CHUNKING library imports
# about 6 KiB larger (its code), and at 112 KiB 1-2 of 5000 failed the same way: 120 KiB.
DEFAULT_HEAP = "120k"
# Allowed rise of the steady-state heap (largest sample of the last quarter over the largest of
# the second quarter). Measured: every sample after the first mails is the same to the byte
# (5000 mails to aiosmtpd and to Postfix, heaps 96k-160k, seeds 1-6; gc.collect() between two
# connections leaves exactly the same live objects). The slack is room for a stale pointer the
# conservative collector might find on the C stack. The smallest leak the heap can have is one
# block (32 bytes on this 64-bit port): one per 100 mails over the ~2,500 mails between the two
# quarters is 800 bytes, over three times the slack.
HEAP_SLACK = 256
# Body sizes. Most mails are sensor-alert sized: 0-11 lines (at most 445 bytes), so the whole
# message fits the library's 1 KiB output buffer and goes out in one write. One mail in
# BIG_EVERY is large: 60-119 lines (2.0-4.7 KB) held in RAM as str or bytes; 40-99 lines
# (1.3-3.9 KB) as a list of line chunks; 100-249 lines (3.5-9.8 KB) from a generator. File
# bodies are the first FILE_SMALL (548 bytes: two 512-byte reads) or, for a large one, FILE_BIG
# (5,317 bytes) lines of mail 0's body.
# Why few large ones: a message longer than the 1 KiB buffer goes out in several writes, and the
# second waits for the server's delayed ACK (Nagle's algorithm; about 40 ms per mail on Linux
# loopback, against 1-2 ms for a whole small mail), which would make 5000 mails take minutes.
FILE_SMALL = 16
FILE_BIG = 150
BIG_EVERY = 40
REFUSE_EVERY, REFUSE_AT = 97, 50  # the extra refused attempt before mail i
CC_EVERY, CC_AT = 89, 7  # mail i with a refused Cc

# The soak script, run on MicroPython from .mpy (constants prepended by _script()). argv: host
# port mails every file-prefix seed tag refusals(0/1) renew leak(none/heap/fds). Prints
# "S done alloc free fds ms" samples, "E id error" (the first 20 unexpected errors), then
# "D key=value ...". What it sends depends only on the mail number and its own pseudo-random
# sequence, so the host can rebuild each mail's body.
_SOAK_BODY = r'''
import gc
import sys
import time

try:
    import os
except ImportError:
    import uos as os

import smtp_duo

FILL = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KINDS = ("str", "bytes", "file", "gen", "list")
PRIORITIES = (smtp_duo.PRIORITY_LOW, smtp_duo.PRIORITY_NORMAL, smtp_duo.PRIORITY_HIGH)
# counters, printed at the end
NAMES = ("ok", "refused", "partial", "errors", "singles", "sessions", "session_mails",
         "connections", "clients", "longest_session")
OK, REFUSED, PARTIAL, ERRORS, SINGLES, SESSIONS, SESSION_MAILS, CONNS, CLIENTS, LONGEST = range(10)
KEEP = []  # what leak= keeps (the detector's own check)

_x = 1


def rnd():
    global _x
    _x = (_x * 1103515245 + 12345) & 0x7FFFFFFF
    return _x >> 4


def line(i, j):
    # Line j of mail i's body (tools/soak.py's _line() on the host is the same).
    if j % 23 == 10:
        return ".\n"
    s = "%d:%d %s" % (i, j, FILL[: (i * 7 + j * 13) % 61])
    if j % 9 == 4:
        s = "." + s
    if (i + j) % 11 == 6:
        s += " \u00b0C \u00e9t\u00e9"
    return s + ("\r\n" if j % 5 == 2 else "\n")


def body_bytes(i, n):
    # The body in one buffer of its exact size (two passes): a list and join() would need the
    # list's regrown arrays and the joined copy on top.
    size = 0
    for j in range(n):
        size += len(line(i, j).encode())
    b = bytearray(size)
    k = 0
    for j in range(n):
        e = line(i, j).encode()
        b[k : k + len(e)] = e
        k += len(e)
    return b


def lines(i, n):
    out = [None] * n
    for j in range(n):
        out[j] = line(i, j)
    return out


def gen(i, n):
    for j in range(n):
        yield line(i, j)


def fd_count():
    try:
        return len(os.listdir("/proc/self/fd"))
    except (OSError, AttributeError):
        return -1


class Soak:
    def __init__(self, argv):
        self.host = argv[1]
        self.port = int(argv[2])
        self.mails = int(argv[3])
        self.every = int(argv[4])
        self.path = argv[5]
        self.tag = argv[7]
        self.refusals = argv[8] == "1"
        self.renew = int(argv[9])
        self.leak = argv[10]
        self.st = [0] * len(NAMES)
        self.client = None

    def new_client(self):
        self.client = None
        self.client = smtp_duo.SMTPClient(self.host, self.port, timeout=10,
                                          from_address="soak-%s@example.com" % self.tag)
        self.st[CLIENTS] += 1

    def error(self, i, e):
        self.st[ERRORS] += 1
        if self.st[ERRORS] <= 20:
            print("E", i, repr(e))

    def refused_attempt(self, c, i, single):
        if single:
            self.st[CONNS] += 1
        try:
            c.mail_send("refuse%d@example.com" % i, smtp_duo.PRIORITY_NORMAL,
                        "soak %s r%d" % (self.tag, i), "refused\n")
            self.error(i, "the refused recipient was accepted")
        except smtp_duo.SMTPRecipientsRefused:
            self.st[REFUSED] += 1
        except Exception as e:
            self.error(i, e)

    def send(self, c, i, single):
        st = self.st
        if self.refusals and i % REFUSE_EVERY == REFUSE_AT:
            self.refused_attempt(c, i, single)
        r = rnd()
        kind = KINDS[r % 5]
        x = r >> 3
        big = (r >> 9) % BIG_EVERY == 0
        if kind == "file":
            n = FILE_BIG if big else FILE_SMALL
        elif not big:
            n = x % 12
        elif kind == "str" or kind == "bytes":
            n = 60 + x % 60
        elif kind == "list":
            n = 40 + x % 60
        else:
            n = 100 + x % 150
        cc = ()
        partial = self.refusals and i % CC_EVERY == CC_AT
        if partial:
            cc = "refuse%d@example.com" % i
        subject = "soak %s %d %s %d" % (self.tag, i, kind, n)
        if i % 13 == 5:
            subject += " \u00b0C \u00e9t\u00e9"
        f = None
        try:
            if kind == "str":
                body = str(body_bytes(i, n), "utf-8")
            elif kind == "bytes":
                body = bytes(body_bytes(i, n))
            elif kind == "list":
                body = lines(i, n)
            elif kind == "gen":
                body = gen(i, n)
            else:
                f = open(self.path + ("big" if big else "small"), "rb")
                body = f
            reply = c.mail_send("soak%d@example.com" % i, PRIORITIES[i % 3], subject, body, cc)
            if reply.code != 250 or len(reply.refused) != (1 if partial else 0):
                self.error(i, "unexpected reply %r, refused %r" % (reply, reply.refused))
            else:
                st[OK] += 1
                if partial:
                    st[PARTIAL] += 1
                if self.leak == "heap" and i % 10 == 0:
                    KEEP.append((i,))  # one 32-byte block (64-bit), plus KEEP's growth
        except Exception as e:
            self.error(i, e)
        finally:
            if f is not None:
                f.close()
        if self.leak == "fds" and i % 50 == 0:
            KEEP.append(open(self.path + "small", "rb"))

    def unit(self, i):
        # One connection: a single mail_send, or a session of several. Returns mails done.
        st = self.st
        r = rnd()
        st[CONNS] += 1
        if r % 3 == 0:
            st[SINGLES] += 1
            self.send(self.client, i, True)
            return 1
        n = 1 + (r >> 2) % 8
        if (r >> 5) % 19 == 0:
            n = 20 + (r >> 2) % 40
        n = min(n, self.mails - i + 1)
        st[SESSIONS] += 1
        st[SESSION_MAILS] += n
        st[LONGEST] = max(st[LONGEST], n)
        try:
            with self.client.session() as s:
                for k in range(n):
                    self.send(s, i + k, False)
        except Exception as e:  # opening or closing the session
            self.error(i, e)
        return n

    def sample(self, done, t0):
        fds = fd_count()
        gc.collect()
        alloc = gc.mem_alloc()
        free = gc.mem_free()
        print("S", done, alloc, free, fds, time.ticks_diff(time.ticks_ms(), t0))

    def run(self):
        for name, n in (("small", FILE_SMALL), ("big", FILE_BIG)):
            with open(self.path + name, "wb") as f:
                for j in range(n):
                    f.write(line(0, j).encode())
        self.new_client()
        t0 = time.ticks_ms()
        self.sample(0, t0)
        i = 1
        next_sample = self.every
        next_renew = self.renew
        while i <= self.mails:
            i += self.unit(i)
            done = i - 1
            if self.renew and done >= next_renew:
                self.new_client()
                while next_renew <= done:
                    next_renew += self.renew
            if done >= next_sample or done == self.mails:
                self.sample(done, t0)
                while next_sample <= done:
                    next_sample += self.every
        print("D " + " ".join(["%s=%d" % (NAMES[k], self.st[k]) for k in range(len(NAMES))]))


def main():
    global _x
    _x = int(sys.argv[6]) & 0x7FFFFFFF
    Soak(sys.argv).run()


main()
'''


def _script():
    consts = dict(FILE_SMALL=FILE_SMALL, FILE_BIG=FILE_BIG, BIG_EVERY=BIG_EVERY, REFUSE_EVERY=REFUSE_EVERY,
                  REFUSE_AT=REFUSE_AT, CC_EVERY=CC_EVERY, CC_AT=CC_AT)
    return "".join("%s = %d\n" % kv for kv in consts.items()) + _SOAK_BODY


# -- what the host expects (the same rules as the script) ---------------------------------------

_FILL = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _line(i, j):
    if j % 23 == 10:
        return ".\n"
    s = "%d:%d %s" % (i, j, _FILL[: (i * 7 + j * 13) % 61])
    if j % 9 == 4:
        s = "." + s
    if (i + j) % 11 == 6:
        s += " \u00b0C \u00e9t\u00e9"
    return s + ("\r\n" if j % 5 == 2 else "\n")


def expected_body(i, n):
    """Mail i's body of n lines as text with LF line ends (a file body is mail 0's)."""
    return "".join(_line(i, j) for j in range(n)).replace("\r\n", "\n")


def refused_attempts(mails, refusals):
    return sum(1 for i in range(1, mails + 1) if i % REFUSE_EVERY == REFUSE_AT) if refusals else 0


def refused_ccs(mails, refusals):
    return sum(1 for i in range(1, mails + 1) if i % CC_EVERY == CC_AT) if refusals else 0


# -- the servers -----------------------------------------------------------------------------


class _Handler:
    """aiosmtpd handler: refuses recipients starting with "refuse", keeps every message (sender,
    recipients, raw bytes) and counts EHLOs, one per connection."""

    def __init__(self):
        self.messages = []
        self.connections = 0
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 <%s>: refused by the soak server" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK: queued"


class AiosmtpdTarget:
    name = "aiosmtpd"

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.handler = _Handler()
        self.port = free_port()
        # server_hostname: no getfqdn() (a DNS lookup) for the greeting.
        self.ctl = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                              server_hostname="soak.test", enable_SMTPUTF8=True,
                              data_size_limit=2 ** 24)
        self.ctl.start()

    def collect(self, sender, expected, timeout):
        # aiosmtpd keeps a message before it replies 250: all is here when the client is done.
        with self.handler.lock:
            return [(r, data) for s, r, data in self.handler.messages if s == sender]

    @property
    def connections(self):
        return self.handler.connections

    def stop(self):
        self.ctl.stop()


class PostfixTarget:
    """A started PostfixServer (hostkit/postfix.py): mails go to its relay port."""

    name = "postfix"
    connections = None  # not counted

    def __init__(self, server):
        self.server = server
        self.port = server.relay_port

    def collect(self, sender, expected, timeout):
        deadline = time.monotonic() + timeout
        while True:
            n = sum(1 for m in self.server.messages() if m["sender"] == sender)
            if n >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # messages(count=1) returns once the queue is idle: late duplicates would be there too.
        msgs = self.server.messages(count=1, timeout=max(1.0, deadline - time.monotonic()))
        return [(m["recipients"], strip_received(m["data"])) for m in msgs if m["sender"] == sender]

    def stop(self):
        pass


# -- checking what arrived ---------------------------------------------------------------------


def check_delivery(messages, tag, mails):
    """Account for every mail in `messages` [(recipients, raw bytes)] from this run's sender.
    Returns counts and (first 20) mail numbers: missing, duplicates, refused_delivered (a
    refused attempt that arrived), bad_body, bad_rcpt, unparsed (no "soak <tag> <n> <kind>
    <lines>" subject)."""
    seen = {}
    found = {k: [] for k in ("refused_delivered", "bad_body", "bad_rcpt", "unparsed", "out_of_range")}
    key = "soak %s " % tag
    for rcpts, data in messages:
        msg = email.message_from_bytes(data)
        subject = str(email.header.make_header(email.header.decode_header(msg.get("Subject", ""))))
        words = subject.split()
        if not subject.startswith(key) or len(words) < 3:
            found["unparsed"].append(subject[:60])
            continue
        if words[2].startswith("r"):
            found["refused_delivered"].append(words[2])
            continue
        try:
            i, kind, n = int(words[2]), words[3], int(words[4])
        except (ValueError, IndexError):
            found["unparsed"].append(subject[:60])
            continue
        seen[i] = seen.get(i, 0) + 1
        if not 1 <= i <= mails:
            found["out_of_range"].append(i)
            continue
        if sorted(rcpts) != ["soak%d@example.com" % i]:
            found["bad_rcpt"].append(i)
        payload = msg.get_payload(decode=True) or b""
        got = payload.decode("utf-8", "replace").replace("\r\n", "\n")
        if got != expected_body(0 if kind == "file" else i, n):
            found["bad_body"].append(i)
    found["missing"] = [i for i in range(1, mails + 1) if i not in seen]
    found["duplicates"] = [i for i, k in sorted(seen.items()) if k > 1]
    out = {"expected": mails, "delivered": sum(1 for i in range(1, mails + 1) if i in seen),
           "messages": len(messages)}
    for k, v in found.items():
        out[k] = v[:20]
        out[k + "_count"] = len(v)
    return out


# -- the verdicts ------------------------------------------------------------------------------


def _quarters(samples):
    """The samples after the one taken before the first mail, in four consecutive parts."""
    rest = samples[1:]
    q = len(rest) // 4
    if q == 0:
        return None
    return rest[:q], rest[q:2 * q], rest[2 * q:3 * q], rest[3 * q:]


def _slope(samples):
    """Least-squares slope of the heap over mails after warm-up, in bytes per 1000 mails."""
    qs = _quarters(samples)
    if not qs:
        return None
    pts = [(s["done"], s["alloc"]) for s in qs[1] + qs[2] + qs[3]]
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return None if not var else 1000 * sum((p[0] - mx) * (p[1] - my) for p in pts) / var


def verdicts(r, slack=HEAP_SLACK):
    d, script = r["delivery"], r["script"]
    problems = []
    if r["returncode"] != 0:
        problems.append("micropython exited with %s: %s" % (r["returncode"], r["output_tail"][-300:]))
    if not script:
        problems.append("the script did not finish (no D line)")
    elif script["errors"]:
        problems.append("%d unexpected error(s) in the script, first: %s"
                        % (script["errors"], r["errors"][:3]))
    for k in ("missing", "duplicates", "refused_delivered", "bad_body", "bad_rcpt", "unparsed",
              "out_of_range"):
        if d[k + "_count"]:
            problems.append("%s: %d %s" % (k, d[k + "_count"], d[k]))
    want = (r["mails"], r["refused_expected"], r["partial_expected"])
    got = tuple(script.get(k) for k in ("ok", "refused", "partial"))
    if script and got != want:
        problems.append("script counted ok/refused/partial %s, expected %s" % (got, want))
    if r["server_connections"] is not None and r["server_connections"] != r["connections"]:
        problems.append("server saw %d connections, the script opened %d"
                        % (r["server_connections"], r["connections"]))
    out = [{"name": "delivered", "ok": not problems and d["delivered"] == d["expected"],
            "value": "%d of %d mails delivered exactly once, bodies intact; %d refused attempts "
                     "refused" % (d["delivered"], d["expected"], script.get("refused", 0)),
            "problems": problems}]

    h = r["heap"]
    if h["max_q2"] is None:
        out.append({"name": "heap", "ok": False, "value": "too few samples (%d)" % len(r["samples"]),
                    "problems": []})
    else:
        growth = h["max_q4"] - h["max_q2"]
        out.append({"name": "heap", "ok": growth <= slack, "growth": growth, "slack": slack,
                    "value": "max of last quarter - max of second quarter = %+d bytes (slack %d)"
                             % (growth, slack), "problems": []})
    fds = [s["fds"] for s in r["samples"]]
    out.append({"name": "fds", "ok": bool(fds) and fds[0] >= 0 and all(f == fds[0] for f in fds),
                "value": "%d samples: first %s, min %s, max %s, last %s"
                         % (len(fds), fds[0] if fds else None, min(fds, default=None),
                            max(fds, default=None), fds[-1] if fds else None), "problems": []})
    return out


# -- the run ---------------------------------------------------------------------------------


def measure(mails=5000, heap=DEFAULT_HEAP, every=50, seed=1, refusals=True, renew=1000,
            micropython=None, mpy_cross=None, postfix=None, timeout=None, lib_dir=None,
            leak="none", verbose=False, slack=HEAP_SLACK):
    """Run the soak and check it.

    postfix: a started PostfixServer to send to (refusals are then off); None: aiosmtpd in this
    process. every: samples are taken every this many mails (fewer mails than 8 * every: about
    20 samples). timeout: for the MicroPython process (default: 60 s or 0.1 s a mail, whichever
    is more). lib_dir: the library's .py files (default: lib/ of this checkout). leak: "heap" or
    "fds" makes the script leak on purpose (see the module docstring).

    Returns a dict: mails, heap_size, target, seconds (all of it), run_seconds (the script, first
    to last sample), rate (mails/s), samples [{done, alloc, free, fds, ms}], heap {first (before
    the first mail), warm (first of the second quarter), max, last, max_q2, max_q4, spread (after
    warm-up), slope_per_1000, total, min_free}, script (its counters), connections,
    server_connections, delivery (check_delivery()), errors, returncode, output_tail, verdicts
    [{name, ok, value, problems}], ok."""
    t0 = time.monotonic()
    micropython = micropython or micropython_path()
    if micropython is None:
        raise FileNotFoundError("MicroPython unix port not found (run tools/setup.sh)")
    mpy_cross = list(mpy_cross or mpy_cross_cmd())
    if postfix is not None:
        refusals = False
    if mails < 8 * every:
        every = max(1, mails // 20)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    tag = os.urandom(4).hex()
    sender = "soak-%s@example.com" % tag
    work = Path(tempfile.mkdtemp(prefix="smtp_duo_soak_"))
    target = None
    try:
        for src in sorted(Path(lib_dir or ROOT / "lib").glob("*.py")):
            compile_mpy(src, work / (src.stem + ".mpy"), cmd=mpy_cross)
        (work / "soak_run.py").write_text(_script(), encoding="utf-8")
        compile_mpy(work / "soak_run.py", work / "soak_run.mpy", cmd=mpy_cross)
        (work / "soak_run.py").unlink()  # only .mpy on the path
        target = AiosmtpdTarget() if postfix is None else PostfixTarget(postfix)
        args = [str(micropython), "-X", "heapsize=%s" % heap, "-m", "soak_run", "127.0.0.1",
                str(target.port), str(mails), str(every), str(work / "body_"), str(seed), tag,
                "1" if refusals else "0", str(renew), leak]
        env = dict(os.environ, MICROPYPATH=str(work))
        samples, errors, script, other = [], [], {}, []
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, cwd=str(work))
        killer = threading.Timer(timeout or max(60, mails * 0.1), p.kill)
        killer.start()
        try:
            for raw in p.stdout:
                w = raw.split()
                if w and w[0] == "S" and len(w) == 6:
                    s = dict(zip(("done", "alloc", "free", "fds", "ms"), map(int, w[1:])))
                    samples.append(s)
                    log("  %5d mails  heap %6d  fds %d  %6.1f s"
                        % (s["done"], s["alloc"], s["fds"], s["ms"] / 1000))
                elif w and w[0] == "E":
                    errors.append(raw.strip()[2:])
                    log("  error: " + raw.strip()[2:])
                elif w and w[0] == "D":
                    script = {k: int(v) for k, v in (x.split("=") for x in w[1:])}
                else:
                    other.append(raw)  # a traceback
            rc = p.wait()
        finally:
            killer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
        t_run = time.monotonic()
        messages = target.collect(sender, mails, timeout=max(30, mails * 0.02))
        collect_seconds = time.monotonic() - t_run
        delivery = check_delivery(messages, tag, mails)
        server_connections = target.connections
        target_name = target.name
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(work, ignore_errors=True)

    qs = _quarters(samples)
    allocs = [s["alloc"] for s in samples]
    warm = [s["alloc"] for s in qs[1] + qs[2] + qs[3]] if qs else []
    heap_summary = {
        "first": allocs[0] if allocs else None,
        "warm": qs[1][0]["alloc"] if qs else None,
        "max": max(allocs, default=None),
        "last": allocs[-1] if allocs else None,
        "max_q2": max(s["alloc"] for s in qs[1]) if qs else None,
        "max_q4": max(s["alloc"] for s in qs[3]) if qs else None,
        "spread": max(warm) - min(warm) if warm else None,
        "slope_per_1000": _slope(samples),
        "total": samples[0]["alloc"] + samples[0]["free"] if samples else None,
        "min_free": min((s["free"] for s in samples), default=None),
    }
    run_ms = samples[-1]["ms"] if len(samples) > 1 else None
    r = {
        "mails": mails,
        "heap_size": heap,
        "target": target_name,
        "refusals": refusals,
        "refused_expected": refused_attempts(mails, refusals),
        "partial_expected": refused_ccs(mails, refusals),
        "every": every,
        "seed": seed,
        "leak": leak,
        "seconds": time.monotonic() - t0,
        "run_seconds": None if run_ms is None else run_ms / 1000,
        "collect_seconds": collect_seconds,
        "rate": samples[-1]["done"] * 1000 / run_ms if run_ms else None,
        "samples": samples,
        "heap": heap_summary,
        "script": script,
        "connections": script.get("connections", 0),
        "server_connections": server_connections,
        "delivery": delivery,
        "errors": errors,
        "returncode": rc,
        "output_tail": "".join(other)[-2000:],
    }
    r["verdicts"] = verdicts(r, slack)
    r["ok"] = all(v["ok"] for v in r["verdicts"])
    return r


# -- report ------------------------------------------------------------------------------------


def report(r, out=sys.stdout):
    def p(line=""):
        print(line.rstrip(), file=out)

    s, h, d = r["script"], r["heap"], r["delivery"]
    p("smtp_duo soak: %d mails from one MicroPython unix-port process, -X heapsize=%s, to %s%s"
      % (r["mails"], r["heap_size"], r["target"], "" if r["leak"] == "none" else
         " (leaking on purpose: %s)" % r["leak"]))
    p("time: %.1f s sending (%.0f mails/s), %.1f s until all had arrived, %.1f s in all"
      % (r["run_seconds"] or 0, r["rate"] or 0, r["collect_seconds"], r["seconds"]))
    p("connections: %d (%d single mails, %d sessions with %d mails, longest %d%s); clients: %d"
      % (r["connections"], s.get("singles", 0), s.get("sessions", 0), s.get("session_mails", 0),
         s.get("longest_session", 0), "" if r["server_connections"] is None else
         "; the server saw %d" % r["server_connections"], s.get("clients", 0)))
    p("mails: %d of %d delivered; refused attempts %d (expected %d); refused Cc %d (expected %d); "
      "script errors %s" % (d["delivered"], d["expected"], s.get("refused", 0), r["refused_expected"],
                            s.get("partial", 0), r["partial_expected"], s.get("errors", "?")))
    if h["warm"] is not None:
        p("heap (gc.mem_alloc() after gc.collect(), of %d): before the first mail %d, after warm-up "
          "%d, max %d, last %d; after warm-up spread %d, slope %+.1f bytes/1000 mails; least free %d"
          % (h["total"], h["first"], h["warm"], h["max"], h["last"], h["spread"],
             h["slope_per_1000"] or 0, h["min_free"]))
    samples = r["samples"]
    step = max(1, len(samples) // 10)
    p("samples every %d mails (%d; mails:heap/fds%s): " % (
        r["every"], len(samples), "" if step == 1 else ", one in %d shown" % step) + ", ".join(
        "%d:%d/%d" % (x["done"], x["alloc"], x["fds"]) for x in samples[::step]))
    for e in r["errors"][:5]:
        p("error: " + e)
    for v in r["verdicts"]:
        p("%-4s %-9s %s" % ("PASS" if v["ok"] else "FAIL", v["name"], v["value"]))
        for prob in v["problems"]:
            p("          " + prob)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=5000, help="mails to aiosmtpd (0: none)")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help="MicroPython's fixed GC heap (default %s)"
                    % DEFAULT_HEAP)
    ap.add_argument("--every", type=int, default=50, help="sample heap and fds every N mails")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--renew", type=int, default=1000, help="replace the client every N mails (0: never)")
    ap.add_argument("--no-refusals", action="store_true", help="no refused recipients")
    ap.add_argument("--postfix", type=int, default=0, metavar="N",
                    help="also N mails to a private Postfix (needs root and Postfix)")
    ap.add_argument("--leak", choices=["none", "heap", "fds"], default="none",
                    help="leak on purpose in the script, to see the verdicts fail")
    ap.add_argument("--json", action="store_true",
                    help="print the results as one JSON list (the reports go to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the samples as they come")
    a = ap.parse_args(argv)
    kw = dict(heap=a.heap, every=a.every, seed=a.seed, renew=a.renew, leak=a.leak, verbose=a.verbose)
    results = []
    if a.mails:
        results.append(measure(a.mails, refusals=not a.no_refusals, **kw))
    if a.postfix:
        with PostfixServer() as srv:
            results.append(measure(a.postfix, postfix=srv, **kw))
    for r in results:
        report(r, sys.stderr if a.json else sys.stdout)
        print(file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
