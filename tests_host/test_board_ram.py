"""Board RAM: what importing the core costs a board's heap, from .py, from .mpy and frozen.

Runs `tools/board_ram.py --quick --json` as a program (the tests import nothing from tools/):
the core, smtp_duo, on the qemu Cortex-M3 board built WITHOUT smtp_duo frozen (`Q32`, from
`tools/build_firmware.sh qemu-ram`, files on littlefs outside the GC heap) and on the MicroPython
unix port (`U64`), plus the frozen figure on the firmware that has it frozen. Checked: every
figure is there, and they are consistent with each other (a .py import needs at least what a
.mpy import needs, frozen keeps less than .mpy, the 32-bit board less than the 64-bit port).
The issue's targets for the figures are not asserted here.

Under CI=true a missing runtime or firmware (or one older than its sources) fails the run;
elsewhere it skips. About 15 s on 2 cores.
"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, require

FORMS = ("py", "mpy")


@pytest.fixture(scope="module")
def report():
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "board_ram.py"), "--quick", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1) and p.stdout.startswith("{"), "board_ram.py failed:\n" + p.stdout + p.stderr
    r = json.loads(p.stdout)
    print("\n" + r["table"])  # shown with -s, and on a failure
    return r


def runtime(report, key):
    rt = report["runtimes"][key]
    require(rt["available"], "%s for tools/board_ram.py (%s)" % (key, rt.get("reason")))
    assert "error" not in rt, rt["error"]
    return rt


@pytest.fixture(params=["Q32", "U64"])
def measured(report, request):
    """One runtime's part of the report."""
    return runtime(report, request.param)


@pytest.fixture
def core(measured):
    """The core's figures on one runtime."""
    return measured["rows"]["smtp_duo"]


def frozen_kept(report, key):
    fig = runtime(report, key)["rows"]["smtp_duo"]["frozen"]
    why = fig.get("error") or "stale: tools/build_firmware.sh all"
    require(fig["kept"] is not None and not fig["stale"],
            "a current firmware with smtp_duo frozen for %s (%s)" % (key, why))
    return fig["kept"]


def test_only_the_core_is_measured_quickly(report):
    assert report["quick"] and [m["name"] for m in report["modules"]] == ["smtp_duo"]
    m = report["modules"][0]
    assert 0 < m["mpy_bytes"] < m["py_bytes"], m


def test_every_figure_is_there(measured, core):
    assert not measured["problems"], measured["problems"]
    for form in FORMS:
        fig = core[form]
        assert "error" not in fig, fig
        assert fig["kept"] is not None and fig["least_free"] is not None, fig


def test_an_import_keeps_heap_and_needs_more_free_than_it_keeps(core):
    for form in FORMS:
        fig = core[form]
        assert fig["kept"] > 0, fig
        assert fig["least_free"] > fig["kept"], fig  # the import needs room for what it builds, and more


def test_a_py_import_needs_at_least_what_a_mpy_import_needs(core):
    # Compiling the source on the board holds the parse tree and the code at once.
    assert core["py"]["least_free"] >= core["mpy"]["least_free"], core


@pytest.mark.parametrize("key", ["Q32", "U64"])
def test_frozen_keeps_less_than_mpy(report, key):
    kept = frozen_kept(report, key)
    assert 0 < kept < runtime(report, key)["rows"]["smtp_duo"]["mpy"]["kept"]


def test_the_32_bit_board_needs_less_than_the_64_bit_port(report):
    q32 = runtime(report, "Q32")["rows"]["smtp_duo"]
    u64 = runtime(report, "U64")["rows"]["smtp_duo"]
    for form in FORMS:
        for what in ("kept", "least_free"):
            assert q32[form][what] < u64[form][what], (form, what, q32[form], u64[form])
    assert frozen_kept(report, "Q32") < frozen_kept(report, "U64")


# -- issue 13's targets for the core ---------------------------------------------------------------
# Met targets are asserted. The ones the core does not meet yet are asserted as strict xfails:
# the run reports them as expected failures, with the measured figure in the reason, and fails
# the day one is met (so its mark must go). A regression guard beside each holds today's level.

MPY_TARGET = 12_000  # smtp_duo.mpy, bytes
Q32_PY_TARGET = 64 * 1024  # least free heap to import the core from .py on the 32-bit board
Q32_KEPT_TARGET = 16 * 1024  # heap kept after importing the core's .mpy on the 32-bit board


def test_core_mpy_stays_under_todays_size(report):
    # 24,000 until issue 15's hot path (exact line lengths, CPython's large windows, smtp_duo_fast's
    # hook) added about 310 B.
    assert report["modules"][0]["mpy_bytes"] <= 24_400, report["modules"][0]


@pytest.mark.xfail(strict=True, reason="issue 13: smtp_duo.mpy is 24,361 B, the target 12,000 B "
                                       "(README section 7 says which parts hold it back)")
def test_core_mpy_meets_the_target(report):
    assert report["modules"][0]["mpy_bytes"] <= MPY_TARGET


def test_core_import_on_the_32_bit_board_stays_under_todays_need(report):
    core = runtime(report, "Q32")["rows"]["smtp_duo"]
    assert core["py"]["least_free"] <= 180 * 1024, core["py"]
    assert core["mpy"]["kept"] <= 40 * 1024, core["mpy"]


@pytest.mark.xfail(strict=True, reason="issue 13: compiling the core's .py needs about 178 KB free on "
                                       "the 32-bit board, the target 64 KB")
def test_core_py_import_on_the_32_bit_board_meets_the_target(report):
    assert runtime(report, "Q32")["rows"]["smtp_duo"]["py"]["least_free"] <= Q32_PY_TARGET


@pytest.mark.xfail(strict=True, reason="issue 13: the core's .mpy keeps about 37 KB on the 32-bit "
                                       "board, the target 16 KB")
def test_core_mpy_import_on_the_32_bit_board_meets_the_target(report):
    assert runtime(report, "Q32")["rows"]["smtp_duo"]["mpy"]["kept"] <= Q32_KEPT_TARGET
