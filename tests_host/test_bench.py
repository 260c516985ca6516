"""The speed benchmark (tools/bench.py --quick) runs end to end and reports every row.

Structure only: each client/server row holds positive numbers (or says why it is n/a), B has
every body for both runtimes and both of smtp_duo's buffer sizes with a ratio to the raw socket,
and the printed report has its sections and tables. No timing is judged here: the benchmark is a measurement.
The tool runs as a program; the tests import nothing from tools/.
"""

import json
import subprocess
import sys

from conftest import ROOT, require
from hostkit.mpy import micropython_path
from hostkit.postfix import postfix_available, smtp_sink_path

SERVERS = ["smtp-sink", "postfix"]
SECTIONS = ["### A. Waits per mail", "### B. Throughput: a body on an open session",
            "### C. 20 mails of 1 KiB", "### D. RAM and flash"]
# B's bodies, in table order; "text LF" runs on both servers, the others at least on smtp-sink.
BODIES = ["text LF", "text CRLF", "64-octet lines", "1,000-octet lines", "attachment"]
BUFFERS = [8192, 1024]  # smtp_duo's buffer_size in B: the host default and the boards'
RAW_WRITE = 65536


def _positive(row, keys):
    bad = [k for k in keys if not (isinstance(row.get(k), (int, float)) and row[k] > 0)]
    assert not bad, "%s: not positive numbers: %s" % (row, bad)


def _check(row, keys, async_absent):
    if row["client"] == "smtp_duo_async" and async_absent:
        assert row.get("na"), row
    else:
        _positive(row, keys)


def test_quick_run_reports_every_row(tmp_path):
    require(micropython_path() is not None, "the MicroPython unix port (.deps/bin/micropython)")
    require(smtp_sink_path() is not None, "Postfix's smtp-sink")
    require(postfix_available() is None, "Postfix (and root for a private instance)")
    try:
        import aiosmtplib  # noqa: F401
    except ImportError:
        require(False, "aiosmtplib")

    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stdout + p.stderr
    for title in SECTIONS:
        assert title in p.stdout, "%r missing from:\n%s" % (title, p.stdout)
    r = json.loads(out.read_text())

    assert [s["name"] for s in r["servers"]] == SERVERS
    for s in r["servers"]:
        assert "extensions" in s and "PIPELINING" in s["extensions"], s

    # smtp_duo_async may be n/a only while lib/smtp_duo_async.py does not exist.
    async_absent = not (ROOT / "lib" / "smtp_duo_async.py").exists()

    # Every client the tool says it measures, and at least these (by their names in the rows).
    clients = r["clients"]
    assert {("smtp_duo", "cpython"), ("smtp_duo", "micropython"), ("smtp_duo_async", "cpython"),
            ("smtp_duo_async", "micropython")} <= {tuple(c) for c in clients["waits"]}, clients
    assert sorted(clients["throughput"]) == ["cpython", "micropython"], clients
    waits = {(w["client"], w["runtime"], w["server"]): w for w in r["waits"]}
    for client, runtime in clients["waits"]:
        for server in SERVERS:
            row = waits[client, runtime, server]
            _check(row, ["first_ms", "further_ms", "first_waits", "further_waits"], async_absent)

    _check_throughput(r, p.stdout, async_absent)

    many = {(m["runtime"], m["server"]): m for m in r["many"]}
    assert sorted(many) == sorted((rt, s) for rt in ("cpython", "micropython") for s in SERVERS)
    for row in many.values():
        _positive(row, ["session_s", "per_mail_s", "session_mails_per_s", "per_mail_mails_per_s", "ratio"])

    for name in ("import", "send 1 KiB", "send 1 MiB"):
        assert isinstance(r["heap"].get(name), int) and r["heap"][name] > 0, r["heap"]
    assert isinstance(r["sizes"], list) and r["sizes"], r["sizes"]
    for row in r["sizes"]:
        _positive(row, ["plain", "O3", "source"])



def _check_throughput(r, report, async_absent):
    """B: every body on its servers, for both runtimes: the raw socket, smtp_duo and
    smtp_duo_async at both buffer sizes (and the peers on CPython's "text LF"), each a median
    of r["reps"] mails with a ratio to the raw socket of the same body, server and runtime."""
    bodies = {b["name"]: b for b in r["bodies"]}
    assert list(bodies) == BODIES, list(bodies)
    assert bodies["text LF"]["servers"] == SERVERS, bodies["text LF"]
    for b in bodies.values():
        assert "smtp-sink" in b["servers"], b
        _positive(b, ["octets", "wire_octets"])
    assert bodies["attachment"]["attachment_octets"] > 0, bodies["attachment"]

    clients = r["clients"]["throughput"]
    assert sorted(clients) == ["cpython", "micropython"], clients
    wanted = {("raw socket, one command at a time", RAW_WRITE)}
    wanted |= {(c, n) for c in ("smtp_duo", "smtp_duo_async") for n in BUFFERS}
    peers = {("smtplib", None), ("aiosmtplib", None)}
    rows = {(t["body"], t["client"], t["runtime"], t["server"], t["buffer_size"]): t for t in r["throughput"]}
    for runtime in ("cpython", "micropython"):
        assert sorted(clients[runtime]) == sorted(BODIES), clients[runtime]
        for body in BODIES:
            listed = {tuple(c) for c in clients[runtime][body]}
            expected = wanted | (peers if runtime == "cpython" and body == "text LF" else set())
            assert listed == expected, (runtime, body, listed)
            for client, size in listed:
                for server in bodies[body]["servers"]:
                    row = rows[body, client, runtime, server, size]
                    _check(row, ["ms", "ratio", "raw_ms"], async_absent)
                    if "ms" in row:
                        assert len(row["all_ms"]) == r["reps"], row
                        assert all(isinstance(t, (int, float)) and t > 0 for t in row["all_ms"]), row
                        raw = rows[body, "raw socket, one command at a time", runtime, server, RAW_WRITE]
                        assert row["raw_ms"] == raw["ms"], (row, raw)

    # One table per runtime, a column per client and buffer size, a row per body and server.
    for heading in ("CPython:", "MicroPython:"):
        assert "\n%s\n" % heading in report, heading
    for column in ("smtp_duo 8 KiB", "smtp_duo 1 KiB", "smtp_duo_async 8 KiB", "smtp_duo_async 1 KiB"):
        assert report.count(column) == 2, column
    for b in bodies.values():
        assert report.count("| %s | " % b["label"]) == 2 * len(b["servers"]), b["label"]
