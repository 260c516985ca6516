# An SMTP server in memory, for tests that run where there is no network (MicroPython's qemu
# board) and for socket-free tests on the host. It is the client's link: the client writes
# commands into it and reads the scripted replies back, `segment` bytes per read (1 = every
# reply split into one-byte segments). Portable: MicroPython and CPython. Commands are answered
# as they arrive, so a pipelined flight gets its replies together; `reads` counts the client's
# reads, which is how often it waited for the server. BDAT chunks (RFC 3030) are taken by size.
# Also Collect, the output the body and header writers fill when a test drives them directly,
# and rng, the seeded generator the portable tests share.

import errno
import random

import smtp_duo


def rng(seed):
    # MicroPython's random has no Random class: seed the module instead.
    if hasattr(random, "Random"):
        return random.Random(seed)
    random.seed(seed)
    return random


class Collect:
    # The output interface of the writers (put, put1, stuff, full), collecting bytes: never
    # full, no I/O.
    dots = True
    counting = False

    def __init__(self):
        self.buf = bytearray()
        self.stuffed = 0

    # Where the next octet goes, as on Output: writers may assign buf[n:...] directly (here
    # always at the end, which extends it) and then set n, which the growing buffer tracks.
    n = property(lambda self: len(self.buf), lambda self, value: None)
    # A window too large for Output's buffer (CPython's plain text) goes here: at the end too.
    big = property(lambda self: None, lambda self, data: self.buf.extend(data))

    def stuff(self):
        self.buf.append(0x2E)
        self.stuffed += 1

    def put(self, data):
        self.buf.extend(data)

    def put1(self, c):
        self.buf.append(c)

    def full(self):
        return False

    def value(self):
        return bytes(self.buf)


DEFAULTS = {
    "greeting": b"220 mem.test ESMTP\r\n",
    "EHLO": b"250-mem.test\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n",
    "HELO": b"250 mem.test\r\n",
    "AUTH": b"235 2.7.0 ok\r\n",
    "MAIL": b"250 2.1.0 ok\r\n",
    "RCPT": b"250 2.1.5 ok\r\n",
    "DATA": b"354 go ahead\r\n",
    "DOT": b"250 2.0.0 queued as MEM1\r\n",
    "BDAT": b"250 2.0.0 queued as MEM1\r\n",
    "RSET": b"250 2.0.0 ok\r\n",
    "QUIT": b"221 2.0.0 bye\r\n",
    "*": b"500 5.5.2 unknown command\r\n",
}


