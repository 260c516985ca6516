"""Board RAM: what importing each lib/ module costs a board's GC heap, from .py and from .mpy.

Run: .venv/bin/python tools/board_ram.py [--quick] [--json] [--runtime q32|u64] [--lib DIR] [MODULE ...]

Every module in lib/ is measured (or the MODULEs named; --quick: the core, smtp_duo, only), on
two runtimes at once, each figure from a fresh heap:

  Q32  the qemu MPS2_AN385 board (Cortex-M3, 32-bit), MicroPython 1.25, built by
       `tools/build_firmware.sh qemu-ram` WITHOUT smtp_duo frozen (a frozen module's names sit in
       ROM and make the other forms look cheaper), with a 1 MiB GC heap, driven through its raw
       REPL with a soft reset (Ctrl-D) before every figure (hostkit/qemu.py): an import interns its
       names for good, so a second import in one session would cost less.
  U64  the MicroPython 1.25 unix port (64-bit, .deps/bin/micropython), a fresh process per
       figure, `-X heapsize=4M` (or the heap being bisected).

The figures, per module and form (.py source compiled on the board, or .mpy from mpy-cross):
  kept        gc.mem_alloc() after the import minus before it, both after gc.collect().
  least free  the least gc.mem_free(), just before the import, with which it succeeds. Ballast
              takes all of the heap but one free run of N bytes (the run is reserved, the rest
              filled with ever smaller blocks down to single GC blocks, the run let go: no
              holes), and N is bisected in 256-byte steps; the figure is the smallest N from
              which the next two steps up pass too (a heap layout can let one smaller size pass
              by luck). A free heap in one run is the best case, as after a reset; a fragmented
              heap needs more.
  least heap  (U64 only) the least `-X heapsize` in which the whole import, dependencies first,
              succeeds in a fresh process: the unix port's classic, deterministic figure. For
              the core it agrees with "least free" (plus what the interpreter holds); for an
              extension its dependencies' own peak decides it, hence the ballast for "least free".
  frozen      kept, importing the module frozen into the project's other firmware (Q32:
              .deps/firmware/qemu/firmware.elf; U64: .deps/firmware/unix/micropython, both from
              tools/build_firmware.sh), where the module is frozen; marked stale when that
              firmware is older than lib/ (and left out with --lib).
  .mpy bytes  the module compiled by mpy-cross (bytecode: the same file for every board).
In --json also: kept_with_deps (from before the dependencies), qstr_bytes and qstr_pools (what
the import added to the interned names; a full pool is followed by one twice its size, paid by
whichever import overflows it: a "+" in the table), and the trials' count.

Dependencies: the modules an extension imports at its top level (found with Python's ast in its
source) are imported first, in the same session: its lib/ dependencies in the same form as the
module measured (all .py, or all .mpy, as on a board that got one or the other), the others
(asyncio, json, time, ...) as the runtime has them. The figures are then the extension's own.

Where the files are, on Q32, and why: a board keeps its files in flash, outside the GC heap, on
littlefs (rp2, esp32) or FAT; a .mpy there is read into RAM, and a .py is compiled in RAM, both
through a small read buffer. Here the files are on littlefs2, mounted as rp2's _boot.py mounts
its flash (vfs.VfsLfs2(bdev, progsize=256): a 1 KiB cache per open file, on the GC heap as on
the board), on qemuflash.Flash, a block device written in C (tools/qemu_ram/) over the board's
SSRAM2/3, memory the firmware does not use: the files' bytes are not on the GC heap, and a read
is a memcpy, as rp2.Flash does from XIP flash, so the importer's small reads leave no garbage.
QEMU loads the image, built on the host with the unix port's VfsLfs2, at start (-device loader).
Not chosen:
  - a filesystem in RAM on the GC heap (hostkit/qemu.py's RamFS): the file and the garbage of
    a Python-level readinto() every ~20 bytes sit in the heap being measured, which distorts
    the figures by up to 30 KB;
  - MicroPython 1.25's ROMFS (vfs.VfsRom): a .mpy in it is executed in place (py/persistentcode.c
    with MICROPY_VFS_ROM keeps its bytecode and strings in the image). Measured this way,
    smtp_duo 0.2.0's .mpy keeps 17.5 KB instead of 46.8 KB and needs 22.4 KB free instead of
    54.6 KB. For a .py, ROMFS is close (the same kept, least free 1.0 KB lower: no littlefs file
    cache), but one filesystem for both forms keeps them comparable.
The measuring firmware also has the time, select and _asyncio modules every board smtp_duo
targets has (the qemu port leaves them out), so smtp_duo_async can be measured on Q32; asyncio
itself is not frozen there but read as .mpy from the board's /lib, a dependency. A real board
has more names in ROM (its own modules, a frozen asyncio), so a module there interns a little
less than on this plain board.

Faithfulness, checked with smtp_duo 0.2.0 (commit 2212e5a) against the issue's figures for it
(in brackets): .mpy 30,761 B [the same]; Q32 kept from .mpy 46,816 [46.8 K], from .py 47,168
[46.9 K], frozen 7,120 [7.1 K] (a qemu firmware with 0.2.0 frozen); U64 kept from .mpy 64,672
[65.0 K], least heap for the .py 321,536 [316.8 K]. The least free heap on Q32 comes out lower
than the issue's: 207,968 for the .py [227 K], 54,624 for the .mpy [62.0 K]. These do not move
with a 256 KiB heap instead of 1 MiB, nor with the heap's layout shifted by 8 B to 1 KiB, and
for the .py ROMFS gives 1.0 KB less (no littlefs cache); the issue does not say how its free
heap was laid out (holes need more). With the same code every figure is the same from run to
run (QEMU and the unix port are deterministic); a change before the import (other names
interned, other objects alive) moves "kept" by up to about 100 B and "least free" by up to
about 1.5 KB.

The tool prints a table per runtime with the method; --json prints one JSON object instead
(tests_host/test_board_ram.py runs `--quick --json`). A runtime or firmware that is missing is
reported (with how to get it) and left out. Exit status: 0, or 1 if a figure could not be had
(a failure other than MemoryError, or a module that does not import on a runtime).
"""

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit import qemu  # noqa: E402
from hostkit.mpy import MpyCrossError, compile_mpy, is_native, mpy_cross_version  # noqa: E402
from hostkit.qemu import FLASH_ADDR, FLASH_BYTES, MOUNT  # noqa: E402

