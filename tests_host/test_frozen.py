"""The end-to-end tests of test_servers.py again, with smtp_duo FROZEN into the firmware.

The client runs on the unix port that tools/build_firmware.sh builds with the project's
manifest.py (md5=True) frozen in: .deps/firmware/unix/micropython (no TLS, and a hashlib with
sha256 only, so AUTH CRAM-MD5 goes through the frozen smtp_duo_md5). MICROPYPATH holds only the
test driver's .mpy and ".frozen", so `import smtp_duo` must come from the frozen bytecode, as on
a board whose firmware carries the library; test_smtp_duo_is_frozen proves that it does.

test_manifest_options_freeze_their_modules runs the manifest through MicroPython's own
tools/manifestfile.py (from the source tools/build_firmware.sh unpacks) with each option (md5=,
aio=, mime=), as a board manifest's include() does, and checks the modules it freezes; it needs
no firmware build.

Only this module uses the frozen runtime: its `runner` fixture overrides conftest's for the
tests imported below. A build that is missing, or older than lib/ and manifest.py (checked with
`tools/build_firmware.sh --check unix`), fails the run under CI=true and skips elsewhere.
"""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import test_servers
from conftest import HERE, ROOT, Runner, frozen_micropython_path, require, run_micropython
from hostkit.mpy import compile_all

# Every end-to-end test of test_servers.py, collected here a second time (with its parameters);
# in this module they get the frozen runner below.
for _name in dir(test_servers):
    if _name.startswith("test_") and callable(getattr(test_servers, _name)):
        globals()[_name] = getattr(test_servers, _name)
del _name


@pytest.fixture(scope="module")
def frozen_micropython():
    path = frozen_micropython_path()
    require(path is not None, "the unix port with smtp_duo frozen in (.deps/firmware/unix/micropython, "
                              "from tools/build_firmware.sh unix)")
    if not os.environ.get("SMTP_DUO_FROZEN_MICROPYTHON"):
        # Built from this lib/ and manifest.py? (The script compares its hash stamp; ~30 ms.)
        p = subprocess.run(["bash", str(ROOT / "tools" / "build_firmware.sh"), "--check", "unix"],
                           capture_output=True, text=True, timeout=60)
        require(p.returncode == 0, "a frozen build of the current lib/ and manifest.py "
                                   "(tools/build_firmware.sh unix)")
    return path


@pytest.fixture(scope="module")
def driver_only_mpy_dir(tmp_path_factory):
    """The test driver alone, as .mpy: no smtp_duo on the import path besides the frozen one."""
    return compile_all([HERE / "driver.py"], tmp_path_factory.mktemp("mpy_driver_only"))


FROZEN_CHECK = "import driver, smtp_duo, smtp_duo_md5; print(driver.smtp_duo.__file__, smtp_duo.__version__)"


@pytest.fixture(scope="module")
def frozen_origin(frozen_micropython, driver_only_mpy_dir):
    """What the driver's `import smtp_duo` finds, run exactly as the runner runs a job."""
    p = run_micropython(frozen_micropython, driver_only_mpy_dir, ["-c", FROZEN_CHECK])
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.split()


class FrozenRunner(Runner):
    """Runs the driver on the frozen firmware (a frozen smtp_duo is checked for first)."""

    def __init__(self, micropython, mpy_dir, tmp_path):
        super().__init__("frozen", micropython, mpy_dir, tmp_path)


@pytest.fixture
def runner(frozen_micropython, driver_only_mpy_dir, frozen_origin, tmp_path):
    assert frozen_origin[0] == "smtp_duo.py", "smtp_duo was not imported from frozen bytecode: %r" % (
        frozen_origin,)
    return FrozenRunner(frozen_micropython, driver_only_mpy_dir, tmp_path)


def test_smtp_duo_is_frozen(frozen_origin, driver_only_mpy_dir):
    import smtp_duo

    # A frozen module's __file__ is its name in the manifest, with no folder; one loaded from
    # the file system would carry the folder (and .mpy).
    assert frozen_origin == ["smtp_duo.py", smtp_duo.__version__]
    assert sorted(p.name for p in driver_only_mpy_dir.iterdir()) == ["driver.mpy"]


# -- manifest.py's options -----------------------------------------------------------------------


def _manifestfile():
    """MicroPython's tools/manifestfile.py from the source build_firmware.sh unpacked, or None."""
    src = Path(os.environ.get("SMTP_DUO_DEPS") or ROOT / ".deps") / "src"
    try:
        tree = src / (src / ".unpacked").read_text().strip()
    except OSError:
        return None
    path = tree / "tools" / "manifestfile.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("manifestfile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("options, extra", [
    ("", []),
    (", md5=True", ["smtp_duo_md5.py"]),
    (", aio=True", ["smtp_duo_async.py"]),
    (", mime=True", ["smtp_duo_mime.py"]),
    (", md5=True, aio=True, mime=True", ["smtp_duo_md5.py", "smtp_duo_async.py", "smtp_duo_mime.py"]),
], ids=["plain", "md5", "aio", "mime", "all"])
def test_manifest_options_freeze_their_modules(options, extra):
    mf = _manifestfile()
    require(mf is not None, "MicroPython's source (its tools/manifestfile.py), which "
                            "tools/build_firmware.sh unpacks")
    m = mf.ManifestFile(mf.MODE_FREEZE, {"MPY_LIB_DIR": None})
    m.execute("include(%r%s)" % (str(ROOT / "manifest.py"), options))  # as a board manifest does
    files = m.files()
    # The frozen names are the bare module names (import smtp_duo_mime finds them), each from lib/.
    assert sorted(f.target_path for f in files) == sorted(["smtp_duo.py"] + extra)
    for f in files:
        assert Path(f.full_path) == ROOT / "lib" / f.target_path
        assert f.kind == mf.KIND_FREEZE_AS_MPY  # compiled and frozen as bytecode
