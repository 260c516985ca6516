# smtp_duo: an SMTP client for MicroPython boards (ESP32, Pico W) and CPython, to send alerts.
# A port of the Eclipse ThreadX NetX Duo SMTP Client API without the reference's defects.
# This module holds what an alert needs; sibling modules add the rest when a mail or a
# server needs it (README section 3, Extensions). MIT licence.
# Read top-down, in the order of a send: the API, the protocol steps, the message, the I/O.

try:
    from micropython import const
except ImportError:  # CPython
    const = lambda x: x  # noqa: E731

import binascii
import sys

__version__ = "0.3.0"

AUTH_AUTO = const(0)
AUTH_LOGIN = const(1)
AUTH_CRAM_MD5 = const(2)
AUTH_PLAIN = const(3)
AUTH_XOAUTH2 = const(8)
AUTH_NONE = const(0xFFFF)

PRIORITY_LOW = const(1)
PRIORITY_NORMAL = const(2)
PRIORITY_HIGH = const(4)

TLS_NONE = const(0)
TLS_STARTTLS = const(1)
TLS_IMPLICIT = const(2)

# SMTPError.status: the reference's NX_SMTP_* / NX_* values. README section 6 says what each
# means and what to do.
NO_PACKET = const(0x01)
SIZE_ERROR = const(0x09)
IP_ADDRESS_ERROR = const(0x21)
NOT_CONNECTED = const(0x38)
AUTHENTICATION_ERROR = const(0xA0)
OVERSIZE_MAIL_DATA = const(0xA1)
INVALID_SERVER_REPLY = const(0xA2)
INTERNAL_ERROR = const(0xA3)
SERVER_ERROR_CODE_RECEIVED = const(0xA4)
INVALID_PARAM = const(0xA5)
PACKET_ALLOCATE_ERROR = const(0xA6)
GREET_REPLY_ERROR = const(0xA7)
HELLO_REPLY_ERROR = const(0xA8)
MAIL_REPLY_ERROR = const(0xA9)
RCPT_REPLY_ERROR = const(0xAA)
MESSAGE_REPLY_ERROR = const(0xAB)
DATA_REPLY_ERROR = const(0xAC)
AUTH_REPLY_ERROR = const(0xAD)
SERVER_ERROR_REPLY = const(0xAE)
TRANSMIT_ERROR = const(0xAF)
INVALID_SERVER_CHALLENGE = const(0xB0)
OVERSIZE_SERVER_REPLY = const(0xB1)
TLS_ERROR = const(0xC0)  # ours: the reference has no TLS

CLOCK_VALID_FROM_YEAR = 2024  # a clock before this is unset: no Date header is written

_LINE_MAX = const(1024)  # the receive buffer: the longest reply line accepted
_REPLY_LINES_MAX = const(100)
_REPLY_TEXT_MAX = const(2048)  # reply text kept (more lines are read, not kept)
_CMD_MAX = const(512)
_MICROPYTHON = sys.implementation.name == "micropython"
_CHUNK = const(65536)  # CPython: the body's read and window size

# The EHLO keywords acted on; bit i of SMTPClient._ext is _KEYWORDS[i].
_KEYWORDS = (b"AUTH", b"SIZE", b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"STARTTLS", b"CHUNKING",
             b"ENHANCEDSTATUSCODES")
_X_AUTH = const(1)
_X_PIPELINING = const(4)
_X_8BITMIME = const(8)
_X_CHUNKING = const(64)
_X_STARTTLS = const(32)
_X_ENHANCED = const(128)


# -- errors and replies ----------------------------------------------------------------------


class SMTPError(Exception):
    """A failed SMTP operation: `status` (README section 6), the server's `code`, `enhanced`
    and `text` when it replied, the `command`, and `temporary` (the same mail may succeed
    later)."""

    def __init__(self, message, status, reply=None, command=None, temporary=None):
        self.code = self.enhanced = self.text = None
        if reply:
            self.code, self.enhanced, self.text = reply.code, reply.enhanced, reply.text
            x = _load("smtp_duo_explain")  # installed: what to do about this reply
            if x:
                message = x.reply(message, reply)
        super().__init__(message)
        self.message = message
        self.status = status
        self.command = command
        self.temporary = (self.code or 0) // 100 == 4 if temporary is None else temporary

    def __str__(self):
        return self.message


class SMTPConnectionError(SMTPError):
    """No connection, or it was lost. Always temporary."""

    def __init__(self, message, status=NOT_CONNECTED, command=None):
        SMTPError.__init__(self, message, status, None, command, True)


class SMTPTimeoutError(SMTPConnectionError):
    """No answer (or no data taken) within `timeout` seconds."""

    def __init__(self, message, command=None):
        SMTPConnectionError.__init__(self, message, NO_PACKET, command)


class SMTPProtocolError(SMTPError):
    """A malformed, over-long or unasked reply: connection closed. Temporary."""

    def __init__(self, message, status=SERVER_ERROR_REPLY, command=None):
        SMTPError.__init__(self, message, status, None, command, True)


class SMTPAuthenticationError(SMTPError):
    """Authentication failed or could not be attempted."""


class SMTPTLSError(SMTPError):
    """TLS could not be set up; nothing was sent after it."""


class SMTPNotSupportedError(SMTPError):
    """The server, or this board's installed extensions, lack what the mail needs."""


class SMTPRecipientsRefused(SMTPError):
    """Every recipient refused; `recipients` maps each address to the server's Reply."""

    def __init__(self, message, recipients, command=None):
        last = None
        temporary = True
        for last in recipients.values():
            temporary = temporary and last.code // 100 == 4
        SMTPError.__init__(self, "%s: %s" % (message, last) if last else message, RCPT_REPLY_ERROR,
                           last, command, temporary)
        self.recipients = recipients


class Reply:
    """A server reply: `code`, `enhanced` ("2.0.0" or None) and `text`; the one mail_send
    returns also has `refused`, the recipients refused while others were accepted."""

    def __init__(self, code, text, enhanced=None):
        self.code = code
        self.text = text
        self.enhanced = enhanced
        self.refused = {}

    def __iter__(self):  # code, text = reply
        return iter((self.code, self.text))

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.text)

    def __str__(self):
        return "%d %s%s" % (self.code, self.enhanced + " " if self.enhanced else "", self.text)


# -- the client -------------------------------------------------------------------------------