LIB = ROOT / "lib"
CORE = "smtp_duo"
FORMS = ("py", "mpy")
STEP = 256  # bisection granularity, bytes
WINDOW = 2  # steps above the minimum that must pass too
KIB = 1024
MIB = 1024 * KIB

U64_HEAP = 4 * MIB  # the unix port's heap, but where -X heapsize is bisected: 4x smtp_duo.py's need
U64_MAX_HEAP = 64 * MIB
MARK = "BOARD-RAM"


# -- what to measure -----------------------------------------------------------------------------


class Module:
    def __init__(self, name, path, imports):
        self.name = name
        self.path = path
        self.imports = imports  # every module its top level imports, in source order
        self.deps = []  # its lib/ dependencies, transitively, each after its own
        self.others = []  # the rest of its imports (asyncio, json, time, ...)


def top_level_imports(source):
    """The modules a module imports when it is imported: its top level, class bodies, if/try
    blocks; not function bodies (they run later, if ever). Relative imports are left out."""
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(child.module.split(".")[0])
            visit(child)

    visit(ast.parse(source))
    return list(dict.fromkeys(found))


def discover(lib_dir=LIB):
    """Every lib/*.py as a Module, the core first, with its dependencies worked out."""
    modules = {}
    for path in sorted(Path(lib_dir).glob("*.py")):
        modules[path.stem] = Module(path.stem, path, top_level_imports(path.read_text(encoding="utf-8")))
    if CORE not in modules:
        raise SystemExit("board_ram: no %s.py in %s" % (CORE, lib_dir))

    def deps_of(name, seen):
        if name in seen:
            raise SystemExit("board_ram: %s imports itself through %s" % (name, " -> ".join(seen)))
        out = []
        for dep in modules[name].imports:
            if dep in modules and dep != name:
                for d in deps_of(dep, seen + [name]) + [dep]:
                    if d not in out:
                        out.append(d)
        return out

    for m in modules.values():
        m.deps = deps_of(m.name, [])
        others = []
        for d in [m.name] + m.deps:
            others += [i for i in modules[d].imports if i not in modules and i not in others]
        m.others = others
    return [modules[CORE]] + [m for name, m in modules.items() if name != CORE]


