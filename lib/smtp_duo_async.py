# smtp_duo_async: the smtp_duo client on asyncio streams, so a sensor loop keeps running while
# a mail goes out. Same constructor, same protocol and the same bytes on the wire: smtp_duo's
# protocol steps are generators that yield the I/O they need, and this module performs that
# I/O with awaits instead of blocking calls. MIT licence.

try:
    import asyncio
except ImportError:  # MicroPython before 1.21
    import uasyncio as asyncio

import sys

import smtp_duo
from smtp_duo import (  # noqa: F401 -- re-exported: one import gives the async user everything
    AUTH_AUTO,
    AUTH_CRAM_MD5,
    AUTH_LOGIN,
    AUTH_NONE,
    AUTH_PLAIN,
    AUTH_XOAUTH2,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    TLS_IMPLICIT,
    TLS_NONE,
    TLS_STARTTLS,
    Reply,
    SMTPAuthenticationError,
    SMTPConnectionError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPTimeoutError,
    SMTPTLSError,
)

__version__ = smtp_duo.__version__

_MICROPYTHON = sys.implementation.name == "micropython"


def _timed_out():
    import errno

    return OSError(errno.ETIMEDOUT)


async def _within(aw, deadline):
    # An awaitable bounded by a smtp_duo deadline (ticks_ms); expiry is ETIMEDOUT, as on sockets.
    left = smtp_duo.ticks_diff(deadline, smtp_duo.ticks_ms())
    if left <= 0:
        raise _timed_out()
    if not _MICROPYTHON:
        try:
            return await asyncio.wait_for(aw, left / 1000)
        except asyncio.TimeoutError:
            raise _timed_out()
    # MicroPython's wait_for hands aw's exception to the waiting task in a CancelledError it
    # makes for it: when the heap is full that allocation fails, and a MemoryError comes out
    # as a timeout (or a cancellation). aw's own exception is kept here, and wins.
    failed = []

    async def run():
        try:
            return await aw
        except BaseException as e:
            failed.append(e)
            raise

    try:
        return await asyncio.wait_for_ms(run(), left)  # pyright: ignore[reportAttributeAccessIssue]
    except (asyncio.TimeoutError, asyncio.CancelledError) as e:
        if failed and not isinstance(failed[0], asyncio.CancelledError):
            raise failed[0]
        if isinstance(e, asyncio.TimeoutError):
            raise _timed_out()
        raise


def _writable(sock):
    yield asyncio.core._io_queue.queue_write(sock)  # pyright: ignore[reportAttributeAccessIssue]


async def _connected(socket, info, deadline):
    # MicroPython: asyncio.open_connection() leaves its socket open when the connect fails or
    # times out, and a refused connect shows only at the first read. Here every failure closes
    # the socket and is the connect's own.
    import errno

    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        try:
            sock.connect(info[-1])
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        await _within(_writable(sock), deadline)
        try:
            sock.connect(info[-1])  # again, for the outcome: EISCONN when connected
        except OSError as e:  # (MicroPython's errno has no EISCONN)
            if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                           errno.ETIMEDOUT):
                raise
        return sock
    except BaseException:
        sock.close()
        raise