class MemServer:
    """Script values: bytes (b"" = never answer: the client times out), None (close the
    connection), or a list consumed one item per command (the last one repeats)."""

    def __init__(self, script=None, segment=0, keep=True):
        self.script = dict(DEFAULTS)
        if script:
            self.script.update(script)
        self.segment = segment
        self.keep = keep  # keep what the client sent (off for big bodies)
        self.sent = []
        self.commands = []
        self.messages = []
        self.data_size = 0
        self.connections = 0
        self.reads = 0
        self.sock = None
        self._counts = {}
        self.reset()

    def reset(self):
        # A new connection: greeting queued, no partial line, not in DATA.
        self.out = b""
        self.line = b""
        self.tail = b""
        self.in_data = False
        self.in_auth = False
        self.chunk_left = 0  # BDAT octets still to come
        self.in_chunks = False
        self.closing = False
        self.closed = False

    def connect(self):
        self.connections += 1
        self.reset()
        self._answer("greeting")
        return self

    # -- the link interface -------------------------------------------------------------------

    def read_into(self, mv, deadline):
        self.reads += 1
        if not self.out:
            if self.closing:
                return 0
            raise OSError(errno.ETIMEDOUT)
        n = min(len(mv), len(self.out))
        if self.segment:
            n = min(n, self.segment)
        mv[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def write(self, mv, deadline):
        if self.closing:
            raise OSError(errno.ECONNRESET)
        data = bytes(mv)
        if self.keep:
            self.sent.append(data)
        self._feed(data)

    def readable(self):
        return bool(self.out) or self.closing

    def close(self):
        self.closed = True

    # -- the server side --------------------------------------------------------------------------

    def received(self):
        return b"".join(self.sent)

    def _next(self, verb):
        v = self.script.get(verb, self.script["*"])
        if isinstance(v, list):
            i = self._counts.get(verb, 0)
            self._counts[verb] = i + 1
            v = v[min(i, len(v) - 1)]
        return v

    def _answer(self, verb):
        if self.closing:  # closed: whatever else the client pipelined goes unanswered
            return b""
        v = self._next(verb)
        if v is None:
            self.closing = True
            return b""
        self.out += v
        return v

    def _feed(self, data):
        while data and not self.closing:  # a closed server takes nothing more
            if self.chunk_left:
                take = data[: self.chunk_left]
                self._keep_body(take)
                self.chunk_left -= len(take)
                data = data[len(take) :]
                if not self.chunk_left:
                    self._chunk_end()
                continue
            if self.in_data:
                data = self._feed_data(data)
                continue
            i = data.find(b"\n")
            if i < 0:
                self.line += data
                return
            line = self.line + data[: i + 1]
            self.line = b""
            data = data[i + 1 :]
            self.commands.append(line)
            if self.in_auth:
                verb = "AUTH"
            else:
                verb = line.split(b" ")[0].split(b":")[0].strip().upper().decode()
                if verb not in self.script or verb in ("greeting", "DOT", "*"):
                    verb = "*"
            sent = self._answer(verb)
            if verb == "BDAT":
                self._bdat(line, sent)
                continue
            self.in_auth = verb == "AUTH" and sent[:3] == b"334"
            self.in_data = verb == "DATA" and sent[:3] == b"354"
            if self.in_data:
                self.tail = b"\r\n"  # the end mark may follow the DATA line's CRLF directly
                self.body = []

    def _feed_data(self, data):
        # Look for CRLF.CRLF across writes; keep the last 4 bytes to join the next write.
        joined = self.tail + data
        i = joined.find(b"\r\n.\r\n")
        if i < 0:
            self._keep_body(data)
            self.tail = joined[-4:]
            return b""
        used = i + 5 - len(self.tail)
        self._keep_body(data[: max(used - 3, 0)])
        self.messages.append(b"".join(self.body) if self.keep else self.data_size)
        self.in_data = False
        self.tail = b""
        self._answer("DOT")
        return data[used:]

    def _bdat(self, line, answer):
        # "BDAT n [LAST]": the answer was queued already; it belongs after the chunk's octets.
        self.out = self.out[: len(self.out) - len(answer)]
        self.chunk_answer = answer
        if not self.in_chunks:
            self.in_chunks = True
            self.body = []
        self.chunk_left = int(line.split()[1])
        self.chunk_last = line.split()[-1].upper() == b"LAST"
        if not self.chunk_left:
            self._chunk_end()

    def _chunk_end(self):
        self.out += self.chunk_answer
        if self.chunk_last:
            self.in_chunks = False
            self.messages.append(b"".join(self.body) if self.keep else self.data_size)

    def _keep_body(self, data):
        self.data_size += len(data)
        if self.keep:
            self.body.append(data)


class MemClient(smtp_duo.SMTPClient):
    """An SMTPClient whose link is `server` (a MemServer) instead of a socket."""

    def __init__(self, server, **kw):
        kw.setdefault("server_address", "mem.test")
        kw.setdefault("from_address", "sensor@example.com")
        kw.setdefault("timeout", 1)
        smtp_duo.SMTPClient.__init__(self, **kw)
        self.server = server

    def _connect(self, deadline, link=None):
        return self.server.connect()


class _AsyncLink:
    # The same server behind smtp_duo_async's awaitable link interface.
    def __init__(self, server):
        self.server = server
        self.sock = None

    async def read_into(self, mv, deadline):
        return self.server.read_into(mv, deadline)

    async def write(self, mv, deadline):
        self.server.write(mv, deadline)

    def readable(self):
        return self.server.readable()

    def close(self):
        self.server.close()


def async_client(server, **kw):
    """An AsyncSMTPClient (smtp_duo_async) whose link is `server`."""
    import smtp_duo_async

    class AsyncMemClient(smtp_duo_async.AsyncSMTPClient):
        async def _aconnect(self, deadline):
            return _AsyncLink(self.server.connect())

    kw.setdefault("server_address", "mem.test")
    kw.setdefault("from_address", "sensor@example.com")
    kw.setdefault("timeout", 1)
    c = AsyncMemClient(**kw)
    c.server = server
    return c
