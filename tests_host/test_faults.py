"""The fault matrix: every step of a session against every fault a server or network can produce,
for the blocking client and the asyncio client, each on CPython and on the MicroPython unix port.

Steps: connect, TLS (the implicit-TLS handshake right after connecting), greeting, EHLO,
STARTTLS (the handshake after the server's 220 to STARTTLS), AUTH, MAIL, RCPT, DATA (the reply to
the DATA command), body (while the client streams a multi-MiB file), final (the reply to the end
of data), QUIT. The TLS rows use the run's test PKI, the client verifying with the CA as DER.
Faults:
    reset     the server resets the connection (RST) after half of its normal reply; at connect
              right after accepting; in the body after reading 64 KiB of it; in a handshake
              after reading the ClientHello
    close     the server closes (FIN) after half of its normal reply and waits for the client
              to close too; at connect: refused (nothing listening); in the body FIN after
              64 KiB, the server reading on (the client finds the end at the final reply); in a
              handshake FIN after the ClientHello
    silence   the server says nothing (keeps reading); at connect: the listener's backlog is full,
              so the connection is never accepted; in the body the server stops reading, so the
              TCP window fills and the client's write must time out
    drip      the normal reply, one byte every 0.5 s (never finished within the timeout: each reply,
              like each handshake, has the timeout in total, not per read); in a handshake a TLS
              record header announcing 16 KiB (16 03 03 40 00), then one byte every 0.5 s; in the
              body the server reads one byte every 0.5 s (the window never reopens)
    4xx, 5xx  a temporary / permanent refusal (the codes are in CODES); in the body it comes early,
              while the client is still sending, and the client reads it after the end of data;
              in the STARTTLS row the reply to STARTTLS instead of 220
    garbage   a line that is not a reply; in a handshake that line instead of the ServerHello
    split     the normal reply, one byte per TCP segment
    overlong  the normal reply code with a 2000-octet line (the client's cap is 1024)

Every cell checks, for each client on each runtime: the outcome (the exception's type,
.temporary, status and command; or success where the fault is harmless: split replies and
anything at QUIT, the mail being accepted by then), that mail_send returned within timeout + 1 s
(measured in the client's process; for the body, from the end of the last write the server
took, so scanning the file and filling the TCP buffers with it do not count: the asyncio client
on MicroPython needs about a second for those 4 MiB), that the client's socket is closed (the server sees the client close where the
server still has its end; the process's open file descriptors are back to their number before
it exits; on CPython the client's sockets are closed and no ResourceWarning came), that after a
failed handshake nothing more was sent (no command in clear), and, on MicroPython, that
gc.mem_alloc() after gc.collect() is back within HEAP_SLACK of where it was.

Each cell is one process (faultjob.py) talking to its own scripted server; the selected cells run
side by side, WORKERS at a time (most of them wait out a 2 s timeout), the first cell's test
running them all. The matrices are printed at the end of the module (shown with -s and without).
"""

import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import DEFAULT_HEAP, HERE, ROOT, require
from hostkit.mpy import compile_all, micropython_path
from fakeserver import CLOSE, DEFAULTS, SILENT, FakeServer, Segments

import smtp_duo

