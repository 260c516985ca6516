"""smtp_duo on an emulated board: MicroPython 1.25's qemu port (mps2-an385, Cortex-M3, 192 KB
heap) with smtp_duo frozen in (.deps/firmware/qemu/firmware.elf, from tools/build_firmware.sh
qemu), driven through mpremote like a board on USB (see hostkit/qemu.py).

- the frozen module imports there, on a board without `time`, `socket` and `select`;
- the portable tests run there: memserver.py and test_portable.py (and smtp_duo_md5.py if the
  firmware lacks it) are joined into one script for `mpremote run`, as the board has no
  filesystem and mpremote's `mount` needs `select`;
- a 1 MiB body streams through the client with a flat heap: what the send leaves behind, and
  the least free heap it needs (bisection with the rest of the heap filled);
- tools/deploy.py copies the library for real, with `mpremote cp`, into a filesystem held in
  the board's RAM (hostkit.qemu.RAMFS_SOURCE), imports it, and runs tools/board_selftest.py
  against an in-memory SMTP server behind a stand-in `socket` module. deploy.py runs as a
  program throughout (--build-only for the files it would copy, --unix-port for its self-test
  on real sockets); the tests import nothing from tools/.

Under CI=true a missing QEMU, mpremote or firmware (or one older than lib/ and manifest.py, by
`tools/build_firmware.sh --check qemu`) fails the run; elsewhere it skips.
SMTP_DUO_QEMU_FIRMWARE=<firmware.elf> runs them on another build (then unchecked).
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import smtp_duo
import test_portable
from conftest import HERE, ROOT, marker, require
from hostkit.qemu import QemuBoard, default_firmware, find_mpremote

PORTABLE = HERE / "portable"
MIB = 1024 * 1024
RETAIN_BOUND = 1024  # bytes a send may leave allocated


@pytest.fixture(scope="module")
def board():
    fw = default_firmware()
    require(shutil.which("qemu-system-arm"), "qemu-system-arm (apt-get install qemu-system-arm)")
    require(fw.exists(), "the qemu firmware .deps/firmware/qemu/firmware.elf (tools/build_firmware.sh qemu)")
    require(find_mpremote(), "mpremote (.venv/bin/pip install -r requirements-dev.txt)")
    if not os.environ.get("SMTP_DUO_QEMU_FIRMWARE"):
        # Built from this lib/ and manifest.py? (The script compares its hash stamp.)
        p = subprocess.run(["bash", str(ROOT / "tools" / "build_firmware.sh"), "--check", "qemu"],
                           capture_output=True, text=True, timeout=60)
        require(p.returncode == 0, "a qemu firmware of the current lib/ and manifest.py "
                                   "(tools/build_firmware.sh qemu)")
    t = time.monotonic()
    b = QemuBoard(fw).start()
    print("\nqemu board up on %s in %.1fs" % (b.port, time.monotonic() - t))
    yield b
    b.stop()


def source(name):
    return (PORTABLE / name).read_text(encoding="utf-8")


def without(text, line):
    """`text` without the one line `line` (it must be there exactly once)."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, x in enumerate(lines) if x.rstrip("\r\n") == line]
    assert len(hits) == 1, "expected exactly one line %r" % line
    del lines[hits[0]]
    return "".join(lines)


def portable_module():
    """test_portable.py as a part of one script: MemServer, MemClient and Collect come from
    memserver.py above it."""
    return without(source("test_portable.py"), "from memserver import Collect, MemClient, MemServer, rng")


def md5_prelude(board):
    """smtp_duo_md5 for a firmware that has not frozen it (this board's hashlib has no md5):
    its source, registered under its module name, so smtp_duo's `from smtp_duo_md5 import md5`
    finds it. Empty when the firmware has it."""
    probe = "try:\n import smtp_duo_md5\n print('frozen')\nexcept ImportError:\n print('no')"
    if "frozen" in board.exec(probe):
        return ""
    lib = (ROOT / "lib" / "smtp_duo_md5.py").read_text(encoding="utf-8")
    return lib + ('\nimport sys\n\n\nclass _Md5Module:\n    md5 = md5\n\n\n'
                  'sys.modules["smtp_duo_md5"] = _Md5Module\n')


# -- a. the frozen module ---------------------------------------------------------------------

