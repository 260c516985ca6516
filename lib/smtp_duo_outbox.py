# smtp_duo_outbox: a persistent outbox for smtp_duo. Mails put while the network is down (or
# the board loses power) are kept in flash and sent later; nothing is lost and nothing is
# dropped to make room. MicroPython (littlefs/FAT) and CPython; MIT licence.
#
# One file per mail in `directory`: a JSON line (envelope, subject, priority, Message-ID, Date,
# the body's size and a CRC-32 of the line and body) and then the body as it was given. A file
# is written under a temporary name, flushed and renamed, so a half-written mail is never seen;
# it is removed only after the server's 250 to its data. Mails the server refuses for good, and
# items that are damaged, go to `directory/failed/` with a note saying why.
#
# Names in `directory` (each step's commit is a rename or a removal):
#   .tmp-<id>    being written by put(); removed at the next start
#   <id>.mail    waiting to be sent
#   <id>.fail    refused or damaged, not yet in failed/ (a rename in place needs no new space,
#                so a full disk cannot leave a refused mail pending, to be sent again)
# and in failed/: <id>.mail and its note <id>.reply (written as .tmp-<id>.reply, renamed).
# Should even that removal or rename fail, the Outbox object remembers the mail and skips it.
#
# Few new names (identifiers, short strings): each is interned in RAM when the module loads,
# and on a board a full intern table must grow by one large block, which a fragmented heap
# may not have.

import binascii
import errno
import os

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json

import smtp_duo

try:
    from micropython import const
except ImportError:  # CPython
    const = lambda x: x  # noqa: E731

_CHUNK = const(512)
_HEAD_MAX = const(2048)  # put() stores no longer head, so flush() can read every head in bounded RAM
_TMP = ".tmp-"
_MAIL = ".mail"
# A minimal port may lack crc32: its items are then checked by size only.
crc32 = getattr(binascii, "crc32", None) or (lambda data, value=0: 0)


class OutboxFull(Exception):
    """The outbox has no room for this mail (max_items or max_bytes). Nothing was dropped:
    flush() the outbox, or put the mail later."""


class OutboxError(OSError):
    """A file operation of the outbox failed (a full disk, say). errno is the OS error's;
    str() names it, which a board's own OSError does not ("28")."""

    def __str__(self):
        return self.args[1]


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _join(a, b):
    return a + b if a.endswith("/") else a + "/" + b


def _os_error(e, what):
    # An OutboxError for e: its errno e's number (OSError(28) has errno 28 on MicroPython, None
    # on CPython: args[0] on both), its text what + "[Errno 28] ENOSPC: no space left on
    # device", which names the error on every runtime.
    n = getattr(e, "errno", None)
    if n is None and e.args:
        n = e.args[0]
    text = str(e)
    if type(n) is int:
        text = "[Errno %d] %s" % (n, getattr(errno, "errorcode", {}).get(n, ""))
        # MicroPython's errno module has no ENOSPC, ENOTDIR or EROFS: its file systems raise
        # the numbers of py/mperrno.h, which are Linux's (0: the errno module's own).
        for entry in ("ENOSPC 28 no space left on device", "ENOENT 0 no such file or directory",
                      "EACCES 0 permission denied", "EISDIR 0 is a directory",
                      "ENOTDIR 20 not a directory", "EIO 0 input/output error",
                      "EROFS 30 read-only file system", "EEXIST 0 file exists"):
            name, number, meaning = entry.split(" ", 2)
            if getattr(errno, name, int(number)) == n:
                text = "[Errno %d] %s: %s" % (n, name, meaning)
    return OutboxError(n, what + text)