TIMEOUT = 2  # the client's timeout (seconds)
LIMIT_MS = (TIMEOUT + 1) * 1000  # every call returns within this
# Measured: under this harness every cell leaves gc.mem_alloc() 128 octets higher, the same for
# a refused connect (where the library hardly runs) as for a 6 MiB body; the same job run again
# in one interpreter leaves 0, and run from a script instead of `-m faultjob` 0 from the first
# run: layout noise of the conservative collector, not growth per mail. 256 still catches a
# client buffer (512 or 1024 octets) kept per mail.
HEAP_SLACK = 256
# The asyncio client on MicroPython after a failed handshake: a 4 KiB block stays reachable now
# and then (measured: 8 failed handshakes in one process leave +0.2, +4.5, +4.5, +4.5, +4.5,
# +4.5, +0.4, +0.4 KiB from the start, never more; the blocking client +0.3 throughout): held by
# the conservative collector, not kept per mail.
HEAP_SLACK_ASYNC_TLS = 4096 + HEAP_SLACK
BODY_FAULT_AT = 64 * 1024  # body octets the server reads before its fault
SERVER_RCVBUF = 64 * 1024  # fixed receive buffer in the body cells (no autotuning)
DRIP_PAUSE = 0.5  # seconds between the octets of a drip
TLS_RECORD_HEAD = bytes.fromhex("1603034000")  # a handshake record of 16 KiB, to be dripped
WORKERS = int(os.environ.get("SMTP_DUO_FAULT_WORKERS", "10"))  # cells at a time
HEAVY = 1  # body cells (CPU: a 6 MiB file scanned and sent) at a time, so timings stay honest

FLAVOURS = ["cpython", "micropython", "cpython-async", "micropython-async"]
STEPS = ["connect", "TLS", "greeting", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "body",
         "final", "QUIT"]
FAULTS = ["reset", "close", "silence", "drip", "4xx", "5xx", "garbage", "split", "overlong"]
HANDSHAKES = ("TLS", "STARTTLS")

EHLO = b"250-fake.test\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"
EHLO_STARTTLS = b"250-fake.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
NORMAL = {  # the server's normal reply at each step
    "greeting": DEFAULTS["greeting"], "EHLO": EHLO, "AUTH": b"235 2.7.0 accepted\r\n",
    "MAIL": DEFAULTS["MAIL"], "RCPT": DEFAULTS["RCPT"], "DATA": DEFAULTS["DATA"],
    "final": DEFAULTS["DOT"], "QUIT": DEFAULTS["QUIT"],
}
VERB = {"greeting": "greeting", "EHLO": "EHLO", "AUTH": "AUTH", "MAIL": "MAIL", "RCPT": "RCPT",
        "DATA": "DATA", "final": "DOT", "QUIT": "QUIT"}  # FakeServer script keys
CODES = {  # (4xx, 5xx) at each step
    "greeting": (b"421 4.3.2 busy, try later\r\n", b"554 5.3.2 no service here\r\n"),
    "EHLO": (b"421 4.3.2 shutting down\r\n", b"554 5.7.1 not welcome\r\n"),
    "STARTTLS": (b"454 4.7.0 TLS not available\r\n", b"501 5.5.4 syntax error\r\n"),
    "AUTH": (b"454 4.7.0 temporary authentication failure\r\n", b"535 5.7.8 credentials invalid\r\n"),
    "MAIL": (b"451 4.3.0 try again later\r\n", b"550 5.7.1 sender rejected\r\n"),
    "RCPT": (b"450 4.2.1 mailbox busy\r\n", b"550 5.1.1 no such user\r\n"),
    "DATA": (b"451 4.3.0 try again later\r\n", b"554 5.5.1 no valid recipients\r\n"),
    "body": (b"452 4.3.1 insufficient storage\r\n", b"552 5.3.4 message too big\r\n"),
    "final": (b"451 4.3.0 queue file write error\r\n", b"554 5.6.0 content rejected\r\n"),
    "QUIT": (b"421 4.3.2 closing\r\n", b"500 5.5.1 what?\r\n"),
}
GARBAGE = b"\x00\xfe\xff garbage \x1b[0m\r\n"


def overlong(step):
    return NORMAL["EHLO" if step == "body" else step][:3] + b" " + b"x" * 2000 + b"\r\n"


NA = {}  # (step, fault) -> why the cell makes no sense
for _f in ("drip", "4xx", "5xx", "garbage", "split", "overlong"):
    NA[("connect", _f)] = "nothing is read at connect: the server's first bytes are the greeting row"
NA[("body", "split")] = "the server says nothing while the body is sent: a split final reply is final/split"
for _s in HANDSHAKES:
    NA[(_s, "overlong")] = "a handshake has no reply lines; an over-long TLS record is a drip's header"
    NA[(_s, "split")] = "a whole handshake split is success (test_tls.py covers successful handshakes)"
