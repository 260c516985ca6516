"""A scripted SMTP server on 127.0.0.1 for the faults a real server will not produce.

The script maps a command verb to what the server answers, e.g.
    FakeServer({"EHLO": b"250-srv\r\n250 AUTH PLAIN\r\n", "RCPT": [b"250 ok\r\n", b"550 no\r\n"]})
Missing verbs get a normal answer (see DEFAULTS). A value may be:
    bytes             sent as one segment
    list              consumed one item per command (the last one repeats)
    Segments(...)     sent as separate TCP segments with a pause between them
    CLOSE             the server closes the connection instead of answering
    SILENT            the server never answers (the client must time out)
    callable(conn, line) -> any of the above
"DOT" is the answer to the end of message data; "greeting" is sent on connect.
Everything the client sends is kept in `received` (bytes), its command lines in `commands`,
message contents (as on the wire, dot-stuffed) in `messages`.

TLS: with `tls_context` (a server ssl.SSLContext) the server answers "STARTTLS" (default
"220 ready") and then does the handshake; `implicit=True` does it right after accepting.
`plaintext` is what the client sent before TLS started (all of it, if TLS never started);
`tls_errors` records failed handshakes (a client that refused the certificate shows up here).
"""

import re
import socket
import threading
import time

CLOSE = object()
SILENT = object()


class Segments:
    def __init__(self, *parts, pause=0.05):
        self.parts = parts
        self.pause = pause


DEFAULTS = {
    "greeting": b"220 fake.test ESMTP\r\n",
    "EHLO": b"250-fake.test\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n",
    "HELO": b"250 fake.test\r\n",
    "AUTH": b"235 2.7.0 ok\r\n",
    "MAIL": b"250 2.1.0 ok\r\n",
    "RCPT": b"250 2.1.5 ok\r\n",
    "DATA": b"354 go ahead\r\n",
    "DOT": b"250 2.0.0 queued as FAKE1\r\n",
    "RSET": b"250 2.0.0 ok\r\n",
    "NOOP": b"250 2.0.0 ok\r\n",
    "QUIT": b"221 2.0.0 bye\r\n",
    "*": b"500 5.5.2 unknown command\r\n",
}


class FakeServer:
    def __init__(self, script=None, connections=1, line_limit=1 << 20, tls_context=None, implicit=False):
        self.script = dict(DEFAULTS)
        if tls_context is not None and not implicit:
            self.script.setdefault("STARTTLS", b"220 2.0.0 ready to start TLS\r\n")
        self.script.update(script or {})
        self.tls_context = tls_context
        self.implicit = implicit
        self.tls_at = None  # len(received) when TLS started
        self.tls_errors = []
        self.connections = connections
        self.line_limit = line_limit
        self.received = b""
        self.commands = []
        self.messages = []
        self.errors = []
        self.accepted = 0
        self.closed_by_client = threading.Event()
        self.session_over = threading.Event()  # the last connection is closed, by either side
        self._counters = {}
        self._conn = None  # the session's socket, while one is served
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._thread.join(0.5)
        conn = self._conn
        if self._thread.is_alive() and conn is not None:
            # A session still waiting for a client that has finished: end its read now rather
            # than wait out the socket timeout (nothing more is coming; what came is recorded).
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def wait_closed(self, timeout=10):
        """Wait until the client has closed its end of the last connection."""
        return self.closed_by_client.wait(timeout)

    def wait_done(self, timeout=10):
        """Wait until the last connection is over, whichever side closed it: what the server
        received is then all recorded."""
        return self.session_over.wait(timeout)

    @property
    def plaintext(self):
        return self.received if self.tls_at is None else self.received[: self.tls_at]

    def _start_tls(self, conn):
        try:
            tls = self.tls_context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError) as e:
            self.tls_errors.append(repr(e))
            return None
        self.tls_at = len(self.received)
        return tls

    # -- serving ------------------------------------------------------------------------------

    def _serve(self):
        served = 0
        while not self._stop.is_set() and served < self.connections:
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            served += 1
            self.accepted += 1
            self.closed_by_client.clear()
            self.session_over.clear()
            self._conn = conn
            try:
                self._session(conn)
            except Exception as e:  # recorded for the test to see
                self.errors.append(repr(e))
            finally:
                conn.close()
                self.session_over.set()

    def _next(self, verb):
        value = self.script.get(verb, self.script["*"])
        if isinstance(value, list):
            i = self._counters.get(verb, 0)
            self._counters[verb] = i + 1
            value = value[min(i, len(value) - 1)]
        return value

    def _answer(self, conn, value, line=b""):
        """Send the scripted answer; return the bytes sent, or None if the connection ends."""
        if callable(value) and value not in (CLOSE, SILENT):
            value = value(conn, line)
        if value is CLOSE:
            return None
        if value is SILENT:
            self._drain_until_closed(conn)
            return None
        if isinstance(value, Segments):
            for part in value.parts:
                conn.sendall(part)
                time.sleep(value.pause)
            return b"".join(value.parts)
        if value:
            conn.sendall(value)
        return value or b""

    def _drain_until_closed(self, conn):
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            self.received += data
        self.closed_by_client.set()

    def _session(self, conn):
        conn.settimeout(30)
        buf = b""
        if self.implicit:
            conn = self._start_tls(conn)
            if conn is None:
                return
        if self._answer(conn, self._next("greeting")) is None:
            return
        in_data = in_auth = False
        while True:
            if in_data:
                end = -2 if buf.startswith(b".\r\n") else buf.find(b"\r\n.\r\n")
                if end == -1:
                    data = self._recv(conn)
                    if data is None:
                        return
                    buf += data
                    continue
                content, buf = (b"", buf[3:]) if end == -2 else (buf[: end + 2], buf[end + 5 :])
                self.messages.append(content)
                in_data = False
                if self._answer(conn, self._next("DOT")) is None:
                    return
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.line_limit:
                    raise AssertionError("client sent an over-long line")
                data = self._recv(conn)
                if data is None:
                    return
                buf += data
                continue
            line, buf = buf[: nl + 1], buf[nl + 1 :]
            self.commands.append(line)
            if in_auth:  # a bare base64 line continuing an AUTH exchange
                verb = "AUTH"
            else:
                verb = re.split(rb"[ :\r\n]", line, maxsplit=1)[0].upper().decode("ascii", "replace")
                if verb not in self.script or verb in ("greeting", "DOT", "*"):
                    verb = "*"
            sent = self._answer(conn, self._next(verb), line)
            if sent is None:
                return
            in_auth = verb == "AUTH" and sent.startswith(b"334")
            in_data = verb == "DATA" and sent.startswith(b"354")
            if verb == "QUIT":
                self._drain_until_closed(conn)
                return
            if verb == "STARTTLS" and sent.startswith(b"220") and self.tls_context is not None:
                buf = b""  # what came before the handshake is not part of the TLS session
                conn = self._start_tls(conn)
                if conn is None:
                    return

    def _recv(self, conn):
        try:
            data = conn.recv(65536)
        except OSError:
            return None
        if not data:
            self.closed_by_client.set()
            return None
        self.received += data
        return data