FACTS = r"""
import sys, gc, json, platform
import smtp_duo
r = {"file": smtp_duo.__file__, "version": smtp_duo.__version__, "platform": sys.platform,
     "machine": sys.implementation._machine, "release": platform.platform(),
     "mpy": sys.implementation._mpy, "path": sys.path}
for m in ("time", "socket", "select", "ssl", "tls", "network", "smtp_duo_md5"):
    try:
        __import__(m)
        r[m] = True
    except ImportError:
        r[m] = False
import hashlib, errno
r["hashlib_md5"] = hasattr(hashlib, "md5")
r["ETIMEDOUT"] = errno.ETIMEDOUT
gc.collect()
r["heap"] = gc.mem_free() + gc.mem_alloc()
r["free"] = gc.mem_free()
print("FACTS " + json.dumps(r))
"""


def test_frozen_module_imports_on_the_cortex_m_board(board):
    f = marker(board.exec(FACTS), "FACTS")
    print("\nboard: %s, %s, sys.platform %r, heap %d bytes (%d free after importing smtp_duo)" % (
        f["machine"], f["release"], f["platform"], f["heap"], f["free"]))
    print("board modules: " + ", ".join("%s %s" % (m, "yes" if f[m] else "NO") for m in (
        "time", "socket", "select", "ssl", "tls", "network", "smtp_duo_md5", "hashlib_md5")))
    assert f["file"] == "smtp_duo.py", f  # frozen: no folder
    assert f["version"] == smtp_duo.__version__
    assert f["platform"] == "qemu" and "Cortex-M3" in f["machine"], f
    assert not f["socket"]  # nothing here may need a network stack


# -- b. the portable tests on the board ------------------------------------------------------------


def test_portable_tests_pass_on_the_board(board, tmp_path):
    script = tmp_path / "portable_on_board.py"
    text = md5_prelude(board) + source("memserver.py") + "\n" + portable_module()
    script.write_text(text, encoding="utf-8")
    t = time.monotonic()
    out = board.run(script, timeout=240)
    took = time.monotonic() - t
    lines = [x.strip() for x in out.splitlines()]
    names = test_portable.tests()
    print("\nportable tests on the board (%.1fs): %s" % (took, lines[-1] if lines else "no output"))
    failed = [x for x in lines if x.startswith("FAIL ")]
    assert not failed, "\n".join(failed) + "\n\n" + out
    assert lines and lines[-1] == "%d passed, 0 failed" % len(names), out
    assert sorted(x[3:] for x in lines if x.startswith("ok ")) == names, out


# -- c. heap: a 1 MiB body ----------------------------------------------------------------------------

HEAP = r"""
import gc, json

PIECE = 512
LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n"  # 64 bytes


class TextFile:
    # `total` bytes of text read in PIECE-byte pieces; seekable like a file (so the client
    # scans it, then sends it as it is). No filesystem needed.
    def __init__(self, total):
        self.total = total
        self.pos = 0
        self.piece = memoryview(LINE * (PIECE // len(LINE)))

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = pos
        return pos

    def readinto(self, buf):
        off = self.pos % PIECE
        n = min(len(buf), PIECE - off, self.total - self.pos)
        buf[:n] = self.piece[off : off + n]
        self.pos += n
        return n


def text_chunks(total):
    # The same text from a generator: a one-shot stream (sent quoted-printable).
    piece = LINE * (PIECE // len(LINE))
    for _ in range(total // PIECE):
        yield piece


def body(kind, total):
    return TextFile(total) if kind == "file" else text_chunks(total)


SERVER = MemServer(keep=False)
CLIENT = MemClient(SERVER)


def send(b):
    # -> (reply code or the error, bytes the server got in DATA)
    before = SERVER.data_size
    try:
        code = CLIENT.mail_send("you@example.com", 2, "heap", b).code
    except MemoryError:
        code = "MemoryError"
    except Exception as e:
        code = repr(e)
    SERVER.commands = []  # the server's log is not the client's heap
    SERVER.messages = []
    return code, SERVER.data_size - before


def alloc():
    gc.collect()
    return gc.mem_alloc()


def fill(free):
    # Takes all the heap but one free block of `free` bytes: it is reserved, everything else
    # is filled down to the smallest holes, then the reservation is let go. (Filling up to a
    # total instead would leave the free heap in holes too small for a 1 KB buffer.)
    gc.collect()
    try:
        reserve = bytearray(free)
    except MemoryError:
        raise RuntimeError("no free block of %d bytes to measure in" % free)
    blocks = None  # a chain of (block, rest): no list to grow
    size = 16384
    while size >= 16:
        try:
            blocks = (bytearray(size), blocks)
        except MemoryError:
            size //= 2
    reserve = None
    gc.collect()
    return blocks


def trial(kind, free, total):
    b = body(kind, total)
    blocks = fill(free)
    have = gc.mem_free()
    code, got = send(b)
    blocks = b = None
    return code == 250 and got >= total, have, code


def least_free(kind, total, step=256, hi=16384):
    # The smallest free heap a send succeeds with, bisected, then confirmed: it and the two
    # steps above it pass (heap layout can let one smaller size pass by luck).
    ok, have, code = trial(kind, hi, total)
    if not ok:
        return None, "fails with %d free: %s" % (have, code)
    lo = 0
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if trial(kind, mid, total)[0]:
            hi = mid
        else:
            lo = mid
    while hi < 24576 and not (trial(kind, hi + step, total)[0] and trial(kind, hi + 2 * step, total)[0]):
        hi += step
    return hi, trial(kind, hi, total)[1]


r = {"heap": gc.mem_free() + gc.mem_alloc()}
a0 = alloc()
r["file_1"] = send(body("file", 1048576))
a1 = alloc()
r["file_2"] = send(body("file", 1048576))
a2 = alloc()
r["iter_1"] = send(body("iter", 1048576))
a3 = alloc()
r["alloc"] = [a0, a1, a2, a3]
r["retained"] = {"file first": a1 - a0, "file again": a2 - a1, "generator": a3 - a2}
for kind in ("file", "iter"):
    target, have = least_free(kind, 16384)
    r["least_" + kind] = [target, have]
    if target is not None:
        # The 1 MiB send with that much heap free (the need must not grow with the body), give
        # or take the heap layout: the margin it took.
        for margin in (0, 512, 1024, 2048):
            ok, have, code = trial(kind, target + margin, 1048576)
            if ok:
                break
        r["big_" + kind] = [ok, margin, have, code]
print("HEAP " + json.dumps(r))
"""