NA[("TLS", "4xx")] = NA[("TLS", "5xx")] = "no SMTP reply before an implicit-TLS handshake"

# What each cell must give: None for success, else (exception type, temporary, status, command).
REFUSAL = {  # a 4xx / 5xx reply at a step
    "greeting": ("SMTPError", smtp_duo.GREET_REPLY_ERROR, "greeting"),
    "EHLO": ("SMTPError", smtp_duo.HELLO_REPLY_ERROR, "EHLO"),
    "STARTTLS": ("SMTPTLSError", smtp_duo.TLS_ERROR, "STARTTLS"),
    "AUTH": ("SMTPAuthenticationError", smtp_duo.AUTH_REPLY_ERROR, "AUTH"),
    "MAIL": ("SMTPError", smtp_duo.MAIL_REPLY_ERROR, "MAIL"),
    "RCPT": ("SMTPRecipientsRefused", smtp_duo.RCPT_REPLY_ERROR, "RCPT"),
    "DATA": ("SMTPError", smtp_duo.DATA_REPLY_ERROR, "DATA"),
    "body": ("SMTPError", smtp_duo.MESSAGE_REPLY_ERROR, "DATA"),
    "final": ("SMTPError", smtp_duo.MESSAGE_REPLY_ERROR, "DATA"),
}
COMMAND = {"connect": "connect", "body": "DATA", "final": "DATA"}


def expected(step, fault):
    if step == "QUIT" or fault == "split":
        return None  # the mail was accepted before QUIT; a split reply is still a reply
    command = COMMAND.get(step, step)
    if step in HANDSHAKES and fault not in ("4xx", "5xx"):
        # Every handshake failure is an SMTPTLSError; a timeout (silence, drip) asks whether it
        # is a TLS port and is temporary; a server not speaking TLS is permanent.
        return ("SMTPTLSError", fault != "garbage", smtp_duo.TLS_ERROR, "TLS")
    if step == "connect":
        if fault == "reset":  # accepted, then reset: the client's connect() itself may see the
            # RST (CPython's connect with a timeout polls, then reads SO_ERROR, and the server
            # thread may have reset by then) or the read of the greeting does
            return ("SMTPConnectionError", True, smtp_duo.NOT_CONNECTED, ("connect", "greeting"))
        if fault == "close":  # refused
            return ("SMTPConnectionError", True, smtp_duo.NOT_CONNECTED, "connect")
        return ("SMTPTimeoutError", True, smtp_duo.NO_PACKET, "connect")
    if fault == "reset" and step == "greeting":  # the same race as connect/reset
        return ("SMTPConnectionError", True, smtp_duo.NOT_CONNECTED, ("connect", "greeting"))
    if fault == "reset" and step == "body":  # the client's write fails
        return ("SMTPConnectionError", True, smtp_duo.TRANSMIT_ERROR, command)
    if fault in ("reset", "close"):
        return ("SMTPConnectionError", True, smtp_duo.NOT_CONNECTED, command)
    if fault in ("silence", "drip"):
        return ("SMTPTimeoutError", True, smtp_duo.NO_PACKET, command)
    if fault == "garbage":
        return ("SMTPProtocolError", True, smtp_duo.SERVER_ERROR_REPLY, command)
    if fault == "overlong":
        return ("SMTPProtocolError", True, smtp_duo.OVERSIZE_SERVER_REPLY, command)
    kind, status, command = REFUSAL[step]
    return (kind, fault == "4xx", status, command)


CELLS = [(s, f) for s in STEPS for f in FAULTS if (s, f) not in NA]


# -- the server side -------------------------------------------------------------------------------


