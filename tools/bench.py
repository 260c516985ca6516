"""Speed benchmark: smtp_duo on CPython and on the MicroPython unix port, against smtplib and
aiosmtplib, with Postfix's smtp-sink and a private Postfix instance as servers.

Run: .venv/bin/python tools/bench.py [--quick] [--json FILE] [--no-heap] [--lib DIR]

Prints one report (markdown tables, to paste into the README) and always exits 0: it measures,
it never judges. Every timing is shown raw and as a ratio to a baseline measured in the same run.
Everything listens on 127.0.0.1 only; no network is needed. A full run takes about a minute and a
half on 2 cores, --quick (fewer repetitions, smaller counts and bodies) about 15 s with --no-heap
(section D's heap bisection adds about 30 s to either).

Servers, started by the tool on free loopback ports: Postfix's smtp-sink (discards every mail;
skipped with a note when missing) and a private Postfix instance (hostkit/postfix.py, its
relay port: plain SMTP, no AUTH; needs root).

Clients: smtp_duo on CPython (in this process) and on the MicroPython unix port (a subprocess
with a fixed heap, library from .mpy; times taken inside it with ticks_us, so interpreter start
is excluded); smtplib; aiosmtplib; smtp_duo_async.AsyncSMTPClient when lib/smtp_duo_async.py
imports ("n/a" otherwise). A bare socket speaking one command at a time is the baseline. All of
them go through the same timed skeletons (JOB_SRC), run in-process on CPython.

A. Waits per mail. A delay proxy between client and server forwards the client's bytes at once
   and delivers every chunk of the server's bytes D ms after it arrived (a delay line: order
   kept, delays not cumulative). Each wait for the server then costs D, and waits = time / D
   (TCP's own connect handshake is not delayed: it would cost every client the same).
   "first": from before connecting until the first mail is accepted; "further": the mean of N
   more mails on the same connection; the closing QUIT is not timed. 1 KiB body. D = 40 ms,
   N = 5, best of 3 connections (noise only ever adds); --quick: 25 ms, 3, 1.
B. Throughput: a body on an open session, no delay, the median of 5 timed mails (--quick: 3)
   after one warm-up mail; span MAIL .. final reply. Bodies (--quick: 256 KiB of text, a
   100 KiB attachment): "text LF", a 1 MiB CSV log (~72-octet ASCII lines, "\n" line ends);
   "text CRLF", the same log with "\r\n"; "64-octet lines" and "1,000-octet lines", 1 MiB of
   ASCII lines of that length, CRLF included; "attachment", a short text and 300 KiB of
   pseudo-random octets attached (base64; needs lib/smtp_duo_mime.py). smtp_duo and
   smtp_duo_async stream the text (and the attachment) from open files, each with buffer_size
   8192 (the host default) and 1024 (the boards'). The ceiling: a bare socket in the same
   runtime writing, from a file in 64 KiB writes, exactly the octets smtp_duo wrote after DATA
   for that mail, captured once from smtp_duo (CPython) by a minimal in-process server that
   announces PIPELINING and 8BITMIME like smtp-sink (so DATA, not BDAT). smtplib and
   aiosmtplib (CPython) take the "text LF" message in memory (their API needs it). "text LF"
   runs on both servers; the other bodies, to bound the run time, on smtp-sink only (on
   Postfix when smtp-sink is missing). On Postfix, which offers CHUNKING, smtp_duo sends one
   BDAT chunk (no dot-stuffing) where the raw socket sends DATA.
C. 100 mails (--quick: 20) of 1 KiB: one session against a connection per mail (mail_send
   outside a session), QUITs included, no delay; the two take turns, best of 3 (--quick: 1).
D. RAM and flash: tools/heap_bench.py (its quick set; shown: the GC heap a 1 KiB and a 1 MiB
   file send need on the unix port) and tools/size_bench.py (.mpy sizes per architecture).

Before each measurement on Postfix the tool waits until its queue is empty, so every row starts
on an idle server.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import MpyCrossError, compile_mpy, micropython_path  # noqa: E402
from hostkit.ports import free_port  # noqa: E402
from hostkit.postfix import PostfixServer, postfix_available, smtp_sink_path  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
MP_HEAP = "512k"  # fixed MicroPython heap: room for the library, its buffers and the job
GOALS = {"cpython": 1.5, "micropython": 3.0}  # smtp_duo / raw socket, 1 MiB body (project goals)
NETX_WAITS = 9  # the NetX Duo reference client: about 9 waits per mail (documented, not measured)
RUNTIME_NAMES = {"cpython": "CPython", "micropython": "MicroPython"}
SERVER_NAMES = {"smtp-sink": "smtp-sink", "postfix": "Postfix"}

# The timed jobs. The same file runs on CPython (imported by this tool) and on the MicroPython
# unix port (`micropython -m bench_job SPEC`: SPEC a JSON object, the result one JSON line).
JOB_SRC = r'''
import gc
import sys
import time

try:
    import json
except ImportError:
    import ujson as json
try:
    import socket
except ImportError:
    import usocket as socket

try:
    ticks_us, ticks_diff = time.ticks_us, time.ticks_diff
except AttributeError:  # CPython

    def ticks_us():
        return time.perf_counter_ns() // 1000

    def ticks_diff(a, b):
        return a - b


FROM = "bench@example.com"
TO = "sink@example.com"

# The skeletons, the same for every client. A client adapter c has c.session() (a context
# manager that connects and says hello; its exit sends QUIT), c.send(s) (one mail on it) and,
# for smtp_duo, c.send_alone() (one mail on a connection of its own).


def waits(c, n):
    """The first mail timed from before connecting, then n more on the same connection."""
    further = []
    t0 = ticks_us()
    with c.session() as s:
        c.send(s)
        first = ticks_diff(ticks_us(), t0)
        for _ in range(n):
            t = ticks_us()
            c.send(s)
            further.append(ticks_diff(ticks_us(), t))
    return {"first_us": first, "further_us": further}


def throughput(c, reps):
    """One warm-up mail on an open session, then reps timed mails."""
    times = []
    with c.session() as s:
        c.send(s)
        for _ in range(reps):
            gc.collect()  # every timed mail starts from the same heap state
            t = ticks_us()
            c.send(s)
            times.append(ticks_diff(ticks_us(), t))
    return {"us": times}


def many(c, count, in_session):
    """count mails over one session, or over a connection each; all QUITs included."""
    t = ticks_us()
    if in_session:
        with c.session() as s:
            for _ in range(count):
                c.send(s)
    else:
        for _ in range(count):
            c.send_alone()
    return {"us": ticks_diff(ticks_us(), t)}


async def awaits(c, n):
    further = []
    t0 = ticks_us()
    async with c.session() as s:
        await c.send(s)
        first = ticks_diff(ticks_us(), t0)
        for _ in range(n):
            t = ticks_us()
            await c.send(s)
            further.append(ticks_diff(ticks_us(), t))
    return {"first_us": first, "further_us": further}


async def athroughput(c, reps):
    times = []
    async with c.session() as s:
        await c.send(s)
        for _ in range(reps):
            gc.collect()
            t = ticks_us()
            await c.send(s)
            times.append(ticks_diff(ticks_us(), t))
    return {"us": times}


SYNC = {"waits": waits, "throughput": throughput, "many": many}
ASYNC = {"waits": awaits, "throughput": athroughput}


def measure(c, job, args):
    if c.is_async:
        import asyncio

        return asyncio.run(ASYNC[job](c, *args))
    return SYNC[job](c, *args)


# -- smtp_duo ----------------------------------------------------------------------------------


class Duo:
    """smtp_duo.SMTPClient with the spec's buffer_size (None: the library's default). The body
    from a file opened per mail (stream) or bytes in RAM; the spec's attachment, if any, from a
    file opened per mail."""

    is_async = False

    def __init__(self, cls, spec):
        kw = {"buffer_size": spec["buffer_size"]} if spec.get("buffer_size") else {}
        self.client = cls("127.0.0.1", port=spec["port"], from_address=FROM, timeout=30, **kw)
        self.path = spec["body"]
        self.stream = spec.get("stream")
        self.attach = spec.get("attach")
        if not self.stream:
            with open(self.path, "rb") as f:
                self.data = f.read()

    def session(self):
        return self.client.session()

    def _mail(self):
        """mail_send's keyword arguments, and the files to close after the mail."""
        files = []
        body = self.data if not self.stream else open(self.path, "rb")
        if self.stream:
            files.append(body)
        kw = {"subject": "bench", "mail_body": body}
        if self.attach:
            f = open(self.attach, "rb")
            files.append(f)
            kw["attachments"] = [("data.bin", f, "application/octet-stream")]
        return kw, files

    def send(self, s):
        kw, files = self._mail()
        try:
            s.mail_send(TO, **kw)
        finally:
            for f in files:
                f.close()

    def send_alone(self):
        self.send(self.client)