def test_native_hot_path_writes_what_the_bytecode_writes_on_the_board(board, tmp_path):
    # smtp_duo_fast frozen for this CPU (Thumb-2 native code, 32-bit): random bodies and windows,
    # scan states, plain text, base64 and whole mails equal to the bytecode's and the definition.
    script = tmp_path / "hotpath_on_board.py"
    hot = without(source("hotpath_portable.py"), "from memserver import MemClient, MemServer, rng")
    script.write_text(source("memserver.py") + "\n" + hot + "\nREPEAT = 1\nPARTS = 16\nprint('HOT ' + json.dumps(run(100, 5)))\n",
                      encoding="utf-8")
    r = marker(board.run(script, timeout=300), "HOT")
    print("\nnative hot path on the board: %d cases, fast %s, %d failed" % (r["cases"], r["fast"], r["failed"]))
    assert r["fast"], "smtp_duo_fast is not frozen in the board's firmware"
    assert r["failed"] == 0, r["failures"]


def test_one_mib_body_streams_with_a_flat_heap(board, tmp_path):
    script = tmp_path / "heap_on_board.py"
    # The in-memory server and the probe only: the portable tests' bytecode would take the heap
    # (compiled on the board) that the probe needs as one free 16 KiB block.
    script.write_text(source("memserver.py") + "\n" + HEAP, encoding="utf-8")
    t = time.monotonic()
    r = marker(board.run(script, timeout=400), "HEAP")
    took = time.monotonic() - t
    a0, a1, a2, a3 = r["alloc"]
    retained = r["retained"]
    least = {k: r["least_" + k] for k in ("file", "iter")}
    big = {k: r.get("big_" + k) for k in ("file", "iter")}

    def limit(kind):
        if not big[kind]:
            return "-"
        ok, margin, have, code = big[kind]
        if ok:
            return "ok with %d B free (+%d)" % (have, margin)
        return "FAILS even with +%d (%s)" % (margin, code)

    line = ("qemu heap (Cortex-M3, %d B GC heap; 1 MiB of text in 512 B pieces through MemClient and "
            "MemServer(keep=False)): gc.mem_alloc() %d before, %d after the 1st send (+%d), %d after a 2nd "
            "(+%d), %d after a generator body (+%d); least free heap a send needs (client + in-memory "
            "server, bisected on 16 KiB, 256 B steps): file-like %s B, generator %s B; 1 MiB at that: "
            "file-like %s, generator %s; %.0fs" % (
                r["heap"], a0, a1, retained["file first"], a2, retained["file again"], a3,
                retained["generator"], least["file"][0], least["iter"][0], limit("file"), limit("iter"),
                took))
    print("\n" + line)
    for key in ("file_1", "file_2", "iter_1"):
        code, got = r[key]
        assert code == 250, (key, code)
        assert MIB <= got < MIB + 1024, (key, got)  # the body, exactly, plus < 1 KiB of header
    for what, n in retained.items():
        assert n <= RETAIN_BOUND, "a send left %d bytes allocated (%s): %s" % (n, what, line)
    for kind in ("file", "iter"):
        assert least[kind][0] is not None, line
        assert big[kind][0], line  # 1 MiB needs at most 2 KiB more than 16 KiB: no growth with size