def stage(modules, folder):
    """folder/py/<m>.py and folder/lib/<m>.mpy for every module (-s: the bare file name is
    embedded, as for a board). Returns {name: .mpy bytes}."""
    (folder / "py").mkdir(parents=True)
    (folder / "lib").mkdir()
    sizes = {}
    for m in modules:
        shutil.copyfile(m.path, folder / "py" / m.path.name)
        out = folder / "lib" / (m.name + ".mpy")
        try:
            compile_mpy(m.path, out, name=m.path.name)
        except MpyCrossError as e:
            raise RuntimeError("mpy-cross failed on %s: %s" % (m.path.name, e)) from e
        sizes[m.name] = out.stat().st_size
    return sizes


# -- the probe: one import, measured, on the board or the unix port --------------------------------

# MicroPython code, from a soft reset or a fresh process: the prelude (mounting the files), the
# path, the dependencies, then the import. The module's name is built at run time from its
# bytes, so this script's own compilation does not intern it ahead of the import.
PROBE = r'''
import gc, sys, micropython
{prelude}
sys.path[:] = {path!r}


def _fill(free, pad):
    # All of the heap but one run of `free` bytes: the run is reserved, the rest is filled with
    # ever smaller blocks down to single GC blocks (a 2-tuple is one), the run is let go. The GC
    # is conservative: a stale word equal to the run's address (on the C stack, say) keeps it;
    # then None is returned, and the host tries again with `pad` bytes kept before the run.
    gc.collect()
    pad = bytearray(pad) if pad else None
    try:
        hole = bytearray(free)
    except MemoryError:
        raise RuntimeError("no free run of %d bytes to leave" % free)
    chain = (pad, None)
    pad = None
    size = 65536
    while size >= 16:
        try:
            chain = (bytearray(size), chain)
        except MemoryError:
            size //= 2
    try:
        while True:
            chain = (None, chain)
    except MemoryError:
        pass
    hole = None
    gc.collect()
    return chain if gc.mem_free() >= free else None


def _probe(name, deps, others, free, pad):
    gc.collect()
    start = gc.mem_alloc()
    try:
        for n in others:
            try:
                __import__(n)
            except ImportError:
                pass
        for n in deps:
            __import__(n)
    except MemoryError:  # only where the heap is bisected: the dependencies did not fit
        have = gc.mem_free()
        print("{mark}", have, 0, 0, have + gc.mem_alloc(), repr("MemoryError in a dependency"))
        return
    gc.collect()
    micropython.qstr_info()  # prints the interned names' pools, allocating nothing
    before = gc.mem_alloc()
    chain = None if free is None else _fill(free, pad)
    have = gc.mem_free()
    if free is not None and chain is None:
        print("{mark}", have, 0, 0, have + gc.mem_alloc(), repr("{retained}"))
        return
    err = None
    try:
        __import__(name)
    except MemoryError:
        err = "MemoryError"
    except Exception as e:
        err = "%s: %s" % (type(e).__name__, e)
    chain = None
    gc.collect()
    after = gc.mem_alloc()
    micropython.qstr_info()
    print("{mark}", have, after - before, after - start, gc.mem_free() + after, repr(err))


_probe(bytes({name_bytes!r}).decode(), {deps!r}, {others!r}, {free!r}, {pad!r})
'''
RETAINED = "ballast: the free run stayed allocated"


def probe_source(module, path, free=None, prelude="", pad=0):
    """The probe for `module` with `path` as sys.path; free: None to measure what the import
    keeps, else bytes to leave free (ballast takes the rest)."""
    return PROBE.format(prelude=prelude, path=path, mark=MARK, retained=RETAINED, free=free, pad=pad,
                        name_bytes=tuple(module.name.encode()), deps=module.deps, others=module.others)


def ballast_trial(run, free):
    """run(pad) -> Trial, with ballast leaving `free` bytes; tried again, with more padding
    in front of the free run, while a stale pointer keeps the run allocated."""
    for attempt in range(10):
        t = run(0 if attempt == 0 else 256 << attempt)
        if t.error != RETAINED:
            return t
    raise RuntimeError("ballast: could not leave a free run of %d bytes (10 tries)" % free)