def _linger0(conn):
    # close() then sends RST instead of FIN
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class FaultServer(FakeServer):
    """FakeServer that also counts a client's reset as its close (a client that closes with
    unread data sends RST), can release a stalled body handler, can fix the receive buffer (so
    a server that stops reading stalls the client after a known amount), and can fail the TLS
    handshake (`tls_fault`: what it does after reading the ClientHello)."""

    def __init__(self, script=None, rcvbuf=None, tls_fault=None, **kw):
        FakeServer.__init__(self, script, **kw)
        if rcvbuf:  # accepted connections inherit it
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.release = threading.Event()
        self.body_read = 0
        self.tls_fault = tls_fault
        self.hello_at = None  # len(received) when the handshake began

    def _recv(self, conn):
        try:
            data = conn.recv(65536)
        except socket.timeout:
            return None
        except OSError:  # reset by the client: it closed its end
            self.closed_by_client.set()
            return None
        if not data:
            self.closed_by_client.set()
            return None
        self.received += data
        return data

    def stop(self):
        self.release.set()
        FakeServer.stop(self)

    def _start_tls(self, conn):
        if self.tls_fault is None:
            return FakeServer._start_tls(self, conn)
        self.hello_at = len(self.received)
        if self._recv(conn) is None:  # the ClientHello (its first segment)
            return None
        fault = self.tls_fault
        if fault == "reset":
            _linger0(conn)
            return None  # the session ends: conn.close() sends the RST
        if fault == "close":
            conn.shutdown(socket.SHUT_WR)
        elif fault == "garbage":
            conn.sendall(GARBAGE)
        elif fault == "drip":
            conn.sendall(TLS_RECORD_HEAD)
            if self.drip(b"\0" * 200)(conn, b"") is CLOSE:
                return None
        self._drain_until_closed(conn)  # silence, and after the others: read until the client closes
        return None

    # -- the faults, as FakeServer script values ----------------------------------------------

    def reset(self, partial):
        def answer(conn, line):
            if partial:
                conn.sendall(partial)
            _linger0(conn)
            return CLOSE

        return answer

    def close(self, partial):
        def answer(conn, line):
            if partial:
                conn.sendall(partial)
            conn.shutdown(socket.SHUT_WR)
            return SILENT  # FakeServer reads on until the client closes its end

        return answer

    def drip(self, reply):
        def answer(conn, line):
            for i in range(len(reply)):
                try:
                    conn.sendall(reply[i : i + 1])
                except OSError:
                    self.closed_by_client.set()
                    return CLOSE
                if select.select([conn], [], [], DRIP_PAUSE)[0] and self._recv(conn) is None:
                    return CLOSE  # the client closed (or reset)
            return SILENT

        return answer

    @staticmethod
    def split(reply):
        def answer(conn, line):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return Segments(*[reply[i : i + 1] for i in range(len(reply))], pause=0.003)

        return answer

    def body(self, fault, early=None):
        """The DATA handler of the body row: 354, read BODY_FAULT_AT octets, then the fault."""

        def answer(conn, line):
            conn.sendall(b"354 go ahead\r\n")
            while self.body_read < BODY_FAULT_AT:
                data = self._recv(conn)
                if data is None:
                    return CLOSE
                self.body_read += len(data)
            if fault == "reset":
                return self.reset(None)(conn, line)
            if fault == "close":  # stops answering, reads on
                return self.close(None)(conn, line)
            if fault == "silence":  # stops reading until the test has its result
                self.release.wait(30)
                return SILENT
            if fault == "drip":  # one octet every DRIP_PAUSE until the test has its result
                while not self.release.wait(DRIP_PAUSE):
                    try:
                        self.body_read += len(conn.recv(1))
                    except OSError:
                        break
                return SILENT
            conn.sendall(early)  # a reply while the client is still sending
            return self._after_early_reply(conn)

        return answer

    def _after_early_reply(self, conn):
        # Read to the end of data (the reply was given already), then answer QUIT.
        tail = b""
        while True:
            data = self._recv(conn)
            if data is None:
                return CLOSE
            self.body_read += len(data)
            tail = tail[-4:] + data
            end = tail.find(b"\r\n.\r\n")
            if end >= 0:
                rest = tail[end + 5 :]
                break
        while b"\n" not in rest:
            data = self._recv(conn)
            if data is None:
                return CLOSE
            rest += data
        self.commands.append(rest)
        if rest.upper().startswith(b"QUIT"):
            conn.sendall(NORMAL["QUIT"])
        return SILENT