# -- tools/deploy.py against the board ----------------------------------------------------------------

# A stand-in network for tools/board_selftest.py: `socket` and `select` modules whose one server
# is a MemServer (memserver.py's source goes in front of this, and SCRIPT = its script).
FAKE_NET = r"""
import sys


class _FakeSock:
    def __init__(self, *args):
        self.srv = None

    def settimeout(self, t):
        pass

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        NET["connects"].append(addr)
        self.srv = NET["server"].connect()

    def readable(self):
        return bool(self.srv.out) or self.srv.closing

    def readinto(self, mv):
        if not self.readable():
            return None  # would block
        return self.srv.read_into(mv, 0)

    def write(self, mv, off=0, n=None):  # a board socket's write(buf, off, len)
        mv = memoryview(mv)[off : len(mv) if n is None else off + n]
        self.srv.write(mv, 0)
        return len(mv)

    def close(self):
        self.srv.close()


class _Poll:
    def register(self, sock, events=1):
        self.sock = sock
        self.events = events

    def modify(self, sock, events):
        self.events = events

    def poll(self, timeout=-1):
        if self.events & 1 and not self.sock.readable():
            return []  # a silent server: the client's deadline decides
        return [(self.sock, self.events)]

    def ipoll(self, timeout=-1):
        return iter(self.poll(timeout))


class _Module:
    pass


def _getaddrinfo(host, port, *args):
    NET["lookups"].append(host)
    return [(2, 1, 0, "", ("192.0.2.25", port))]


_socket = _Module()
_socket.AF_INET = 2
_socket.SOCK_STREAM = 1
_socket.getaddrinfo = _getaddrinfo
_socket.socket = _FakeSock
_select = _Module()
_select.POLLIN = 1
_select.POLLOUT = 4
_select.poll = _Poll
sys.modules["socket"] = _socket
sys.modules["select"] = _select
NET = {"server": MemServer(SCRIPT), "lookups": [], "connects": []}
"""

NET_STATE = r"""
srv = NET["server"]
print("NET " + json.dumps({"lookups": NET["lookups"], "connects": [list(a) for a in NET["connects"]],
                           "commands": [c.decode() for c in srv.commands],
                           "messages": [m.decode() for m in srv.messages]}))
"""


def run_deploy(board, *args, env=None, timeout=300):
    return deploy_cli("--port", board.port, *args, env=env, timeout=timeout)


def deploy_cli(*args, env=None, timeout=300):
    cmd = [sys.executable, str(ROOT / "tools" / "deploy.py"), *args]
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    print("\n$ deploy.py %s  -> exit %d (%.1fs)\n%s%s" % (" ".join(args), p.returncode, time.monotonic() - t,
                                                         p.stdout, p.stderr))
    return p


def board_sha256(board, path):
    out = board.exec("import hashlib, binascii\nh = hashlib.sha256()\nb = bytearray(512)\n"
                     "with open(%r, 'rb') as f:\n    while True:\n        n = f.readinto(b)\n"
                     "        if not n:\n            break\n        h.update(memoryview(b)[:n])\n"
                     "print('SHA', binascii.hexlify(h.digest()).decode())" % path, resume=True)
    return out.split("SHA ")[1].split()[0]


def deploy_build(folder, *args):
    """The files `deploy.py --md5 ARGS` would copy, written by --build-only: [smtp_duo.mpy,
    smtp_duo_md5.mpy]."""
    p = deploy_cli("--build-only", str(folder), "--md5", *args)
    assert p.returncode == 0, p.stdout + p.stderr
    files = [folder / "smtp_duo.mpy", folder / "smtp_duo_md5.mpy"]
    assert sorted(folder.iterdir()) == files
    return files