class _StreamLink:
    """The link interface of smtp_duo (read_into, write, readable, close) on a stream pair.
    MicroPython's TLS streams shake hands lazily, inside the first reads and writes: until one
    of them succeeds (`shake_by`, the handshake's deadline, is then None) every failure, a
    timeout included, is a TLS failure, and the handshake must be over by `shake_by`."""

    def __init__(self, client, reader, writer, sock, raw=None, shake_by=None):
        self.client = client
        self.reader = reader
        self.writer = writer
        self.sock = sock
        self.raw = raw  # MicroPython: the TCP socket under a TLS object still shaking hands
        self.shake_by = shake_by

    def _by(self, deadline):
        by = self.shake_by
        return by if by is not None and smtp_duo.ticks_diff(by, deadline) < 0 else deadline

    async def read_into(self, mv, deadline):
        try:
            n = await _within(self._read(mv), self._by(deadline))
        except Exception as e:  # as the blocking link: in a handshake any failure (a ValueError
            raise self._failure(e)  # for a certificate, a MemoryError) is a TLS failure
        self.shake_by = None
        return n

    async def _read(self, mv):
        if _MICROPYTHON:
            # Try first, then wait: a TLS socket sends its ClientHello only when used, and
            # the server, which speaks first in SMTP, waits for it. None: nothing readable yet.
            n = self.sock.readinto(mv)
            while n is None:
                n = await self.reader.readinto(mv)
            return n
        data = await self.reader.read(len(mv))
        mv[: len(data)] = data
        return len(data)

    async def write(self, mv, deadline):
        try:
            # MicroPython's stream copies what it cannot send at once; CPython's transport may
            # keep a view of the buffer, which smtp_duo reuses: give it a copy.
            w = self.writer
            w.write(mv if _MICROPYTHON else bytes(mv))
            # CPython's transport drops what is written after the connection broke, and only
            # drain() says so: used then too, so a reset is the write's failure.
            if w.out_buf if _MICROPYTHON else w.transport.get_write_buffer_size() or w.transport.is_closing():
                await _within(w.drain(), self._by(deadline))
            else:  # all taken at once: just let the other tasks run between buffers
                await asyncio.sleep(0)
        except Exception as e:
            raise self._failure(e)
        self.shake_by = None  # TLS takes data only once the handshake is over

    def _failure(self, e):
        if self.shake_by is None:
            return e
        self.close()
        return smtp_duo.tls_error(e, self.client.port)

    def readable(self):
        if _MICROPYTHON:
            import select

            p = select.poll()
            p.register(self.sock, select.POLLIN)
            return bool(p.poll(0))
        # CPython's transport reads eagerly into the reader: look there.
        return self.reader.at_eof() or bool(getattr(self.reader, "_buffer", None))

    def close(self):
        try:
            if _MICROPYTHON:
                self.sock.close()  # the stream's own close() leaves the socket to wait_closed()
                raw = self.raw
                if raw is not None and self.shake_by is not None:
                    # A failed handshake leaves the TCP socket open under the TLS object.
                    self.raw = None
                    raw.close()
            else:
                # abort(), not close(): at once, dropping what a stalled server did not take
                # (close() waits for it to drain) and without TLS's close_notify exchange, as
                # the blocking client's close(); _arun() waits for the loop to close the socket.
                self.writer.transport.abort()
                self.client._closing.append(self.sock)
        except OSError:
            pass

    async def start_tls(self, deadline):
        # The STARTTLS handshake (and implicit TLS, right after connecting), over by `deadline`.
        c = self.client
        name = c.server_hostname
        if _MICROPYTHON:
            try:
                kw = {"server_hostname": name} if name else {}
                s = c.tls_context.wrap_socket(self.sock, do_handshake_on_connect=False, **kw)
                s.setblocking(False)
            except Exception as e:
                self.close()
                raise smtp_duo.tls_error(e, c.port)
            stream = asyncio.StreamReader(s)  # one Stream object reads and writes
            return _StreamLink(c, stream, stream, s, self.sock, deadline)
        try:
            await _within(self.writer.start_tls(c.tls_context, server_hostname=name or ""), deadline)
        except Exception as e:  # (cancelled: _drive() closes the link)
            self.close()  # half switched to TLS, the stream pair is unusable: drop it
            raise smtp_duo.tls_error(e, c.port)
        return _StreamLink(c, self.reader, self.writer, self.writer.get_extra_info("socket"))


