"""Soak (tools/soak.py): 5,000 mails from one MicroPython unix-port process with a fixed heap.

Single mails (a connection each) and sessions of 1-59 mails mixed, bodies of every kind (str,
bytes, a file, a generator, a list of chunks), refused attempts and refused Cc's among them, the
client object replaced every 1,000 mails. Asserted: every mail arrives exactly once with its
body intact, the heap after gc.collect() does not grow (last quarter of the samples against
the second), and the open file descriptors stay at their count before the first mail. The
5,000 go to aiosmtpd in this process; 1,000 more go to the session's Postfix. Two short runs
that leak on purpose check that the verdicts catch a small leak.
"""

import sys

import pytest
from conftest import ROOT, mpy_cross_cmd, require

sys.path.insert(0, str(ROOT / "tools"))
import soak  # noqa: E402

MAILS = 5000
POSTFIX_MAILS = 1000


def _aiosmtpd():
    try:
        import aiosmtpd.controller  # noqa: F401
    except ImportError:
        require(False, "aiosmtpd")


def _run(micropython, mails, **kw):
    r = soak.measure(mails, micropython=micropython, mpy_cross=mpy_cross_cmd(), **kw)
    soak.report(r)  # shown with -s or on failure
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
    return _run(micropython, MAILS)


@pytest.fixture(scope="module")
def postfix_run(micropython, postfix):
    r = _run(micropython, POSTFIX_MAILS, postfix=postfix, every=20)
    yield r
    postfix.clear()  # the store is read whole by every later delivered(): leave it small


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
    r = _run(micropython, 600, leak=leak)
    assert _verdict(r, "delivered")["ok"], _explain(r, "delivered")
    assert not _verdict(r, leak)["ok"], _explain(r, leak)
