"""What only the asyncio client (lib/smtp_duo_async.py) can show: the sensor loop keeps running
while a mail goes out, and a cancelled send stops at once with its socket closed, also in the
middle of a STARTTLS handshake. Everything else it shares with the blocking client runs in
test_wire.py, test_servers.py, test_tls.py and test_timing_handshake.py (their `runner` includes
cpython-async and micropython-async) and in the fault matrix (test_faults.py). Both runtimes
here too."""

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_micropython
from fakeserver import SILENT
from test_faults import EHLO_STARTTLS, FaultServer

# Run as a script on either runtime: argv port, mode; prints one JSON line.
JOB = r'''
import sys
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
import time
import smtp_duo_async

port, mode = int(sys.argv[1]), sys.argv[2]
now = time.ticks_ms if hasattr(time, "ticks_ms") else lambda: int(time.monotonic() * 1000)
ticks = [0]
done = [False]


async def sensor():
    while not done[0]:
        ticks[0] += 1
        await asyncio.sleep_ms(10) if hasattr(asyncio, "sleep_ms") else await asyncio.sleep(0.01)


async def send(client):
    try:
        return (await client.mail_send("rcpt@example.com", subject="alert", mail_body="x")).code
    finally:
        done[0] = True


async def main():
    tls = smtp_duo_async.TLS_STARTTLS if mode == "cancel-tls" else smtp_duo_async.TLS_NONE
    client = smtp_duo_async.AsyncSMTPClient("127.0.0.1", port, from_address="sensor@example.com", timeout=30,
                                            tls=tls)
    loop = asyncio.create_task(sensor())
    if mode == "send":
        code = await send(client)
        await loop
        return {"code": code, "ticks": ticks[0]}
    task = asyncio.create_task(send(client))
    await asyncio.sleep(0.3)
    task.cancel()
    t0 = now()
    try:
        await task
        return {"cancelled": False}
    except asyncio.CancelledError:
        ms = now() - t0
        await loop
        return {"cancelled": True, "link": client._link is None, "prompt": ms < 500}


print(__import__("json").dumps(asyncio.run(main())))
'''


@pytest.fixture(params=["cpython", "micropython"])
def run_job(request, tmp_path):
    script = tmp_path / "asyncjob.py"
    script.write_text(JOB)

    def run(*args):
        if request.param == "cpython":
            p = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                               timeout=60, env={"PYTHONPATH": str(ROOT / "lib")})
        else:
            mp = request.getfixturevalue("micropython")
            p = run_micropython(mp, request.getfixturevalue("mpy_dir"), [str(script), *map(str, args)], timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    return run


def slow(reply, seconds=0.2):
    def answer(conn, line):
        time.sleep(seconds)
        return reply
    return answer


def test_sensor_loop_runs_while_the_server_is_awaited(run_job, fake):
    # Five waits of 0.2 s (greeting, EHLO, MAIL, RCPT+DATA... one by one here: no PIPELINING):
    # a loop ticking every 10 ms gets dozens of turns; a blocking send would give it none.
    srv = fake({"greeting": slow(b"220 fake.test ESMTP\r\n"), "EHLO": slow(b"250 fake.test\r\n"),
                "MAIL": slow(b"250 ok\r\n"), "DATA": slow(b"354 go\r\n"), "DOT": slow(b"250 queued\r\n")})
    r = run_job(srv.port, "send")
    assert r["code"] == 250 and len(srv.messages) == 1
    assert r["ticks"] >= 20, r


def test_a_cancelled_send_stops_and_closes_its_socket(run_job, fake):
    srv = fake({"MAIL": SILENT})  # the server never answers MAIL; the client's timeout is 30 s
    t0 = time.monotonic()
    r = run_job(srv.port, "cancel")
    assert r == {"cancelled": True, "link": True, "prompt": True}
    assert srv.wait_closed(5) and time.monotonic() - t0 < 10


def test_a_send_cancelled_in_the_starttls_handshake_stops_and_closes_its_socket(run_job, pki):
    # The server answers STARTTLS with 220, reads the ClientHello and says nothing: the task is
    # cancelled 0.3 s in, inside the handshake. CancelledError comes out (not an SMTPError),
    # within 0.5 s of the cancel, the socket closed; nothing follows the ClientHello.
    srv = FaultServer({"EHLO": EHLO_STARTTLS}, tls_fault="silence", tls_context=pki.server_context())
    try:
        t0 = time.monotonic()
        r = run_job(srv.port, "cancel-tls")
        assert r == {"cancelled": True, "link": True, "prompt": True}
        assert srv.wait_closed(5) and time.monotonic() - t0 < 10
        after = srv.received[srv.hello_at :]
        assert after[:1] == b"\x16" and b"QUIT" not in after, after
    finally:
        srv.stop()


# MicroPython's wait_for() passes the awaited step's exception to the waiting task inside a
# CancelledError it allocates; with the heap full that allocation fails too. Stand-in: a
# CancelledError that cannot be made with arguments (as when no heap is left for it).
NO_HEAP_FOR_THE_VERDICT = r'''
import asyncio, smtp_duo, smtp_duo_async

class Fragile(asyncio.core.CancelledError):
    def __init__(self, *args):
        if args:
            raise MemoryError("no heap left for the CancelledError")
        super().__init__()

asyncio.core.CancelledError = Fragile

async def handshake():  # a step that runs out of memory
    await asyncio.sleep_ms(10)
    raise MemoryError("memory allocation failed in the handshake")

async def main():
    t0 = smtp_duo.ticks_ms()
    try:
        await smtp_duo_async._within(handshake(), smtp_duo.ticks_add(t0, 2000))
        what = "no error"
    except BaseException as e:
        what = "%s: %s" % (type(e).__name__, e)
    print("RESULT", what, smtp_duo.ticks_diff(smtp_duo.ticks_ms(), t0))

asyncio.run(main())
'''


def test_out_of_memory_in_a_step_is_not_a_timeout_or_a_cancellation(micropython, mpy_dir, tmp_path):
    script = tmp_path / "noheap.py"
    script.write_text(NO_HEAP_FOR_THE_VERDICT)
    p = run_micropython(micropython, mpy_dir, [str(script)], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    _, rest = p.stdout.split("RESULT ", 1)
    what, ms = rest.strip().rsplit(" ", 1)
    # The step's own MemoryError, at once: not a CancelledError, nor ETIMEDOUT after 2 s.
    assert what == "MemoryError: memory allocation failed in the handshake", p.stdout
    assert int(ms) < 1000, p.stdout
