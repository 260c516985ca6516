# A disk that fills up, for the outbox's tests: Disk stands in for the `os` module and `open()`
# inside smtp_duo_outbox (install() sets the module's globals; the library has no test hook)
# and makes chosen operations fail with ENOSPC, as MicroPython's file systems raise it:
#   "once"  only the at-th write, rename, remove, mkdir or open-for-writing fails;
#   "full"  from the at-th on, every operation that needs new space fails: writes, mkdir and
#           renames into another directory (a new empty file, a rename in place and a removal
#           still work, as on a full file system);
#   "all"   from the at-th on, every one of them fails;
#   "cut"   the power goes just before the at-th: it and everything after raise PowerCut (not
#           an OSError, so nothing in the library handles it), and nothing more is written.
# Portable: CPython and the MicroPython unix port (outbox_job.py, outbox_faults.py).

import errno
import os

import smtp_duo_outbox

ENOSPC = getattr(errno, "ENOSPC", 28)  # MicroPython's errno module has no ENOSPC
REAL_OPEN = open


class PowerCut(BaseException):
    pass


def _dir(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "/"


class Writer:
    # A file open for writing whose every write() is one operation of the Disk.
    def __init__(self, disk, f, path):
        self.disk = disk
        self.f = f
        self.path = path

    def write(self, data):
        self.disk.op("write", self.path, True)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def seek(self, *args):
        return self.f.seek(*args)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class _OS:
    # What smtp_duo_outbox calls as os.*: reads pass through, writes go through the Disk.
    def __init__(self, disk):
        self.disk = disk
        for name in ("fsync", "O_RDONLY", "open", "close"):  # CPython's directory sync
            if hasattr(os, name):
                setattr(self, name, getattr(os, name))

    def listdir(self, path):
        return os.listdir(path)

    def stat(self, path):
        return os.stat(path)

    def urandom(self, n):
        return os.urandom(n)

    def mkdir(self, path):
        self.disk.op("mkdir", path, True)
        os.mkdir(path)

    def remove(self, path):
        self.disk.op("remove", path, False)
        os.remove(path)

    def rename(self, a, b):
        self.disk.op("rename", b, _dir(a) != _dir(b))
        os.rename(a, b)


class Disk:
    def __init__(self, mode=None, at=0):
        self.mode = mode
        self.at = at
        self.n = 0  # operations so far
        self.log = []  # (n, what, path, failed)
        self.os = _OS(self)

    def op(self, what, path, needs_space):
        self.n += 1
        m = self.mode
        if m == "cut" and self.n >= self.at:
            raise PowerCut()
        fail = m is not None and (self.n == self.at if m == "once" else
                                  self.n >= self.at and (needs_space or m == "all"))
        self.log.append((self.n, what, path, fail))
        if fail:
            raise OSError(ENOSPC)

    def open(self, path, mode="r", *args):
        if "w" in mode or "a" in mode:
            self.op("open", path, False)
            return Writer(self, REAL_OPEN(path, mode, *args), path)
        return REAL_OPEN(path, mode, *args)

    def free(self):
        self.mode = None


def install(disk):
    smtp_duo_outbox.os = disk.os
    smtp_duo_outbox.open = disk.open


def uninstall():
    smtp_duo_outbox.os = os
    smtp_duo_outbox.open = REAL_OPEN