class Outbox:
    """Outbox(client, directory="/outbox", max_bytes=65536, max_items=64, retry_base=30,
    retry_cap=3600). put() stores a mail and returns its id; flush() sends what is pending."""

    def __init__(self, client, directory="/outbox", max_bytes=65536, max_items=64,
                 retry_base=30, retry_cap=3600):
        if not isinstance(directory, str) or not directory:
            raise ValueError("directory must be a path")
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.client = client
        self.directory = directory
        self.failed_directory = _join(directory, "failed")
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._buf = bytearray(_CHUNK)
        self._failures = 0  # temporary failures in a row: the backoff grows with them
        self._retry_at = None  # ticks before which flush() does not try again
        # id -> its note (None for a mail sent): mails whose record in failed/ is not complete,
        # or whose removal or rename failed (those are skipped, never sent again).
        self._notes = {}
        try:
            if not _exists(directory):
                os.mkdir(directory)
            os.listdir(directory)
        except OSError as e:
            raise _os_error(e, "outbox: cannot open %s: " % directory)
        for d in (directory, self.failed_directory):
            try:
                if not _exists(d):
                    os.mkdir(d)  # failed/: else made when first needed (the disk may be full)
                for name in os.listdir(d):
                    if name.startswith(_TMP):  # an item or note that power loss cut short
                        os.remove(_join(d, name))
            except OSError:
                pass

    # -- what is there --------------------------------------------------------------------------

    def _names(self, path=None):
        path = path or self.directory
        try:
            return os.listdir(path)
        except OSError as e:
            raise _os_error(e, "outbox: cannot read %s: " % path)

    def _items(self):
        # Oldest first: ids start with a zero-padded sequence number.
        return sorted([n[:-5] for n in self._names() if n.endswith(_MAIL) and n[:-5] not in self._notes])

    def pending(self):
        """How many mails wait to be sent."""
        return len(self._items())

    def failed(self):
        """How many mails were refused for good or found damaged: in directory/failed/, and
        those not yet moved there (the disk was full)."""
        names = self._names()
        n = len([1 for name in names if name.endswith(".fail")])
        n += len([1 for i in self._notes if self._notes[i] and i + _MAIL in names])  # not renamed
        try:
            return n + len([1 for name in os.listdir(self.failed_directory) if name.endswith(_MAIL)])
        except OSError:
            return n  # no failed/ yet

    def _next_id(self):
        last = 0
        for d in (self.directory, self.failed_directory):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n[:10].isdigit():
                    last = max(last, int(n[:10]))
        # The sequence number orders the mails; the random part keeps an id unique after the
        # mail it named was sent and the number came free again.
        return "%010d-%s" % (last + 1, binascii.hexlify(os.urandom(3)).decode())

    # -- put ------------------------------------------------------------------------------------

    def put(self, recipient_address, subject, mail_body, priority=smtp_duo.PRIORITY_NORMAL, cc=(),
            bcc=()):
        """Store a mail durably and return its id. Arguments are checked as mail_send checks
        them (ValueError); a full outbox raises OutboxFull, a failing disk OutboxError (an
        OSError); then nothing was stored. A file body is copied in pieces."""
        c = self.client
        c.check_mail(recipient_address, priority, subject, cc, bcc)  # what mail_send would refuse
        head = json.dumps({
            "to": _listed(recipient_address), "cc": _listed(cc), "bcc": _listed(bcc),
            "subject": subject, "priority": priority, "message_id": c.new_message_id(),
            "date": smtp_duo.date_header(),  # the alert's time, if the clock is set
        }).encode()
        n = len(head) + 42  # stored: its "}" replaced by the tail (see _store), then "\n"
        if n - 1 > _HEAD_MAX:
            raise ValueError("the mail's recipients and subject take %d bytes; an outbox item holds "
                             "at most %d" % (n - 1, _HEAD_MAX))
        if isinstance(mail_body, str):
            mail_body = mail_body.encode()  # once: it is read twice
        try:
            return self._store(memoryview(head)[:-1], n, mail_body)
        except OSError as e:
            if isinstance(e, OutboxError):
                raise
            raise _os_error(e, "outbox: the mail was not stored: ")

    def _store(self, start, n, body):
        count = used = 0
        for name in self._names():
            if name.endswith(_MAIL) or name.endswith(".fail"):
                count += 1
                used += os.stat(_join(self.directory, name))[6]
        if count >= self.max_items:
            raise OutboxFull("outbox full: %d mails wait (max_items)" % self.max_items)
        room = self.max_bytes - used - n
        # The head's tail: size and CRC, space-padded so that they can be written over. Known
        # now when the body can be read twice (bytes, a list, a seekable file), else (a one-shot
        # stream) written over the zeros afterwards.
        tail = b', "size": %-10d, "crc32": %-10d}\n'
        size = crc = 0
        pos = -1  # bytes or a list: read twice as they are
        if not isinstance(body, (bytes, bytearray, memoryview, list, tuple)):
            try:
                pos = body.tell() if hasattr(body, "seek") else None
            except (AttributeError, OSError, ValueError):
                pos = None
        if pos is not None:
            size, crc = _copy(body, self._buf, crc32(start))
            if pos >= 0:
                getattr(body, "seek")(pos)
        if room < size:
            raise OutboxFull("outbox full: no room for another %d bytes (max_bytes)" % (n + size))
        ident = self._next_id()
        tmp = _join(self.directory, _TMP + ident)
        try:
            with open(tmp, "wb") as f:
                f.write(start)
                f.write(tail % (size, crc))
                got = _copy(body, self._buf, crc32(start), f, room)
                if got != (size, crc):  # a stream, or a file that changed meanwhile
                    f.seek(len(start))
                    f.write(tail % got)
                f.flush()
                if hasattr(os, "fsync"):  # CPython: on disk before the rename makes it visible
                    os.fsync(f.fileno())
            os.rename(tmp, _join(self.directory, ident + _MAIL))
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        _sync_directory(self.directory)
        return ident

    # -- flush ----------------------------------------------------------------------------------

    def retry_in(self):
        """Seconds until flush() will try the server again (0: now)."""
        if self._retry_at is None:
            return 0
        left = smtp_duo.ticks_diff(self._retry_at, smtp_duo.ticks_ms())
        return max(0, left) / 1000

    def flush(self, max_seconds=None):
        """Send pending mails, oldest first, over one connection. Returns how many were sent.
        A temporary failure (4xx, timeout, no network) keeps the mail, ends the round and sets a
        backoff (exponential with jitter, capped) that later calls respect; a permanent failure,
        or an item that is damaged, goes to failed/ with a note. max_seconds: start no new mail
        after that long."""
        # First the records a failing disk left undone (nothing here sends anything).
        for ident in list(self._notes):
            self._record(ident, self._notes[ident])
        for name in self._names():
            if name.endswith(".fail"):
                self._file_away(name[:-5])
        items = self._items()
        if not items or self.retry_in() > 0:
            return 0
        start = smtp_duo.ticks_ms()
        sent = 0
        try:
            with self.client.session() as s:
                for ident in items:
                    if max_seconds is not None and smtp_duo.ticks_diff(
                            smtp_duo.ticks_ms(), start) > max_seconds * 1000:
                        break
                    if self._send_one(s, ident):
                        sent += 1
        except smtp_duo.SMTPError as e:
            if not e.temporary:
                raise  # the session itself was refused for good (e.g. bad credentials)
            self._backoff()
            return sent
        self._failures = 0
        self._retry_at = None
        return sent

    def _send_one(self, session, ident):
        f = None
        try:
            f = open(_join(self.directory, ident + _MAIL), "rb")
            head = self._load(f)
            session.mail_send(head["to"], priority=head["priority"], subject=head["subject"],
                              mail_body=f, cc=head["cc"], bcc=head["bcc"],
                              message_id=head["message_id"], date=head["date"])
            reply = None
        except smtp_duo.SMTPError as e:
            if e.temporary:
                raise  # kept; flush() ends the round
            reply = "%s %s %s\nstatus 0x%02X %s\n" % (e.code, e.enhanced or "", e.text or "",
                                                   e.status, e.message)
        except (ValueError, TypeError) as e:  # damaged, or a stored value mail_send refuses
            reply = "damaged item: %s\n" % e
        except OSError as e:  # a directory with an item's name, a read error
            reply = str(_os_error(e, "unreadable item: ")) + "\n"
        finally:
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._record(ident, reply)
        return reply is None

    def _load(self, f):
        # The head, checked to be what put() wrote (the keys, each of the type put() writes,
        # the body's size and CRC), with f at the body's start; ValueError if the item is
        # damaged. RAM: the first line (at most _HEAD_MAX, read through the fixed buffer) and
        # what it holds; the body is read through the buffer too.
        buf = self._buf
        mv = memoryview(buf)
        line = b""
        while True:
            n = f.readinto(buf)
            if not n:
                raise ValueError("truncated: no line end after the head" if line else
                                 "the file is empty")
            i = buf.find(b"\n", 0, n)
            if len(line) + (n if i < 0 else i) > _HEAD_MAX:
                raise ValueError("no line end in the first %d bytes" % _HEAD_MAX)
            line += mv[: n if i < 0 else i]
            if i >= 0:
                break
        # Containers and keys counted first (outside strings): json.loads of a few KB of "[[[["
        # or of many keys would take tens of KB of a board's heap.
        containers = keys = 0
        quoted = escaped = False
        for c in line:
            if quoted:
                if escaped:
                    escaped = False
                elif c == 0x5C:  # backslash
                    escaped = True
                elif c == 0x22:
                    quoted = False
            elif c == 0x22:
                quoted = True
            elif c == 0x5B or c == 0x7B:  # [ {
                containers += 1
            elif c == 0x3A:  # :
                keys += 1
        if containers > 4 or keys > 9:  # the object, to, cc and bcc; 7 keys, size and crc32
            raise ValueError("the head is not an object of single values and lists")
        try:
            head = json.loads(str(line, "utf-8"))
        except ValueError as e:  # UnicodeError is one; its text is empty on MicroPython
            raise ValueError("the head is not JSON in UTF-8 (%s)" % e)
        if not isinstance(head, dict):
            raise ValueError("the head is not a JSON object")
        names = ["to", "cc", "bcc", "subject", "message_id", "date", "priority"]
        if "size" in head:  # older items have neither
            names += ["size", "crc32"]
        if sorted(head) != sorted(names):
            raise ValueError("the head's keys are %s" % ", ".join(sorted(head)))
        for i, k in enumerate(names):
            v = head[k]
            if i < 3:
                ok = type(v) is list and not [1 for a in v if type(a) is not str]
            elif i < 6:
                ok = type(v) is str or k == "date" and v is None
            else:
                ok = type(v) is int  # priority, size, crc32 (a bool is no int)
            if not ok:
                raise ValueError("the head's %s has the wrong type" % k)
        f.seek(len(line) + 1)
        if "size" in head:
            i = line.rfind(b', "size": ')
            crc = crc32(memoryview(line)[:i]) if i > 0 else None
            n = 0
            while True:
                m = f.readinto(buf)
                if not m:
                    break
                n += m
                if crc is not None:
                    crc = crc32(mv[:m], crc)
            if n != head["size"]:
                raise ValueError("the body is %d bytes; %d were stored" % (n, head["size"]))
            if crc != head["crc32"]:
                raise ValueError("its CRC does not match: changed since it was stored")
            f.seek(len(line) + 1)
        return head

    # -- the records on disk ----------------------------------------------------------------------

    def _record(self, ident, reply):
        # The record of a mail's end: for one sent (reply None) the file's removal; for one
        # refused or damaged a rename to .fail, in place, which needs no new space, then the
        # move to failed/ with the note. Failing the first, _notes keeps the mail, skipped.
        path = _join(self.directory, ident + _MAIL)
        try:
            if reply is None:
                os.remove(path)
            else:
                os.rename(path, path[:-5] + ".fail")
        except OSError as e:
            if _os_error(e, "").errno != errno.ENOENT:
                self._notes[ident] = reply
                return
            if reply is None or ident + ".fail" not in self._names():  # (a link may dangle)
                self._notes.pop(ident, None)  # it is gone: nothing to record
                return
        if reply is None:
            self._notes.pop(ident, None)
        else:
            self._notes[ident] = reply
            self._file_away(ident)

    def _file_away(self, ident):
        # <id>.fail into failed/ with its note; on failure it stays, still counted as failed,
        # and the next flush() tries again.
        path = self.failed_directory
        reply = _join(path, ident + ".reply")
        tmp = _join(path, _TMP + ident + ".reply")
        try:
            if not _exists(path):
                os.mkdir(path)
            if not _exists(reply):
                try:
                    with open(tmp, "w") as f:
                        f.write(self._notes.get(ident) or "refused or damaged; why was not recorded "
                                "(the disk was full, or the power went)\n")
                        f.flush()
                        if hasattr(os, "fsync"):
                            os.fsync(f.fileno())
                    os.rename(tmp, reply)
                except OSError:
                    try:
                        os.remove(tmp)
                    except OSError:
                        pass
                    raise
            os.rename(_join(self.directory, ident + ".fail"), _join(path, ident + _MAIL))
        except OSError:
            return
        self._notes.pop(ident, None)
        _sync_directory(path)

    def _backoff(self):
        self._failures += 1
        delay = min(self.retry_cap, self.retry_base * (1 << min(self._failures - 1, 16)))
        jitter = int.from_bytes(os.urandom(2), "big") / 65536 if hasattr(os, "urandom") else 0.5
        delay = delay * (0.5 + jitter / 2)  # half to all of it: outboxes do not retry in step
        self._retry_at = smtp_duo.ticks_add(smtp_duo.ticks_ms(), int(delay * 1000))