class AsyncDuo(Duo):
    """smtp_duo_async.AsyncSMTPClient."""

    is_async = True

    async def send(self, s):
        kw, files = self._mail()
        try:
            await s.mail_send(TO, **kw)
        finally:
            for f in files:
                f.close()


# -- the baseline: a bare socket ---------------------------------------------------------------


class RawSession:
    """A bare socket, one command at a time: greeting and EHLO on entry, QUIT on exit."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.settimeout(30)
        self.sock.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        # As smtp_duo does: no Nagle delay on the last small segment of a write.
        self.sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
        self.pending = b""
        self.extensions = []

    def __enter__(self):
        try:
            self.reply(220)
            self.extensions = [line[4:].decode() for line in self.command(b"EHLO bench.example", 250)[1:]]
        except BaseException:
            self.sock.close()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.command(b"QUIT", 221)
        finally:
            self.sock.close()

    def write(self, data):
        mv = memoryview(data)
        while len(mv):
            mv = mv[self.sock.send(mv):]

    def reply(self, expect):
        """The reply's lines; OSError unless its code is `expect`."""
        lines = []
        while True:
            i = self.pending.find(b"\r\n")
            if i < 0:
                data = self.sock.recv(4096)
                if not data:
                    raise OSError("connection closed by the server")
                self.pending += data
                continue
            line = self.pending[:i]
            self.pending = self.pending[i + 2:]
            lines.append(line)
            if line[3:4] != b"-":
                if line[:3] != str(expect).encode():
                    raise OSError("expected %d, got %r" % (expect, line))
                return lines

    def command(self, line, expect):
        self.write(line + b"\r\n")
        return self.reply(expect)


class Raw:
    """The ceiling: the message pre-encoded in a file (headers, CRLF body, stuffed, terminated),
    written as it is in 64 KiB pieces after MAIL, RCPT and DATA."""

    is_async = False

    def __init__(self, port, message):
        self.port = port
        self.path = message
        self.buf = bytearray(64 * 1024)
        self.mv = memoryview(self.buf)

    def session(self):
        return RawSession(self.port)

    def send(self, s):
        s.command(b"MAIL FROM:<" + FROM.encode() + b">", 250)
        s.command(b"RCPT TO:<" + TO.encode() + b">", 250)
        s.command(b"DATA", 354)
        with open(self.path, "rb") as f:
            while True:
                n = f.readinto(self.buf)
                if not n:
                    break
                s.write(self.mv[:n])
        s.reply(250)