class Trial:
    """One probe's result: ok, the free heap before the import, the heap it kept (alone and with
    its dependencies), the heap's size, the error (None, "MemoryError" or another), and what
    the import added to the interned names (qstr): bytes, and new pools (a full pool is
    followed by one twice its size, paid by the import that overflows it)."""

    def __init__(self, out):
        line = [x for x in out.splitlines() if x.startswith(MARK + " ")]
        if not line:
            raise RuntimeError("no %s line in the output:\n%s" % (MARK, out[-2000:]))
        fields = line[-1].split(" ", 5)
        self.have, self.kept, self.kept_with_deps, self.heap = (int(x) for x in fields[1:5])
        self.error = ast.literal_eval(fields[5])
        self.ok = self.error is None
        # "qstr pool: n_pool=5, n_qstr=600, n_str_data_bytes=5306, n_total_bytes=9802"
        pools = [dict(kv.split("=") for kv in x.split(": ", 1)[1].split(", "))
                 for x in out.splitlines() if x.startswith("qstr pool: ")]
        self.qstr_bytes = self.qstr_pools = None
        if len(pools) == 2:
            self.qstr_bytes = int(pools[1]["n_total_bytes"]) - int(pools[0]["n_total_bytes"])
            self.qstr_pools = int(pools[1]["n_pool"]) - int(pools[0]["n_pool"])

    @property
    def memory_error(self):
        return self.error is not None and self.error.startswith("MemoryError")


def least(trial, lo, hi, hi_max, log=None):
    """Bisect the smallest x (bytes, STEP-aligned) for which trial(x).ok, in (lo, hi]: lo is
    checked to fail (else halved), hi grown up to hi_max until it passes. Then confirmed: the
    WINDOW steps above x must pass too, else x moves above the failure. A failure other than
    MemoryError stops the search (raised). Returns (x, the Trial at x, number of trials, the
    first x bisection found); x is None if even hi_max fails."""
    done = {}

    def ok(x):
        if x not in done:
            t = done[x] = trial(x)
            if not t.ok and not t.memory_error:
                raise RuntimeError("the import failed with %s (trial at %d)" % (t.error, x))
            if log:
                log("    %9d %s (free %d)" % (x, "ok" if t.ok else "MemoryError", t.have))
        return done[x].ok

    lo, hi = lo // STEP * STEP, -(-hi // STEP) * STEP
    while lo >= STEP and ok(lo):
        hi, lo = lo, lo // 2 // STEP * STEP
    while not ok(hi):
        if hi >= hi_max:
            return None, None, len(done), None
        lo, hi = hi, min(hi * 2, hi_max)
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        if ok(mid):
            hi = mid
        else:
            lo = mid
    first = stable = hi
    k = 1
    while k <= WINDOW and stable + k * STEP <= hi_max:
        if ok(stable + k * STEP):
            k += 1
        else:  # a size above fails: the minimum lies above it
            stable += (k + 1) * STEP
            k = 0  # check the new minimum itself, then the steps above it
    return stable, done[stable], len(done), first


def bracket(kept, form):
    """(lo, hi) to start bisecting the least free heap: an import needs at least what it keeps;
    compiling a .py needs several times that (about 5x for smtp_duo), loading a .mpy less."""
    return kept, (6 * kept + 16 * KIB) if form == "py" else (2 * kept + 4 * KIB)


# -- the runtimes ----------------------------------------------------------------------------------


class Unavailable(Exception):
    """A runtime or firmware is missing: the reason says how to get it."""


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def env_path(var, default):
    """$var if set, else `default` under the repository's root."""
    value = os.environ.get(var)
    return Path(value) if value else ROOT / default


def up_to_date(target):
    """True if tools/build_firmware.sh says the target is built from this checkout."""
    p = subprocess.run(["bash", str(ROOT / "tools" / "build_firmware.sh"), "--check", target],
                       capture_output=True, text=True, timeout=120)
    return p.returncode == 0


class Runtime:
    """What both runtimes share: the probe, the ballast, the bisection, the frozen figures."""

    key = title = prelude = ""
    frozen_env = frozen_target = None  # the firmware with smtp_duo frozen: its variable, its target

    def __init__(self, work, log, frozen_path):
        self.work = work
        self.log = log
        self.heap = None  # the GC heap's size, as the probes report it
        self.frozen = frozen_path
        self.frozen_ok, self.frozen_stale, self.frozen_note = False, None, "not measured"
        if frozen_path is None:
            return
        if not frozen_path.exists():
            self.frozen_note = "no %s (tools/build_firmware.sh %s)" % (rel(frozen_path), self.frozen_target)
        elif os.environ.get(self.frozen_env):
            self.frozen_ok, self.frozen_note = True, "%s (%s; not checked against lib/)" % (
                rel(frozen_path), self.frozen_env)
        else:
            self.frozen_ok, self.frozen_stale = True, not up_to_date(self.frozen_target)
            self.frozen_note = rel(frozen_path) + (" - STALE: older than lib/ (tools/build_firmware.sh %s)"
                                                   % self.frozen_target if self.frozen_stale else "")

    def start(self):
        pass

    def close(self):
        pass

    def probe(self, code):
        """Run a probe from a fresh heap; returns what it printed."""
        raise NotImplementedError

    def trial(self, module, form, free=None):
        def run(pad):
            return Trial(self.probe(probe_source(module, self.path(form), free, self.prelude, pad)))

        t = run(0) if free is None else ballast_trial(run, free)
        self.heap = t.heap
        return t

    def least_free(self, module, form, kept, base):
        """Bisect the free heap the import needs; base: what is allocated before it."""
        lo, hi = bracket(kept, form)
        top = self.heap - base - 4 * KIB  # the most the ballast can leave free
        return least(lambda n: self.trial(module, form, n), lo, min(hi, top), top, self.log)

    def frozen_trials(self, modules):
        raise NotImplementedError


