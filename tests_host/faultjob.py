# One cell of the fault matrix (test_faults.py): a single mail_send, on CPython
# (`python faultjob.py job.json`) or on the MicroPython unix port (`micropython -m faultjob
# job.json`, from .mpy), each in its own process, so cells can run side by side.
# A job: {"client": {SMTPClient keywords}, "mail": {mail_send keywords, body as in driver.py},
# "async": bool (smtp_duo_async's AsyncSMTPClient under asyncio.run instead of SMTPClient)}.
# Besides the result ({"ok": ...} or {"error": ...}, as driver.py reports it), it measures what
# the matrix checks from inside the client's process:
#   call_ms   how long mail_send took
#   net_ms    from the start of the TCP connect to the return (excludes scanning a file body)
#   stall_ms  from the end of the last write the server took to the return: how long the
#             client waited on a write the server stopped taking (or after its last write)
#   fds       the process's open file descriptors before the client was made and after
#             mail_send returned (Linux /proc/self/fd; None elsewhere). No socket may be left
#             open: MicroPython's unix sockets have no finaliser, so only the library's close()
#             brings the count back.
#   sockets_open  (CPython) sockets the client connected that are not closed after the return
#   unclosed  (CPython) ResourceWarnings about sockets or transports left open
#   heap      (MicroPython) gc.mem_alloc() after gc.collect() before the client was made and
#             after it was dropped, the result already printed and freed.
# For an async job the client is made inside asyncio.run() and fds[1] is counted after it.
# The result and then the measurements are printed as two JSON lines.

import gc
import sys

try:
    import json
except ImportError:
    import ujson as json

import time

import driver
import smtp_duo

_MICROPYTHON = sys.implementation.name == "micropython"

try:  # imported before the first heap reading, as the TLS module the client would import
    import ssl as _tls_module  # noqa: F401
except ImportError:
    import tls as _tls_module  # noqa: F401
# smtp_duo imports an extension when a mail or a server first needs it (SIZE: smtp_duo_chunking;
# a refused handshake: smtp_duo_explain): once, for good. Imported here, before the heap is read,
# so that a cell measures what a mail leaves behind, not a module loaded on first use.
for _name in ("smtp_duo_chunking", "smtp_duo_explain", "smtp_duo_qp", "smtp_duo_auth"):
    try:
        __import__(_name)
    except ImportError:
        pass
smtp_duo.native()  # smtp_duo_fast (MicroPython), loaded from a body's second window on
try:
    import asyncio

    import smtp_duo_async

    # MicroPython's asyncio imports its parts on their first use: before the heap is read.
    for _name in ("Lock", "StreamReader", "open_connection", "wait_for_ms", "wait_for", "sleep_ms"):
        getattr(asyncio, _name, None)
except ImportError:  # a port without asyncio: blocking jobs only
    smtp_duo_async = None

if hasattr(time, "ticks_ms"):
    _now = time.ticks_ms
    _diff = time.ticks_diff
else:

    def _now():
        return int(time.monotonic() * 1000)

    def _diff(a, b):
        return a - b


class _Probe:
    # Every measurement is an attribute made here, before the first heap reading: setting
    # them later (small ints) allocates nothing that the second reading would count.
    def __init__(self):
        self.sockets = []
        self.reset()

    def reset(self):
        self.connect_ms = self.call_ms = self.net_ms = self.wrote_ms = self.stall_ms = None
        self.fd0 = self.fd1 = self.heap0 = self.heap1 = None
        self.sockets_open = 0


_probe = _Probe()


class _Client(smtp_duo.SMTPClient):
    # The library's seam for tests (_connect makes the link): time the connect and keep the
    # socket (CPython only: a reference would not change what MicroPython's fd count shows,
    # but costs heap).
    def _connect(self, deadline, link=None):
        if link is None:
            _probe.connect_ms = _now()
        link = smtp_duo.SMTPClient._connect(self, deadline, link)
        if not _MICROPYTHON:
            _probe.sockets.append(link.sock)
        write = link.write

        def timed(mv, deadline):
            write(mv, deadline)
            _probe.wrote_ms = _now()

        link.write = timed
        return link


if smtp_duo_async is not None:

    class _AsyncClient(smtp_duo_async.AsyncSMTPClient):
        async def _aconnect(self, deadline):
            _probe.connect_ms = _now()
            link = await smtp_duo_async.AsyncSMTPClient._aconnect(self, deadline)
            if not _MICROPYTHON:
                _probe.sockets.append(link.sock)  # asyncio's TransportSocket: fileno() -1 once closed
            write = link.write

            async def timed(mv, deadline):
                await write(mv, deadline)
                _probe.wrote_ms = _now()

            link.write = timed
            return link


def _fds():
    try:
        import os

        return len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, AttributeError):
        return None


def _mem():
    gc.collect()
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


def run(job, emit=None):
    """Run the cell; returns the measurements, with "result" unless emit(result) took it."""
    p = _probe
    p.reset()
    p.heap0 = _mem()
    result = _cell(job, emit)
    # Measured here, not in _cell: MicroPython scans the C stack conservatively, and a frame's
    # dead value-stack slots (the client, its arguments) would keep objects alive until it returns.
    p.heap1 = _mem()
    out = {"call_ms": p.call_ms, "net_ms": p.net_ms, "stall_ms": p.stall_ms, "fds": [p.fd0, p.fd1],
           "sockets_open": p.sockets_open, "heap": [p.heap0, p.heap1]}
    if result is not None:
        out["result"] = result
    return out


def _cell(job, emit):
    p = _probe
    p.fd0 = _fds()
    if job.get("async"):
        box = []
        asyncio.run(_async_cell(job, box))  # pyright: ignore[reportPossiblyUnbound]
        result = box[0]
    else:
        client = _Client(**driver._constants(job["client"]))
        t0 = _now()
        result = driver._send(client, job["mail"])
        _timed(t0, _now())
    p.fd1 = _fds()
    for s in p.sockets:
        if s.fileno() != -1:  # CPython: -1 once closed
            p.sockets_open += 1
    del p.sockets[:]
    if emit is None:
        return result
    emit(result)
    return None


def _timed(t0, t1):
    p = _probe
    p.call_ms = _diff(t1, t0)
    if p.connect_ms is not None:
        p.net_ms = _diff(t1, p.connect_ms)
    if p.wrote_ms is not None:
        p.stall_ms = _diff(t1, p.wrote_ms)


async def _async_cell(job, box):
    client = _AsyncClient(**driver._constants(job["client"]))
    t0 = _now()
    result = await driver._send_async(client, job["mail"])
    _timed(t0, _now())
    box.append(result)
    # The finished coroutine (its frame) may stay reachable from a stale slot of the C stack,
    # which MicroPython scans conservatively: let it hold nothing of the client.
    client = result = None


def _print_json(obj):
    print(json.dumps(obj))


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    if _MICROPYTHON:
        out = run(job, _print_json)  # the result is printed (and freed) before the second reading
    else:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            out = run(job, _print_json)
            gc.collect()
        out["unclosed"] = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    _print_json(out)


if __name__ == "__main__":
    main()
