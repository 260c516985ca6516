"""An emulated Cortex-M board (MicroPython's qemu port, machine mps2-an385) driven by mpremote.

    board = QemuBoard(ROOT / ".deps/firmware/qemu/firmware.elf").start()
    print(board.exec("import smtp_duo; print(smtp_duo.__version__)"))
    print(board.run("script.py"))
    board.stop()

QEMU is started with the board's UART on a pseudo-terminal, exactly like a USB board on
/dev/ttyACM0, so everything goes through mpremote (`mpremote connect /dev/pts/N exec ...`).
QEMU is always killed by its PID: by stop(), at interpreter exit (atexit), and, on Linux, by the
kernel when the process that started it dies (PR_SET_PDEATHSIG), so a killed test run leaves no
QEMU behind. `extra_args` adds QEMU options (flash_loader() gives the ones that load a
littlefs image into the qemu-ram boards' flash). RawRepl keeps one connection to the raw REPL
for many short runs, each from a soft reset, without starting an mpremote process per run.

Facts about this board (MicroPython 1.25, BOARD=MPS2_AN385): a Cortex-M3 with a 140 KB GC heap;
no filesystem (`vfs` has only VfsRom, and nothing is mounted), no `time`, `socket` or `select`
module, `hashlib` with sha256 only, newlib's errno numbers (ETIMEDOUT is 116, as on the ESP32).
mpremote's `mount` needs `select` on the board, so it does not work here; mount_ramfs() gives the
board a filesystem in RAM instead, for tests of tools that copy files with `mpremote cp`.
(tools/build_firmware.sh qemu-ram and qemu-112k build a variant with time, select, _asyncio
and littlefs on a flash-like block device, qemuflash.Flash: tools/board_ram.py measures on it,
tests_host/test_packages.py installs on it. Its layout is FLASH_*, and flash_image() builds the
littlefs image of a folder for it on the host.)

Used by tools/board_ram.py and by tests_host (test_qemu.py, test_packages.py).
"""

import atexit
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from hostkit import ROOT
from hostkit.mpy import find_tool

MACHINE = "mps2-an385"


def default_firmware():
    """The firmware tools/build_firmware.sh builds (SMTP_DUO_QEMU_FIRMWARE overrides it)."""
    env = os.environ.get("SMTP_DUO_QEMU_FIRMWARE")
    return Path(env) if env else ROOT / ".deps" / "firmware" / "qemu" / "firmware.elf"


def find_mpremote():
    """The mpremote command as a list (the venv's first), or None."""
    return find_tool("mpremote")


class BoardError(Exception):
    """mpremote failed, or the code raised on the board (the traceback is in `output`)."""

    def __init__(self, message, output="", returncode=None):
        Exception.__init__(self, "%s\n%s" % (message, output) if output else message)
        self.output = output
        self.returncode = returncode