class AsyncSMTPClient(smtp_duo.SMTPClient):
    """SMTPClient's constructor and behaviour, with `await client.mail_send(...)` and
    `async with client.session() as s: await s.mail_send(...)`. Mails from several tasks on
    one client go one after another."""

    def __init__(self, *args, **kw):
        smtp_duo.SMTPClient.__init__(self, *args, **kw)
        self._lock = asyncio.Lock()
        self._closing = []  # CPython: sockets of aborted transports, until the loop closes them

    async def mail_send(self, recipient_address, priority=PRIORITY_NORMAL, subject="",
                        mail_body="", cc=(), bcc=(), message_id=None, date=None, html=None,
                        attachments=(), headers=None):
        """As SMTPClient.mail_send(); other tasks run while the server is awaited."""
        msg = smtp_duo.Message(self, recipient_address, priority=priority, subject=subject,
                               body=mail_body, cc=cc, bcc=bcc, message_id=message_id, date=date,
                               html=html, attachments=attachments, headers=headers)
        async with self._lock:
            return await self._arun(self.send_steps(msg))

    def session(self):
        """`async with client.session() as s:` several mail_send() on one connection."""
        if self._in_session:
            raise ValueError("a session is already open on this client")
        return self

    async def __aenter__(self):
        async with self._lock:
            await self._arun(self.open_steps())
            self._in_session = True
        return self

    async def __aexit__(self, *exc):
        async with self._lock:
            self._in_session = False
            await self._arun(self.quit_steps())

    async def _arun(self, steps):
        try:
            return await self._drive(steps)
        finally:
            # CPython: an aborted transport's socket is closed by the loop's next turn; return
            # only then (no socket left open). A few turns, bounded all the same.
            turns = 0
            while self._closing and turns < 100:
                sock = self._closing[-1]
                if sock is None or sock.fileno() == -1:
                    self._closing.pop()
                else:
                    turns += 1
                    await asyncio.sleep(0)
            del self._closing[:]

    async def _drive(self, steps):
        # SMTPClient._run() with awaits: the same requests (smtp_duo's "the I/O" section),
        # done on asyncio streams.
        value = error = None
        while True:
            try:
                kind, arg, deadline = steps.throw(error) if error else steps.send(value)
            except StopIteration as e:
                return e.value
            value = error = None
            try:
                if kind == "read":
                    value = await self._link.read_into(arg, deadline)
                elif kind == "write":
                    await self._link.write(arg, deadline)
                elif kind == "poll":
                    value = self._link.readable()
                elif kind == "open":
                    self._link = await self._aconnect(deadline)
                else:
                    self._link = await self._link.start_tls(deadline)
            except asyncio.CancelledError:
                self._close()  # cancelled: no farewell, the task ends now
                raise
            except SMTPError as e:  # the link's own verdict (a failed TLS handshake): it is closed
                self._close()
                error = e
            except BaseException as e:  # thrown into the step, which maps it and closes
                error = e

    async def _aconnect(self, deadline):
        import socket

        err = None
        for info in self.resolve(socket):
            addr = info[-1]
            host, port = (addr[0], addr[1]) if isinstance(addr, tuple) else (self.server_address, self.port)
            try:
                if _MICROPYTHON:
                    sock = await _connected(socket, info, deadline)
                    reader = writer = asyncio.StreamReader(sock)  # one Stream reads and writes
                else:
                    reader, writer = await _within(asyncio.open_connection(host, port), deadline)
                    sock = writer.get_extra_info("socket")
            except OSError as e:
                err = e
                continue
            try:  # no Nagle (IPPROTO_TCP, TCP_NODELAY): later writes would wait for an ACK
                sock.setsockopt(6, 1, 1)
            except (OSError, AttributeError, TypeError):
                pass
            self._v6 = info[0] == getattr(socket, "AF_INET6", -1)  # the EHLO literal's family
            link = _StreamLink(self, reader, writer, sock)
            if self.tls == TLS_IMPLICIT:
                link = await link.start_tls(deadline)
            return link
        raise self.connect_error(err)