def client(spec):
    kind = spec["client"]
    if kind == "raw":
        return Raw(spec["port"], spec["body"])
    if kind == "duo":
        import smtp_duo

        return Duo(smtp_duo.SMTPClient, spec)
    import smtp_duo_async

    return AsyncDuo(smtp_duo_async.AsyncSMTPClient, spec)


def main():
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(client(spec), spec["job"], spec["args"])))


if __name__ == "__main__" and sys.implementation.name == "micropython":
    main()
'''


# -- bodies ------------------------------------------------------------------------------------


def csv_log(size):
    """`size` bytes of a sensor log as CSV: ASCII lines of about 72 characters ending in "\\n",
    none starting with "."; the same every run."""
    lines = []
    n = i = 0
    while n < size:
        line = "2026-11-%02dT%02d:%02d:%02dZ,greenhouse-%02d,temperature,%6.2f,humidity,%5.1f,ok\n" % (
            1 + i // 86400 % 28, i // 3600 % 24, i // 60 % 60, i % 60, i % 7,
            15 + i * 37 % 2000 / 100, 30 + i * 13 % 600 / 10)
        lines.append(line)
        n += len(line)
        i += 1
    return ("".join(lines)[:size - 1] + "\n").encode()


def fixed_lines(size, width):
    """`size` octets of ASCII lines of `width` octets each, CRLF included (the last one shorter
    when `width` does not divide `size`), none starting with "."; the same every run."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,;:-_=+*/()"
    ring = alphabet * (width // len(alphabet) + 2)
    lines = []
    for i, start in enumerate(range(0, size, width)):
        n = min(width, size - start) - 2  # the printable octets; each line starts elsewhere
        lines.append(ring[i % len(alphabet):][:max(n, 0)] + b"\r\n")
    return b"".join(lines)


def random_octets(size):
    """`size` pseudo-random octets (an attachment that compresses to nothing); the same every
    run."""
    return random.Random(2026).randbytes(size)


NOTE = b"The readings of the last day are attached.\n"  # the attachment mail's text


class Body:
    """One mail to time: its text in a file, an attachment file or None, and `wire`: a file
    holding the octets smtp_duo wrote after DATA for it, terminator included (captured: the
    raw socket's input), or None with `wire_error` saying why."""

    def __init__(self, work, name, label, what, text, attachment=None):
        self.name, self.label, self.what = name, label, what
        self.path = str(work / ("%s.txt" % _slug(name)))
        Path(self.path).write_bytes(text)
        self.octets = len(text)
        self.attach = None
        self.attach_octets = 0
        if attachment is not None:
            self.attach = str(work / ("%s.bin" % _slug(name)))
            Path(self.attach).write_bytes(attachment)
            self.attach_octets = len(attachment)
        self.wire: "str | None" = None
        self.wire_error: "str | None" = None
        self.wire_octets = 0

    def capture(self, job, work):
        """Send the mail once with smtp_duo (CPython, its default buffer) to a CaptureServer;
        keep what it wrote after DATA."""
        server = CaptureServer()
        try:
            spec = {"client": "duo", "port": server.port, "body": self.path, "stream": True,
                    "attach": self.attach}
            job.client(spec).send_alone()
            payloads = server.payloads
        finally:
            server.stop()
        if len(payloads) != 1:
            raise RuntimeError("captured %d messages, not 1" % len(payloads))
        self.wire = str(work / ("%s.wire" % _slug(self.name)))
        Path(self.wire).write_bytes(payloads[0])
        self.wire_octets = len(payloads[0])


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name)


def make_bodies(work, text_size, attach_size):
    """Section B's bodies, in table order."""
    log = csv_log(text_size)
    size = _size(text_size)
    return [
        Body(work, "text LF", "text LF", "%s CSV log, lines of about 72 octets ending in \"\\n\"" % size,
             log),
        Body(work, "text CRLF", "text CRLF", "the same log with \"\\r\\n\" line ends",
             log.replace(b"\n", b"\r\n")),
        Body(work, "64-octet lines", "64-octet lines", "%s of ASCII lines of 62 octets and CRLF" % size,
             fixed_lines(text_size, 64)),
        Body(work, "1,000-octet lines", "1,000-octet lines",
             "%s of ASCII lines of 998 octets and CRLF (the longest SMTP allows)" % size,
             fixed_lines(text_size, 1000)),
        Body(work, "attachment", "%s attachment" % _size(attach_size),
             "a %d-octet text and %s of pseudo-random octets, attached from a file (base64)"
             % (len(NOTE), _size(attach_size)), NOTE, random_octets(attach_size)),
    ]


def _size(n):
    if n % MIB == 0:
        return "%d MiB" % (n // MIB)
    return "%d KiB" % (n // KIB) if n % KIB == 0 else "%d octets" % n


class CaptureServer:
    """A minimal SMTP server on 127.0.0.1 (a thread) that keeps, for each mail, every octet
    after DATA up to and including the terminator: exactly what the client wrote. It announces
    PIPELINING and 8BITMIME, as smtp-sink does, and neither SIZE nor CHUNKING, so smtp_duo sends
    DATA, as it does to smtp-sink."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.payloads = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # stopped
            with conn, conn.makefile("rb") as f:
                try:
                    self._session(conn, f)
                except OSError:
                    pass  # the client went away: its mail, if any, was not completed

    def _session(self, conn, f):
        conn.settimeout(30)
        conn.sendall(b"220 capture ESMTP\r\n")
        for line in f:
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-capture\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go on\r\n")
                lines = []
                while not lines or lines[-1] != b".\r\n":  # a stuffed line is "..", never "."
                    more = f.readline()
                    if not more:
                        return
                    lines.append(more)
                self.payloads.append(b"".join(lines))
                conn.sendall(b"250 kept\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")

    def stop(self):
        try:  # on Linux this wakes the accept() waiting in the thread; close() alone does not
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)


# -- servers -----------------------------------------------------------------------------------


def _listening(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class SmtpSink:
    """Postfix's smtp-sink in the foreground: takes every mail and throws it away."""

    def __init__(self, exe, log):
        # As root smtp-sink must drop its privileges after binding (-u).
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        for _ in range(3):  # the free port may be taken before smtp-sink binds it
            self.port = free_port()
            with open(log, "ab") as err:
                self.proc = subprocess.Popen([exe, *user, "127.0.0.1:%d" % self.port, "256"],
                                             stdout=subprocess.DEVNULL, stderr=err)
            if _listening(self.port, self.proc):
                return
            self.stop()
        raise RuntimeError("smtp-sink did not start: %s" % Path(log).read_text(errors="replace")[-500:])

    def settle(self):
        pass  # nothing runs after a mail: it is gone

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PostfixRelay:
    """A private Postfix instance (hostkit/postfix.py); mails go to its relay port."""

    def __init__(self):
        self.server = PostfixServer()
        self.server.start()
        self.port = self.server.relay_port

    def settle(self):
        """Wait until the queue is empty (every mail delivered to the store, a shell each), then
        empty the store: each measurement starts on an idle server."""
        self.server.messages(count=0, timeout=60)
        self.server.clear()

    def stop(self):
        self.server.stop()


def postfix_version():
    exe = shutil.which("postconf") or "/usr/sbin/postconf"
    try:
        p = subprocess.run([exe, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() or None
    except OSError:
        return None


# -- the delay proxy ---------------------------------------------------------------------------


class DelayProxy:
    """A listener on 127.0.0.1 in front of a server's `target` port. The client's bytes go on at
    once; every chunk of the server's bytes is delivered `delay` seconds after it arrived (a
    delay line: order kept, delays not added up). So every time a client waits for the server
    it waits `delay`, however many replies arrive together. Runs an asyncio loop in a thread."""

    def __init__(self, target, delay):
        self.target = target
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _connection(self, c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            c_writer.close()
            return
        line = asyncio.Queue()
        tasks = [asyncio.ensure_future(t) for t in (self._up(c_reader, s_writer),
                                                    self._down_in(s_reader, line),
                                                    self._down_out(line, c_writer))]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:  # one side failed (a reset): the others cannot finish
            t.cancel()
        for t in done:
            t.exception()  # retrieved: a reset at the end of a session is not news
        c_writer.close()
        s_writer.close()

    async def _up(self, reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async def _down_in(self, reader, line):
        while True:
            data = await reader.read(65536)
            line.put_nowait((self.loop.time() + self.delay, data))
            if not data:
                return

    async def _down_out(self, line, writer):
        while True:
            due, data = await line.get()
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# -- CPython-only clients ----------------------------------------------------------------------


class Smtplib:
    is_async = False

    def __init__(self, job, port, message):
        self.job, self.port, self.message = job, port, message

    def session(self):
        return smtplib.SMTP("127.0.0.1", self.port, timeout=30)

    def send(self, s):
        s.sendmail(self.job.FROM, [self.job.TO], self.message)


class Aiosmtplib:
    is_async = True

    def __init__(self, job, port, message):
        import aiosmtplib

        self.cls = aiosmtplib.SMTP
        self.job, self.port, self.message = job, port, message

    def session(self):
        return self.cls(hostname="127.0.0.1", port=self.port, timeout=30, start_tls=False)

    async def send(self, s):
        await s.sendmail(self.job.FROM, [self.job.TO], self.message)


# -- runtimes ----------------------------------------------------------------------------------


class NotAvailable(Exception):
    """A client that cannot run here: the table shows n/a and why."""


class Bench:
    def __init__(self, work, lib_dir, micropython, log, text_size, attach_size):
        self.work = work
        self.log = log
        (work / "bench_job.py").write_text(JOB_SRC)
        sys.path.insert(0, str(lib_dir))
        spec = importlib.util.spec_from_file_location("bench_job", work / "bench_job.py")
        self.job = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.job)
        # A's and C's body, and B's; each sent once through a capture for the raw socket.
        self.small = Body(work, "1 KiB", "1 KiB", "1 KiB CSV log", csv_log(KIB))
        self.bodies = make_bodies(work, text_size, attach_size)
        log("capturing what smtp_duo sends for each body")
        for body in [self.small] + self.bodies:
            try:
                body.capture(self.job, work)
            except Exception as e:
                body.wire_error = "capture failed: %s: %s" % (type(e).__name__, _last_line(str(e)))
        self.async_na = {"cpython": self._async_on_cpython(lib_dir)}
        self.micropython = micropython
        self.mp_version = None
        if micropython:
            self.mp_dir = work / "mpy"
            self.mp_dir.mkdir()
            failed = self._compile(lib_dir)
            self.mp_version = self._mp(["-c", "import sys; print('.'.join(map(str, sys.implementation.version[:3])))"])
            if not (lib_dir / "smtp_duo_async.py").exists():
                self.async_na["micropython"] = "no lib/smtp_duo_async.py"
            elif "smtp_duo_async.py" in failed:
                self.async_na["micropython"] = "mpy-cross: " + failed["smtp_duo_async.py"]
            else:
                try:
                    self._mp(["-c", "import smtp_duo_async; print('ok')"])
                except RuntimeError as e:
                    self.async_na["micropython"] = "does not import: %s" % e

    @staticmethod
    def _async_on_cpython(lib_dir):
        if not (lib_dir / "smtp_duo_async.py").exists():
            return "no lib/smtp_duo_async.py"
        try:
            import smtp_duo_async  # noqa: F401
        except Exception as e:
            return "does not import: %s: %s" % (type(e).__name__, e)
        return None

    def _compile(self, lib_dir):
        """lib/*.py and the job script to .mpy; returns {file: error} for the ones that failed."""
        failed = {}
        for src in sorted(lib_dir.glob("*.py")) + [self.work / "bench_job.py"]:
            try:
                compile_mpy(src, self.mp_dir / (src.stem + ".mpy"))
            except MpyCrossError as e:
                failed[src.name] = _last_line(str(e))
        return failed

    def _mp_env(self):
        # .frozen: the port's own frozen modules (asyncio) stay importable.
        return dict(os.environ, MICROPYPATH=str(self.mp_dir) + ":.frozen")

    def _mp(self, args, timeout=300):
        """Run the MicroPython unix port; its last line of output."""
        p = subprocess.run([str(self.micropython), "-X", "heapsize=" + MP_HEAP, *args], capture_output=True,
                           text=True, timeout=timeout, env=self._mp_env(), cwd=str(self.work))
        lines = p.stdout.strip().splitlines()
        if p.returncode or not lines:
            raise RuntimeError("micropython (rc %d): %s" % (p.returncode, _last_line(p.stdout + p.stderr)))
        return lines[-1]

    def run(self, runtime, client, job, args, port, body, stream=False, buffer_size=None):
        """One job with a Body: client "raw" (its captured wire octets), "duo", "duo_async"
        (its files; buffer_size None: the library's default) on either runtime, or "smtplib" or
        "aiosmtplib" on CPython (the wire message in memory). Returns the job's result."""
        if client == "duo_async" and self.async_na.get(runtime):
            raise NotAvailable(self.async_na[runtime])
        if client in WIRE_CLIENTS and not body.wire:
            raise RuntimeError(body.wire_error or "no captured message")
        if client in ("smtplib", "aiosmtplib"):
            with open(body.wire, "rb") as f:
                # Without the terminator and the stuffed dots: the library adds both.
                message = f.read()[:-3].replace(b"\r\n..", b"\r\n.")
            if message[:2] == b"..":
                message = message[1:]
            cls = Smtplib if client == "smtplib" else Aiosmtplib
            try:
                c = cls(self.job, port, message)
            except ImportError as e:
                raise NotAvailable("%s (pip install -r requirements-dev.txt)" % e)
            return self.job.measure(c, job, args)
        spec = {"client": client, "port": port, "stream": stream, "buffer_size": buffer_size}
        if client == "raw":
            spec["body"] = body.wire
        else:
            spec.update(body=body.path, attach=body.attach)
        if runtime == "micropython":
            if not self.micropython:
                raise NotAvailable("no MicroPython unix port (tools/setup.sh)")
            spec.update(job=job, args=args)
            return json.loads(self._mp(["-m", "bench_job", json.dumps(spec)]))
        return self.job.measure(self.job.client(spec), job, args)

    def attempt(self, what, fn, *args):
        """fn(*args)'s dict, or {"na": why} / {"error": what went wrong}; never raises."""
        self.log(what)
        try:
            return fn(*args)
        except NotAvailable as e:
            return {"na": str(e)}
        except Exception as e:
            return {"error": "%s: %s" % (type(e).__name__, _last_line(str(e)))}


def _last_line(text):
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else "(no output)"


# -- the measurements --------------------------------------------------------------------------

# (client, runtime) in table order; the baseline first.
CLIENTS = [("raw", "cpython"), ("duo", "cpython"), ("duo", "micropython"), ("duo_async", "cpython"),
           ("duo_async", "micropython"), ("smtplib", "cpython"), ("aiosmtplib", "cpython")]
CLIENT_NAMES = {"raw": "raw socket, one command at a time", "duo": "smtp_duo",
                "duo_async": "smtp_duo_async", "smtplib": "smtplib", "aiosmtplib": "aiosmtplib"}
WIRE_CLIENTS = ("raw", "smtplib", "aiosmtplib")  # these get the pre-encoded message, not the body
RUNTIMES = ("cpython", "micropython")
RAW_WRITE = 64 * KIB  # the raw socket's write size (JOB_SRC's Raw), shown as its buffer size
DUO_BUFFERS = (8192, 1024)  # smtp_duo's buffer_size in B: the host default and the boards'
PEERS = ("smtplib", "aiosmtplib")  # CPython only, B's "text LF" body only
PEER_BODY = "text LF"


def throughput_clients(runtime, body):
    """B's (client, buffer size) for a body, the baseline first."""
    rows = [("raw", RAW_WRITE)] + [(c, b) for c in ("duo", "duo_async") for b in DUO_BUFFERS]
    if runtime == "cpython" and body == PEER_BODY:
        rows += [(c, None) for c in PEERS]
    return rows


def body_servers(body, servers):
    """The servers a B body runs on: "text LF" on all; the others, to bound the run time, on
    smtp-sink (or the one server there is)."""
    if body == PEER_BODY or len(servers) < 2:
        return list(servers)
    return ["smtp-sink"]


def _waits(bench, runtime, client, srv, port, delay, n, runs):
    """The best of `runs` connections: extra time is noise, a wait is never shorter than D."""
    first = further = None
    for _ in range(runs):
        srv.settle()
        r = bench.run(runtime, client, "waits", [n], port, bench.small)
        mean = sum(r["further_us"]) / len(r["further_us"])
        first = r["first_us"] if first is None else min(first, r["first_us"])
        further = mean if further is None else min(further, mean)
    first, further = first / 1000, further / 1000
    return {"first_ms": round(first, 2), "further_ms": round(further, 2),
            "first_waits": round(first / 1000 / delay, 1), "further_waits": round(further / 1000 / delay, 1)}


def measure_waits(bench, servers, delay, n, runs):
    rows = []
    for name, srv in servers.items():
        proxy = DelayProxy(srv.port, delay)
        try:
            for client, runtime in CLIENTS:
                row = {"client": CLIENT_NAMES[client], "runtime": runtime, "server": name}
                row.update(bench.attempt("A waits: %s on %s, %s" % (client, runtime, name),
                                         _waits, bench, runtime, client, srv, proxy.port, delay, n, runs))
                rows.append(row)
        finally:
            proxy.stop()
    return rows


def _throughput(bench, runtime, client, buffer_size, body, srv, reps):
    srv.settle()
    size = buffer_size if client.startswith("duo") else None
    r = bench.run(runtime, client, "throughput", [reps], srv.port, body, stream=True, buffer_size=size)
    # The median: a scheduler hiccup or a GC pause in one mail does not move it.
    return {"ms": round(statistics.median(r["us"]) / 1000, 2),
            "all_ms": [round(t / 1000, 2) for t in r["us"]]}


def measure_throughput(bench, servers, reps):
    rows = []
    for runtime in RUNTIMES:
        for body in bench.bodies:
            for name in body_servers(body.name, servers):
                raw_ms = None
                for client, size in throughput_clients(runtime, body.name):
                    row = {"body": body.name, "client": CLIENT_NAMES[client], "runtime": runtime,
                           "server": name, "buffer_size": size}
                    what = "B %s: %s%s on %s, %s" % (body.name, client, " %d" % size if size else "",
                                                     runtime, name)
                    row.update(bench.attempt(what, _throughput, bench, runtime, client, size, body,
                                             servers[name], reps))
                    if client == "raw":
                        raw_ms = row.get("ms")
                    if "ms" in row and raw_ms:
                        row.update(raw_ms=raw_ms, ratio=round(row["ms"] / raw_ms, 2))
                    if client.startswith("duo"):
                        row["goal"] = GOALS[runtime]
                    rows.append(row)
    return rows


def _many(bench, runtime, srv, count, runs):
    """The best of `runs` for each way, the two ways taking turns."""
    best = {}
    for _ in range(runs):
        for in_session in (True, False):
            srv.settle()
            r = bench.run(runtime, "duo", "many", [count, in_session], srv.port, bench.small)
            best[in_session] = min(best.get(in_session, r["us"]), r["us"])
    out = {"mails": count}
    for key, in_session in (("session", True), ("per_mail", False)):
        seconds = best[in_session] / 1e6
        out[key + "_s"] = round(seconds, 3)
        out[key + "_mails_per_s"] = round(count / seconds, 1)
    out["ratio"] = round(out["per_mail_s"] / out["session_s"], 2)
    return out


def measure_many(bench, servers, count, runs):
    rows = []
    for runtime in ("cpython", "micropython"):
        for name, srv in servers.items():
            row = {"client": "smtp_duo", "runtime": runtime, "server": name}
            row.update(bench.attempt("C %d mails: %s, %s" % (count, runtime, name),
                                     _many, bench, runtime, srv, count, runs))
            rows.append(row)
    return rows


def measure_ram_and_flash(micropython, lib_dir, with_heap, log):
    import heap_bench
    import size_bench

    out = {}
    if not with_heap:
        out["heap"] = {"na": "skipped (--no-heap)"}
    elif not micropython:
        out["heap"] = {"na": "no MicroPython unix port"}
    else:
        log("D heap (tools/heap_bench.py, quick set)")
        try:
            r = heap_bench.measure(micropython=micropython, kinds=("text",), with_str=False, lib_dir=lib_dir)
            out["heap"] = {row["name"]: row["heap"] for row in r["scenarios"]}
        except Exception as e:
            out["heap"] = {"error": "%s: %s" % (type(e).__name__, _last_line(str(e)))}
    log("D sizes (tools/size_bench.py)")
    try:
        rows = size_bench.measure(lib_dir)
        same = size_bench.arch_independent(rows)
        out["sizes"] = [dict(r, same_for_all_archs=same[r["module"]]) for r in rows]
        out["mpy_cross"] = size_bench.mpy_cross_version()
    except Exception as e:
        out["sizes"] = {"error": "%s: %s" % (type(e).__name__, _last_line(str(e)))}
    return out


# -- the report --------------------------------------------------------------------------------


def _cell(row, fmt):
    if "na" in row:
        return "n/a"
    if "error" in row:
        return "error"
    return fmt(row)


def _table(p, head, rows):
    p("| " + " | ".join(head) + " |")
    p("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    for r in rows:
        p("| " + " | ".join(r) + " |")


def _kib(n):
    return "-" if n is None else "%.2f KiB" % (n / KIB)


def report(r, out=sys.stdout):
    def p(line=""):
        print(line, file=out)

    servers = [s for s in r["servers"] if "error" not in s and "na" not in s]
    names = [s["name"] for s in servers]
    p("smtp_duo speed benchmark (%s run): CPython %s, MicroPython %s unix port (-X heapsize=%s, library "
      "from .mpy), aiosmtplib %s, Postfix %s; %d CPU cores, all on 127.0.0.1"
      % ("quick" if r["quick"] else "full", r["versions"]["cpython"], r["versions"]["micropython"] or "-",
         MP_HEAP, r["versions"]["aiosmtplib"] or "-", r["versions"]["postfix"] or "-", r["cores"]))
    for s in r["servers"]:
        if "error" in s or "na" in s:
            p("- %s: not measured: %s" % (SERVER_NAMES[s["name"]], s.get("error") or s.get("na")))
        else:
            keywords = [e.split()[0].upper() for e in s["extensions"] if e.strip()]
            p("- %s announces %s; CHUNKING: %s" % (SERVER_NAMES[s["name"]], " ".join(keywords) or "nothing",
                                                   "yes" if "CHUNKING" in keywords else "no"))
    lookup = {}
    for row in r["waits"]:
        lookup["waits", row["client"], row["runtime"], row["server"]] = row

    p()
    p("### A. Waits per mail (a proxy delays every server reply by D = %d ms; waits = time / D)"
      % r["delay_ms"])
    p()
    head = ["client", "runtime"]
    for n in names:
        head += ["%s: first mail" % SERVER_NAMES[n], "%s: each further" % SERVER_NAMES[n]]
    rows = []
    for client, runtime in CLIENTS:
        cells = [CLIENT_NAMES[client], RUNTIME_NAMES[runtime]]
        for n in names:
            row = lookup["waits", CLIENT_NAMES[client], runtime, n]
            cells.append(_cell(row, lambda x: "%.1f (%.0f ms)" % (x["first_waits"], x["first_ms"])))
            cells.append(_cell(row, lambda x: "%.1f (%.0f ms)" % (x["further_waits"], x["further_ms"])))
        rows.append(cells)
    rows.append(["NetX Duo 6.4.2 (documented, not measured)", "-"]
                + ["about %d" % NETX_WAITS] * (2 * len(names)))
    _table(p, head, rows)
    p()
    p("First mail: from before connecting until the mail is accepted; each further: the mean of %d more"
      % r["further_mails"])
    p("mails on the same connection; the closing QUIT is not timed%s. 1 KiB body, one"
      % ("; best of %d connections" % r["runs"] if r["runs"] > 1 else ""))
    p("recipient. The raw socket's excess over 6 and 4 waits is the proxy's own overhead.")

    p()
    p("### B. Throughput: a body on an open session (median of %d mails, no delay; ratio to a raw socket "
      "in the same runtime)" % r["reps"])
    p()
    p("Bodies (%s run; octets as smtp_duo sends them after DATA, terminator included):"
      % ("quick" if r["quick"] else "full"))
    for b in r["bodies"]:
        only = " (%s only)" % SERVER_NAMES[b["servers"][0]] if len(b["servers"]) == 1 else ""
        wire = _kib(b["wire_octets"]) if b["wire_octets"] else "-"
        p("- %s: %s; %s on the wire%s" % (b["label"], b["what"], wire, only))
    b_rows = {(row["body"], row["client"], row["runtime"], row["server"], row["buffer_size"]): row
              for row in r["throughput"]}

    def timed(row):
        return _cell(row, lambda x: "%.1f ms (%.2fx)" % (x["ms"], x["ratio"]) if x.get("ratio")
                     else "%.1f ms" % x["ms"])

    duo_columns = [(c, b) for c in ("duo", "duo_async") for b in DUO_BUFFERS]
    for runtime in RUNTIMES:
        p()
        p("%s:" % RUNTIME_NAMES[runtime])
        p()
        head = ["body", "server", "raw socket (64 KiB writes)"]
        head += ["%s %d KiB" % (CLIENT_NAMES[c], b // KIB) for c, b in duo_columns] + ["goal"]
        rows = []
        for b in r["bodies"]:
            for server in b["servers"]:
                def measured(client, size, b=b, server=server):
                    key = (b["name"], CLIENT_NAMES[client], runtime, server, size)
                    return b_rows.get(key, {"na": "not run"})

                raw = _cell(measured("raw", RAW_WRITE), lambda x: "%.1f ms" % x["ms"])
                cells = [b["label"], SERVER_NAMES[server], raw] + [timed(measured(c, n)) for c, n in duo_columns]
                rows.append(cells + ["<= %gx" % GOALS[runtime]])
        _table(p, head, rows)
        peers = [row for row in r["throughput"] if row["runtime"] == runtime and row["client"] in PEERS]
        if peers:
            p()
            _table(p, ["peer (%s, message in memory)" % PEER_BODY, "server", "raw socket", "time (ratio)"],
                   [[row["client"], SERVER_NAMES[row["server"]],
                     "%.1f ms" % row["raw_ms"] if row.get("raw_ms") else "-", timed(row)] for row in peers])
    p()
    p("Span: MAIL .. the final reply, on a session opened (and warmed by one mail) before. smtp_duo reads")
    p("the body (and the attachment) from files, the raw socket the octets smtp_duo wrote (captured once,")
    p("DATA), smtplib and aiosmtplib get the message in memory. To Postfix (CHUNKING) smtp_duo sends BDAT.")
    p()
    p("### C. %d mails of 1 KiB: one session against a connection per mail (smtp_duo, no delay%s)"
      % (r["many_mails"], ", best of %d" % r["runs"] if r["runs"] > 1 else ""))
    p()

    def seconds(way):
        return lambda x: "%.3f s (%.0f mails/s)" % (x[way + "_s"], x[way + "_mails_per_s"])

    rows = [[RUNTIME_NAMES[row["runtime"]], SERVER_NAMES[row["server"]], _cell(row, seconds("session")),
             _cell(row, seconds("per_mail")), _cell(row, lambda x: "%.2fx" % x["ratio"])] for row in r["many"]]
    _table(p, ["runtime", "server", "one session", "a connection per mail", "ratio (per mail / session)"],
           rows)
    p()
    p("Postfix queues every mail and delivers it to its store (a shell each) while the next ones arrive:")
    p("its rows measure the server as much as the client, and vary from run to run (each measurement")
    p("starts on an empty queue). smtp-sink discards mail as it comes.")

    p()
    p("### D. RAM and flash (MicroPython)")
    p()
    heap = r["heap"]
    if "na" in heap or "error" in heap:
        p("GC heap: %s" % (heap.get("na") or "error: " + heap["error"]))
    else:
        base = heap.get("import")

        def beyond(name):
            v = heap.get(name)
            return "-" if v is None or base is None else "+%s" % _kib(v - base)

        _table(p, ["GC heap needed (unix port, 64-bit; tools/heap_bench.py)", "heap", "beyond the import"], [
            ["import smtp_duo (.mpy)", _kib(base), ""],
            ["send a 1 KiB body from a file", _kib(heap.get("send 1 KiB")), beyond("send 1 KiB")],
            ["send a 1 MiB body from a file", _kib(heap.get("send 1 MiB")), beyond("send 1 MiB")],
        ])
    p()
    sizes = r["sizes"]
    if isinstance(sizes, dict):
        p("sizes: error: %s" % sizes["error"])
    else:
        rows = []
        for s in sizes:
            if s["same_for_all_archs"] and rows and rows[-1][0] == s["module"]:
                continue  # one row when every architecture gives the same file
            arch = "all (identical)" if s["same_for_all_archs"] else s["arch"]
            rows.append([s["module"], arch, str(s["plain"]), str(s["O3"]), str(s["source"])])
        _table(p, ["module (tools/size_bench.py)", "arch", ".mpy", ".mpy -O3", "source"], rows)
        p()
        p("Bytes; mpy-cross: %s." % r["mpy_cross"])

    missing = {}  # (client, runtime, what happened) -> the sections it happened in
    for section, tag in (("waits", "A"), ("throughput", "B"), ("many", "C")):
        for row in r[section]:
            if "na" in row or "error" in row:
                why = "n/a: " + row["na"] if "na" in row else "error: " + row["error"]
                where = "%s: %s" % (tag, row["body"]) if "body" in row else tag
                missing.setdefault((row["client"], row["runtime"], why), set()).add(where)
    if missing:
        p()
        p("Not measured:")
        for (client, runtime, why), tags in missing.items():
            p("- %s on %s (%s): %s" % (client, RUNTIME_NAMES[runtime], ", ".join(sorted(tags)), why))
    p()
    p("%.0f s in all" % r["seconds"])


# -- main --------------------------------------------------------------------------------------


def run(quick, lib_dir, with_heap, log):
    t0 = time.monotonic()
    delay = 0.025 if quick else 0.040
    further = 3 if quick else 5
    reps = 3 if quick else 5  # timed mails per row of B (their median shown)
    text_size = 256 * KIB if quick else MIB  # B's text bodies
    attach_size = 100 * KIB if quick else 300 * KIB  # B's attachment
    runs = 1 if quick else 3  # connections timed per waits row (A), rounds of C
    count = 20 if quick else 100
    micropython = micropython_path()
    try:
        import aiosmtplib

        aiosmtplib_version = aiosmtplib.__version__
    except ImportError:
        aiosmtplib_version = None
    result = {"quick": quick, "delay_ms": round(delay * 1000), "further_mails": further, "reps": reps,
              "runs": runs, "many_mails": count, "cores": os.cpu_count(), "servers": [],
              "versions": {"cpython": platform.python_version(), "aiosmtplib": aiosmtplib_version,
                           "postfix": postfix_version(), "micropython": None},
              # the rows each section has, by client name: A's (client, runtime); B's per runtime
              # and body, (client, buffer size), set once the bodies exist
              "clients": {"waits": [[CLIENT_NAMES[c], rt] for c, rt in CLIENTS]}}
    work = Path(tempfile.mkdtemp(prefix="smtp_duo_bench_"))
    servers = {}
    try:
        bench = Bench(work, lib_dir, micropython, log, text_size, attach_size)
        result["clients"]["throughput"] = {
            rt: {b.name: [[CLIENT_NAMES[c], size] for c, size in throughput_clients(rt, b.name)]
                 for b in bench.bodies} for rt in RUNTIMES}
        result["versions"]["micropython"] = bench.mp_version
        sink = smtp_sink_path()
        no_postfix = postfix_available()
        starters = [("smtp-sink", sink and (lambda: SmtpSink(sink, work / "smtp-sink.log")),
                     "smtp-sink not found (it comes with Postfix: tools/install_postfix.sh)"),
                    ("postfix", None if no_postfix else PostfixRelay, no_postfix)]
        for name, start, missing in starters:
            entry = {"name": name}
            result["servers"].append(entry)
            if start is None:
                entry["na"] = missing
                continue
            log("starting %s" % name)
            try:
                servers[name] = start()
                with bench.job.RawSession(servers[name].port) as s:
                    entry["extensions"] = s.extensions
                    # One mail first, so no client pays for the server's start (Postfix forks
                    # its smtpd and cleanup processes on the first mail).
                    if not bench.small.wire:
                        raise RuntimeError(bench.small.wire_error)
                    bench.job.Raw(servers[name].port, bench.small.wire).send(s)
            except Exception as e:
                entry["error"] = "%s: %s" % (type(e).__name__, _last_line(str(e)))
                if name in servers:
                    servers.pop(name).stop()
        result["waits"] = measure_waits(bench, servers, delay, further, runs)
        result["bodies"] = [{"name": b.name, "label": b.label, "what": b.what, "octets": b.octets,
                             "attachment_octets": b.attach_octets, "wire_octets": b.wire_octets,
                             "servers": body_servers(b.name, servers)} for b in bench.bodies]
        result["throughput"] = measure_throughput(bench, servers, reps)
        result["many"] = measure_many(bench, servers, count, runs)
        result.update(measure_ram_and_flash(micropython, lib_dir, with_heap, log))
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions, smaller counts and bodies (about 15 s)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    ap.add_argument("--no-heap", action="store_true", help="skip the heap bisection (section D)")
    ap.add_argument("--lib", metavar="DIR", type=Path, default=ROOT / "lib",
                    help="benchmark the library in DIR instead of lib/ (e.g. another version)")
    a = ap.parse_args(argv)

    def log(what):
        print("..", what, file=sys.stderr, flush=True)

    try:
        r = run(a.quick, a.lib.resolve(), not a.no_heap, log)
    except Exception as e:  # a measurement tool: say what went wrong, exit 0
        print("benchmark could not run: %s: %s" % (type(e).__name__, e))
        return 0
    report(r)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
