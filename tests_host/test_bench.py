"""The speed benchmark (tools/bench.py --quick) runs end to end and reports every row.

Structure only: each client/server row holds positive numbers (or says why it is n/a), and the
printed report has its sections. No timing is judged here: the benchmark is a measurement.
The tool runs as a program; the tests import nothing from tools/.
"""

import json
import subprocess
import sys

from conftest import ROOT, require
from hostkit.mpy import micropython_path
from hostkit.postfix import postfix_available, smtp_sink_path

SERVERS = ["smtp-sink", "postfix"]
SECTIONS = ["### A. Waits per mail", "### B. A 1 MiB body on an open session",
            "### C. 20 mails of 1 KiB", "### D. RAM and flash"]


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

    throughput = {(t["client"], t["runtime"], t["server"]): t for t in r["throughput"]}
    for runtime in ("cpython", "micropython"):
        for client in clients["throughput"][runtime]:
            for server in SERVERS:
                row = throughput[client, runtime, server]
                _check(row, ["ms", "mib_per_s", "ratio"], async_absent)

    many = {(m["runtime"], m["server"]): m for m in r["many"]}
    assert sorted(many) == sorted((rt, s) for rt in ("cpython", "micropython") for s in SERVERS)
    for row in many.values():
        _positive(row, ["session_s", "per_mail_s", "session_mails_per_s", "per_mail_mails_per_s", "ratio"])

    for name in ("import", "send 1 KiB", "send 1 MiB"):
        assert isinstance(r["heap"].get(name), int) and r["heap"][name] > 0, r["heap"]
    assert isinstance(r["sizes"], list) and r["sizes"], r["sizes"]
    for row in r["sizes"]:
        _positive(row, ["plain", "O3", "source"])