class U64(Runtime):
    key = "U64"
    title = "MicroPython 1.25 unix port (64-bit)"
    frozen_env, frozen_target = "SMTP_DUO_FROZEN_MICROPYTHON", "unix"

    def __init__(self, work, log, frozen=True):
        self.micropython = env_path("SMTP_DUO_MICROPYTHON", ".deps/bin/micropython")
        if not self.micropython.exists():
            raise Unavailable("no MicroPython unix port at %s (tools/setup.sh)" % rel(self.micropython))
        frozen_path = env_path(self.frozen_env, ".deps/firmware/unix/micropython")
        # work holds py/ and lib/: the probes run there
        Runtime.__init__(self, work, log, frozen_path if frozen else None)
        self.version = self._run(self.micropython, "import sys; print(sys.implementation)").strip()

    def method(self):
        return {
            "runtime": "%s: %s; GC heap %s B (-X heapsize=%d)" % (
                rel(self.micropython), self.version, _n(self.heap), U64_HEAP),
            "command": "micropython -X heapsize=<H> -c <probe>, a fresh process per figure, cwd = a folder "
                       "with py/*.py and lib/*.mpy; sys.path = ['py', 'lib', '.frozen'] (.py) or "
                       "['lib', '.frozen'] (.mpy)",
            "files": "the host's filesystem (not on the GC heap); asyncio: the port's frozen one",
            "least free": "ballast fills the heap but N bytes, N bisected in %d B steps; least heap: "
                          "-X heapsize bisected, the whole import (dependencies first) in it" % STEP,
            "frozen": self.frozen_note + (", sys.path = ['.frozen']" if self.frozen_ok else ""),
        }

    def _run(self, exe, code, heap=U64_HEAP):
        p = subprocess.run([str(exe), "-X", "heapsize=%d" % heap, "-c", code], capture_output=True, text=True,
                           timeout=120, cwd=str(self.work))
        out = p.stdout + p.stderr
        if p.returncode != 0 and MARK not in p.stdout:
            if "MemoryError" in out:  # a heap too small to even start the probe in
                return "%s 0 0 0 %d 'MemoryError before the probe'\n" % (MARK, heap)
            raise RuntimeError("micropython failed (exit %d): %s" % (p.returncode, out[-2000:]))
        return p.stdout

    def probe(self, code):
        return self._run(self.micropython, code)

    @staticmethod
    def path(form):
        return ["py", "lib", ".frozen"] if form == "py" else ["lib", ".frozen"]

    def least_heap(self, module, form, kept, with_deps):
        """The least -X heapsize in which the module imports in a fresh process, its dependencies
        first (for an extension, their own peak may decide it): the classic unix-port figure."""
        code = probe_source(module, self.path(form))
        lo, hi = bracket(kept, form)
        return least(lambda h: Trial(self._run(self.micropython, code, h)), with_deps, 2 * with_deps + hi,
                     U64_MAX_HEAP, self.log)

    def frozen_trials(self, modules):
        return {m.name: Trial(self._run(self.frozen, probe_source(m, [".frozen"]))) for m in modules}