def _sync_directory(path):
    # CPython on Linux: the rename is on disk only once the directory is. (littlefs commits a
    # rename atomically by itself; MicroPython has no os.fsync.) Best effort: the rename is done.
    fsync = getattr(os, "fsync", None)
    if fsync is not None and hasattr(os, "O_RDONLY"):
        try:
            fd = getattr(os, "open")(path, getattr(os, "O_RDONLY"))
            try:
                fsync(fd)
            finally:
                getattr(os, "close")(fd)
        except OSError:
            pass


def _copy(body, buf, value, f=None, max_bytes=0):
    # (size, CRC-32 continued from value) of the body; with f, the body written to f on the
    # way, at most max_bytes of it.
    n = 0
    for piece in _pieces(body, buf):
        n += len(piece)
        if f:
            if n > max_bytes:
                raise OutboxFull("outbox full: the mail does not fit in max_bytes")
            f.write(piece)
        value = crc32(piece, value)
    return n, value


def _listed(v):
    return [v] if isinstance(v, str) else list(v)


def _pieces(body, buf):
    # The body as byte pieces, copied from files a buffer at a time (never read whole).
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        mv = memoryview(body)
        for i in range(0, len(mv), len(buf)):
            yield mv[i : i + len(buf)]
    elif hasattr(body, "readinto"):
        mv = memoryview(buf)
        while True:
            n = body.readinto(buf)
            if not n:
                break
            yield mv[:n]
    elif hasattr(body, "read"):
        while True:
            c = body.read(len(buf))
            if not c:
                break
            yield c.encode() if isinstance(c, str) else c
    else:
        try:
            body = iter(body)
        except TypeError:
            raise ValueError("mail_body must be str, bytes, a file or an iterable of chunks")
        for c in body:
            if isinstance(c, str):
                c = c.encode()
            elif not isinstance(c, (bytes, bytearray, memoryview)):
                raise ValueError("mail_body chunks must be str or bytes")
            yield c
