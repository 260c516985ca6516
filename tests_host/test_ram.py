"""RAM: the heap a send needs must not grow with the body.

On the MicroPython unix port (64-bit: about twice a board's object sizes), sending a 1 MiB body
streamed from a file needs at most 16 KiB of GC heap beyond importing the module from .mpy, and
no more than a 1 KiB body plus 2 KiB. A mail with attachments (smtp_duo_mime: the 1 KiB text
body, a 300 KiB random binary streamed from an open file and a 2 KiB CSV from another file) needs no
more than the plain 1 KiB mail plus 4 KiB, smtp_duo_mime imported in both (the send is compared,
not the module). The same 300 KiB file shown inline in an HTML part (multipart/related) is held
to the same 4 KiB, and to 2 KiB over the same HTML mail with the file attached (one more
multipart level, not the image's size). The figures come from tools/heap_bench.py, which
bisects `-X heapsize` with a fresh interpreter per probe and counts a probe as passed only when
the local SMTP sink received the mail (for the attachments, each part decoded to exactly what
was attached). These are memory bounds, not timings. The tool runs as a program
(`heap_bench.py ... --json`, once per fixture); the tests import nothing from tools/.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, require

MIME_1K = "send 1 KiB mime loaded"  # heap_bench's scenario names
ATTACH = "send attachments"
ATTACH_HTML = "send attachments html"
INLINE = "send inline"


def _heap_bench(*args):
    """`tools/heap_bench.py ARGS --json`'s result; its report is shown with -s or on failure."""
    try:
        import aiosmtpd.controller  # noqa: F401
    except ImportError:
        require(False, "aiosmtpd")
    # The tool finds the unix port as the micropython fixture does (SMTP_DUO_MICROPYTHON or .deps).
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "heap_bench.py"), *args, "--json"],
                       capture_output=True, text=True, timeout=1800)
    print(p.stderr)
    assert p.returncode == 0 and p.stdout.startswith("{"), "heap_bench.py failed:\n" + p.stdout + p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def bench(micropython):
    # "text": the plain file body the requirement names (7bit); "long": lines over 998 octets
    # with UTF-8, which takes the quoted-printable path.
    return _heap_bench("--kind", "text", "--kind", "long", "--no-str")


def _verdict(result, name):
    for v in result["verdicts"]:
        if v["name"] == name:
            return v
    raise AssertionError("no verdict %r in %r" % (name, result["verdicts"]))


def test_every_scenario_has_a_minimum(bench):
    r = bench
    missing = [row["name"] for row in r["scenarios"] if row["heap"] is None]
    assert not missing, "never passed: %s (failures: %s)" % (missing, r["failures"])


def test_probes_fail_honestly(bench):
    # A probe that printed success without the server receiving the mail, or that hung, would
    # make the figures meaningless.
    r = bench
    for name, kinds in r["failures"].items():
        for kind in kinds:
            assert kind != "timeout" and not kind.startswith("success printed"), (name, kinds)
            assert not kind.startswith("body received differs"), (name, kinds)


@pytest.mark.parametrize("label", ["", " long"], ids=["text", "long"])
def test_1mib_send_within_16k_of_import(bench, label):
    r = bench
    v = _verdict(r, "send 1 MiB%s - import" % label)
    assert v["value"] is not None and v["value"] <= 16 * 1024, v


@pytest.mark.parametrize("label", ["", " long"], ids=["text", "long"])
def test_1mib_send_within_2k_of_1kib_send(bench, label):
    r = bench
    v = _verdict(r, "send 1 MiB%s - send 1 KiB%s" % (label, label))
    assert v["value"] is not None and v["value"] <= 2 * 1024, v


def test_memoryview_body_is_not_copied(bench):
    # A memoryview has no find(): it must go through the chunk buffer, never be copied whole.
    r = bench
    v = _verdict(r, "send 32 KiB memoryview - send 32 KiB bytearray")
    assert v["value"] is not None and v["value"] <= 1024, v


def test_tls_send_heap_does_not_grow_with_the_body(bench):
    r = bench
    v = _verdict(r, "send 1 MiB TLS - send 1 KiB TLS")
    assert v["value"] is not None and v["value"] <= 2 * 1024, v


def test_attachments_send_within_4k_of_a_1kib_send(bench):
    # 300 KiB from a file and 2 KiB from RAM, base64 through the client's fixed buffers: the
    # attachments cost their descriptions and the CSV itself, never their size.
    r = bench
    v = _verdict(r, "%s - %s" % (ATTACH, MIME_1K))
    assert v["value"] is not None and v["value"] <= 4 * 1024, v


def test_inline_image_costs_what_an_attachment_costs(bench):
    # Issue 16: the 300 KiB file inline goes through the same buffers as an attachment; the
    # related part around the HTML adds a constant, never the image's size.
    r = bench
    v = _verdict(r, "%s - %s" % (INLINE, MIME_1K))
    assert v["value"] is not None and v["value"] <= 4 * 1024, v
    v = _verdict(r, "%s - %s" % (INLINE, ATTACH_HTML))
    assert v["value"] is not None and v["value"] <= 2 * 1024, v


# -- the core alone (issue 13): only smtp_duo.mpy in reach ------------------------------------------


@pytest.fixture(scope="module")
def core_bench(micropython):
    return _heap_bench("--core")


@pytest.mark.parametrize("name", ["send 1 KiB", "send 1 KiB STARTTLS AUTH"])
def test_core_send_does_not_grow_with_the_body(core_bench, name):
    r = core_bench
    v = _verdict(r, "%s - %s" % (name.replace("1 KiB", "1 MiB"), name))
    assert v["value"] is not None and v["value"] <= 2 * 1024, v


def test_core_alerts_stay_under_todays_heap(core_bench):
    # A regression guard at today's level (68.00 and 76.00 KiB measured), not issue 13's target.
    r = core_bench
    assert r["heap"]["send 1 KiB"] is not None and r["heap"]["send 1 KiB"] <= 76 * 1024, r["heap"]
    tls = r["heap"]["send 1 KiB STARTTLS AUTH"]
    assert tls is not None and tls <= 84 * 1024, r["heap"]


@pytest.mark.xfail(strict=True, reason="issue 13: a plain alert needs about 68 KiB with the core "
                                       "alone on the 64-bit port, the target 36 KiB")
def test_core_plain_alert_meets_the_target(core_bench):
    r = core_bench
    assert _verdict(r, "send 1 KiB (whole heap)")["ok"]


@pytest.mark.xfail(strict=True, reason="issue 13: a verified STARTTLS + AUTH PLAIN alert needs about "
                                       "75 KiB with the core alone on the 64-bit port, the target 44 KiB")
def test_core_tls_alert_meets_the_target(core_bench):
    r = core_bench
    assert _verdict(r, "send 1 KiB STARTTLS AUTH (whole heap)")["ok"]
