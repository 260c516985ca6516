# One cell of the fault matrix (test_faults.py): a single mail_send, on CPython (imported by the
# test) or on the MicroPython unix port (`micropython -m faultjob job.json`, from .mpy).
# A job: {"client": {SMTPClient keywords}, "mail": {mail_send keywords, body as in driver.py}}.
# Besides the result ({"ok": ...} or {"error": ...}, as driver.py reports it), it measures what
# the matrix checks from inside the client's process:
#   call_ms   how long mail_send took
#   net_ms    from the start of the TCP connect to the return (excludes scanning a file body)
#   fds       the process's open file descriptors before the client was made and after
#             mail_send returned (Linux /proc/self/fd; None elsewhere). No socket may be left
#             open: MicroPython's unix sockets have no finaliser, so only the library's close()
#             brings the count back.
#   sockets_open  (CPython) sockets the client connected that are not closed after the return
#   heap      (MicroPython) gc.mem_alloc() after gc.collect() before the client was made and
#             after it was dropped, the result already printed and freed.
# On MicroPython the result and then the measurements are printed as two JSON lines.

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
        self.connect_ms = self.call_ms = self.net_ms = None
        self.fd0 = self.fd1 = self.heap0 = self.heap1 = None
        self.sockets_open = 0


_probe = _Probe()


class _Client(smtp_duo.SMTPClient):
    # The library's documented seam for tests: time the connect and keep the socket (CPython
    # only: a reference would not change what MicroPython's fd count shows, but costs heap).
    def _open_socket(self):
        _probe.connect_ms = _now()
        sock = smtp_duo.SMTPClient._open_socket(self)
        if not _MICROPYTHON:
            _probe.sockets.append(sock)
        return sock


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
    out = {"call_ms": p.call_ms, "net_ms": p.net_ms, "fds": [p.fd0, p.fd1], "sockets_open": p.sockets_open,
           "heap": [p.heap0, p.heap1]}
    if result is not None:
        out["result"] = result
    return out


def _cell(job, emit):
    p = _probe
    p.fd0 = _fds()
    client = _Client(**driver._constants(job["client"]))
    t0 = _now()
    result = driver._send(client, job["mail"])
    t1 = _now()
    p.fd1 = _fds()
    p.call_ms = _diff(t1, t0)
    if p.connect_ms is not None:
        p.net_ms = _diff(t1, p.connect_ms)
    for s in p.sockets:
        if s.fileno() != -1:  # CPython: -1 once closed
            p.sockets_open += 1
    del p.sockets[:]
    if emit is None:
        return result
    emit(result)
    return None


def _print_json(obj):
    print(json.dumps(obj))


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    out = run(job, _print_json)  # the result is printed (and freed) before the second reading
    _print_json(out)


if __name__ == "__main__" and _MICROPYTHON:
    main()
