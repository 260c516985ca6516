# smtp_duo_outbox: a persistent outbox for smtp_duo. Mails put while the network is down (or
# the board loses power) are kept in flash and sent later; nothing is lost and nothing is
# dropped to make room. MicroPython (littlefs/FAT) and CPython; MIT licence.
#
# One file per mail in `directory`: a JSON line (envelope, subject, priority, Message-ID,
# Date) and then the body as it was given. A file is written under a temporary name, flushed
# and renamed, so a half-written mail is never seen; it is removed only after the server's
# 250 to its data. Mails the server refuses for good go to `directory/failed/` with the
# server's reply beside them.

import binascii
import os

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json

import smtp_duo

_CHUNK = 512
_TMP = ".tmp-"
_MAIL = ".mail"


class OutboxFull(Exception):
    """The outbox has no room for this mail (max_items or max_bytes). Nothing was dropped:
    flush() the outbox, or put the mail later."""


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _join(a, b):
    return a + b if a.endswith("/") else a + "/" + b


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
        for d in (directory, self.failed_directory):
            if not _exists(d):
                os.mkdir(d)
        for name in os.listdir(directory):
            if name.startswith(_TMP):  # a put() that power loss interrupted: never visible
                os.remove(_join(directory, name))

    # -- what is there --------------------------------------------------------------------------

    def _items(self):
        # Oldest first: ids start with a zero-padded sequence number.
        return sorted([n[: -len(_MAIL)] for n in os.listdir(self.directory) if n.endswith(_MAIL)])

    def pending(self):
        """How many mails wait to be sent."""
        return len(self._items())

    def failed(self):
        """How many mails the server refused for good (in directory/failed/)."""
        return len([n for n in os.listdir(self.failed_directory) if n.endswith(_MAIL)])

    def _used_bytes(self):
        total = 0
        for i in self._items():
            total += os.stat(_join(self.directory, i + _MAIL))[6]
        return total

    def _next_id(self):
        last = 0
        for d in (self.directory, self.failed_directory):
            for n in os.listdir(d):
                if n.endswith(_MAIL) and n[:10].isdigit():
                    last = max(last, int(n[:10]))
        # The sequence number orders the mails; the random part keeps an id unique after the
        # mail it named was sent and the number came free again.
        return "%010d-%s" % (last + 1, binascii.hexlify(os.urandom(3)).decode())

    # -- put ------------------------------------------------------------------------------------

    def put(self, recipient_address, subject, mail_body, priority=smtp_duo.PRIORITY_NORMAL, cc=(),
            bcc=()):
        """Store a mail durably and return its id. Arguments are checked as mail_send checks
        them (ValueError); a full outbox raises OutboxFull. A file body is copied in pieces."""
        c = self.client
        c.check_mail(recipient_address, priority, subject, cc, bcc)  # what mail_send would refuse
        if self.pending() >= self.max_items:
            raise OutboxFull("outbox full: %d mails wait (max_items)" % self.max_items)
        room = self.max_bytes - self._used_bytes()
        head = json.dumps({
            "to": _listed(recipient_address), "cc": _listed(cc), "bcc": _listed(bcc),
            "subject": subject, "priority": priority, "message_id": c.new_message_id(),
            "date": smtp_duo.date_header(),  # the alert's time, if the clock is set
        }).encode() + b"\n"
        ident = self._next_id()
        tmp = _join(self.directory, _TMP + ident)
        try:
            with open(tmp, "wb") as f:
                n = len(head)
                if n > room:
                    raise OutboxFull("outbox full: no room for another %d bytes (max_bytes)" % n)
                f.write(head)
                for piece in _pieces(mail_body, self._buf):
                    n += len(piece)
                    if n > room:
                        raise OutboxFull("outbox full: the mail does not fit in max_bytes=%d"
                                         % self.max_bytes)
                    f.write(piece)
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
        left = smtp_duo._ticks_diff(self._retry_at, smtp_duo._ticks_ms())
        return max(0, left) / 1000

    def flush(self, max_seconds=None):
        """Send pending mails, oldest first, over one connection. Returns how many were sent.
        A temporary failure (4xx, timeout, no network) keeps the mail, ends the round and sets a
        backoff (exponential with jitter, capped) that later calls respect; a permanent failure
        moves the mail to failed/ with the server's reply. max_seconds: start no new mail after
        that long."""
        items = self._items()
        if not items or self.retry_in() > 0:
            return 0
        start = smtp_duo._ticks_ms()
        sent = 0
        try:
            with self.client.session() as s:
                for ident in items:
                    if max_seconds is not None and smtp_duo._ticks_diff(
                            smtp_duo._ticks_ms(), start) > max_seconds * 1000:
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
        path = _join(self.directory, ident + _MAIL)
        with open(path, "rb") as f:
            try:
                head = json.loads(f.readline())
                reply = session.mail_send(head["to"], head["priority"], head["subject"], f,
                                          head["cc"], head["bcc"], head["message_id"], head["date"])
            except smtp_duo.SMTPError as e:
                if e.temporary:
                    raise  # kept; flush() ends the round
                note = "%s %s %s\nstatus 0x%02X %s\n" % (e.code, e.enhanced or "", e.text or "",
                                                      e.status, e.message)
            except (ValueError, KeyError) as e:  # a damaged item: kept aside, not retried forever
                note = "unreadable item: %r\n" % (e,)
            else:
                note = None
        if note is None:
            os.remove(path)  # the record of the server's 250
            return True
        with open(_join(self.failed_directory, ident + ".reply"), "w") as f:
            f.write(note)
        os.rename(path, _join(self.failed_directory, ident + _MAIL))
        return False

    def _backoff(self):
        self._failures += 1
        delay = min(self.retry_cap, self.retry_base * (1 << min(self._failures - 1, 16)))
        jitter = int.from_bytes(os.urandom(2), "big") / 65536 if hasattr(os, "urandom") else 0.5
        delay = delay * (0.5 + jitter / 2)  # half to all of it: outboxes do not retry in step
        self._retry_at = smtp_duo._ticks_add(smtp_duo._ticks_ms(), int(delay * 1000))


def _sync_directory(path):
    # CPython on Linux: the rename is on disk only once the directory is. (littlefs commits a
    # rename atomically by itself; MicroPython has no os.fsync.)
    fsync = getattr(os, "fsync", None)
    if fsync is not None and hasattr(os, "O_RDONLY"):
        fd = getattr(os, "open")(path, getattr(os, "O_RDONLY"))
        try:
            fsync(fd)
        finally:
            getattr(os, "close")(fd)


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