def _refused_port():
    """A bound port nobody listens on: connecting is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def _full_backlog():
    """A listener that never accepts, its backlog filled: the next SYN is dropped."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fillers = []
    for _ in range(2):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(lst.getsockname())
        fillers.append(c)
    time.sleep(0.05)
    return [lst] + fillers, lst.getsockname()[1]


def _wmem_max():
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


class Cell:
    """Sets up one cell: the server (or port) and the job; `closable` says whether the server
    keeps its end so it can see the client close."""

    def __init__(self, step, fault, body_file, pki):
        self.srv = None
        self.sockets = []
        body = {"str": "fault matrix\n"}
        client = {}
        if step == "connect" and fault == "close":
            s, port = _refused_port()
            self.sockets.append(s)
        elif step == "connect" and fault == "silence":
            self.sockets, port = _full_backlog()
        elif step in HANDSHAKES:
            implicit = step == "TLS"
            srv = self.srv = FaultServer({"EHLO": EHLO if implicit else [EHLO_STARTTLS, EHLO],
                                          "AUTH": NORMAL["AUTH"]},
                                         tls_fault=None if fault in ("4xx", "5xx") else fault,
                                         tls_context=pki.server_context(), implicit=implicit)
            if fault in ("4xx", "5xx"):
                srv.script["STARTTLS"] = CODES["STARTTLS"][fault == "5xx"]
            port = srv.port
            client = {"tls": "TLS_IMPLICIT" if implicit else "TLS_STARTTLS", "cadata": {"file": str(pki.ca_der)},
                      "server_hostname": "localhost"}
        else:
            srv = self.srv = FaultServer({"EHLO": EHLO, "AUTH": NORMAL["AUTH"]},
                                         rcvbuf=SERVER_RCVBUF if step == "body" else None)
            port = srv.port
            if step == "connect":  # reset right after accepting
                srv.script["greeting"] = srv.reset(None)
            elif step == "body":
                body = {"file": str(body_file)}
                early = {"4xx": CODES["body"][0], "5xx": CODES["body"][1], "garbage": GARBAGE,
                         "overlong": overlong("body")}.get(fault)
                srv.script["DATA"] = srv.body(fault, early)
            else:
                normal = NORMAL[step]
                half = normal[: len(normal) // 2]
                srv.script[VERB[step]] = {
                    "reset": lambda: srv.reset(half), "close": lambda: srv.close(half),
                    "silence": lambda: SILENT, "drip": lambda: srv.drip(normal),
                    "4xx": lambda: CODES[step][0], "5xx": lambda: CODES[step][1],
                    "garbage": lambda: GARBAGE, "split": lambda: srv.split(normal),
                    "overlong": lambda: overlong(step),
                }[fault]()
        self.closable = self.srv is not None and fault != "reset"  # after its RST it has no end
        self.job = {
            "client": dict({"server_address": "127.0.0.1", "port": port, "from_address": "sensor@example.com",
                            "timeout": TIMEOUT, "username": "alice", "password": "secret",
                            "allow_insecure_auth": True}, **client),
            "mail": {"recipient_address": "rcpt@example.com", "subject": "fault %s/%s" % (step, fault),
                     "mail_body": body},
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.srv is not None:
            self.srv.stop()
        for s in self.sockets:
            s.close()


# -- running the cells -------------------------------------------------------------------------------


BODY_MIB = [0.0]


@pytest.fixture(scope="module")
def body_file(tmp_path_factory):
    """A 7-bit text file larger than the client's largest TCP send buffer plus the server's
    receive buffer, so a server that stops reading stalls the client mid-body."""
    size = _wmem_max() + SERVER_RCVBUF + (2 << 20)
    line = b"".join(b"%03d fault matrix body line. " % i for i in range(30))[:898] + b"\n"
    BODY_MIB[0] = size / (1 << 20)
    path = tmp_path_factory.mktemp("faults") / "body.txt"
    with open(path, "wb") as f:
        for _ in range(size // len(line) + 1):
            f.write(line)
    return path


def run_process(flavour, job, folder, faultjob_dir, mpy_dir):
    """faultjob.py on the flavour's runtime, in its own process; returns its measurements with
    "result"."""
    runtime, _, kind = flavour.partition("-")
    job = dict(job, **{"async": kind == "async"})
    path = folder / "job.json"
    path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    if runtime == "cpython":
        cmd = [sys.executable, str(HERE / "faultjob.py"), str(path)]
        env = dict(os.environ, PYTHONPATH="%s:%s" % (ROOT / "lib", HERE))
    else:
        cmd = [str(micropython_path()), "-X", "heapsize=%s" % DEFAULT_HEAP, "-m", "faultjob", str(path)]
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (faultjob_dir, mpy_dir))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=str(folder))
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or len(lines) < 2:
        raise AssertionError("%s failed (rc %d):\n%s\n%s" % (runtime, p.returncode, p.stdout, p.stderr))
    out = json.loads(lines[-1])
    out["result"] = json.loads(lines[-2])
    return out


def run_cell(flavour, step, fault, body_file, pki, folder, faultjob_dir, mpy_dir):
    """One cell, its server included; returns what test_fault checks and the matrix shows."""
    with Cell(step, fault, body_file, pki) as cell:
        out = run_process(flavour, cell.job, folder, faultjob_dir, mpy_dir)
        srv = cell.srv
        if srv is not None:
            srv.release.set()
        saw_close = srv.wait_closed(5) if cell.closable else None
        server = {"commands": [c[:60] for c in srv.commands] if srv else [],
                  "body_read": srv.body_read if srv else 0, "received": srv.received if srv else b"",
                  "hello_at": srv.hello_at if srv else None}
    return check(flavour, step, fault, out, saw_close, server)


def check(flavour, step, fault, out, saw_close, server):
    want = expected(step, fault)
    result = out["result"]
    problems = []
    e = result.get("error", {})
    if e:
        outcome = "%s/%s" % (SHORT.get(e["type"], e["type"]), "T" if e.get("temporary") else "P")
        got = (e["type"], e.get("temporary"), e.get("status"), e.get("command"))
    else:
        outcome, got = "ok", None
    if want is not None and isinstance(want[3], tuple) and got is not None and got[3] in want[3]:
        want = want[:3] + (got[3],)  # one of the commands allowed
    if got != want:
        problems.append("expected %s, got %s" % (want, result))
    elif e and fault in ("silence", "drip"):  # a timeout, said as such
        words = "is it a TLS port?" if step in HANDSHAKES else "accept data" if step == "body" else "timed out" \
            if step == "connect" else "no reply"
        if words not in e["message"]:
            problems.append("the timeout is not reported as one (%r): %s" % (words, e["message"]))
    elif e and step in HANDSHAKES and fault in ("reset", "close", "garbage"):  # said what it is
        words = "did not answer in TLS" if fault == "garbage" else "closed the connection during the TLS handshake"
        if words not in e["message"]:
            problems.append("the handshake's failure is not said (%r): %s" % (words, e["message"]))
    if step == "body" and server["body_read"] < BODY_FAULT_AT:  # the fault must come mid-body
        problems.append("the server read only %d body octets before the fault" % server["body_read"])
    if step in HANDSHAKES and fault not in ("4xx", "5xx"):
        # After a failed handshake not a byte more in clear: only the TLS records (ClientHello,
        # maybe an alert) follow the handshake's start, no QUIT, no EHLO.
        after = server["received"][server["hello_at"] or 0 :] if server["hello_at"] is not None else b""
        if server["hello_at"] is None or after[:1] != b"\x16" or b"QUIT" in after or b"EHLO" in after:
            problems.append("sent after the handshake began: %r" % after[:80])
    # Time: the whole call, except in the body row (there from the end of the last write the
    # server took: scanning the multi-MiB file and filling the TCP buffers is work, not waiting).
    ms = out["stall_ms"] if step == "body" else out["call_ms"]
    if ms is None or ms > LIMIT_MS:
        problems.append("returned after %s ms (limit %d)" % (ms, LIMIT_MS))
    socket_closed = out["fds"][0] == out["fds"][1]
    heap_delta = None
    if flavour.startswith("cpython"):
        socket_closed = socket_closed and out["sockets_open"] == 0 and not out["unclosed"]
    else:
        heap_delta = out["heap"][1] - out["heap"][0]
        if heap_delta > (HEAP_SLACK_ASYNC_TLS if flavour.endswith("async") and step in HANDSHAKES else HEAP_SLACK):
            problems.append("heap %d -> %d (+%d)" % (out["heap"][0], out["heap"][1], heap_delta))
    if not socket_closed:
        problems.append("socket left open: %s" % {k: out.get(k) for k in ("fds", "sockets_open", "unclosed")})
    if saw_close is False:
        problems.append("the server did not see the client close")
    return {"outcome": outcome, "ms": ms or 0, "problems": problems, "heap_delta": heap_delta,
            "socket_closed": socket_closed, "server_saw_close": saw_close, "call_ms": out["call_ms"] or 0,
            "net_ms": out["net_ms"] or 0, "commands": server["commands"]}


def _slow(key):
    flavour, step, fault = key
    return fault in ("silence", "drip") or step == "body"


class Matrix:
    """The results by (flavour, step, fault), computed side by side for every selected cell
    the first time a test asks for one."""

    def __init__(self, request, tmp_path_factory):
        self.request = request
        self.tmp = tmp_path_factory
        self.results = {}
        self.errors = {}
        self.ran = False

    def selected(self):
        keys = []
        for item in self.request.session.items:
            cs = getattr(item, "callspec", None)
            if item.module is sys.modules[__name__] and cs is not None and "flavour" in cs.params:
                keys.append((cs.params["flavour"], cs.params["step"], cs.params["fault"]))
        return keys

    def get(self, key):
        if not self.ran:
            self.ran = True
            self._run_all()
        if key in self.errors:
            raise self.errors[key]
        return self.results[key]

    def _run_all(self):
        req = self.request
        keys = [k for k in self.selected() if micropython_path() or not k[0].startswith("micropython")]
        keys.sort(key=lambda k: not _slow(k))  # the long waits first, the quick cells beside them
        body_file, pki = req.getfixturevalue("body_file"), req.getfixturevalue("pki")
        faultjob_dir, mpy_dir = req.getfixturevalue("faultjob_dir"), req.getfixturevalue("mpy_dir")
        heavy = threading.Semaphore(HEAVY)

        def one(key):
            folder = self.tmp.mktemp("cell")
            try:
                if key[1] == "body":
                    with heavy:
                        self.results[key] = run_cell(*key, body_file, pki, folder, faultjob_dir, mpy_dir)
                else:
                    self.results[key] = run_cell(*key, body_file, pki, folder, faultjob_dir, mpy_dir)
            except BaseException as e:  # reported by the cell's own test
                self.errors[key] = e

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, keys))