def _die_with_parent():
    # Runs in the child before exec: the kernel sends SIGKILL to QEMU when its parent dies.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class QemuBoard:
    def __init__(self, firmware=None, qemu="qemu-system-arm", mpremote=None, boot_timeout=30.0,
                 extra_args=()):
        self.firmware = Path(firmware) if firmware else default_firmware()
        self.qemu = qemu
        self.extra_args = list(extra_args)  # more QEMU options, after the machine's
        self.mpremote_cmd = mpremote or find_mpremote()
        self.boot_timeout = boot_timeout
        self.proc = None
        self.port = None
        self.log = []  # QEMU's own output
        self._lock = threading.Lock()

    # -- life cycle -----------------------------------------------------------------------------

    def start(self):
        if self.proc is not None:
            return self
        if not self.firmware.exists():
            raise FileNotFoundError("no firmware at %s (run tools/build_firmware.sh qemu)" % self.firmware)
        if not self.mpremote_cmd:
            raise FileNotFoundError("mpremote is not installed (.venv/bin/pip install mpremote)")
        cmd = [self.qemu, "-machine", MACHINE, "-nographic", "-monitor", "null", "-semihosting",
               "-serial", "pty", "-kernel", str(self.firmware)] + self.extra_args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        atexit.register(self.stop)
        found = threading.Event()
        threading.Thread(target=self._read_log, args=(self.proc, found), daemon=True).start()
        try:
            if not found.wait(self.boot_timeout) or self.port is None:
                raise BoardError("QEMU did not report its serial pty", "".join(self.log))
            self._wait_for_repl()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_log(self, proc, found):
        # Drains QEMU's output (so it can never block on a full pipe) and finds the pty.
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.log.append(line)
            m = re.search(r"char device redirected to (/dev/pts/\d+)", line)
            if m and self.port is None:
                self.port = m.group(1)
                found.set()
        found.set()  # QEMU exited

    def _wait_for_repl(self):
        # The REPL may not answer at once (QEMU still loading, first bytes lost): retry, bounded.
        deadline = time.monotonic() + self.boot_timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise BoardError("QEMU exited (code %s)" % self.proc.returncode, "".join(self.log))
            left = deadline - time.monotonic()
            if left <= 0:
                raise BoardError("the board's REPL did not answer within %ss" % self.boot_timeout, str(last))
            try:
                out = self.exec("print('board' + '-ready')", timeout=min(10.0, max(left, 1.0)))
                if "board-ready" in out:
                    return
                last = out
            except BoardError as e:
                last = e
            time.sleep(0.2)

    def stop(self):
        """Kill QEMU (by PID) and wait for it. Safe to call more than once."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- mpremote ---------------------------------------------------------------------------------

    def mpremote(self, *args, timeout=60.0, resume=False):
        """Run `mpremote connect <pty> [resume] ARGS...`; returns its stdout, raises BoardError if
        it fails (an exception on the board included). Without `resume` mpremote soft-resets
        the board before the first command, which clears the heap and everything on it."""
        if not self.running:
            raise BoardError("the board is not running")
        cmd = list(self.mpremote_cmd) + ["connect", self.port] + (["resume"] if resume else []) + list(args)
        with self._lock:
            try:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode("utf-8", "replace")
                raise BoardError("mpremote %s timed out after %ss" % (args[0] if args else "", timeout), out)
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            raise BoardError("mpremote %s failed (exit %d)" % (" ".join(args)[:80], p.returncode),
                             out + p.stderr.decode("utf-8", "replace"), p.returncode)
        return out

    def exec(self, code, timeout=60.0, resume=False):
        """Execute `code` on the board; returns what it printed."""
        return self.mpremote("exec", code, timeout=timeout, resume=resume)

    def run(self, path, timeout=120.0, resume=False):
        """Run a local script on the board (sent to RAM, not stored); returns what it printed."""
        return self.mpremote("run", str(path), timeout=timeout, resume=resume)

    def mount_ramfs(self, timeout=30.0):
        """Soft-reset the board and mount a filesystem held in RAM at "/", so `mpremote cp`,
        `mkdir` and imports from it work. It lasts until the next soft reset: later commands
        must pass resume=True (mpremote's `resume`) to keep it."""
        self.exec(RAMFS_SOURCE + "\nvfs.mount(RamFS(), '/')\n", timeout=timeout)



class RawRepl:
    """One open connection to a board's raw REPL (mpremote's SerialTransport, as a library).
    run(code) soft-resets the board first, so every run starts from a fresh heap and a fresh
    qstr pool, and returns what the code printed; a soft reset and a run take milliseconds,
    where an mpremote process per run takes about half a second. Nothing else may use the port
    while it is open (close() it, or use it as a context manager)."""

    def __init__(self, port):
        try:
            from mpremote.transport_serial import SerialTransport
        except ImportError as e:
            raise FileNotFoundError("mpremote is not installed (.venv/bin/pip install mpremote)") from e
        self.transport = SerialTransport(port)

    def run(self, code, timeout=60.0, soft_reset=True):
        from mpremote.transport import TransportError

        try:
            self.transport.enter_raw_repl(soft_reset=soft_reset)
            out, err = self.transport.exec_raw(code, timeout=timeout)
        except TransportError as e:
            raise BoardError("raw REPL: %s" % e) from e
        out = out.decode("utf-8", "replace")
        if err:
            raise BoardError("the code raised on the board", out + err.decode("utf-8", "replace"))
        return out

    def close(self):
        transport, self.transport = self.transport, None
        if transport is not None:
            try:
                transport.exit_raw_repl()
            finally:
                transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# A filesystem in RAM for a board without one: the VFS protocol of MicroPython (a Python object
# with open/stat/ilistdir/mkdir/... mounted with vfs.mount). A file is a list of bytes pieces in
# a dict; open() returns an io.IOBase stream, which the import machinery and mpremote's cp can
# both use. It takes the board's heap, of course: a 69 KB smtp_duo.py leaves too little to
# compile it (a real board reads the source from flash).
RAMFS_SOURCE = r'''
import errno, io, vfs


class _RamFile(io.IOBase):
    # A file's content is a list of pieces of up to about 2 KB: no large contiguous block (a
    # 70 KB .py fits in a fragmented heap) and no copying when it grows.
    def __init__(self, fs, path, mode):
        self.fs = fs
        self.path = path
        self.text = "b" not in mode
        self.writing = "w" in mode or "a" in mode
        self.chunks = fs.files.get(path, []) if "w" not in mode else []
        if self.writing:
            self.chunks = list(self.chunks)
            self.cur = bytearray()
        self.i = 0  # reading: chunk index and offset in it
        self.off = 0

    def readinto(self, buf):
        n = 0
        mv = memoryview(buf)
        while n < len(buf) and self.i < len(self.chunks):
            c = self.chunks[self.i]
            k = min(len(buf) - n, len(c) - self.off)
            mv[n : n + k] = memoryview(c)[self.off : self.off + k]
            n += k
            self.off += k
            if self.off == len(c):
                self.i += 1
                self.off = 0
        return n

    def read(self, n=-1):
        if n is None or n < 0:
            n = 0
            for c in self.chunks:
                n += len(c)
        buf = bytearray(n)
        b = bytes(memoryview(buf)[: self.readinto(buf)])
        return b.decode() if self.text else b

    def write(self, b):
        if not self.writing:
            raise OSError(errno.EBADF)
        if isinstance(b, str):
            b = b.encode()
        # Small writes (mpremote sends 256 bytes at a time) are gathered into 2 KB pieces.
        self.cur.extend(b)
        if len(self.cur) >= 2048:
            self.chunks.append(bytes(self.cur))
            self.cur = bytearray()
        return len(b)

    def flush(self):
        pass

    def close(self):
        if self.writing:
            if self.cur:
                self.chunks.append(bytes(self.cur))
            self.cur = None
            self.fs.files[self.path] = self.chunks
            self.writing = False

    def ioctl(self, req, arg):
        if req == 4:  # close
            self.close()
        elif req == 11:  # buffer size for the import reader: 0 = its default
            return 0
        elif req != 1:  # 1: flush
            return -1
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class RamFS:
    def __init__(self):
        self.files = {}
        self.dirs = {"/"}
        self.cwd = "/"

    def _abs(self, path):
        if not path.startswith("/"):
            path = self.cwd.rstrip("/") + "/" + path
        parts = []
        for p in path.split("/"):
            if p == "..":
                if parts:
                    parts.pop()
            elif p and p != ".":
                parts.append(p)
        return "/" + "/".join(parts)

    def _parent_ok(self, path):
        if (path.rsplit("/", 1)[0] or "/") not in self.dirs:
            raise OSError(errno.ENOENT)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def chdir(self, path):
        path = self._abs(path)
        if path not in self.dirs:
            raise OSError(errno.ENOENT)
        self.cwd = path

    def getcwd(self):
        return self.cwd

    def ilistdir(self, path):
        path = self._abs(path)
        if path not in self.dirs:
            raise OSError(errno.ENOENT)
        pre = path.rstrip("/") + "/"
        for d in sorted(self.dirs):
            if d != "/" and d.startswith(pre) and "/" not in d[len(pre) :]:
                yield (d[len(pre) :], 0x4000, 0)
        for f in sorted(self.files):
            if f.startswith(pre) and "/" not in f[len(pre) :]:
                yield (f[len(pre) :], 0x8000, 0, self._size(f))

    def _size(self, path):
        n = 0
        for c in self.files[path]:
            n += len(c)
        return n

    def stat(self, path):
        path = self._abs(path)
        if path in self.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if path in self.files:
            return (0x8000, 0, 0, 0, 0, 0, self._size(path), 0, 0, 0)
        raise OSError(errno.ENOENT)

    def statvfs(self, path):
        import gc
        return (512, 512, 0, gc.mem_free() // 512, gc.mem_free() // 512, 0, 0, 0, 0, 255)

    def mkdir(self, path):
        path = self._abs(path)
        if path in self.dirs or path in self.files:
            raise OSError(errno.EEXIST)
        self._parent_ok(path)
        self.dirs.add(path)

    def rmdir(self, path):
        path = self._abs(path)
        if path not in self.dirs or path == "/":
            raise OSError(errno.ENOENT)
        for name in list(self.dirs) + list(self.files):
            if name.startswith(path + "/"):
                raise OSError(errno.EACCES)
        self.dirs.discard(path)

    def remove(self, path):
        path = self._abs(path)
        if path not in self.files:
            raise OSError(errno.ENOENT)
        del self.files[path]

    def rename(self, old, new):
        old, new = self._abs(old), self._abs(new)
        if old not in self.files:
            raise OSError(errno.ENOENT)
        self._parent_ok(new)
        self.files[new] = self.files.pop(old)

    def open(self, path, mode):
        path = self._abs(path)
        if path in self.dirs:
            raise OSError(errno.EISDIR)
        if "w" in mode or "a" in mode:
            self._parent_ok(path)
        elif path not in self.files:
            raise OSError(errno.ENOENT)
        return _RamFile(self, path, mode)
'''


# -- the qemu-ram boards' flash (tools/build_firmware.sh qemu-ram, qemu-112k) -----------------------

# qemuflash.Flash (tools/qemu_ram/qemuflash/qemuflash.c): where and how big; the image must match.
FLASH_ADDR = 0x20000000
FLASH_BYTES = 2 * 1024 * 1024
FLASH_BLOCK = 4096
MOUNT = 'vfs.mount(vfs.VfsLfs2(qemuflash.Flash(), progsize=256), "/")'  # as rp2's _boot.py

# Runs on the unix port: a littlefs2 image of a folder, for qemuflash.Flash.
MKIMG = r"""
import os, sys, vfs

SIZE, BLOCK = int(sys.argv[3]), int(sys.argv[4])


class Bdev:
    def __init__(self):
        self.data = bytearray(SIZE)

    def readblocks(self, n, buf, off=0):
        s = n * BLOCK + off
        buf[:] = self.data[s : s + len(buf)]

    def writeblocks(self, n, buf, off=None):
        s = n * BLOCK + (off or 0)
        self.data[s : s + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return SIZE // BLOCK
        if op == 5:
            return BLOCK
        if op == 6:
            self.data[arg * BLOCK : (arg + 1) * BLOCK] = b"\xff" * BLOCK
        return 0


def copy(src, dst):
    for name in sorted(os.listdir(src)):
        s, d = src + "/" + name, dst + "/" + name
        if os.stat(s)[0] & 0x4000:
            os.mkdir(d)
            copy(s, d)
        else:
            with open(s, "rb") as f, open(d, "wb") as g:
                g.write(f.read())


bdev = Bdev()
vfs.VfsLfs2.mkfs(bdev, progsize=256)
vfs.mount(vfs.VfsLfs2(bdev, progsize=256), "/img")
copy(sys.argv[1], "/img")
vfs.umount("/img")
with open(sys.argv[2], "wb") as f:
    f.write(bdev.data)
print("image ok")
"""


def flash_image(micropython, folder, image):
    """A littlefs image of `folder` (its files and subfolders) for qemuflash.Flash, written to
    `image` by MKIMG on the MicroPython unix port `micropython`; returns `image`."""
    script = Path(image).parent / "mkimg.py"
    script.write_text(MKIMG, encoding="utf-8")
    cmd = [str(micropython), "-X", "heapsize=%d" % (4 * FLASH_BYTES), str(script), str(folder), str(image),
           str(FLASH_BYTES), str(FLASH_BLOCK)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or "image ok" not in p.stdout:
        raise RuntimeError("building the littlefs image failed: %s" % (p.stdout + p.stderr)[-2000:])
    return image


def flash_loader(image):
    """QemuBoard's extra_args that load `image` into the flash at boot."""
    return ["-device", "loader,file=%s,addr=0x%x,force-raw=on" % (image, FLASH_ADDR)]