class SMTPClient:
    """SMTPClient(server_address, port=None, username=None, password=None, from_address=None,
    client_domain=None, authentication_type=AUTH_AUTO, timeout=30, tls=TLS_NONE,
    allow_insecure_auth=False, cadata=None, ssl_context=None, server_hostname=None,
    debug=None, buffer_size=None): README section 3."""

    def __init__(self, server_address, port=None, username=None, password=None,
                 from_address=None, client_domain=None, authentication_type=AUTH_AUTO,
                 timeout=30, tls=TLS_NONE, allow_insecure_auth=False, cadata=None,
                 ssl_context=None, server_hostname=None, debug=None, buffer_size=None):
        host = check_text(server_address, "server_address").strip()
        if host[:1] == "[" and host[-1:] == "]":
            host = host[1:-1]  # "[::1]"
        token = callable(password)
        for bad, what in (
            (not host or " " in host, "server_address"),
            (tls not in (0, 1, 2), "tls"),
            (port is not None and (type(port) is not int or not 0 < port < 65536), "port"),
            (from_address is None, "from_address"),
            (type(timeout) not in (int, float) or timeout <= 0, "timeout"),
            (authentication_type not in (0, 1, 2, 3, 8, 0xFFFF), "authentication_type"),
            ((username is None) != (password is None) or username == "", "username/password"),
            (username is None and authentication_type not in (0, 0xFFFF) or username is not None
             and authentication_type == AUTH_NONE, "authentication_type for these credentials"),
            (token and authentication_type not in (AUTH_AUTO, AUTH_XOAUTH2), "authentication_type"
             " (a callable password is an XOAUTH2 token provider)"),
            (debug is not None and not callable(debug), "debug"),
            (buffer_size is not None and (type(buffer_size) is not int or
                                          not 1024 <= buffer_size <= 65536), "buffer_size"),
            (tls == TLS_NONE and (cadata or ssl_context), "cadata/ssl_context without tls"),
        ):
            if bad:
                raise ValueError("bad " + what + " (README section 3)")
        self._from = address(from_address, "from_address")
        if client_domain is not None:
            client_domain = _domain(client_domain, "client_domain")
        if username is not None:
            check_text(username, "username", True)
            if not token:
                check_text(password, "password", True)
        if token or authentication_type in (AUTH_CRAM_MD5, AUTH_XOAUTH2):
            _need("smtp_duo_auth", "auth")  # puts CRAM-MD5 and XOAUTH2 in MECHANISMS
        if server_hostname is not None:
            server_hostname = _domain(server_hostname, "server_hostname")
        elif not _is_ip(host):
            server_hostname = host
        self.tls_verified = None  # None: no TLS; False: encrypted, server not authenticated
        self.tls_context = ssl_context
        if ssl_context:
            self.tls_verified = getattr(ssl_context, "verify_mode", 0) == 2
        elif tls:
            if cadata is not None and not server_hostname:
                raise ValueError("verifying an IP address needs server_hostname")
            self.tls_context = _tls_context(cadata)
            self.tls_verified = cadata is not None
        if username is not None and not self.tls_verified and not allow_insecure_auth:
            # RFC 4954 section 14: credentials only to a server whose certificate was verified.
            raise ValueError("no credentials without verified TLS: give cadata= (or "
                             "allow_insecure_auth=True for a lab server)")
        if buffer_size is None:
            buffer_size = 8192
            try:
                import gc

                if gc.mem_free() + gc.mem_alloc() < 393216:  # a board's heap: no block over 1 KiB
                    buffer_size = 1024
            except AttributeError:  # CPython
                pass
        self.server_address = host
        self.port = port or (25, 587, 465)[tls]
        self.username = username
        self._password = password
        self.from_address = from_address
        self.client_domain = client_domain
        self.authentication_type = authentication_type
        self.timeout = timeout
        self.tls = tls
        self.allow_insecure_auth = allow_insecure_auth
        self.server_hostname = server_hostname
        self._debug = debug
        self._rbuf = bytearray(_LINE_MAX)
        self._rmv = memoryview(self._rbuf)
        self._obuf = bytearray(buffer_size)
        self._cbuf = bytearray(buffer_size // 2)  # file reads and memoryview pieces
        self._link = None
        self._in_session = self._v6 = False
        self._reset()

    def _reset(self):
        self._rpos = self._rend = self._ext = self._size_limit = 0
        self._mechs = b""  # the AUTH line's mechanisms, " PLAIN LOGIN " (one object, however long)
        self._dirty = False  # a transaction begun and not finished: RSET first
        self._secure = False

    def has_extension(self, name):
        """True if the server's last EHLO listed `name` (e.g. "PIPELINING")."""
        n = (name if isinstance(name, bytes) else name.encode()).upper()
        return n in _KEYWORDS and bool(self._ext & 1 << _KEYWORDS.index(n))

    @property
    def size_limit(self):
        """The server's SIZE limit in octets (0: none declared)."""
        return self._size_limit

    def session(self):
        """`with client.session() as s:` several mail_send() on one connection."""
        if self._in_session:
            raise ValueError("a session is already open on this client")
        return self

    def __enter__(self):
        self._run(self.open_steps())
        self._in_session = True
        return self

    def __exit__(self, *exc):
        self._in_session = False
        self._run(self.quit_steps())

    def mail_send(self, recipient_address, priority=PRIORITY_NORMAL, subject="", mail_body="",
                  cc=(), bcc=(), message_id=None, date=None, html=None, attachments=(),
                  headers=None):
        """Send one mail: the server's final Reply, or SMTPError. Bad arguments raise
        ValueError before anything is sent (README section 3)."""
        return self._run(self.send_steps(Message(
            self, recipient_address, priority=priority, subject=subject, body=mail_body, cc=cc,
            bcc=bcc, message_id=message_id, date=date, html=html, attachments=attachments,
            headers=headers)))

    def check_mail(self, recipient_address, priority=PRIORITY_NORMAL, subject="", cc=(), bcc=(),
                   headers=None):
        """Check a mail's arguments as mail_send() does, sending nothing."""
        Message(self, recipient_address, priority=priority, subject=subject, cc=cc, bcc=bcc,
                headers=headers)

    def new_message_id(self):
        """A fresh Message-ID on client_domain, else on from_address's domain."""
        d = self.client_domain
        if not d or d[0] == "[":
            d = self._from[1][self._from[1].rfind("@") + 1 :]
        return make_message_id(d)

    # -- the steps of a session, as generators of I/O requests (see _run) -------------------
    # send_steps, open_steps and quit_steps, like every name here without an underscore, are
    # also what the extensions use (README section 3, Extensions).

    def send_steps(self, msg):
        """One mail: on its own connection, or the session's (reopened if it was lost)."""
        if not self._in_session:
            yield from self.open_steps()
            try:
                reply = yield from self._transaction(msg)
            except BaseException:
                yield from self.quit_steps()
                raise
            bye = yield from self.quit_steps()
            if bye and bye.code not in (221, 421) and not 500 <= bye.code <= 504:
                # A mail command's reply where QUIT's belongs: the replies were out of step,
                # so the one taken as the mail's final reply may not have been it.
                raise SMTPProtocolError("QUIT answered %s: replies out of step" % bye,
                                        INVALID_SERVER_REPLY, "QUIT")
            return reply
        if self._link and (yield "poll", None, 0):
            # Idle, a server says nothing but its farewell (421) before it closes.
            self._trace("*", "server closed the idle connection: reconnecting")
            self._close()
        retry = not self._link
        if retry:
            yield from self.open_steps()
        try:
            return (yield from self._transaction(msg))
        except SMTPError as e:
            # Sent again once, if the reused connection was gone before any reply to the
            # mail: a server that answered nothing took nothing.
            if retry or msg.answered or self._link or isinstance(e, SMTPTimeoutError):
                raise
        self._trace("*", "connection lost before any reply: reconnecting")
        yield from self.open_steps()
        return (yield from self._transaction(msg))

    def open_steps(self):
        """Connect, greeting, EHLO (or HELO), STARTTLS, AUTH."""
        self._reset()
        yield "open", None, self._deadline()
        self._secure = self.tls == TLS_IMPLICIT
        try:
            r = yield from self._reply("greeting")
            if r.code != 220:
                raise SMTPError("session refused: %s" % r, GREET_REPLY_ERROR, r, "greeting")
            yield from self._hello()
            if self.tls == TLS_STARTTLS:
                # RFC 3207, never opportunistic: STARTTLS missing is an error, not plain text.
                if not self._ext & _X_STARTTLS:
                    raise SMTPTLSError("no STARTTLS offered: nothing sent", TLS_ERROR, None,
                                       "STARTTLS", False)
                r = yield from self._command(b"STARTTLS")
                if r.code != 220:
                    raise SMTPTLSError("STARTTLS refused: %s" % r, TLS_ERROR, r, "STARTTLS")
                if self._rend > self._rpos:
                    # Bytes before the handshake: an attacker's, to be read as replies in TLS.
                    self._close()
                    raise SMTPTLSError("data after STARTTLS's reply, before the TLS handshake",
                                       TLS_ERROR, None, "STARTTLS", False)
                yield "tls", None, self._deadline()
                self._secure = True
                yield from self._hello()
            if self._secure and not self.tls_verified:
                self._trace("*", "TLS without certificate verification: server not authenticated")
            if self.username is not None:
                yield from self._authenticate()
        except BaseException as e:
            if isinstance(e, SMTPTimeoutError) and e.command == "greeting" and self.tls != TLS_IMPLICIT:
                e.message += ": is this a TLS port? use tls=TLS_IMPLICIT"  # silent: awaits a handshake
            yield from self.quit_steps()
            raise

    def quit_steps(self):
        """QUIT (RFC 5321 4.1.1.10), a short wait for its reply, close. Returns the reply."""
        r = None
        if self._link:
            try:
                r = yield from self._command(b"QUIT", 5)
            except SMTPError:
                pass
        self._close()
        return r

    def _hello(self):
        d = self.client_domain
        if not d:  # RFC 5321 4.1.4: our end's address literal
            try:
                d = self._link.sock.getsockname()[0]  # CPython: MicroPython's sockets have none
                d = ("[IPv6:%s]" if ":" in d else "[%s]") % d
            except Exception:
                d = "[IPv6:::1]" if self._v6 else "[127.0.0.1]"
        d = d.encode()
        self._ext = self._size_limit = 0  # nothing learnt before TLS is kept (RFC 3207 4.2)
        self._mechs = b""
        r = yield from self._command(b"EHLO " + d, None, self._ehlo_line)
        if r.code in (500, 501, 502, 550) and not self._secure:
            # RFC 5321 3.2: an old server. HELO gives no extensions: no STARTTLS, no AUTH.
            if self.tls or self.username is not None:
                raise (SMTPTLSError if self.tls else SMTPNotSupportedError)(
                    "EHLO refused (%s): no %s" % (r, "STARTTLS" if self.tls else "AUTH"),
                    TLS_ERROR if self.tls else AUTHENTICATION_ERROR, r, "EHLO", False)
            r = yield from self._command(b"HELO " + d)
        if r.code != 250:
            raise SMTPError("EHLO/HELO refused: %s" % r, HELLO_REPLY_ERROR, r, "EHLO")

    def _ehlo_line(self, i, line):
        # Each line of the EHLO reply after its code; the first is the greeting.
        words = line.replace(b"=", b" ", 1).upper().split(None, 1)  # "AUTH=LOGIN" (old)
        if i and words and words[0] in _KEYWORDS:
            self._ext |= 1 << _KEYWORDS.index(words[0])
            if len(words) > 1 and words[0] == b"AUTH":
                # Every AUTH line counts; a hostile flood of them is cut at 1 KiB.
                self._mechs = (self._mechs + b" " + words[1].replace(b"\t", b" ") + b" ")[:1024]
            elif len(words) > 1 and words[0] == b"SIZE":
                n = words[1].split(None, 1)[0]  # the first word counts
                if n.isdigit():
                    self._size_limit = int(n)

    def _authenticate(self):
        if not (self._secure and self.tls_verified or self.allow_insecure_auth):
            raise SMTPAuthenticationError("no credentials without verified TLS",
                                          AUTHENTICATION_ERROR)
        want = self.authentication_type
        token = callable(self._password)
        offered = self._mechs
        if b" CRAM-MD5 " in offered:
            _load("smtp_duo_auth")  # AUTO prefers CRAM-MD5 where it is installed
        for mech, name, respond in MECHANISMS:
            if want == mech or not want and (mech == AUTH_XOAUTH2) == token and \
                    b" " + name + b" " in offered:
                break
        else:
            name = b"for these credentials"
        if b" " + name + b" " not in offered or not self._ext & _X_AUTH:
            raise SMTPNotSupportedError(("the server does not offer AUTH %s" % name.decode())
                                        if self._ext & _X_AUTH else
                                        "the server offers no AUTH (only after STARTTLS?)",
                                        AUTHENTICATION_ERROR, None, "AUTH")
        secret = self._password() if token else self._password  # pyright: ignore[reportOptionalCall]
        try:  # a token provider's bug is found only now: typed, and the token never quoted
            secret = check_text(secret if isinstance(secret, str) else _text(secret), "token", True)
            if not secret:
                raise ValueError("no token")
        except (ValueError, TypeError) as e:
            raise SMTPAuthenticationError(str(e), AUTHENTICATION_ERROR, None, "AUTH", False)
        user, secret = self.username.encode(), secret.encode()
        ir = respond(user, secret, 0, None)
        line = shown = b"AUTH " + name
        if ir is not None and len(line) + len(ir) * 4 // 3 < _CMD_MAX - 8:
            line += b" " + (_b64(ir) or b"=")  # RFC 4954 4: the initial response, if it fits
            shown += b" ****"
            ir = None
        r = yield from self._command(line, None, None, shown)
        step = 1
        detail = None
        while r.code == 334 and step < 5:
            response, ir = ir, None  # an initial response that did not fit the line
            if response is None:
                try:
                    challenge = binascii.a2b_base64(r.text.strip())
                except ValueError:  # RFC 4954 4: cancel a challenge that is not base64
                    yield from self._command(b"*")
                    raise SMTPAuthenticationError("AUTH challenge not base64",
                                                  INVALID_SERVER_CHALLENGE, None, "AUTH")
                response = respond(user, secret, step, challenge)  # None: cancel
                step += 1
                if response == b"":  # XOAUTH2's error detail, answered with an empty line
                    detail = _text(challenge)
            r = yield from self._command(b"*" if response is None else _b64(response), None, None,
                                         b"*" if response is None else b"****" if response else b"")
        if r.code != 235:
            if detail:
                r.text += "\n" + detail
            raise SMTPAuthenticationError("authentication failed: %s%s" % (r, (
                ": wrong user or password (Gmail/Outlook: an app password, or XOAUTH2)")
                if r.code == 535 else ""), AUTH_REPLY_ERROR, r, "AUTH")

    def _transaction(self, msg):
        # RFC 5321 3.3. With PIPELINING (RFC 2920) the envelope and DATA go in one flight,
        # their replies read and checked in order after it.
        msg.negotiate(self)
        msg.answered = False
        yield from self._quiet("MAIL")
        wait = not self._ext & _X_PIPELINING
        chunking = msg.size is not None and self._ext & _X_CHUNKING and _load("smtp_duo_chunking")
        out = chunking.Chunk(self, msg) if chunking else Output(self, msg)
        if self._dirty:
            yield from out.ask(b"RSET", wait)
        self._dirty = True
        yield from out.ask(b"MAIL FROM:<" + msg.sender + b">" + msg.params, wait)
        if wait:
            out.check(False)
        for a in msg.recipients:
            yield from out.ask(b"RCPT TO:<" + a + b">", wait)
            if not self._link:  # 421: the server went away
                break
        if wait:
            out.check(True)
        if chunking:  # RFC 3030: the message as one BDAT chunk in the same flight
            r = yield from out.bdat()  # pyright: ignore[reportAttributeAccessIssue] (smtp_duo_chunking's)
        else:
            yield from out.ask(b"DATA", False)
            r = yield from out.replies()
            if r.code == 354 and not (out.mail and out.mail.code < 300 and out.accepted):
                yield from self._command(b".")  # RFC 2920 3.1: DATA with nothing to deliver
            out.check(True)
            if r.code != 354:
                raise SMTPError("DATA refused: %s" % r, DATA_REPLY_ERROR, r, "DATA")
            yield from self.write_message(out, msg)
            r = yield from self._reply("DATA")
        self._dirty = False
        # A reply beyond those asked for, now or a moment later: this one may not be final.
        yield from self._quiet("the next command", True)
        if r.code // 100 != 2:
            raise SMTPError("message refused: %s" % r, MESSAGE_REPLY_ERROR, r, "DATA")
        r.refused = out.refused
        return r

    def write_message(self, out, msg):
        """Stream the message through `out`. Any failure closes the connection: the message
        is never completed, so the server drops it."""
        out.begin()
        try:
            yield from msg.write(out)
        except BaseException:
            self._close()
            raise

    # -- commands and replies -------------------------------------------------------------------

    def _command(self, line, timeout=None, on_line=None, shown=None):
        # Send one command line and read its reply. `shown`: the line in the transcript (AUTH).
        name = "AUTH" if shown is not None else line.split(b" ", 1)[0].decode()
        self._trace(">", line if shown is None else shown)
        yield from self._send(line + b"\r\n", name, timeout)
        return (yield from self._reply(name, timeout, on_line))

    def _trace(self, direction, line):
        # The debug transcript: ">" sent, "<" received, "*" a note.
        if self._debug:
            self._debug(direction, line if isinstance(line, str) else _text(line))

    def _send(self, data, command, timeout=None):
        if not self._link:
            raise SMTPConnectionError("not connected", command=command)
        if self._rend > self._rpos:
            self._unasked(command)
        try:
            yield "write", data, self._deadline(timeout)
        except OSError as e:
            self._close()
            if _is_timeout(e):
                raise SMTPTimeoutError("server did not accept data in time (%s)" % command, command)
            raise SMTPConnectionError("connection lost sending %s: %s" % (command, _why(e)),
                                      TRANSMIT_ERROR, command)

    def _unasked(self, command):
        # Bytes beyond every reply asked for (a stray or early line) would be taken as the
        # reply to the next command.
        self._close()
        raise SMTPProtocolError("unasked reply before %s: out of step" % command,
                                INVALID_SERVER_REPLY, command)

    def _quiet(self, command, closing_ok=False):
        # Between exchanges the server has nothing to say. Its close is an SMTPConnectionError
        # (with closing_ok just the end).
        if self._link and self._rend == self._rpos and (yield "poll", None, 0):
            try:
                yield from self._fill(self._deadline(), command)
            except SMTPConnectionError:
                if not closing_ok:
                    raise
        if self._rend > self._rpos:
            self._unasked(command)

    def _fill(self, deadline, command):
        # Make room, then read more of the server's bytes into the receive buffer.
        if self._rpos:
            n = self._rend - self._rpos
            self._rbuf[:n] = self._rmv[self._rpos : self._rend]  # memmove: no copy of the line
            self._rpos, self._rend = 0, n
        if self._rend == _LINE_MAX:
            self._close()
            raise SMTPProtocolError("reply line over %d octets (%s)" % (_LINE_MAX, command),
                                    OVERSIZE_SERVER_REPLY, command)
        if not self._link:
            raise SMTPConnectionError("not connected", command=command)
        try:
            # (the whole buffer when empty: no new memoryview for most reads)
            n = yield "read", self._rmv[self._rend :] if self._rend else self._rmv, deadline
        except OSError as e:
            self._close()
            if _is_timeout(e):
                raise SMTPTimeoutError("no reply to %s within %ss" % (command, self.timeout), command)
            raise SMTPConnectionError("connection lost (%s): %s" % (command, _why(e)),
                                      command=command)
        if not n:
            self._close()
            raise SMTPConnectionError("server closed the connection (%s)" % command, command=command)
        self._rend += n

    def _reply(self, command, timeout=None, on_line=None):
        # One whole reply (RFC 5321 4.2): every line three digits, the first 2-5, then "-",
        # SP or the end; all the same code. Parsed in the receive buffer as lines arrive.
        deadline = self._deadline(timeout)
        code = None
        texts = []
        kept = 0
        buf = self._rbuf
        while len(texts) < _REPLY_LINES_MAX:
            scan = self._rpos
            while True:
                nl = buf.find(b"\n", scan, self._rend)
                if nl >= 0:
                    break
                scan = self._rend - self._rpos
                yield from self._fill(deadline, command)
                scan += self._rpos
            line = bytes(buf[self._rpos : nl - 1 if nl > self._rpos and buf[nl - 1] == 13 else nl])
            self._rpos = nl + 1
            if self._rpos == self._rend:
                self._rpos = self._rend = 0
            c = line[:3]
            sep = line[3:4]
            if not (c.isdigit() and b"2" <= c <= b"599" and len(c) == 3 and sep in b" -" and
                    code in (None, int(c))):
                self._close()
                raise SMTPProtocolError("malformed reply to %s: %r" % (command, line[:80]),
                                        INVALID_SERVER_REPLY if code else SERVER_ERROR_REPLY,
                                        command)
            code = int(c)
            if on_line:
                on_line(len(texts), line[4:])
            self._trace("<", line)
            if kept < _REPLY_TEXT_MAX:
                kept += len(line)
                texts.append(_text(line[4:]))
            else:
                texts.append("")
            if sep != b"-":
                text = "\n".join(texts).rstrip("\n")
                enhanced = None
                w = text.split(" ", 1)[0]
                p = w.split(".")
                # RFC 3463 "class.subject.detail", its class the reply's first digit.
                if self._ext & _X_ENHANCED and code // 100 != 3 and len(p) == 3 and \
                        p[0] == c[:1].decode() and command not in ("greeting", "EHLO") and \
                        0 < len(p[1]) < 4 and 0 < len(p[2]) < 4 and _digits(p[1] + p[2]):
                    enhanced, text = w, text[len(w) + 1 :]
                if code == 421 and command != "QUIT":
                    self._close()  # RFC 5321 3.8: the server is going away
                return Reply(code, text, enhanced)
        self._close()
        raise SMTPProtocolError("reply to %s over %d lines" % (command, _REPLY_LINES_MAX),
                                OVERSIZE_SERVER_REPLY, command)

    # -- the I/O: requests, the driver ----------------------------------------------------------
    # The steps are generators that yield what they need done, as (kind, argument, deadline
    # in ticks_ms), and are sent the result:
    #   "open"   connect, and shake hands for implicit TLS         -> None
    #   "tls"    the STARTTLS handshake on the open connection     -> None
    #   "read"   at least one octet into the memoryview given      -> the count (0: closed)
    #   "write"  the whole buffer given                            -> None
    #   "poll"   has the server sent anything, or closed?          -> bool
    # A failure is thrown into the step, which maps it (OSError) and closes. _run() does
    # them on blocking sockets; smtp_duo_async does them with awaits.

    def _run(self, steps):
        value = error = None
        while True:
            try:
                kind, arg, deadline = steps.throw(error) if error else steps.send(value)
            except StopIteration as e:
                return e.value
            value = error = None
            try:
                if kind == "read":
                    value = self._link.read_into(arg, deadline)
                elif kind == "write":
                    self._link.write(arg, deadline)
                elif kind == "poll":
                    value = self._link.readable()
                else:
                    self._link = self._connect(deadline, self._link if kind == "tls" else None)
            except BaseException as e:
                if isinstance(e, SMTPError):  # from the TLS handshake: the socket is gone
                    self._close()
                error = e

    def _deadline(self, seconds=None):
        return ticks_add(ticks_ms(), int(min(self.timeout, seconds or self.timeout) * 1000))

    def resolve(self, socket):
        """getaddrinfo for the server (it blocks, without a timeout, on the boards)."""
        try:
            a = socket.getaddrinfo(self.server_address, self.port, 0, socket.SOCK_STREAM)
            if a:
                return a
        except OSError as e:
            a = e
        raise SMTPConnectionError(_explained("cannot resolve %r (%s)" % (self.server_address, a), a,
                                             self), IP_ADDRESS_ERROR, "connect")

    def connect_error(self, e):
        """The SMTPError for a failed connect."""
        if _is_timeout(e):
            return SMTPTimeoutError(_explained("connect to %s:%d timed out" % (
                self.server_address, self.port), e, self), "connect")
        return SMTPConnectionError(_explained("cannot connect to %s:%d: %s" % (
            self.server_address, self.port, _why(e)), e, self), command="connect")

    def _connect(self, deadline, link=None):
        # A connection (or, given `link`, TLS over it); the portable tests substitute an
        # in-memory server here.
        if link:
            sock = link.sock
        else:
            import socket

            e = None
            for a in self.resolve(socket):
                sock = socket.socket(a[0], socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(a[-1])
                    break
                except OSError as x:
                    sock.close()
                    e = x
            else:
                raise self.connect_error(e)
            try:  # no Nagle: a mail's later writes would wait for a delayed ACK
                sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (the same on every port)
            except (OSError, AttributeError, TypeError):
                pass
            self._v6 = a[0] == getattr(socket, "AF_INET6", -1)
            if self.tls != TLS_IMPLICIT:
                return _Link(sock)
        name = self.server_hostname
        try:
            if _MICROPYTHON:  # the handshake runs in the first read or write, by the deadline
                sock.setblocking(False)
                # (The boards' stubs type wrap_socket's socket as the socket module.)
                kw = {"server_hostname": name} if name else {}
                tls = self.tls_context.wrap_socket(sock, do_handshake_on_connect=False, **kw)  # pyright: ignore[reportArgumentType]
                return _Link(tls, sock, self.port, deadline)
            sock.settimeout(max(1, ticks_diff(deadline, ticks_ms())) / 1000)
            kw = {"server_hostname": name} if name else {}
            return _Link(self.tls_context.wrap_socket(sock, **kw))  # pyright: ignore[reportArgumentType]
        except Exception as e:
            sock.close()
            raise tls_error(e, self.port)

    def _close(self):
        if self._link:
            self._link.close()
            self._link = None
        self._rpos = self._rend = 0


# -- the message ------------------------------------------------------------------------------

_PRIORITY = {PRIORITY_HIGH: b"1 (Highest)\r\nImportance: high",
             PRIORITY_NORMAL: b"3 (Normal)\r\nImportance: normal",
             PRIORITY_LOW: b"5 (Lowest)\r\nImportance: low"}


class Message:
    """A mail checked and ready to stream. It holds no copy of the body."""

    def __init__(self, client, to, priority=PRIORITY_NORMAL, subject="", body="", cc=(), bcc=(),
                 message_id=None, date=None, html=None, attachments=(), headers=None):
        if priority not in _PRIORITY:
            raise ValueError("bad priority")
        self.priority = priority
        self.to = address_list(to, "recipient_address")
        self.cc = address_list(cc, "cc")
        seen = []
        for _, a in self.to + self.cc + address_list(bcc, "bcc"):
            if a not in seen:
                seen.append(a)
        if not seen:
            raise ValueError("no recipient given")
        self.from_name, a = client._from
        self.utf8 = not _ascii(a + "".join(seen))
        if self.utf8:  # RFC 6531: non-ASCII addresses need the server's SMTPUTF8
            _need("smtp_duo_utf8", "utf8")
        self.sender = a.encode()
        self.recipients = [a.encode() for a in seen]
        self.subject = phrase(check_text(subject, "subject"))
        if message_id is None:
            message_id = client.new_message_id()
        elif not (check_text(message_id, "message_id")[:1] == "<" and message_id[-1:] == ">" and
                  "@" in message_id and " " not in message_id and len(message_id) <= 250 and
                  _ascii(message_id)):
            raise ValueError("message_id must be <unique@domain>, ASCII")
        self.message_id = message_id
        if date is None:
            date = date_header()
        elif len(check_text(date, "date")) > 80 or not _ascii(date):
            raise ValueError("date must be an RFC 5322 date, ASCII")
        self.date = date
        self.text = Text(body, b"plain", client._cbuf)
        self.texts = [self.text]  # every text part (the MIME extension adds the HTML one)
        self.top = self.text  # the entity under the header (a multipart with smtp_duo_mime)
        self.extra = []  # (name, tokens): headers=
        if headers or html is not None or attachments:
            _need("smtp_duo_mime", "mime").compose(self, html, attachments, headers, client._cbuf)
        for t in self.texts:  # a stream, a long line or a NUL: quoted-printable, whatever the server
            if t.long or t.size is None:
                _need("smtp_duo_qp", "qp")
        self.size = None  # the message's octets, when known (smtp_duo_chunking sets it)
        self.params = b""
        self.answered = False  # the server answered a command of this mail (not with 421)

    def negotiate(self, client):
        """Each part's encoding and the MAIL parameters, for this server."""
        e8 = client._ext & _X_8BITMIME
        eight = self.utf8
        for t in self.texts:
            eight = t.negotiate(e8) or eight
        self.params = b" BODY=8BITMIME" if eight and e8 else b""
        if self.utf8:
            self.params += _load("smtp_duo_utf8").params(client)
        if client._ext & 66:  # SIZE or CHUNKING: the size, with smtp_duo_chunking
            m = _load("smtp_duo_chunking")
            if m:
                self.params = m.params(client, self) + self.params

    def write(self, out):
        """The message into `out` (Output, or a counter: README section 3, Extensions)."""
        if self.date:
            yield from header(out, b"Date", [self.date.encode()])
        yield from header(out, b"From", mailbox(self.from_name, self.sender.decode()))
        if self.to or not self.cc:
            yield from header(out, b"To", _mailboxes(self.to) or [b"undisclosed-recipients:;"])
        if self.cc:
            yield from header(out, b"Cc", _mailboxes(self.cc))
        yield from header(out, b"Subject", self.subject)
        yield from header(out, b"Message-ID", [self.message_id.encode()])
        for name, tokens in self.extra:
            yield from header(out, name, tokens)
        yield from header(out, b"MIME-Version", [b"1.0"])
        yield from self.top.head(out)
        out.put(b"X-Priority: " + _PRIORITY[self.priority] + b"\r\n\r\n")
        yield from self.top.write(out)
        yield from out.terminate()


def _mailboxes(mailboxes):
    tokens = []
    for name, a in mailboxes:
        if tokens:
            tokens[-1] += b","
        tokens += mailbox(name, a)
    return tokens


def header(out, name, tokens):
    """A header field: tokens joined by spaces, folded before one at 76 columns. Every header
    line starts here, so a name that starts with "." is dot-stuffed under DATA."""
    if out.dots and name[:1] == b".":
        out.stuff()
    out.put(name + b":")
    col = len(name) + 1
    for t in tokens:
        if out.full():
            yield from out.flush()
        if col + 1 + len(t) > 76:  # also right after the colon (RFC 5322 allows it)
            out.put(b"\r\n")
            col = 0
        out.put(b" " + t)
        col += 1 + len(t)
    out.put(b"\r\n")


def phrase(text, encode=False):
    """Header text as tokens: plain words when printable ASCII with single spaces between
    words of at most 66 characters; else RFC 2047 encoded-words, which keep every space and
    never split a character."""
    b = text.encode()
    # (Checked before splitting: a run of spaces would make a list of empty words.)
    if not encode and len(b) == len(text) and b"=?" not in b and b"\t" not in b and \
            b"  " not in b and b[:1] != b" " != b[-1:]:
        words = b.split(b" ")
        for w in words:
            if len(w) > 66:
                break
        else:
            return words if b else []
    tokens = []
    i = 0
    while i < len(b):
        j = min(i + 39, len(b))  # 39 octets: 64 characters
        while j < len(b) and b[j] & 0xC0 == 0x80:
            j -= 1
        tokens.append(b"=?utf-8?B?" + _b64(b[i:j]) + b"?=")
        i = j
    return tokens


def mailbox(name, addr):
    """A mailbox as header tokens: addr, or the display name and <addr>."""
    if name is None:
        return [addr.encode()]
    tokens = phrase(name)
    if tokens[0][:2] != b"=?":
        for ch in '()<>[]:;@\\,."':
            if ch in name:  # RFC 5322 specials: a quoted-string (encoded-words when long)
                tokens = phrase(name, True) if len(name) > 60 else \
                    [b'"' + name.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"']
                break
    return tokens + [b"<" + addr.encode() + b">"]


class Text:
    """A text part (the body, or the MIME extension's HTML) as windows (data, i, j) of bytes.
    What can be read twice (in RAM, a list of chunks, a seekable file) is scanned first: its
    size, 8-bit octets, and a NUL or a line over 998 octets (`long`); a one-shot stream (an
    iterator, an unseekable file) cannot be, and its size is None. Sent 7bit, 8bit when it
    has 8-bit octets and the server offers 8BITMIME, else quoted-printable (smtp_duo_qp)."""

    def __init__(self, body, subtype, buf):
        self.subtype = subtype
        self.cte = b"7bit"
        self.src = body
        self._buf = buf
        self.kind = 0  # 0: in RAM, 1: chunks, 2: a seekable file, 3: one-shot, 4: consumed
        if isinstance(body, str):
            self.src = body.encode()
        elif isinstance(body, (list, tuple)):
            for c in body:
                if not isinstance(c, (str, bytes, bytearray)):
                    raise ValueError("mail_body chunks must be str or bytes")
            self.kind = 1
        elif hasattr(body, "readinto") or hasattr(body, "read"):
            try:
                self._start = body.tell()
                self.kind = 2
            except (AttributeError, OSError, ValueError):
                self.kind = 3
        elif not isinstance(body, (bytes, bytearray, memoryview)):
            try:
                self.src = iter(body)
                self.kind = 3
            except TypeError:
                raise ValueError("bad mail_body: str, bytes, a file or an iterable of chunks")
        self.size = None
        self.eight = self.long = False
        if self.kind < 3:
            self.size = self._run = 0
            self._cr = False
            for data, i, j in self._windows(len(buf) if _MICROPYTHON else _CHUNK):
                self._scan(data, i, j)
            if self._run:  # RFC 5321 4.1.1.4: a missing final CRLF is added
                self.size += 2

    def negotiate(self, e8):
        # True when the part goes 8bit (the mail then declares BODY=8BITMIME).
        self.cte = b"8bit" if self.eight else b"7bit"
        if self.long or self.size is None or self.eight and not e8:
            self.cte = b"quoted-printable"
            if not _load("smtp_duo_qp"):  # (known before connecting but for 8BITMIME: Message)
                raise SMTPNotSupportedError("8-bit text, and the server has no 8BITMIME: it " +
                                            _how("smtp_duo_qp", "qp"), INVALID_PARAM, None, "MAIL",
                                            False)
        return self.cte == b"8bit"

    def head(self, out):
        yield from header(out, b"Content-Type", [b"text/" + self.subtype + b";", b"charset=utf-8"])
        yield from header(out, b"Content-Transfer-Encoding", [self.cte])

    def write(self, out):
        qp = self.cte == b"quoted-printable"
        if out.counting and not qp:  # known from the scan: no second pass over the source
            out.n += self.size
            return
        if out.counting and self.size is None:
            out.unknown = True  # a one-shot stream: its size is known only once sent
            return
        yield from self.feed(_load("smtp_duo_qp").QP(out) if qp else _Plain(out), out.window if qp
                             else len(out.buf) // 4 if _MICROPYTHON else _CHUNK, out)

    def _scan(self, data, i, j):
        f = _F or self.size and native()  # native code from a text's second window on
        if f:
            return f.scan(self, data, i, j)
        if self._cr and i < j and data[i] == 10:
            i += 1  # the LF of a CRLF split between windows: counted already
        self._cr = False
        if i >= j:
            return
        self._cr = data[j - 1] == 13
        self.eight = self.eight or _has_8bit(data, i, j)
        cr = data.count(b"\r", i, j)
        lf = data.count(b"\n", i, j)
        self.size += j - i + cr + lf - (2 * data.count(b"\r\n", i, j) if cr and lf else 0)
        self.long = self.long or data.find(b"\0", i, j) >= 0
        # Wire line lengths, a stuffed dot counted: from a line's start, the last line end
        # within its 998 octets; none there is a long line. One search per ~998 octets.
        run = self._run
        while i < j:
            if run == 0 and data[i] == 46:
                run = 1
            k = i + 999 - run  # (run is over 998 only once long)
            e = _line_end(data, i, min(max(k, i), j), cr)
            if e < 0:
                if k <= j:
                    self.long = True
                    e = _line_end(data, i, j, cr)
                    if e < 0:
                        run += j - i
                        break
                else:
                    run += j - i
                    break
            run = 0
            i = e + 1 + (data[e] == 13 and e + 1 < j and data[e + 1] == 10)
        self._run = run

    def feed(self, sink, size, out):
        """Each window as it is to sink.text(data, i, j), which makes every line end CRLF
        (also across windows); the output written whenever it is full. With smtp_duo_fast,
        plain text goes a read at a time, as much as the output holds at each step."""
        fast = _F if type(sink) is _Plain else None
        for data, i, j in self._windows(len(self._buf) if fast else size):
            while i < j:
                k = fast.plain(sink, data, i, j) if fast else i
                if k == i and not out.full():  # bytecode: the whole window
                    sink.text(data, i, j)
                    k = j
                i = k
                if out.full() and (i < j or not fast):  # native code fills the buffer: fewer writes
                    yield from out.flush()
        if out.full():
            yield from out.flush()
        sink.end()

    def _windows(self, size):
        # The body as (data, i, j) windows of at most `size` octets.
        kind = self.kind
        src = (self.src,) if kind == 0 else self.src
        if kind == 3:
            self.kind = 4  # one-shot: read once
        if kind == 2:
            src.seek(self._start)  # pyright: ignore[reportAttributeAccessIssue]
        if kind >= 2 and (hasattr(src, "readinto") or hasattr(src, "read")):  # a file
            buf = self._buf
            while True:
                if hasattr(src, "readinto") and (_MICROPYTHON or not hasattr(src, "read")):
                    c = buf
                    n = src.readinto(buf)  # pyright: ignore[reportAttributeAccessIssue]
                else:  # (CPython: fewer, larger reads and windows; RAM is no object on a PC)
                    c = src.read(len(buf) if _MICROPYTHON else _CHUNK)  # pyright: ignore[reportAttributeAccessIssue]
                    c = c.encode() if isinstance(c, str) else c
                    n = len(c) if c else 0
                if not n:
                    return
                for w in range(0, n, size):
                    yield c, w, min(w + size, n)
        for c in src:
            if isinstance(c, str):
                c = c.encode()
            elif isinstance(c, memoryview):
                # No find() on a memoryview: through the chunk buffer a piece at a time.
                for i in range(0, len(c), len(self._buf)):
                    k = min(len(self._buf), len(c) - i)
                    self._buf[:k] = c[i : i + k]
                    for w in range(0, k, size):
                        yield self._buf, w, min(w + size, k)
                continue
            elif not isinstance(c, (bytes, bytearray)):
                raise ValueError("mail_body chunks must be str or bytes")
            for w in range(0, len(c), size):
                yield c, w, min(w + size, len(c))


def _line_end(data, i, j, cr):
    # The last CR or LF in data[i:j], or -1; cr: data has a CR.
    e = data.rfind(b"\n", i, j)
    return max(e, data.rfind(b"\r", i, j)) if cr else e


def _has_8bit(data, i, j):
    # Any octet over 0x7F in data[i:j]? C-level tests of at most 128 octets each (the
    # temporary stays small on a board's heap), never a loop over octets.
    if hasattr(data, "isascii"):  # CPython
        return not data[i:j].isascii()
    mv = memoryview(data)
    for k in range(i, j, 128):
        e = min(k + 128, j)
        try:  # as text, octets over 0x7F are either malformed or fewer characters
            if len(str(mv[k:e], "utf-8")) != e - k:
                return True
        except (UnicodeError, ValueError):
            return True
    return False


class _Plain:
    # 7bit/8bit text as it is, every line end CRLF, dots stuffed (RFC 5321 4.5.2) when the
    # output says so.
    def __init__(self, out):
        self.out = out
        self.bol = True
        self.cr = False  # the previous window ended with CR: a leading LF belongs to it

    def text(self, data, i, j):
        out = self.out
        if self.cr and i < j and data[i] == 10:
            i += 1
        self.cr = False
        if i >= j:
            return
        if not _MICROPYTHON:
            # CPython: C-level replace() beats a loop over lines, and its heap does not fragment.
            self.cr = data[j - 1] == 13
            w = data[i : j - self.cr]
            cr = w.count(b"\r")
            if not cr:
                w = w.replace(b"\n", b"\r\n")
            elif not cr == w.count(b"\r\n") == w.count(b"\n"):  # CRLF already: as it is
                w = w.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            if self.cr:
                w += b"\r\n"
            if out.dots:
                if self.bol and w[:1] == b".":
                    out.stuff()
                if w.find(b"\n.") >= 0:
                    out.stuffed += w.count(b"\n.")
                    w = w.replace(b"\n.", b"\n..")
            if out.n + len(w) > len(out.buf):
                out.big = w  # sent after the buffer, before anything else goes in
            else:
                out.put(w)
            self.bol = w[-1:] == b"\n"
            return
        # MicroPython: line by line from the window into the output buffer (slice assignments,
        # which a growing bytearray also takes), then CRLF. Nothing the size of a window is
        # allocated, so a long body leaves no large garbage to fragment the heap. A window at
        # most doubles, and the output is flushed at half full: it has room.
        mv = memoryview(data)
        buf = out.buf
        n = out.n
        cr = data.find(b"\r", i, j) >= 0
        while i < j:
            if self.bol and out.dots and data[i] == 46:
                buf[n : n + 1] = b"."
                n += 1
                out.stuffed += 1
            e = data.find(b"\n", i, j)
            if cr:
                r = data.find(b"\r", i, j if e < 0 else e)
                e = r if r >= 0 else e
            if e < 0:
                e = j
            buf[n : n + e - i] = mv[i:e]
            n += e - i
            self.bol = e < j
            if e == j:
                break
            buf[n : n + 2] = b"\r\n"
            n += 2
            i = e + 1
            if data[e] == 13:  # CR, or CRLF: one line end
                if i == j:
                    self.cr = True
                elif data[i] == 10:
                    i += 1
        out.n = n

    def end(self):
        if not self.bol:  # RFC 5321 4.1.1.4: a missing final CRLF is added, never a second
            self.out.put(b"\r\n")


class Output:
    """A mail's flight: its commands and message collect in the client's fixed buffer and
    go out once it is half full (full()); writers check after each window, token or command,
    and each adds at most the other half. Also what the replies to the commands said."""

    counting = False
    big = None  # CPython: a window too large for the buffer, sent right after it

    def __init__(self, client, msg):
        self.client = client
        self.msg = msg
        self.buf = client._obuf
        self.mv = memoryview(self.buf)
        self.n = self.total = self.start = self.stuffed = self.rcpt = self.accepted = 0
        self.window = len(self.buf) // 8  # quoted-printable: at most about 3.1 times that
        self.dots = True  # DATA: dot-stuffing and the terminator (not under BDAT)
        self.queue = []  # commands sent, replies not yet read
        self.mail = self.closed = None  # the reply to MAIL; a 421 to RCPT
        self.refused = {}

    def put(self, data):
        n = self.n + len(data)
        if n > len(self.buf):
            raise SMTPError("output buffer overflow", INTERNAL_ERROR)
        self.buf[self.n : n] = data
        self.n = n

    def stuff(self):
        self.put(b".")
        self.stuffed += 1

    def full(self):
        return self.n >= len(self.buf) // 2 or self.big

    def begin(self):
        self.start = self.total + self.n
        self.stuffed = 0

    def flush(self):
        for b in (self.mv[: self.n], self.big):
            if b:
                yield from self.client._send(b, "DATA")
                self.total += len(b)
        self.n = 0
        self.big = None

    def terminate(self):
        end = self.total + self.n
        if self.dots:  # the sinks end with CRLF: "." CRLF is the only CRLF.CRLF
            self.put(b".\r\n")
        yield from self.flush()
        # The message's octets as SIZE counts them: no stuffed dots, no terminator.
        self.client._trace(">", "<message: %d octets>" % (end - self.start - self.stuffed))

    def ask(self, line, wait):
        """Queue a command of the flight; with `wait`, send it and read its reply."""
        self.client._trace(">", line)
        if self.full():
            yield from self.flush()
        self.put(line + b"\r\n")
        self.queue.append(line.split(b" ", 1)[0].decode())
        if wait:
            yield from self.replies()

    def replies(self):
        """Send what is queued, then read its replies in order; the last one."""
        yield from self.flush()
        c = self.client
        r = None
        while self.queue and c._link:
            command = self.queue.pop(0)
            r = yield from c._reply(command)
            self.msg.answered = self.msg.answered or r.code != 421
            if command == "RCPT":
                if r.code < 300:
                    self.accepted += 1
                else:
                    self.refused[self.msg.recipients[self.rcpt].decode()] = r
                    if r.code == 421:
                        self.closed = r
                self.rcpt += 1
            elif command == "MAIL":
                self.mail = r
            elif command == "RSET" and r.code >= 300:
                c._close()  # state unknown: the next mail reconnects
                raise SMTPError("RSET refused: %s" % r, SERVER_ERROR_CODE_RECEIVED, r, "RSET", True)
        if r is None:
            raise SMTPConnectionError("not connected", command=self.queue[0] if self.queue else None)
        return r

    def check(self, rcpts):
        """Raise the error for the sender refused, or (rcpts) no recipient accepted."""
        r = self.mail
        if r is None:
            raise SMTPConnectionError("server closed before MAIL", command="MAIL")
        if r.code >= 300:
            raise (SMTPAuthenticationError if r.code == 530 else SMTPError)(
                "sender refused: %s" % r, MAIL_REPLY_ERROR, r, "MAIL")
        if rcpts and (self.closed or not self.accepted):
            raise SMTPRecipientsRefused("recipients refused", self.refused, "RCPT")


# -- AUTH mechanisms: (authentication_type, name, respond), strongest first. respond(user,
# secret, step, challenge) gives step 0's initial response (None: none) and each challenge's
# response (None: cancel). smtp_duo_auth puts XOAUTH2 and CRAM-MD5 in front.


def _plain(user, secret, step, challenge):
    return None if step else b"\0" + user + b"\0" + secret


def _login(user, secret, step, challenge):
    return (None, user, secret, None)[min(step, 3)]


MECHANISMS = [(AUTH_PLAIN, b"PLAIN", _plain), (AUTH_LOGIN, b"LOGIN", _login)]


# -- checks on what the caller gives, all before the first byte goes out -------------------------


def check_text(value, what, secret=False):
    """`value` if it is a str without control characters, else ValueError."""
    # Control characters (C0 but tab, DEL, C1) and U+2028/2029 could split or end a header
    # or command line. A secret is never quoted; the position is named instead.
    if not isinstance(value, str):
        raise ValueError(what + " must be a str")
    b = value.encode()  # octets: iterating a str would intern each character on a board
    for i in range(len(b)):
        c = b[i]
        if c < 32 and c != 9 or c == 127 or c == 0xC2 and 0x80 <= b[i + 1] <= 0x9F or \
                c == 0xE2 and b[i + 1] == 0x80 and b[i + 2] in (0xA8, 0xA9):  # C1, U+2028/9
            raise ValueError("%s contains a control character (CR, LF, NUL, ...) at position %d%s"
                             % (what, len(str(b[:i], "utf-8")), "" if secret else ": %r" % value))
    return value


def _ascii(s):
    return len(s.encode()) == len(s)


def _digits(s, hexa=False):
    for ch in s.lower():
        if not ("0" <= ch <= "9" or hexa and "a" <= ch <= "f"):
            return False
    return True


def address(value, what):
    """(display name or None, addr-spec) from 'a@b', '<a@b>' or 'Name <a@b>'."""
    s = check_text(value, what).strip()
    name = None
    if s[-1:] == ">":
        i = s.rfind("<")
        name = s[:i].strip()
        if len(name) > 1 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        name = name or None
        s = s[i + 1 : -1].strip() if i >= 0 else ""
    at = s.rfind("@")
    local, domain = s[:at], s[at + 1 :]
    bad = at < 1 or not domain or local[0] == "." or local[-1] == "." or ".." in local
    if not bad and domain[0] == "[":
        bad = domain[-1] != "]" or not _literal(domain[1:-1])
        domain = ""
    for ch in local + "." + domain:
        bad = bad or ch in ' \t<>()[],;:\\"@'
    for label in domain.split(".") if domain else ():
        bad = bad or not label or label[0] == "-" or label[-1] == "-"
    # RFC 5321 4.5.3.1: local part 64, domain 255, the path 256 octets with its brackets.
    if bad or len(local.encode()) > 64 or len(s.encode()) > 254 or len(domain.encode()) > 255:
        raise ValueError("%s is not an address like name@example.com: %r" % (what, value))
    return name, s


def address_list(value, what):
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise ValueError(what + " must be a str or a list of str")
    return [address(v, what) for v in value]


def _literal(s):
    # RFC 5321 4.1.3, between the brackets: IPv4, "IPv6:" and an IPv6 address, or a tag and
    # dcontent (here without "<", ">" or space: nothing in it can end the path).
    c = s.find(":")
    tag = s[:c]
    if c < 0:
        return _ipv4(s)
    if tag.upper() == "IPV6":
        return _ipv6(s[c + 1 :])
    ok = tag[-1:] not in ("", "-") and c < len(s) - 1
    for ch in tag.lower():
        ok = ok and ("a" <= ch <= "z" or "0" <= ch <= "9" or ch == "-")
    for ch in s[c + 1 :]:
        ok = ok and "!" <= ch <= "~" and ch not in "[]\\<>"
    return ok


def _ipv4(s):
    p = s.split(".")
    for n in p:
        if not (0 < len(n) < 4 and _digits(n) and int(n) < 256):
            return False
    return len(p) == 4


def _ipv6(s):
    if s[:1] == ":" != s[1:2] or s[-1:] == ":" != s[-2:-1]:
        return False
    groups = s.split(":")
    room = 8
    if "." in groups[-1]:  # the last 32 bits in dotted decimal
        room = 6 if _ipv4(groups.pop()) else 0
    if "::" in s:  # two or more groups of zeros (RFC 5321 4.1.3)
        groups = [g for g in groups if g]
        room = room - 2 if s.count("::") == 1 and len(groups) <= room - 2 else 0
    for g in groups:
        if not (0 < len(g) < 5 and _digits(g, True)):
            return False
    return 0 < room and ("::" in s or len(groups) == room)


def _domain(value, what):
    # An EHLO name or the TLS server name: a host name or an [address literal].
    if not check_text(value, what) or " " in value or "\t" in value or len(value) > 255 or \
            not _ascii(value):
        raise ValueError("%s must be a host name or [address literal]: %r" % (what, value))
    return value


def _is_ip(host):
    return ":" in host or _ipv4(host)


# -- helpers -------------------------------------------------------------------------------------

try:
    import time as _time
except ImportError:  # pragma: no cover (a bare board: no clock, no deadlines)
    _time = None

# ticks_ms, ticks_diff, ticks_add: MicroPython's wrapping millisecond clock, or CPython's
# monotonic one; deadlines here and in the extensions.
if hasattr(_time, "ticks_ms"):
    ticks_ms = _time.ticks_ms
    ticks_diff = _time.ticks_diff
    ticks_add = _time.ticks_add
else:
    ticks_ms = lambda: int(getattr(_time, "monotonic", lambda: 0)() * 1000)  # noqa: E731
    ticks_diff = lambda a, b: a - b  # noqa: E731
    ticks_add = lambda a, b: a + b  # noqa: E731


def date_header(t=None):
    """RFC 5322 date of UTC tuple `t` (now when None); None if the clock is unset."""
    t = t or _time and _time.gmtime()
    if not t or t[0] < CLOCK_VALID_FROM_YEAR:
        return None
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        "MonTueWedThuFriSatSun"[t[6] * 3 : t[6] * 3 + 3], t[2],
        "JanFebMarAprMayJunJulAugSepOctNovDec"[t[1] * 3 - 3 : t[1] * 3], t[0], t[3], t[4], t[5])


_count = 0


def make_message_id(domain):
    """A new, globally unique Message-ID on `domain`: <random.counter@domain>."""
    global _count
    _count += 1
    return "<%s.%d@%s>" % (unique(8), _count, domain)


def unique(n):
    """n random octets, in hex."""
    try:
        import os

        return binascii.hexlify(os.urandom(n)).decode()
    except (ImportError, AttributeError, NotImplementedError):
        import random

        return "".join(["%02x" % random.getrandbits(8) for _ in range(n)])


def _b64(data):
    return binascii.b2a_base64(data)[:-1]


def _text(b):
    # Server text is ASCII by the RFC; a stray octet must not become a UnicodeError.
    try:
        return str(b, "utf-8")
    except UnicodeError:
        b = bytearray(b)  # one copy, not a list of one-character strings
        for i in range(len(b)):
            if b[i] > 127:
                b[i] = 63  # "?"
        return str(b, "utf-8")


def _why(e):
    # An OSError as its errno's name (ECONNREFUSED), which both runtimes know.
    try:
        import errno

        return errno.errorcode[e.args[0]]
    except (ImportError, LookupError, TypeError):
        return str(e)


def _is_timeout(e):
    if type(e).__name__ in ("timeout", "TimeoutError"):  # CPython
        return True
    try:
        import errno

        return (e.args[:1] or (None,))[0] == errno.ETIMEDOUT
    except ImportError:
        return False


def _explained(message, e, client):
    # With smtp_duo_explain installed, what to do about a failed connect, in the message.
    explain = _load("smtp_duo_explain")
    return explain.connect(message, e, client.server_address, client.port) if explain else message


def _need(module, option):
    # An extension this mail or configuration needs, or an ImportError that says how to get it.
    m = _load(module)
    if not m:
        raise ImportError(_how(module, option))
    return m


def _how(module, option):
    return "needs %s.py: mip install %s, or freeze it (manifest.py option %s=True)" % (
        module, module.replace("_", "-"), option)


def _load(module):
    # An installed extension, imported when first needed; None if it is not installed.
    try:
        return __import__(module)
    except ImportError as e:
        if module not in str(e):  # it is installed but could not import: say so
            raise
        return None


_F = 0  # smtp_duo_fast once looked for: the module or None


def native():
    """smtp_duo_fast (the hot path in native code) if it imports here, else None: then the
    same octets come from bytecode. MicroPython only."""
    global _F
    if _F == 0:
        _F = None
        if _MICROPYTHON:
            try:
                _F = __import__("smtp_duo_fast")
            except Exception:  # not installed, or this port has no native emitter
                pass
    return _F


def __getattr__(name):
    # Helpers that moved to extensions, still reachable here.
    if name in ("cram_md5_response", "xoauth2_string"):
        return getattr(_need("smtp_duo_auth", "auth"), name)
    if name == "b64encode_into":
        return getattr(_need("smtp_duo_mime", "mime"), name)
    raise AttributeError(name)


# -- the link: bytes to and from the server within a deadline. MicroPython: a non-blocking
# socket and poll (a blocking readinto() waits for a full buffer, TLS sockets before 1.25
# have no recv(), and a TLS handshake must not outlast its deadline). CPython: the socket's
# timeout.


class _Link:
    def __init__(self, sock, raw=None, port=0, by=0):
        self.sock = sock
        # MicroPython TLS still shaking hands: the TCP socket under it, its port, the deadline.
        self.raw = raw
        self.port = port
        self.by = by
        if _MICROPYTHON:
            import select

            sock.setblocking(False)
            self.poll = select.poll()
            self.poll.register(sock, select.POLLIN)
            self.events = self.pollin = select.POLLIN
            self.pollout = select.POLLOUT

    def _io(self, write, mv, deadline, off=0):
        # MicroPython: one read or write, waiting (poll) until it can be done or the deadline.
        # The first ones after wrap_socket() shake hands, by the handshake's own deadline too:
        # their failures are TLS failures, and close the TCP socket the TLS object let go of.
        if self.raw and ticks_diff(self.by, deadline) < 0:
            deadline = self.by
        try:
            while True:
                # write(buf, off, len): no slice of the buffer for each partial write
                n = self.sock.write(mv, off, len(mv) - off) if write else self.sock.readinto(mv)
                if n is not None:  # TLS takes or gives data only after its handshake
                    self.raw = None
                    return n
                ev = self.pollout if write else self.pollin
                if ev != self.events:
                    self.poll.modify(self.sock, ev)
                    self.events = ev
                left = ticks_diff(deadline, ticks_ms())
                for _ in self.poll.ipoll(left) if left > 0 else ():  # ipoll: no list made
                    break
                else:
                    import errno

                    raise OSError(errno.ETIMEDOUT)
        except Exception as e:
            if self.raw:
                self.close()
                raise tls_error(e, self.port)
            raise

    def read_into(self, mv, deadline):
        """At least one octet into mv: the count, 0 when the server closed."""
        if _MICROPYTHON:
            return self._io(False, mv, deadline)
        self._timeout(deadline)
        return self.sock.recv_into(mv)

    def write(self, mv, deadline):
        if _MICROPYTHON:
            off = 0
            while off < len(mv):
                n = self._io(True, mv, deadline, off)
                if not n:
                    import errno

                    raise OSError(errno.ECONNRESET)
                off += n
        else:
            self._timeout(deadline)
            self.sock.sendall(mv)

    def _timeout(self, deadline):
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            import errno

            raise OSError(errno.ETIMEDOUT)
        self.sock.settimeout(left / 1000)

    def readable(self):
        """Has the server sent something (or closed) unasked?"""
        if _MICROPYTHON:
            if self.events != self.pollin:
                self.poll.modify(self.sock, self.pollin)
                self.events = self.pollin
            return bool(self.poll.poll(0))
        import select

        pending = getattr(self.sock, "pending", None)  # ssl: decrypted already
        return bool(pending and pending() or select.select([self.sock], [], [], 0)[0])  # pyright: ignore[reportOptionalSubscript]

    def close(self):
        for s in (self.sock, self.raw):
            try:
                if s:
                    s.close()
            except OSError:
                pass
        self.raw = None


def _tls_context(cadata):
    # The board's ssl (a wrapper over tls since 1.23), MicroPython's tls, or CPython's ssl.
    try:
        import ssl as mod
    except ImportError:
        import tls as mod
    ctx = mod.SSLContext(mod.PROTOCOL_TLS_CLIENT)
    if cadata is None:  # encrypted, not authenticated: tls_verified is False
        if hasattr(ctx, "check_hostname"):  # CPython: before CERT_NONE
            ctx.check_hostname = False  # pyright: ignore[reportAttributeAccessIssue]
        ctx.verify_mode = mod.CERT_NONE  # pyright: ignore[reportAttributeAccessIssue]
        return ctx
    ctx.verify_mode = mod.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue] (the board's ssl defaults to none)
    data = cadata
    if not _MICROPYTHON and isinstance(data, (bytes, bytearray)) and bytes(data[:40]).lstrip()[:5] == b"-----":
        data = bytes(data).decode()  # CPython reads PEM from str, DER from bytes
    try:
        if not data or not isinstance(data, (bytes, bytearray, str)):
            raise ValueError("not bytes")
        try:
            ctx.load_verify_locations(cadata=data)  # pyright: ignore[reportArgumentType]
        except TypeError:  # MicroPython's native tls: positional only
            ctx.load_verify_locations(data)
    except (ValueError, OSError) as e:
        raise ValueError("cadata is not a CA certificate this runtime reads (%s): DER works "
                         "everywhere (tools/fetch_ca.py)" % (e,))
    return ctx


def tls_error(e, port):
    """The SMTPTLSError for a failed TLS handshake: the exception's own words, and whether a
    retry may help; smtp_duo_explain, when installed, adds what to do (else README 4)."""
    low = (str(e) or type(e).__name__).lower()  # asyncio: a bare ConnectionResetError
    # A certificate refused (but for its dates: the board's clock), no TLS on the port, a
    # refused handshake, no CA: trying again will not help.
    permanent = ("certif" in low or "verif" in low or "hostname" in low or "(cn)" in low) \
        and not ("expired" in low or "future" in low or "yet" in low) or "record" in low or "version" in low \
        or "alert" in low or "ca chain" in low or (e.args[:1] or (0,))[0] == -0x7200
    msg = ("TLS handshake timed out on port %d: is it a TLS port?" if _is_timeout(e) else
           "TLS handshake failed on port %d: " + (str(e) or type(e).__name__)) % port
    explain = _load("smtp_duo_explain")
    return SMTPTLSError(explain.tls(msg, e, port) if explain else msg, TLS_ERROR, None, "TLS",
                        not permanent)