def test_deploy_builds_the_same_bytecode_for_every_arch(tmp_path):
    # What deploy.py --help says: smtp_duo has no native code, so -march changes nothing.
    default = deploy_build(tmp_path / "plain")
    for arch in ("armv6m", "armv7m", "xtensawin", "rv32imc"):
        files = deploy_build(tmp_path / arch, "--mpy", arch)
        assert [f.read_bytes() for f in files] == [f.read_bytes() for f in default], arch
    assert default[0].read_bytes()[:2] == b"M\x06" and str(ROOT).encode() not in default[0].read_bytes()


IMPORT_FROM_LIB = r"""
import sys, gc


def _check():
    sys.path.insert(0, "/lib")
    for m in ("smtp_duo", "smtp_duo_md5"):
        sys.modules.pop(m, None)
    import smtp_duo, smtp_duo_md5, os

    print(smtp_duo.__file__, smtp_duo.__version__, smtp_duo_md5.__file__, sorted(os.listdir("/lib")))
    for m in ("smtp_duo", "smtp_duo_md5"):
        sys.modules.pop(m, None)
    sys.path.pop(0)


_check()
gc.collect()
"""


def test_deploy_copies_to_lib_and_imports_there(board, tmp_path):
    # The .py form first, while the board's heap is fresh: its 70 KB source lies in the same
    # 192 KB heap (a real board keeps it in flash), so it may copy but not compile here.
    board.mount_ramfs()  # the board has no filesystem: one in its RAM, until the next soft reset
    p = run_deploy(board, "--no-soft-reset", "--py")
    assert "created /lib" in p.stdout
    want = hashlib.sha256((ROOT / "lib" / "smtp_duo.py").read_bytes()).hexdigest()
    assert board_sha256(board, "/lib/smtp_duo.py") == want
    if p.returncode != 0:  # only running out of memory while compiling is acceptable
        assert "MemoryError" in p.stdout, p.stdout
        print("(the .py form copies, but cannot be compiled here while its source fills the RAM)")

    # The .mpy form replaces it (a stale .py would be imported before a new .mpy, and the reverse).
    p = run_deploy(board, "--no-soft-reset", "--md5")
    assert p.returncode == 0, p.stdout
    assert "removed /lib/smtp_duo.py" in p.stdout
    assert "import smtp_duo from /lib: version %s (/lib/smtp_duo.mpy)" % smtp_duo.__version__ in p.stdout
    assert "smtp_duo_md5 (/lib/smtp_duo_md5.mpy): md5(b'abc') correct" in p.stdout
    # This firmware has smtp_duo frozen in, and it comes first on sys.path: deploy.py says so.
    assert "a plain `import smtp_duo` on this board gets 'smtp_duo.py'" in p.stdout
    # The files on the board are the ones deploy.py compiles.
    for f in deploy_build(tmp_path / "mpy"):
        assert board_sha256(board, "/lib/" + f.name) == hashlib.sha256(f.read_bytes()).hexdigest(), f.name
    out = board.exec(IMPORT_FROM_LIB, resume=True)
    assert out.split() == ["/lib/smtp_duo.mpy", smtp_duo.__version__, "/lib/smtp_duo_md5.mpy",
                           "['smtp_duo.mpy',", "'smtp_duo_md5.mpy']"], out

    # --ext puts extensions beside the core, and each imports from /lib (not the frozen copy).
    p = run_deploy(board, "--no-soft-reset", "--ext", "mime", "--ext", "qp")
    assert p.returncode == 0, p.stdout
    for m in ("smtp_duo_mime", "smtp_duo_qp"):
        assert "deploy: import %s: /lib/%s.mpy" % (m, m) in p.stdout, p.stdout
    built = tmp_path / "ext"
    assert deploy_cli("--build-only", str(built), "--ext", "mime", "--ext", "qp").returncode == 0
    assert sorted(f.name for f in built.iterdir()) == ["smtp_duo.mpy", "smtp_duo_mime.mpy", "smtp_duo_qp.mpy"]
    for f in built.iterdir():
        assert board_sha256(board, "/lib/" + f.name) == hashlib.sha256(f.read_bytes()).hexdigest(), f.name


def test_deploy_fails_clearly_without_a_filesystem(board):
    p = run_deploy(board)  # soft reset: the bare board, nothing mounted
    assert p.returncode == 1
    assert "cannot create /lib" in p.stdout and "has the board a filesystem?" in p.stdout


