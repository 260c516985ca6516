"""Soak (tools/soak.py): 5,000 mails from one MicroPython unix-port process with a fixed heap.

Single mails (a connection each) and sessions of 1-59 mails mixed, bodies of every kind (str,
bytes, a file, a generator, a list of chunks), refused attempts and refused Cc's among them, the
client object replaced every 1,000 mails. Asserted: every mail arrives exactly once with its
body intact, the heap after gc.collect() does not grow (last quarter of the samples against
the second), and the open file descriptors stay at their count before the first mail. The
5,000 go to aiosmtpd in the tool's process; 1,000 more go to a private Postfix instance it
starts. Two short runs that leak on purpose check that the verdicts catch a small leak. The tool
runs as a program (`soak.py ... --json`, once per fixture); the tests import nothing from tools/.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, require
from hostkit.postfix import postfix_available

MAILS = 5000
POSTFIX_MAILS = 1000


def _aiosmtpd():
    try:
        import aiosmtpd.controller  # noqa: F401
    except ImportError:
        require(False, "aiosmtpd")


def _run(*args):
    """The one result of `tools/soak.py ARGS --json` (exit 1: a verdict failed, which the tests
    judge). The tool finds the unix port as the micropython fixture does."""
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), *args, "--json"],
                       capture_output=True, text=True, timeout=1800)
    print(p.stderr)  # the report: shown with -s or on failure
    assert p.returncode in (0, 1) and p.stdout.startswith("["), "soak.py failed:\n" + p.stdout + p.stderr
    [r] = json.loads(p.stdout)
    return r


def _verdict(r, name):
    for v in r["verdicts"]:
        if v["name"] == name:
            return v
    raise AssertionError("no verdict %r in %r" % (name, r["verdicts"]))


def _explain(r, name):
    v = _verdict(r, name)
    return "%s: %s %s\nheap %s\nsamples %s" % (name, v["value"], v["problems"], r["heap"],
                                               [(s["done"], s["alloc"], s["fds"]) for s in r["samples"]])


@pytest.fixture(scope="module")
def aiosmtpd_run(micropython):
    _aiosmtpd()
    return _run("--mails", str(MAILS))


@pytest.fixture(scope="module")
def postfix_run(micropython):
    why = postfix_available()
    require(why is None, "Postfix for a private instance (%s)" % why)
    return _run("--mails", "0", "--postfix", str(POSTFIX_MAILS), "--every", "20")


@pytest.fixture(params=["aiosmtpd", "postfix"])
def run(request):
    return request.getfixturevalue(request.param + "_run")


def test_every_mail_delivered_exactly_once(run):
    v = _verdict(run, "delivered")
    assert v["ok"], _explain(run, "delivered")
    d = run["delivery"]
    assert d["delivered"] == d["expected"] == run["mails"] == run["script"]["ok"]


def test_no_heap_growth(run):
    assert _verdict(run, "heap")["ok"], _explain(run, "heap")
    # Enough samples for the quarters to mean something.
    assert len(run["samples"]) >= 4 * 8 + 1, len(run["samples"])


def test_no_fd_growth(run):
    fds = [s["fds"] for s in run["samples"]]
    assert fds[0] > 0, "no /proc/self/fd on this runtime?"
    assert _verdict(run, "fds")["ok"], _explain(run, "fds")


def test_the_mix_was_sent(aiosmtpd_run):
    # The verdicts are only worth what the soak really did.
    r = aiosmtpd_run
    s = r["script"]
    assert s["singles"] >= 300 and s["sessions"] >= 600 and s["longest_session"] >= 40, s
    assert s["session_mails"] + s["singles"] == MAILS, s
    assert s["clients"] == MAILS // 1000 + 1, s
    assert s["refused"] == r["refused_expected"] >= 50, s
    assert s["partial"] == r["partial_expected"] >= 50, s
    assert r["server_connections"] == r["connections"] >= s["singles"] + s["sessions"], r


@pytest.mark.parametrize("leak", ["heap", "fds"])
def test_a_small_leak_is_caught(micropython, leak):
    # heap: one 32-byte object kept every 10th mail; fds: one open file every 50th mail.
    _aiosmtpd()
    r = _run("--mails", "600", "--leak", leak)
    assert _verdict(r, "delivered")["ok"], _explain(r, "delivered")
    assert not _verdict(r, leak)["ok"], _explain(r, leak)
