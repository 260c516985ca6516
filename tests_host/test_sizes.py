"""tools/size_bench.py: every module in lib/ compiles with mpy-cross for each board architecture,
with and without -O3 (the sizes themselves are reported, not asserted). The tool runs as a
program (`size_bench.py --json`); the tests import nothing from tools/."""

import json
import subprocess
import sys

from conftest import ROOT


def test_every_module_compiles_for_every_board_architecture():
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "size_bench.py"), "--json"],
                       capture_output=True, text=True, timeout=300)
    # exit 1: a compile failed (the rows say which)
    assert p.returncode in (0, 1) and p.stdout.startswith("{"), "size_bench.py failed:\n" + p.stderr
    result = json.loads(p.stdout)
    rows = result["rows"]
    modules = sorted(path.name for path in (ROOT / "lib").glob("*.py"))
    assert sorted({r["module"] for r in rows}) == modules
    assert sorted((r["module"], r["arch"]) for r in rows) == sorted(
        (m, a) for m in modules for a in result["archs"])
    for r in rows:
        assert r["ok"], r["errors"]
        assert r["plain"] > 0 and r["O3"] > 0 and r["source"] > 0, r
    print(result["table"])
