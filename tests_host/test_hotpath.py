"""The body's hot path (issue 15): one scan per window, plain text and base64 written straight
into the output buffer, on MicroPython in native code (smtp_duo_fast). Random bodies cut into
random windows (portable/hotpath_portable.py) must give what a slow, obvious definition gives:
the size SIZE and BDAT announce, 8-bit and long-line decisions, the octets on the wire; and on
the unix port the native code must give exactly what the bytecode gives, window by window and
for whole mails through an in-memory server (DATA and BDAT, with attachments)."""

import json

import pytest
from conftest import HERE, run_micropython
from hostkit.mpy import compile_all

import hotpath_portable
import smtp_duo

SEED = 20261207
CASES = 400


def test_cpython_paths_match_the_definition():
    r = hotpath_portable.run(CASES, SEED)
    assert not r["fast"]  # native code is MicroPython's
    assert r["failed"] == 0, r["failures"]


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_native_code_writes_what_the_bytecode_writes(micropython, mpy_dir, seed):
    compile_all([HERE / "portable" / "memserver.py", HERE / "portable" / "hotpath_portable.py"], mpy_dir)
    p = run_micropython(micropython, mpy_dir, ["-m", "hotpath_portable", str(CASES), str(seed)], heap="2m")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["fast"], "smtp_duo_fast did not import on the unix port"
    assert r["failed"] == 0, r["failures"]


def test_a_line_of_exactly_998_octets_after_a_dot_at_a_window_start_is_long():
    # The scan counts the dot that stuffing adds, also when the line starts a window.
    line = b"." + b"x" * 997  # 999 on the wire under DATA
    for cut in (0, 1, 500, 998):
        body = [b"a\n" + line[:cut], line[cut:] + b"\n"]
        t = smtp_duo.Text(body, b"plain", bytearray(64))
        assert t.long, cut
        t = smtp_duo.Text([b"a\n" + line[1:cut + 1], line[cut + 1:] + b"\n"], b"plain", bytearray(64))
        assert not t.long, cut