@pytest.fixture(scope="module")
def faultjob_dir(tmp_path_factory):
    return compile_all([HERE / "faultjob.py"], tmp_path_factory.mktemp("faultjob_mpy"))


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    m = Matrix(request, tmp_path_factory)
    yield m
    # To the terminal whether or not output is captured (-s): what capsys.disabled() does.
    text = format_matrix(m.results)
    plugins = request.config.pluginmanager
    tr, capman = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if tr is None or capman is None:
        print(text)
        return
    with capman.global_and_fixture_disabled():
        tr.ensure_newline()
        tr.write_line(text)


# -- the matrix ------------------------------------------------------------------------------------

SHORT = {"SMTPError": "SMTP", "SMTPConnectionError": "Conn", "SMTPTimeoutError": "Timeout",
         "SMTPProtocolError": "Proto", "SMTPAuthenticationError": "Auth", "SMTPRecipientsRefused": "Rcpts",
         "SMTPNotSupportedError": "NotSup", "SMTPTLSError": "TLS"}


def format_matrix(results):
    w = 14
    out = []
    for fl in [f for f in FLAVOURS if any(k[0] == f for k in results)]:
        out.append("")
        out.append("fault matrix, %s client on %s (timeout %d s; cell: outcome/T temporary or P permanent, "
                   "seconds to return; ! = check failed)"
                   % ("asyncio" if fl.endswith("async") else "blocking", fl.split("-")[0], TIMEOUT))
        out.append(("%-9s" % "step" + "".join("%-*s" % (w, f) for f in FAULTS)).rstrip())
        for step in STEPS:
            row = "%-9s" % step
            for fault in FAULTS:
                r = results.get((fl, step, fault))
                if (step, fault) in NA:
                    cell = "n/a"
                elif r is None:
                    cell = "-"
                else:
                    cell = ("!" if r["problems"] else "") + r["outcome"] + " %.1f" % (r["ms"] / 1000)
                row += "%-*s" % (w, cell)
            out.append(row.rstrip())
        cells = [r for k, r in results.items() if k[0] == fl]
        heap = [r["heap_delta"] for r in cells if r["heap_delta"] is not None]
        out.append("cells %d, failed %d; slowest %.2f s; sockets closed in %d of %d; server saw the "
                   "close in %d of %d where it kept its end"
                   % (len(cells), sum(1 for r in cells if r["problems"]), max(r["ms"] for r in cells) / 1000,
                      sum(1 for r in cells if r["socket_closed"]), len(cells),
                      sum(1 for r in cells if r["server_saw_close"]),
                      sum(1 for r in cells if r["server_saw_close"] is not None)))
        body = ["%s %.1f/%.1f" % (f, r["net_ms"] / 1000, r["call_ms"] / 1000) for f in FAULTS
                for k, r in results.items() if k == (fl, "body", f)]
        if body:
            out.append("body row (cells: from the last write the server took), from the connect / whole "
                       "call with scanning the %.1f MiB file first (s): %s" % (BODY_MIB[0], ", ".join(body)))
        if heap:
            out.append("heap after - before (gc.mem_alloc, octets): min %d, max %d, slack allowed %d%s"
                       % (min(heap), max(heap), HEAP_SLACK, " (%d after a failed handshake)"
                          % HEAP_SLACK_ASYNC_TLS if fl.endswith("async") else ""))
        for (r_fl, step, fault), r in sorted(results.items()):
            if r_fl == fl and r["problems"]:
                out.append("  FAILED %s/%s: %s" % (step, fault, "; ".join(r["problems"])))
    out.append("")
    out.append("n/a cells:")
    for (step, fault), why in NA.items():
        out.append("  %s/%s: %s" % (step, fault, why))
    out.append("connect: reset = RST right after accept, close = refused (nothing listening), "
               "silence = backlog full (never accepted); TLS, STARTTLS: the handshake, after the ClientHello")
    out.append("4xx/5xx replies: " + "; ".join("%s %s/%s" % (s, c[0][:3].decode(), c[1][:3].decode())
                                                 for s, c in CODES.items()))
    return "\n".join(out)


@pytest.mark.parametrize("step,fault", CELLS, ids=["%s-%s" % c for c in CELLS])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_fault(flavour, step, fault, matrix):
    if flavour.startswith("micropython"):
        require(micropython_path() is not None, "the MicroPython unix port (.deps/bin/micropython)")
    r = matrix.get((flavour, step, fault))
    assert not r["problems"], "%s/%s on %s: %s\nserver got: %s" % (step, fault, flavour, r["problems"],
                                                                   r["commands"])
