"""The portable tests (tests_host/portable/) on CPython, one pytest item each, and as a whole
on the MicroPython unix port from .mpy with a fixed heap (the same file the qemu board runs)."""

import pytest
import test_portable
from conftest import HERE, compile_mpy, run_micropython


@pytest.mark.parametrize("name", test_portable.tests())
def test_on_cpython(name):
    getattr(test_portable, name)()


def test_on_micropython(micropython, mpy_dir):
    portable = sorted((HERE / "portable").glob("*.py"))
    compile_mpy(portable, mpy_dir)
    p = run_micropython(micropython, mpy_dir, ["-m", "test_portable"], heap="128k")
    out = p.stdout.splitlines()
    assert p.returncode == 0, p.stdout + p.stderr
    assert out[-1] == "%d passed, 0 failed" % len(test_portable.tests()), p.stdout + p.stderr
    assert sorted(line[3:] for line in out if line.startswith("ok ")) == test_portable.tests()