class Q32(Runtime):
    key = "Q32"
    title = "qemu MPS2_AN385 (Cortex-M3, 32-bit), MicroPython 1.25"
    frozen_env, frozen_target = "SMTP_DUO_QEMU_FIRMWARE", "qemu"
    prelude = "import vfs, qemuflash\n" + MOUNT

    def __init__(self, work, log, frozen=True):
        self.firmware = env_path("SMTP_DUO_QEMU_RAM_FIRMWARE", ".deps/firmware/qemu-ram/firmware.elf")
        self.unix = env_path("SMTP_DUO_MICROPYTHON", ".deps/bin/micropython")
        if not shutil.which("qemu-system-arm"):
            raise Unavailable("no qemu-system-arm (apt-get install qemu-system-arm)")
        if not self.firmware.exists():
            raise Unavailable("no measuring firmware at %s (tools/build_firmware.sh qemu-ram)"
                              % rel(self.firmware))
        if not os.environ.get("SMTP_DUO_QEMU_RAM_FIRMWARE") and not up_to_date("qemu-ram"):
            raise Unavailable("the measuring firmware %s is out of date (tools/build_firmware.sh qemu-ram)"
                              % rel(self.firmware))
        if not qemu.find_mpremote():
            raise Unavailable("no mpremote (.venv/bin/pip install -r requirements-dev.txt)")
        if not self.unix.exists():
            raise Unavailable("no MicroPython unix port at %s, to build the littlefs image (tools/setup.sh)"
                              % rel(self.unix))
        frozen_path = env_path(self.frozen_env, ".deps/firmware/qemu/firmware.elf")
        # work holds fs/: py/ and lib/, the image's content
        Runtime.__init__(self, work, log, frozen_path if frozen else None)
        self.board = self.repl = None

    def start(self):
        """Put work/fs (and the firmware's lib/asyncio) on a littlefs image, and boot the measuring
        firmware with the image in its flash."""
        folder = self.work / "fs"
        asyncio_dir = self.firmware.parent / "lib" / "asyncio"
        if asyncio_dir.is_dir():
            shutil.copytree(asyncio_dir, folder / "lib" / "asyncio")
        image = qemu.flash_image(self.unix, folder, self.work / "flash.img")
        self.board = qemu.QemuBoard(self.firmware, extra_args=qemu.flash_loader(image)).start()
        self.repl = qemu.RawRepl(self.board.port)

    def close(self):
        if self.repl is not None:
            self.repl.close()
        if self.board is not None:
            self.board.stop()

    def method(self):
        firmware = "%s (sha256 %s)" % (rel(self.firmware),
                                       hashlib.sha256(self.firmware.read_bytes()).hexdigest()[:16])
        return {
            "runtime": "%s: nothing frozen; GC heap %s B; qemu-system-arm -machine mps2-an385 "
                       "-device loader,file=<image>,addr=0x%x" % (firmware, _n(self.heap), FLASH_ADDR),
            "command": "raw REPL over the board's pty (hostkit/qemu.py RawRepl): a soft reset (Ctrl-D), then "
                       "the probe; sys.path = ['/py', '/lib'] (.py) or ['/lib'] (.mpy)",
            "files": "littlefs2, %s, on qemuflash.Flash: %d MiB at 0x%x, outside the GC heap; the image is "
                     "built on the host and loaded by QEMU; asyncio as .mpy in /lib" % (
                         MOUNT, FLASH_BYTES // MIB, FLASH_ADDR),
            "least free": "ballast fills the heap but N bytes, N bisected in %d B steps" % STEP,
            "frozen": self.frozen_note + (", soft reset, sys.path = ['.frozen']" if self.frozen_ok else ""),
        }

    def probe(self, code):
        return self.repl.run(code, timeout=300)

    @staticmethod
    def path(form):
        return ["/py", "/lib"] if form == "py" else ["/lib"]

    def frozen_trials(self, modules):
        board = qemu.QemuBoard(self.frozen).start()
        try:
            with qemu.RawRepl(board.port) as repl:
                return {m.name: Trial(repl.run(probe_source(m, [".frozen"]), timeout=120)) for m in modules}
        finally:
            board.stop()


# -- measuring -------------------------------------------------------------------------------------


def measure_runtime(rt, modules):
    """Every figure of `modules` on one runtime: ({module: {"py": {...}, "mpy": {...},
    "frozen": {...}}}, [problems], seconds). A problem is a figure that could not be had."""
    rows, problems = {}, []
    t0 = time.monotonic()
    rt.start()
    try:
        for m in modules:
            row = rows[m.name] = {}
            for form in FORMS:
                row[form] = fig = measure_form(rt, m, form)
                if "error" in fig:
                    problems.append("%s .%s: %s" % (m.name, form, fig["error"]))
        if rt.frozen is not None:
            frozen_figures(rt, modules, rows)
    finally:
        rt.close()
    return rows, problems, time.monotonic() - t0


def measure_form(rt, m, form):
    fig = {"kept": None, "kept_with_deps": None, "least_free": None}
    t = rt.trial(m, form)
    if not t.ok:
        fig["error"] = t.error
        return fig
    fig.update(kept=t.kept, kept_with_deps=t.kept_with_deps, qstr_bytes=t.qstr_bytes, qstr_pools=t.qstr_pools)
    rt.log("%s %s .%s: kept %s; least free:" % (rt.key, m.name, form, _n(t.kept)))
    x, at, count, first = rt.least_free(m, form, t.kept, t.heap - t.have)
    fig["trials"] = count
    if x is None:
        fig["error"] = "needs more free heap than the ballast can leave"
        return fig
    fig.update(least_free=at.have, bisected=x)
    if first != x:
        fig["lucky_pass"] = first  # a smaller size passed, one above it failed
    if isinstance(rt, U64):
        rt.log("%s %s .%s: least -X heapsize:" % (rt.key, m.name, form))
        h, _, count, _ = rt.least_heap(m, form, t.kept, t.kept_with_deps)
        fig["least_heap"] = h
        fig["trials"] += count
    return fig


def frozen_figures(rt, modules, rows):
    for m in modules:
        rows[m.name]["frozen"] = {"kept": None, "stale": rt.frozen_stale}
    if not rt.frozen_ok:
        for m in modules:
            rows[m.name]["frozen"]["error"] = rt.frozen_note
        return
    for name, t in rt.frozen_trials(modules).items():
        fig = rows[name]["frozen"]
        if t.ok:
            fig.update(kept=t.kept, qstr_bytes=t.qstr_bytes, qstr_pools=t.qstr_pools)
        else:
            fig["error"] = "not frozen there" if t.error.startswith("ImportError") else t.error


def measure(names=None, quick=False, runtimes=("Q32", "U64"), frozen=True, verbose=False, lib_dir=LIB):
    """The figures as one dict (what --json prints); see the module's doc."""
    t0 = time.monotonic()
    lib_dir = Path(lib_dir)
    all_modules = discover(lib_dir)
    known = [m.name for m in all_modules]
    names = [CORE] if quick else names
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise SystemExit("board_ram: no module %s in %s (there: %s)" % (", ".join(unknown), rel(lib_dir),
                                                                      ", ".join(known)))
    modules = [m for m in all_modules if not names or m.name in names]
    # The frozen firmware holds this checkout's lib/: no frozen figure for another one.
    frozen = frozen and lib_dir.resolve() == LIB.resolve()
    lock = threading.Lock()

    def log(line):
        if verbose:
            with lock:
                print(line, file=sys.stderr, flush=True)

    result = {"tool": "board_ram", "quick": quick, "step": STEP, "window": WINDOW,
              "mpy_cross": mpy_cross_version(), "lib": rel(lib_dir),
              "modules": [{"name": m.name, "deps": m.deps, "imports": m.others,
                           "py_bytes": m.path.stat().st_size} for m in modules],
              "runtimes": {}}
    with tempfile.TemporaryDirectory(prefix="board_ram.") as tmp:
        tmp = Path(tmp)
        sizes = stage(all_modules, tmp / "u64")  # U64 imports from here, Q32 from a copy on its flash
        shutil.copytree(tmp / "u64", tmp / "q32" / "fs")
        for m in all_modules:
            if is_native(m.path):  # native code (smtp_duo_fast): the board's CPU, a Cortex-M3
                compile_mpy(m.path, tmp / "q32" / "fs" / "lib" / (m.name + ".mpy"), name=m.path.name,
                            arch="armv7m")
        for entry in result["modules"]:
            entry["mpy_bytes"] = sizes[entry["name"]]

        def one(cls):
            res = result["runtimes"][cls.key] = {"available": False, "title": cls.title}
            try:
                rt = cls(tmp / cls.key.lower(), log, frozen)
            except Unavailable as e:
                res["reason"] = str(e)
                return
            res["available"] = True
            try:
                res["rows"], res["problems"], res["seconds"] = measure_runtime(rt, modules)
                res["method"] = rt.method()
            except Exception as e:  # this runtime failed: report it, keep the other one
                res["error"] = "%s: %s" % (type(e).__name__, e)

        # Both runtimes at once: QEMU keeps one core busy, the unix port's processes the other.
        threads = [threading.Thread(target=one, args=({"Q32": Q32, "U64": U64}[k],)) for k in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["ok"] = not any(rt.get("error") or rt.get("problems") for rt in result["runtimes"].values())
    result["table"] = table(result)
    return result


# -- report ----------------------------------------------------------------------------------------


def _n(x):
    return "-" if x is None else "{:,}".format(x)


def _kept(fig, after_deps):
    """A kept figure; "+" when it includes a new pool for interned names that the import had to
    add after its dependencies filled the pool before (which import pays for it is a matter of
    order: a module imported first always adds pools)."""
    return _n(fig.get("kept")) + ("+" if after_deps and fig.get("qstr_pools") else "")


def _wrap(text, indent):
    return textwrap.fill(text, 108, initial_indent=indent, subsequent_indent=indent + "    ")


def table(r):
    lines = []
    mods = {m["name"]: m for m in r["modules"]}
    for key in ("Q32", "U64"):
        rt = r["runtimes"].get(key)
        if rt is None:
            continue
        lines.append("%s  %s" % (key, rt["title"]))
        if not rt["available"]:
            lines += [_wrap("not measured: %s" % rt["reason"], "  "), ""]
            continue
        if "error" in rt:
            lines += ["  FAILED: %s" % rt["error"], ""]
            continue
        for k, v in rt["method"].items():
            lines.append(_wrap("%-11s %s" % (k + ":", v), "  "))
        lines.append(_wrap(
            "each figure from a soft reset or a fresh process; dependencies imported first, in the same "
            "form; kept = gc.mem_alloc() after - before, both after gc.collect(); least free = gc.mem_free() "
            "just before the import, the least with which it succeeds (the %d steps above pass too)"
            % r["window"], "  "))
        lines.append("")
        fmt = "  %-16s %-9s %7s %9s %9s %7s %10s %10s"
        lines.append(fmt % ("module", "deps", ".mpy B", "kept .py", "kept .mpy", "frozen", "least .py",
                            "least .mpy"))
        notes, pools = [], False
        for name, row in rt["rows"].items():
            fz = row.get("frozen", {})
            after = bool(mods[name]["deps"])
            frozen = _kept(fz, after) + ("*" if fz.get("stale") and fz.get("kept") is not None else "")
            deps = ",".join("core" if d == CORE else d for d in mods[name]["deps"]) or "-"
            lines.append(fmt % (name, deps, _n(mods[name]["mpy_bytes"]), _kept(row["py"], after),
                                _kept(row["mpy"], after), frozen, _n(row["py"]["least_free"]),
                                _n(row["mpy"]["least_free"])))
            pools = pools or (after and any(row[f].get("qstr_pools") for f in FORMS))
            for form in FORMS:
                if "error" in row[form]:
                    notes.append("%s .%s: %s" % (name, form, row[form]["error"]))
            if mods[name]["deps"] and row["py"]["kept"] is not None:
                notes.append("%s with its dependencies (%s): kept .py %s, .mpy %s" % (
                    name, ", ".join(mods[name]["deps"]), _n(row["py"]["kept_with_deps"]),
                    _n(row["mpy"]["kept_with_deps"])))
        heaps = ["%s .py %s, .mpy %s" % (name, _n(row["py"]["least_heap"]), _n(row["mpy"].get("least_heap")))
                 for name, row in rt["rows"].items() if "least_heap" in row["py"]]
        if heaps:
            notes.append("least -X heapsize for the whole import, dependencies first: " + "; ".join(heaps))
        if pools:
            notes.append("+ includes a new pool for interned names (qstrs): its dependencies had filled the "
                         "pool before (whichever import overflows a pool pays for the next, twice as big)")
        if any(row.get("frozen", {}).get("stale") for row in rt["rows"].values()):
            notes.append("* the frozen firmware is older than lib/: rebuild it for a current figure")
        lines += [_wrap(n, "  ") for n in notes]
        lines.append("  (%s s)" % round(rt["seconds"], 1))
        lines.append("")
    lines.append("mpy-cross: %s; all figures in bytes; measured in %s s" % (r["mpy_cross"], r["seconds"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE", help="lib/ modules to measure (default: all)")
    ap.add_argument("--quick", action="store_true", help="the core (smtp_duo) only")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--runtime", action="append", choices=("q32", "u64"),
                    help="measure on this runtime only (repeatable; default: both)")
    ap.add_argument("--no-frozen", action="store_true", help="leave out the frozen figures")
    ap.add_argument("--lib", type=Path, default=LIB, metavar="DIR",
                    help="measure the modules in DIR instead of lib/ (another version, say)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every trial on stderr")
    a = ap.parse_args(argv)
    runtimes = tuple(x.upper() for x in a.runtime) if a.runtime else ("Q32", "U64")
    r = measure(a.modules, a.quick, runtimes, not a.no_frozen, a.verbose, a.lib)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(r["table"])
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