def _net(board, script):
    board.exec(source("memserver.py") + "\nSCRIPT = %s\n" % script + FAKE_NET, resume=True)


def test_deploy_selftest_sends_a_mail_from_the_board(board):
    board.mount_ramfs()
    _net(board, '{"EHLO": b"250-mem.test\\r\\n250 AUTH PLAIN LOGIN\\r\\n"}')
    p = run_deploy(board, "--no-soft-reset", "--selftest", "--server", "smtp.test", "--tls", "none",
                   "--from", "sensor@example.com", "--to", "you@example.com", "--username", "alice",
                   "--allow-insecure-auth", env={"SMTP_DUO_PASSWORD": "s3cret!"})
    assert p.returncode == 0
    assert "selftest: OK: the server accepted the mail: 250 2.0.0 queued as MEM1" in p.stdout
    # the copy in /lib sent it, not the frozen module
    assert "smtp_duo %s from /lib/smtp_duo.mpy" % smtp_duo.__version__ in p.stdout
    net = marker(board.exec(NET_STATE, resume=True), "NET")
    assert net["lookups"] == ["smtp.test"] and net["connects"] == [["192.0.2.25", 25]]
    assert "AUTH PLAIN AGFsaWNlAHMzY3JldCE=\r\n" in net["commands"]  # \0alice\0s3cret!
    assert len(net["messages"]) == 1 and "Subject: smtp_duo self-test\r\n" in net["messages"][0]
    assert "s3cret" not in p.stdout


def test_deploy_selftest_reports_the_typed_error(board):
    board.mount_ramfs()
    _net(board, '{"EHLO": b"250-m\\r\\n250 ENHANCEDSTATUSCODES\\r\\n", '
                '"RCPT": b"550 5.1.1 User unknown\\r\\n"}')
    p = run_deploy(board, "--no-soft-reset", "--selftest", "--server", "smtp.test", "--tls", "none",
                   "--from", "sensor@example.com", "--to", "nobody@example.com")
    assert p.returncode == 1
    assert "selftest: FAILED: SMTPRecipientsRefused" in p.stdout
    assert ("status 0xAA (RCPT_REPLY_ERROR), code 550, enhanced 5.1.1, text 'User unknown', temporary False, "
            "command RCPT") in p.stdout
    assert "bytes of heap free" in p.stdout


def test_deploy_selftest_copies_the_ca_file(board, tmp_path):
    board.mount_ramfs()
    ca = tmp_path / "test-ca.der"
    ca.write_bytes(os.urandom(700))
    p = run_deploy(board, "--no-soft-reset", "--selftest", "--server", "smtp.test", "--tls", "starttls",
                   "--cadata", str(ca), "--from", "sensor@example.com", "--to", "you@example.com")
    assert board_sha256(board, "/test-ca.der") == hashlib.sha256(ca.read_bytes()).hexdigest()
    # This board has no TLS module at all: the self-test must say so and fail.
    assert p.returncode == 1
    assert "selftest: FAILED: ImportError" in p.stdout


def test_board_selftest_over_real_sockets_on_the_unix_port(micropython, smtpd):
    # The self-test script as deploy.py builds it, on the MicroPython unix port (real sockets,
    # `time`, no `network`) against aiosmtpd with a login: the path the qemu board cannot take.
    ctl = smtpd()
    args = ["--selftest", "--unix-port", str(micropython), "--server", "127.0.0.1",
            "--smtp-port", str(ctl.port), "--tls", "none", "--from", "sensor@example.com",
            "--to", "you@example.com", "--username", "alice", "--allow-insecure-auth", "--timeout", "10"]
    p = deploy_cli(*args, "--password", "correct horse", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "selftest: OK: the server accepted the mail: 250 " in p.stdout
    [env] = ctl.handler.messages
    assert env.mail_from == "sensor@example.com" and env.rcpt_tos == ["you@example.com"]
    assert b"Subject: smtp_duo self-test" in env.original_content
    # and a refused login comes back typed
    p = deploy_cli(*args, "--password", "wrong", timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "selftest: FAILED: SMTPAuthenticationError: " in p.stdout
    status = re.search(r"^selftest:   status \S+ \((.*)\), code (\d+), .*, temporary (\w+), command ",
                       p.stdout, re.M)
    assert status, p.stdout
    name, code, temporary = status.groups()
    assert code == "535" and name not in ("", "None") and temporary == "False", status.group(0)
