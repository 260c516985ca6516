# smtp_duo: an SMTP submission client for MicroPython (ESP32, Pico W) and CPython.
# A port of the Eclipse ThreadX NetX Duo SMTP Client API, without the reference's defects.
# MIT licence. Read top-down: constants, errors, replies, the wire link, the session, the message.

try:
    from micropython import const
except ImportError:  # CPython
    # ruff: noqa: E731 -- lambdas here and for the clock: to a type checker a def beside an
    # import or assignment of the same name is a second, conflicting declaration.
    const = lambda x: x


import binascii
import gc
import sys

__version__ = "0.2.0"

# ---------------------------------------------------------------------------------------------
# Public constants. Values follow the reference where it has one (nxd_smtp_client.h).

AUTH_AUTO = const(0)  # ours: strongest mechanism the server offers (see README)
AUTH_LOGIN = const(1)
AUTH_CRAM_MD5 = const(2)
AUTH_PLAIN = const(3)
AUTH_XOAUTH2 = const(8)  # ours
AUTH_NONE = const(0xFFFF)

PRIORITY_LOW = const(1)
PRIORITY_NORMAL = const(2)
PRIORITY_HIGH = const(4)

TLS_NONE = const(0)
TLS_STARTTLS = const(1)
TLS_IMPLICIT = const(2)

# Status values carried by SMTPError.status: the reference's NX_SMTP_* / NX_* codes.
NO_PACKET = const(0x01)  # reference: no reply in time -> SMTPTimeoutError
SIZE_ERROR = const(0x09)
IP_ADDRESS_ERROR = const(0x21)  # name could not be resolved
NOT_CONNECTED = const(0x38)  # connect failed / connection lost
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

# Limits (RFC 5321 section 4.5.3.1). Our reply caps are generous but fixed: a server cannot make
# the client allocate without bound.
_LINE_MAX = const(1024)  # receive buffer = longest reply line accepted, CRLF included
_REPLY_LINES_MAX = const(100)
_REPLY_TEXT_MAX = const(2048)  # reply text kept for errors; more lines are read but not kept
_CMD_MAX = const(512)
# The output buffer (buffer_size=, default from the heap's size: see _default_buffer_size) sets
# the rest: it is written out once half full, and one window, token or command adds at most the
# other half; files are read half a buffer at a time; plain windows grow at most to twice their
# size plus a CRLF, quoted-printable ones to about 3.1 times.
_SMALL_BUFFER = const(1024)  # a board's heap of 100-300 KB: no free block over 1 KiB needed
_LARGE_BUFFER = const(8192)  # a host, or a board with PSRAM: an eighth of the writes
_LARGE_HEAP = const(393216)  # from 384 KiB of GC heap up the large buffer is a small share
_TEXT_LINE_MAX = const(998)
_QUIT_TIMEOUT = const(5)

_MICROPYTHON = sys.implementation.name == "micropython"

# What a protocol step asks its driver for, besides None (read) and a buffer (write it).
# Not const(): smtp_duo_async reads them, and MicroPython hides private consts.
_RQ_OPEN = 1  # connect (and the implicit-TLS handshake)
_RQ_TLS = 2  # the STARTTLS handshake on the open link
_RQ_READABLE = 3  # has the server sent anything (or closed) unasked?

# EHLO keywords we act on, as bits.
_X_AUTH = const(1)
_X_SIZE = const(2)
_X_PIPELINING = const(4)
_X_8BITMIME = const(8)
_X_SMTPUTF8 = const(16)
_X_STARTTLS = const(32)
_X_CHUNKING = const(64)
_X_ENHANCED = const(128)
_KEYWORDS = (
    (b"AUTH", _X_AUTH),
    (b"SIZE", _X_SIZE),
    (b"PIPELINING", _X_PIPELINING),
    (b"8BITMIME", _X_8BITMIME),
    (b"SMTPUTF8", _X_SMTPUTF8),
    (b"STARTTLS", _X_STARTTLS),
    (b"CHUNKING", _X_CHUNKING),
    (b"ENHANCEDSTATUSCODES", _X_ENHANCED),
)
# AUTH mechanisms, strongest first (the order AUTH_AUTO tries them in).
_MECHS = (
    (b"XOAUTH2", AUTH_XOAUTH2),
    (b"CRAM-MD5", AUTH_CRAM_MD5),
    (b"PLAIN", AUTH_PLAIN),
    (b"LOGIN", AUTH_LOGIN),
)

# ---------------------------------------------------------------------------------------------
# Errors


class SMTPError(Exception):
    """A failed SMTP operation. `status` is the reference's status value for the failure;
    `code`, `enhanced` and `text` come from the server's reply when there was one."""

    def __init__(self, message, status, reply=None, command=None, temporary=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = reply.code if reply else None
        self.enhanced = reply.enhanced if reply else None
        self.text = reply.text if reply else None
        self.command = command
        if temporary is None:
            temporary = self.code is not None and 400 <= self.code < 500
        self.temporary = temporary

    def __str__(self):
        return self.message


class SMTPConnectionError(SMTPError):
    """The connection could not be made or was lost. Always temporary."""

    def __init__(self, message, status=NOT_CONNECTED, command=None, reply=None):
        SMTPError.__init__(self, message, status, reply, command, True)


class SMTPTimeoutError(SMTPConnectionError):
    """The server did not answer (or accept data) within `timeout` seconds."""

    def __init__(self, message, command=None):
        SMTPConnectionError.__init__(self, message, NO_PACKET, command)


class SMTPProtocolError(SMTPError):
    """The server's reply broke the protocol (bad syntax, too long). The connection is closed.
    Temporary: nothing the server said refused the mail."""

    def __init__(self, message, status=SERVER_ERROR_REPLY, command=None):
        SMTPError.__init__(self, message, status, None, command, True)


class SMTPAuthenticationError(SMTPError):
    """Authentication failed or could not be attempted."""


class SMTPTLSError(SMTPError):
    """TLS could not be set up: STARTTLS missing or refused, a handshake or certificate
    failure, or data injected before the handshake. Nothing was sent after it."""


class SMTPNotSupportedError(SMTPError):
    """The server lacks something this mail or configuration needs (AUTH, SMTPUTF8, ...)."""


class SMTPRecipientsRefused(SMTPError):
    """Every recipient was refused. `recipients` maps each address to the server's Reply."""

    def __init__(self, message, recipients, command=None):
        temporary = True
        for r in recipients.values():
            temporary = temporary and 400 <= r.code < 500
        last = None
        for r in recipients.values():
            last = r
        SMTPError.__init__(self, message, RCPT_REPLY_ERROR, last, command, temporary)
        self.recipients = recipients


# ---------------------------------------------------------------------------------------------
# Replies


class Reply:
    """A server reply: `code` (int), `enhanced` ("2.0.0" or None) and `text` (lines joined by
    newlines). The reply returned by mail_send also carries `refused`: recipients the server
    refused while accepting others, mapped to their Reply."""

    def __init__(self, code, text, enhanced=None):
        self.code = code
        self.text = text
        self.enhanced = enhanced
        self.refused = {}

    def __iter__(self):  # code, text = reply
        yield self.code
        yield self.text

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.text)

    def __str__(self):
        if self.enhanced:
            return "%d %s %s" % (self.code, self.enhanced, self.text)
        return "%d %s" % (self.code, self.text)


def _decode(b):
    # Server text is ASCII by the RFC; never let a stray byte turn into a UnicodeError.
    try:
        return str(b, "utf-8")
    except UnicodeError:
        b = bytearray(b)  # one copy, not a list of one-character strings
        for i in range(len(b)):
            if b[i] >= 0x80:
                b[i] = 0x3F  # "?"
        return str(b, "utf-8")


def _enhanced_split(code, text):
    # RFC 3463: "class.subject.detail", class equal to the reply's first digit.
    sp = text.find(" ")
    word = text if sp < 0 else text[:sp]
    parts = word.split(".")
    if len(parts) != 3 or parts[0] != str(code // 100):
        return None, text
    for p in parts:
        if not 1 <= len(p) <= 3:
            return None, text
        for ch in p:  # ASCII digits only (str.isdigit takes other scripts' digits on CPython)
            if not "0" <= ch <= "9":
                return None, text
    return word, ("" if sp < 0 else text[sp + 1 :])


def _parse_code(line, end):
    # RFC 5321 4.2: a code is three digits, the first 2-5 (an unknown code counts by its first
    # digit), then SP, "-" or the end of the line. Returns (code, is_last), or (None, None).
    if end < 3:
        return None, None
    a, b, c = line[0], line[1], line[2]
    if not (0x32 <= a <= 0x35 and 0x30 <= b <= 0x39 and 0x30 <= c <= 0x39):
        return None, None
    code = (a - 0x30) * 100 + (b - 0x30) * 10 + (c - 0x30)
    if end == 3:
        return code, True
    sep = line[3]
    if sep == 0x20:
        return code, True
    if sep == 0x2D:
        return code, False
    return None, None


# ---------------------------------------------------------------------------------------------
# Clock helpers (the qemu board has no time module; deadlines are then not enforced)

try:
    import time as _time
except ImportError:  # pragma: no cover
    _time = None

if _time is not None and hasattr(_time, "ticks_ms"):
    _ticks_ms = _time.ticks_ms
    _ticks_diff = _time.ticks_diff
    _ticks_add = _time.ticks_add
elif _time is not None:  # CPython (lambdas: see const above)
    _ticks_ms = lambda: int(getattr(_time, "monotonic")() * 1000)
    _ticks_diff = lambda a, b: a - b
    _ticks_add = lambda a, b: a + b
else:  # pragma: no cover
    _ticks_ms = lambda: 0
    _ticks_diff = lambda a, b: 1
    _ticks_add = lambda a, b: 0


def _errno_of(e):
    return e.errno if hasattr(e, "errno") and e.errno is not None else (e.args[0] if e.args else None)


def _errno_name(n):
    try:
        import errno

        for name in ("ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EHOSTUNREACH", "ENOTCONN",
                     "ETIMEDOUT", "ENOMEM", "EPIPE"):
            if getattr(errno, name, None) == n:
                return name
    except ImportError:
        pass
    return str(n)


def _is_timeout(e):
    if not _MICROPYTHON and isinstance(e, OSError) and type(e).__name__ in ("timeout", "TimeoutError"):
        return True
    try:
        import errno

        return _errno_of(e) == errno.ETIMEDOUT
    except (ImportError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# The link: bytes to and from the server within a deadline. One class per runtime, because
# MicroPython's readinto() on a blocking socket waits for a full buffer, and TLS objects before
# 1.25 have no recv(): there we poll a non-blocking socket. CPython: timeouts on the socket.
# MicroPython's blocking TLS handshake waits anew for every read (a server sending one byte at
# a time holds it for ever), so there the handshake runs inside the link's first reads and
# writes on the non-blocking socket, polled against its own deadline (`shake_by`).


class _Link:
    def __init__(self, sock, raw=None, shake_by=None, port=0):
        self.sock = sock
        self._raw = raw  # the TCP socket under a TLS object still shaking hands
        self._shake_by = shake_by  # None once the handshake is over (or without TLS)
        self._port = port
        if _MICROPYTHON:
            import select

            sock.setblocking(False)
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            self._pollin = select.POLLIN
            self._pollout = select.POLLOUT
            self._events = select.POLLIN

    def _wait(self, event, deadline):
        # MicroPython: wait until the socket is ready for `event` or the deadline passes. The
        # TLS object's poll reports the direction its handshake needs, whatever `event` is.
        by = self._shake_by
        if by is not None and _ticks_diff(by, deadline) < 0:
            deadline = by
        if event != self._events:
            self._poll.modify(self.sock, event)
            self._events = event
        left = _ticks_diff(deadline, _ticks_ms())
        if left <= 0 or not self._poll.poll(left):
            raise OSError(_ETIMEDOUT())

    def _failed(self, e):
        # An error before the handshake is over is a TLS failure (ValueError: a certificate),
        # and the TLS object has let go of the TCP socket: close both.
        if self._shake_by is None:
            return e
        self.close()
        return _tls_failure(e, self._port)

    def read_into(self, mv, deadline):
        """Read at least one byte into mv; return the count, 0 when the server closed."""
        sock = self.sock
        if _MICROPYTHON:
            try:
                while True:
                    n = sock.readinto(mv)
                    if n is not None:
                        self._shake_by = None  # TLS gives data only after the handshake
                        return n
                    self._wait(self._pollin, deadline)
            except (OSError, ValueError) as e:
                raise self._failed(e)
        left = _ticks_diff(deadline, _ticks_ms())
        if left <= 0:
            raise OSError(_ETIMEDOUT())
        sock.settimeout(left / 1000)
        return sock.recv_into(mv)

    def write(self, mv, deadline):
        sock = self.sock
        if _MICROPYTHON:
            off = 0
            end = len(mv)
            try:
                while off < end:
                    n = sock.write(mv[off:] if off else mv)
                    if n is None:
                        self._wait(self._pollout, deadline)
                    elif n == 0:
                        raise OSError(_ECONNRESET())
                    else:
                        self._shake_by = None  # TLS takes data only after the handshake
                        off += n
            except (OSError, ValueError) as e:
                raise self._failed(e)
            return
        left = _ticks_diff(deadline, _ticks_ms())
        if left <= 0:
            raise OSError(_ETIMEDOUT())
        sock.settimeout(left / 1000)
        sock.sendall(mv)

    def readable(self):
        """True if the server sent something (or closed) while we were not waiting for it."""
        if _MICROPYTHON:
            if self._events != self._pollin:
                self._poll.modify(self.sock, self._pollin)
                self._events = self._pollin
            return bool(self._poll.poll(0))
        import select

        pending = getattr(self.sock, "pending", None)  # ssl: bytes already decrypted
        ready = select.select([self.sock], [], [], 0)[0]  # pyright: ignore[reportOptionalSubscript]
        return bool(pending and pending()) or bool(ready)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        raw = self._raw
        if raw is not None and self._shake_by is not None:
            # A failed handshake leaves the TCP socket open under the TLS object (closing it
            # twice at once, when the TLS object had not let go, is harmless).
            self._raw = None
            try:
                raw.close()
            except OSError:
                pass


def _no_delay(socket, sock):
    try:  # no Nagle: a mail's later buffers would wait ~40 ms for a delayed ACK
        sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
    except (OSError, AttributeError, TypeError):
        pass  # a port without the option keeps Nagle


def _ETIMEDOUT():
    import errno

    return errno.ETIMEDOUT


def _ECONNRESET():
    import errno

    return errno.ECONNRESET


# ---------------------------------------------------------------------------------------------
# Argument validation. Everything here runs before the first byte goes out.


def _check_text(value, what, secret=False):
    # Control characters (C0 but tab, DEL, C1) and the Unicode line separators: a header or
    # command line must not be split or ended by what a caller passes. A secret is never quoted.
    if not isinstance(value, str):
        raise ValueError("%s must be a str" % what)
    # Over the UTF-8 octets: iterating a str would intern each character it meets on a board.
    b = value.encode()
    for i in range(len(b)):
        c = b[i]
        if c < 0x20 and c != 0x09 or c == 0x7F or c == 0xC2 and 0x80 <= b[i + 1] <= 0x9F or \
                c == 0xE2 and b[i + 1] == 0x80 and b[i + 2] in (0xA8, 0xA9):  # C1, U+2028/9
            raise ValueError("%s contains a control character (CR, LF, NUL, ...) at position %d%s"
                             % (what, len(str(b[:i], "utf-8")), "" if secret else ": %r" % value))
    return value


def _is_ascii(s):
    return len(s.encode()) == len(s)


_ADDR_SPECIALS = ' <>()[],;:\\"'


def _parse_address(value, what):
    """'a@b', '<a@b>' or 'Name <a@b>' -> (display name or None, addr-spec)."""
    _check_text(value, what)
    s = value.strip()
    name = None
    if s.endswith(">"):
        i = s.rfind("<")
        if i < 0:
            raise ValueError("%s: unbalanced '>': %r" % (what, value))
        name = s[:i].strip()
        if len(name) > 1 and name[0] == '"' and name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        name = name or None
        s = s[i + 1 : -1].strip()
    at = s.rfind("@")
    if at <= 0 or at == len(s) - 1:
        raise ValueError("%s is not an address like name@example.com: %r" % (what, value))
    local, domain = s[:at], s[at + 1 :]
    for ch in local:
        if ch in _ADDR_SPECIALS or ch == "@" or ch == "\t":
            raise ValueError("%s: character %r not allowed in %r" % (what, ch, value))
    if local[0] == "." or local[-1] == "." or ".." in local:
        raise ValueError("%s: misplaced '.' in %r" % (what, value))
    if domain[0] == "[":
        if domain[-1] != "]" or not _literal_ok(domain[1:-1]):
            raise ValueError("%s: bad address literal (RFC 5321 4.1.3) in %r" % (what, value))
    else:
        for label in domain.split("."):
            if not label or label[0] == "-" or label[-1] == "-":
                raise ValueError("%s: bad domain in %r" % (what, value))
            for ch in label:
                if ch in _ADDR_SPECIALS or ch == "\t":
                    raise ValueError("%s: character %r not allowed in %r" % (what, ch, value))
    # RFC 5321 4.5.3.1: local-part 64, domain 255, path 256 octets (with the brackets).
    if len(local.encode()) > 64 or len(domain.encode()) > 255 or len(s.encode()) > 254:
        raise ValueError("%s is too long (RFC 5321 4.5.3.1): %r" % (what, value))
    return name, s


def _ipv4_ok(s):
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not 0 < len(p) <= 3 or not _digits(p) or int(p) > 255:
            return False
    return True


def _digits(s, hexa=False):
    for ch in s:
        if not ("0" <= ch <= "9" or hexa and ("a" <= ch <= "f" or "A" <= ch <= "F")):
            return False
    return True


def _ipv6_ok(s):
    if s[:1] == ":" and s[:2] != "::" or s[-1:] == ":" and s[-2:] != "::":
        return False
    groups = s.split(":")
    room = 8
    if groups and "." in groups[-1]:  # IPv6v4: the last 32 bits as dotted decimal
        if not _ipv4_ok(groups.pop()):
            return False
        room = 6
    comp = s.find("::")
    if comp >= 0:
        if s.find("::", comp + 1) >= 0:
            return False
        # "::" stands for at least two groups: at most room - 2 others (RFC 5321 4.1.3).
        groups = [g for g in groups if g]
        room -= 2
        if len(groups) > room:
            return False
    elif len(groups) != room:
        return False
    for g in groups:
        if not 0 < len(g) <= 4 or not _digits(g, True):
            return False
    return True


def _literal_ok(s):
    # RFC 5321 4.1.3 address literal, between the brackets: IPv4, "IPv6:" and an IPv6 address,
    # or tag ":" dcontent. dcontent also excludes "<", ">" (and space): nothing can end the path.
    c = s.find(":")
    if c < 0:
        return _ipv4_ok(s)
    tag = s[:c]
    if tag.upper() == "IPV6":
        return _ipv6_ok(s[c + 1 :])
    if not tag or tag[-1] == "-" or c == len(s) - 1:
        return False
    for ch in tag:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch == "-"):
            return False
    for ch in s[c + 1 :]:
        if not "!" <= ch <= "~" or ch in "[]\\<>":
            return False
    return True


def _parse_domain(value, what="client_domain"):
    # EHLO argument (a domain name or an address literal), or the TLS server name.
    _check_text(value, what)
    if not value or " " in value or "\t" in value or len(value) > 255 or not _is_ascii(value):
        raise ValueError("%s must be a host name or [address literal]: %r" % (what, value))
    return value


def _address_list(value, what):
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise ValueError("%s must be a str or a list/tuple of str" % what)
    return [_parse_address(v, what) for v in value]


def _is_ip_literal(host):
    if ":" in host:
        return True  # IPv6
    parts = host.split(".")
    for p in parts:
        if not p.isdigit():
            return False
    return len(parts) == 4


# ---------------------------------------------------------------------------------------------
# TLS: the board's `ssl` (a wrapper over `tls` since MicroPython 1.23), MicroPython's `tls`
# (the unix port has only that), or CPython's `ssl`.


def _tls_context(cadata):
    # Type checking: the boards' stubs give tls.SSLContext no verify_mode, which every port's C
    # object has (the unix port's tests set it), hence the two ignores on it.
    try:
        import ssl as mod
    except ImportError:
        import tls as mod
    ctx = mod.SSLContext(mod.PROTOCOL_TLS_CLIENT)
    if cadata is None:
        if hasattr(ctx, "check_hostname"):  # CPython: must go before CERT_NONE
            ctx.check_hostname = False  # pyright: ignore[reportAttributeAccessIssue] (CPython only)
        # Encrypted but unauthenticated: see tls_verified.
        ctx.verify_mode = mod.CERT_NONE  # pyright: ignore[reportAttributeAccessIssue]
        return ctx
    if not isinstance(cadata, (bytes, bytearray, str)) or not cadata:
        raise ValueError("cadata must be the CA certificate as bytes (DER, or PEM)")
    # Set explicitly: the board's ssl defaults to CERT_NONE.
    ctx.verify_mode = mod.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue]
    data = cadata
    if not _MICROPYTHON and not isinstance(data, str) and bytes(data[:40]).lstrip().startswith(b"-----"):
        data = bytes(data).decode()  # CPython reads PEM from str, DER from bytes
    try:
        try:
            # str: PEM on CPython (or a user's str); the stubs say bytes, MicroPython takes any buffer.
            ctx.load_verify_locations(cadata=data)  # pyright: ignore[reportArgumentType]
        except TypeError:  # MicroPython's native tls takes it positionally only
            ctx.load_verify_locations(data)
    except (ValueError, OSError) as e:
        raise ValueError("cadata is not a CA certificate this runtime can read (%s); DER works "
                         "everywhere (tools/fetch_ca.py writes it)" % (e,))
    return ctx


# mbedTLS error numbers seen on the boards (MicroPython raises OSError(code, name)).
_MBEDTLS_INVALID_RECORD = const(-0x7200)
_MBEDTLS_CONN_EOF = const(-0x7280)
_MBEDTLS_FATAL_ALERT = const(-0x7780)
_MBEDTLS_ALLOC_FAILED = const(-0x7F00)
_MBEDTLS_RSA_MPI_ALLOC = const(-0x4290)
_MBEDTLS_NO_CA_CHAIN = const(-0x7680)


def _tls_failure(e, port):
    """An exception from the TLS handshake as an SMTPTLSError that says what to do."""
    code = _errno_of(e)
    # CPython's asyncio ends a handshake cut short with a bare ConnectionResetError: its name.
    text = str(e) or type(e).__name__
    low = text.lower()
    try:
        import errno

        enomem = errno.ENOMEM
    except (ImportError, AttributeError):
        enomem = 12
    if _is_timeout(e):
        msg, temp = ("TLS handshake timed out on port %d: is it a TLS port? (TLS_IMPLICIT is "
                     "usually 465, TLS_STARTTLS 587)" % port), True
    elif "expired" in low or "future" in low or "not yet valid" in low:
        msg, temp = ("server certificate outside its validity dates (%s): set the board's clock "
                     "first (ntptime.settime()); certificates are checked against it" % text.strip()), True
    elif "certificate" in low or "verify" in low or "hostname" in low or " cn " in low or "(cn)" in low:
        msg, temp = ("server certificate rejected (%s): give the CA that signed this server's "
                     "certificate as cadata (tools/fetch_ca.py finds it) and make sure "
                     "server_hostname is a name in the certificate" % text.strip()), False
    elif code == _MBEDTLS_INVALID_RECORD or "wrong_version" in low or "wrong version" in low \
            or "record layer failure" in low or "packet length too long" in low:
        msg, temp = ("the server on port %d did not answer in TLS: it is a plaintext or STARTTLS "
                     "port; use tls=TLS_STARTTLS (usually 587) or the implicit-TLS port (465)" % port), False
    elif code in (enomem, _MBEDTLS_ALLOC_FAILED, _MBEDTLS_RSA_MPI_ALLOC) or "alloc" in low:
        msg, temp = ("out of memory during the TLS handshake (%s): a handshake needs about 40 KiB "
                     "of free RAM; free memory first (gc.collect()) or freeze smtp_duo" % text), True
    elif code == _MBEDTLS_CONN_EOF or "eof" in low or "reset" in low:
        msg, temp = "the server closed the connection during the TLS handshake (%s)" % text, True
    elif code == _MBEDTLS_FATAL_ALERT or "alert" in low:
        msg, temp = ("the server refused the TLS handshake (%s): it may not support this TLS "
                     "version or cipher, or want another server_hostname (SNI)" % text), False
    elif code == _MBEDTLS_NO_CA_CHAIN:
        msg, temp = "no CA loaded for a verified connection: pass cadata (%s)" % text, False
    else:
        msg, temp = "TLS handshake failed: %s" % text, True
    return SMTPTLSError(msg, TLS_ERROR, None, "TLS", temp)


# ---------------------------------------------------------------------------------------------
# Base64 into a caller's buffer (AUTH lines, encoded-words; attachments later).


def b64encode_into(src, dst, start=0):
    """Write the base64 encoding of `src` into bytearray `dst` at `start`, without newlines;
    return the end index. ValueError if `dst` is too small. Allocates only small pieces."""
    n = len(src)
    need = (n + 2) // 3 * 4
    if start + need > len(dst):
        raise ValueError("base64 buffer too small")
    mv = memoryview(src)
    i = 0
    o = start
    while i < n:
        j = min(i + 48, n)  # 48 bytes -> 64 characters per binascii call
        piece = binascii.b2a_base64(mv[i:j])
        k = len(piece) - 1  # drop the newline binascii adds
        dst[o : o + k] = piece[:k]
        o += k
        i = j
    return o


def _b64(data):
    b = bytearray((len(data) + 2) // 3 * 4)
    b64encode_into(data, b)
    return bytes(b)


def _b64decode(data, what):
    # Strict: RFC 4954 says cancel on a challenge that is not base64.
    try:
        if len(data) % 4:
            raise ValueError
        for c in data:
            if not (0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c in b"+/="):
                raise ValueError
        return binascii.a2b_base64(data)
    except ValueError:  # binascii.Error is a ValueError on CPython
        raise SMTPAuthenticationError(
            "the server's %s challenge is not base64" % what, INVALID_SERVER_CHALLENGE
        )


def _md5():
    try:
        import hashlib

        md5 = getattr(hashlib, "md5", None)  # absent on some boards (the stubs say which)
        if md5 is not None:
            return md5
    except ImportError:
        pass
    # Pico W before 1.27 has no hashlib.md5: a sibling module carries a Python one.
    from smtp_duo_md5 import md5

    return md5


def cram_md5_response(username, secret, challenge):
    """RFC 2195: 'username hex(HMAC-MD5(secret, challenge))' (bytes, not yet base64)."""
    md5 = _md5()
    key = secret
    if len(key) > 64:
        h = md5()
        h.update(key)
        key = h.digest()
    key = key + bytes(64 - len(key))
    inner = md5()
    inner.update(bytes([b ^ 0x36 for b in key]))
    inner.update(challenge)
    outer = md5()
    outer.update(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return username + b" " + binascii.hexlify(outer.digest())


def xoauth2_string(username, token):
    """The XOAUTH2 initial response before base64 (Google / Microsoft format)."""
    return b"user=" + username + b"\x01auth=Bearer " + token + b"\x01\x01"


def _default_buffer_size():
    # Small on a board's heap, where a fragmented heap may have no larger free block; large
    # where the heap is big enough that 12 KiB of buffers are a small share of it.
    try:
        heap = gc.mem_free() + gc.mem_alloc()
    except AttributeError:  # CPython: no fixed heap
        return _LARGE_BUFFER
    return _LARGE_BUFFER if heap >= _LARGE_HEAP else _SMALL_BUFFER


def _bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


# ---------------------------------------------------------------------------------------------
# The client


class SMTPClient:
    """SMTPClient(server_address, port=None, username=None, password=None, from_address=None,
    client_domain=None, authentication_type=AUTH_AUTO, timeout=30, tls=TLS_NONE,
    allow_insecure_auth=False, cadata=None, ssl_context=None, server_hostname=None, debug=None,
    buffer_size=None).
    All arguments may be given as keywords; see README."""

    def __init__(
        self,
        server_address,
        port=None,
        username=None,
        password=None,
        from_address=None,
        client_domain=None,
        authentication_type=AUTH_AUTO,
        timeout=30,
        tls=TLS_NONE,
        allow_insecure_auth=False,
        cadata=None,
        ssl_context=None,
        server_hostname=None,
        debug=None,
        buffer_size=None,
    ):
        _check_text(server_address, "server_address")
        server_address = server_address.strip()
        if server_address.startswith("[") and server_address.endswith("]"):
            server_address = server_address[1:-1]  # "[::1]" accepted for an IPv6 literal
        if not server_address or " " in server_address:
            raise ValueError("server_address must be a host name or IP address")
        if tls not in (TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT):
            raise ValueError("tls must be TLS_NONE, TLS_STARTTLS or TLS_IMPLICIT")
        if port is None:
            port = 465 if tls == TLS_IMPLICIT else 587 if tls == TLS_STARTTLS else 25
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("port must be an int from 1 to 65535")
        if from_address is None:
            raise ValueError("from_address is required")
        self._from = _parse_address(from_address, "from_address")
        if client_domain is not None:
            client_domain = _parse_domain(client_domain)
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if authentication_type not in (AUTH_AUTO, AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN, AUTH_CRAM_MD5,
                                       AUTH_XOAUTH2):
            raise ValueError("unknown authentication_type %r" % (authentication_type,))
        if username is not None:
            _check_text(username, "username", True)
            if not username:
                raise ValueError("username is empty")
            if password is None:
                raise ValueError("password is required with a username")
            if not callable(password):
                _check_text(password, "password", True)
            if authentication_type == AUTH_NONE:
                raise ValueError("username given but authentication_type is AUTH_NONE")
        elif authentication_type not in (AUTH_AUTO, AUTH_NONE):
            raise ValueError("authentication_type needs a username and password")
        elif password is not None:
            raise ValueError("password given without a username")
        if callable(password) and authentication_type not in (AUTH_AUTO, AUTH_XOAUTH2):
            raise ValueError("a callable password is an XOAUTH2 token provider")
        if server_hostname is None and not _is_ip_literal(server_address):
            server_hostname = server_address
        elif server_hostname is not None:
            server_hostname = _parse_domain(server_hostname, "server_hostname")
        self._tls_ctx = None
        self.tls_verified = None  # None: no TLS; False: encrypted, server not authenticated
        if tls == TLS_NONE:
            if cadata is not None or ssl_context is not None:
                raise ValueError("cadata/ssl_context need tls=TLS_STARTTLS or TLS_IMPLICIT")
        elif ssl_context is not None:
            if cadata is not None:
                raise ValueError("give cadata or ssl_context, not both (the context is used as is)")
            self._tls_ctx = ssl_context
            self.tls_verified = getattr(ssl_context, "verify_mode", 0) == 2  # CERT_REQUIRED
        else:
            if cadata is not None and server_hostname is None:
                raise ValueError("server_address is an IP address: pass server_hostname= with the "
                                 "name in the server's certificate so it can be checked")
            self._tls_ctx = _tls_context(cadata)
            self.tls_verified = cadata is not None
        if username is not None and not self.tls_verified and not allow_insecure_auth:
            # RFC 4954 14: credentials only to a server whose certificate was verified.
            raise ValueError(
                "refusing to send credentials without verified TLS: use tls=TLS_STARTTLS or "
                "TLS_IMPLICIT with cadata= (tools/fetch_ca.py gets it), or allow_insecure_auth=True "
                "for a lab server"
            )
        if debug is not None and not callable(debug):
            raise ValueError("debug must be a callable(direction, line)")
        if buffer_size is None:
            buffer_size = _default_buffer_size()
        elif type(buffer_size) is not int or not _SMALL_BUFFER <= buffer_size <= 65536:
            raise ValueError("buffer_size must be an int from 1024 to 65536 octets")

        self.server_address = server_address
        self.port = port
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
        self._cbuf = bytearray(buffer_size // 2)
        self._link = None
        self._io_deadline = 0
        self._in_session = False
        self._v6 = False
        self._reset_connection_state()

    def _reset_connection_state(self):
        self._rpos = self._rend = 0
        self._ext = 0  # EHLO keyword bits
        self._auth_mechs = 0  # bits of AUTH_* seen in the EHLO AUTH line
        self._size_limit = 0
        self._dirty = False  # a transaction was started and not finished: RSET first
        self._secure = False

    # -- what the server offered (from the last EHLO) ----------------------------------------

    def has_extension(self, name):
        """True if the server's last EHLO reply listed `name` (e.g. "PIPELINING")."""
        n = _bytes(name).upper()
        for kw, bit in _KEYWORDS:
            if kw == n:
                return bool(self._ext & bit)
        return False

    @property
    def size_limit(self):
        """The server's SIZE limit in octets (0: none declared)."""
        return self._size_limit

    # -- sessions -------------------------------------------------------------------------------

    def session(self):
        """Context manager: one connection for several mail_send() calls.

        with client.session() as s:
            s.mail_send(...)
        """
        return _Session(self)

    def mail_send(self, recipient_address, priority=PRIORITY_NORMAL, subject="", mail_body="",
                  cc=(), bcc=(), message_id=None, date=None, html=None, attachments=(),
                  headers=None):
        """Send one mail. Returns the server's final Reply; raises SMTPError on failure.
        Invalid arguments raise ValueError before anything is sent. message_id ("<x@y>") and
        date (an RFC 5322 date) replace the generated ones: a retried mail keeps both. html,
        attachments ((filename, source, content_type) each) and headers ({name: value}) need
        the smtp_duo_mime module."""
        msg = _Message(self, recipient_address, priority, subject, mail_body, cc, bcc, message_id,
                       date, html, attachments, headers)
        return self._run(self._mail(msg))

    def check_mail(self, recipient_address, priority=PRIORITY_NORMAL, subject="", cc=(), bcc=(),
                   headers=None):
        """Check a mail's arguments as mail_send() does, sending nothing: ValueError if bad."""
        _Message(self, recipient_address, priority, subject, "", cc, bcc, headers=headers)

    def new_message_id(self):
        """A fresh Message-ID on this client's domain (client_domain, else from_address's)."""
        return make_message_id(self._id_domain())

    def _id_domain(self):
        domain = self.client_domain
        if not domain or domain[0] == "[":
            addr = self._from[1]
            domain = addr[addr.rfind("@") + 1 :]
        return domain

    def _mail(self, msg):
        if not self._in_session:
            yield from self._open()
            try:
                reply = yield from self._transaction(msg)
            except BaseException:
                yield from self._quit()
                raise
            bye = yield from self._quit()
            if bye is not None and bye.code != 221 and bye.code != 421 and not 500 <= bye.code <= 504:
                # A mail command's reply where QUIT's belongs: the replies were out of step, so
                # the one taken as the mail's final reply may not have been it.
                raise SMTPProtocolError("reply to QUIT was %s: the server's replies were out of step "
                                        "with the commands; the mail may not have been accepted" % bye,
                                        INVALID_SERVER_REPLY, "QUIT")
            return reply
        if self._link is not None and (yield _RQ_READABLE):
            # Between mails the server has nothing to say: it closed the idle connection or
            # sent its 421 farewell. Reconnect now, before anything of this mail is sent.
            self._trace("*", "the server closed the idle connection: reconnecting")
            self._close()
        if self._link is None:
            yield from self._open()
            return (yield from self._transaction(msg))
        try:
            return (yield from self._transaction(msg))
        except SMTPError as e:
            # Reopened once, only if the connection was gone before the server answered any
            # command of this mail: then the server cannot have taken it.
            if msg.answered or self._link is not None or isinstance(e, SMTPTimeoutError):
                raise
        self._trace("*", "connection lost before the server answered: reconnecting")
        yield from self._open()
        return (yield from self._transaction(msg))

    # -- the I/O driver ----------------------------------------------------------------------------
    # The protocol below is written as generators that yield what they need done: None to read
    # into the receive buffer, a buffer to write, or an _RQ_* request. _run() performs these on
    # a blocking socket; smtp_duo_async performs the same requests on asyncio streams.

    def _run(self, steps):
        value = error = None
        while True:
            try:
                rq = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as e:
                return e.value
            value = error = None
            try:
                if rq is None:
                    value = self._link.read_into(self._rmv[self._rend :], self._io_deadline)
                elif type(rq) is not int:
                    self._link.write(rq, self._io_deadline)
                elif rq == _RQ_OPEN:
                    self._link = self._connect()
                elif rq == _RQ_TLS:
                    self._link = self._handshake(self._link.sock)
                else:  # _RQ_READABLE
                    value = self._link.readable()
            except SMTPError as e:  # the link's own verdict (a failed TLS handshake): it is closed
                self._close()
                error = e
            except BaseException as e:  # thrown back: the step maps it and cleans up
                error = e

    # -- connection ----------------------------------------------------------------------------

    def _deadline(self, seconds=None):
        return _ticks_add(_ticks_ms(), int((self.timeout if seconds is None else seconds) * 1000))

    def _addresses(self, socket):
        # DNS blocks without a timeout on the boards (lwIP); see README.
        host = self.server_address
        try:
            infos = socket.getaddrinfo(host, self.port, 0, socket.SOCK_STREAM)
        except OSError as e:
            raise SMTPConnectionError(
                "cannot resolve %r (%s): is the network up and the name right?" % (host, e),
                IP_ADDRESS_ERROR,
            )
        if not infos:
            raise SMTPConnectionError("cannot resolve %r" % host, IP_ADDRESS_ERROR)
        return infos

    def _connect_error(self, err):
        if _is_timeout(err):
            return SMTPTimeoutError("connecting to %s port %d timed out" % (self.server_address, self.port),
                                    "connect")
        return SMTPConnectionError(
            "cannot connect to %s port %d: %s" % (self.server_address, self.port, _errno_name(_errno_of(err))),
            command="connect",
        )

    def _open_socket(self):
        """Connect a TCP socket to the server."""
        try:
            import socket
        except ImportError:
            import usocket as socket
        err = None
        for info in self._addresses(socket):
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(info[-1])
                _no_delay(socket, sock)
                self._v6 = info[0] == getattr(socket, "AF_INET6", -1)  # the EHLO literal's family
                return sock
            except OSError as e:
                sock.close()
                err = e
        raise self._connect_error(err)

    def _connect(self):
        """The link to the server: read_into(mv, deadline), write(mv, deadline), close()
        (the portable tests substitute an in-memory server here)."""
        sock = self._open_socket()
        if self.tls == TLS_IMPLICIT:
            return self._handshake(sock)
        return _Link(sock)

    def _open(self):
        self._reset_connection_state()
        yield _RQ_OPEN
        self._secure = self.tls == TLS_IMPLICIT
        if self._secure and not self.tls_verified:
            self._trace("*", "TLS without certificate verification: the server is not authenticated")
        try:
            yield from self._greeting_and_hello()
            yield from self._authenticate()
        except BaseException:
            yield from self._quit()
            raise

    def _greeting_and_hello(self):
        try:
            greeting = yield from self._read_reply("greeting")
        except SMTPTimeoutError as e:
            if self.tls == TLS_NONE and self.port == 465:
                e.message += " (port 465 expects TLS from the start: use tls=TLS_IMPLICIT)"
            raise
        if greeting.code != 220:
            raise SMTPError(
                "server refused the session: %s" % greeting, GREET_REPLY_ERROR, greeting, "greeting"
            )
        domain = self.client_domain or self._default_domain()
        yield from self._hello(domain)
        if self.tls == TLS_STARTTLS:
            yield from self._starttls()
            yield from self._hello(domain)

    def _starttls(self):
        # RFC 3207. Required, never opportunistic: no STARTTLS means no mail and no credentials.
        if not self._ext & _X_STARTTLS:
            raise SMTPTLSError("tls=TLS_STARTTLS but the server does not offer STARTTLS (an attacker "
                               "may have removed it): nothing sent", TLS_ERROR, None, "STARTTLS", False)
        yield from self._command(b"STARTTLS")
        reply = yield from self._read_reply("STARTTLS")
        if reply.code != 220:
            raise SMTPTLSError("STARTTLS refused: %s" % reply, TLS_ERROR, reply, "STARTTLS")
        if self._rend > self._rpos:
            # Bytes after the 220 and before the handshake can only be an attacker's, meant to be
            # read as replies inside TLS (the 'NO STARTTLS' response injection).
            self._close()
            raise SMTPTLSError("the server sent data after its STARTTLS reply, before the TLS "
                               "handshake: refusing the connection", TLS_ERROR, None, "STARTTLS", False)
        yield _RQ_TLS
        self._secure = True
        if not self.tls_verified:
            self._trace("*", "TLS without certificate verification: the server is not authenticated")

    def _handshake(self, sock):
        """Wrap a connected socket in TLS and return its link; every failure of the handshake,
        which must be over within `timeout`, closes the socket and becomes SMTPTLSError."""
        name = self.server_hostname
        try:
            if _MICROPYTHON:
                # Done by the link's first reads and writes, within the deadline (see _Link).
                sock.setblocking(False)
                if name:  # SNI always; the name is checked when a CA is given
                    tls = self._tls_ctx.wrap_socket(sock, server_hostname=name,
                                                    do_handshake_on_connect=False)
                else:
                    tls = self._tls_ctx.wrap_socket(sock, do_handshake_on_connect=False)
                return _Link(tls, sock, self._deadline(), self.port)
            sock.settimeout(self.timeout)  # CPython's ssl: a deadline for the whole handshake
            if name:
                return _Link(self._tls_ctx.wrap_socket(sock, server_hostname=name))
            return _Link(self._tls_ctx.wrap_socket(sock))
        except Exception as e:
            try:
                sock.close()
            except OSError:
                pass
            self._link = None
            raise _tls_failure(e, self.port)

    def _hello(self, domain):
        yield from self._command(b"EHLO " + domain.encode())
        reply = yield from self._read_reply("EHLO", self._ehlo_line)
        if reply.code == 250:
            return
        if reply.code in (500, 501, 502, 550) and not self._secure:
            # RFC 5321 3.2: an old server; HELO gives no extensions at all.
            self._reset_extensions()
            if self.tls == TLS_STARTTLS:
                raise SMTPTLSError("server does not support EHLO, so it cannot do STARTTLS: %s" % reply,
                                   TLS_ERROR, reply, "EHLO", False)
            if self.username is not None:
                raise SMTPNotSupportedError(
                    "server does not support EHLO, so it cannot authenticate: %s" % reply,
                    AUTHENTICATION_ERROR, reply, "EHLO",
                )
            yield from self._command(b"HELO " + domain.encode())
            reply = yield from self._read_reply("HELO")
            if reply.code == 250:
                return
        raise SMTPError("server refused EHLO/HELO: %s" % reply, HELLO_REPLY_ERROR, reply, "EHLO")

    def _default_domain(self):
        # RFC 5321 4.1.4: without a name, the address literal of our end of the connection.
        try:
            ip = self._link.sock.getsockname()[0]  # CPython; MicroPython's sockets have none
            return ("[IPv6:%s]" % ip) if ":" in ip else ("[%s]" % ip)
        except (AttributeError, OSError, IndexError, TypeError):
            pass
        # Unknown: the loopback literal of the connection's address family.
        return "[IPv6:::1]" if self._v6 else "[127.0.0.1]"

    def _reset_extensions(self):
        self._ext = 0
        self._auth_mechs = 0
        self._size_limit = 0

    def _ehlo_line(self, index, line, start, end):
        # Called for every line of the EHLO reply; the first is the greeting text.
        if index == 0:
            self._reset_extensions()
            return
        # No split() into words: a hostile line of a thousand words would cost a thousand objects.
        s = bytes(line[start:end]).replace(b"=", b" ", 1).replace(b"\t", b" ").upper().strip()
        sp = s.find(b" ")
        kw = s if sp < 0 else s[:sp]
        for name, bit in _KEYWORDS:
            if kw == name:
                self._ext |= bit
        if sp < 0:
            return
        if kw == b"AUTH":
            params = s[sp:] + b" "
            for name, mech in _MECHS:
                if params.find(b" " + name + b" ") >= 0:
                    self._auth_mechs |= 1 << mech
        elif kw == b"SIZE":
            p = s[sp:].split(None, 1)
            if p and p[0].isdigit():
                self._size_limit = int(p[0])

    def _close(self):
        if self._link is not None:
            self._link.close()
            self._link = None
        self._rpos = self._rend = 0

    def _quit(self):
        # RFC 5321 4.1.1.10: QUIT ends every session; wait briefly for 221, then close. Returns
        # the reply, or None when there was none.
        reply = None
        if self._link is not None:
            try:
                yield from self._command(b"QUIT", min(self.timeout, _QUIT_TIMEOUT))
                reply = yield from self._read_reply("QUIT", None, min(self.timeout, _QUIT_TIMEOUT))
            except SMTPError:
                pass
        self._close()
        return reply

    # -- commands and replies ----------------------------------------------------------------

    def _command(self, line, timeout=None, shown=None):
        if len(line) + 2 > _CMD_MAX:  # arguments are validated well below this
            raise SMTPError("command line longer than %d octets" % _CMD_MAX, INTERNAL_ERROR)
        self._trace(">", shown or line)
        yield from self._send(line + b"\r\n", line.split(b" ", 1)[0].decode(), timeout)

    def _trace(self, direction, line):
        # The debug transcript: ">" sent, "<" received, "*" a note from the library.
        if self._debug is not None:
            self._debug(direction, line if isinstance(line, str) else _decode(line))

    def _send(self, data, command, timeout=None):
        if self._link is None:
            raise SMTPConnectionError("not connected", command=command)
        if self._rend > self._rpos:
            self._unasked(command)
        self._io_deadline = self._deadline(timeout)
        try:
            yield data
        except OSError as e:
            self._close()
            if _is_timeout(e):
                raise SMTPTimeoutError("server did not accept data in time (%s)" % command, command)
            raise SMTPConnectionError(
                "connection lost while sending %s: %s" % (command, _errno_name(_errno_of(e))),
                TRANSMIT_ERROR, command,
            )

    def _unasked(self, command):
        # Bytes left over after every reply asked for was read: a reply nobody asked for (a
        # stray or early line), which would be taken as the answer to the next command.
        self._close()
        raise SMTPProtocolError("the server sent a reply the client did not ask for (before %s): "
                                "replies out of step with commands" % command, INVALID_SERVER_REPLY,
                                command)

    def _quiet(self, command, closing_ok=False):
        # Between exchanges the server has nothing to say: anything it sent is unasked. Its
        # closing the connection is an SMTPConnectionError, or with closing_ok just the end.
        if self._link is None:
            return
        if self._rend == self._rpos and (yield _RQ_READABLE):
            try:
                yield from self._fill(self._deadline(), command)
            except SMTPConnectionError:
                if not closing_ok:
                    raise
        if self._rend > self._rpos:
            self._unasked(command)

    def _fill(self, deadline, command):
        # Make room, then read more bytes from the server into the receive buffer.
        if self._rpos:
            n = self._rend - self._rpos
            if n:
                self._rbuf[:n] = self._rbuf[self._rpos : self._rend]
            self._rpos, self._rend = 0, n
        if self._rend == _LINE_MAX:
            self._close()
            raise SMTPProtocolError(
                "reply line longer than %d octets to %s" % (_LINE_MAX, command), OVERSIZE_SERVER_REPLY,
                command,
            )
        if self._link is None:
            raise SMTPConnectionError("not connected", command=command)
        self._io_deadline = deadline
        try:
            n = yield None  # the driver reads into self._rbuf[self._rend:]
        except OSError as e:
            self._close()
            if _is_timeout(e):
                raise SMTPTimeoutError("no reply to %s within %ss" % (command, self.timeout), command)
            raise SMTPConnectionError(
                "connection lost waiting for the reply to %s: %s" % (command, _errno_name(_errno_of(e))),
                command=command,
            )
        if not n:
            self._close()
            raise SMTPConnectionError("server closed the connection (reply to %s)" % command,
                                      command=command)
        self._rend += n

    def _read_line(self, deadline, command):
        # Returns the end index of the next line in the receive buffer (from self._rpos),
        # without its line break; the caller advances self._rpos.
        buf = self._rbuf
        scan = self._rpos
        while True:
            i = buf.find(b"\n", scan, self._rend)
            if i >= 0:
                return i
            scan = self._rend - self._rpos
            yield from self._fill(deadline, command)
            scan += self._rpos

    def _read_reply(self, command, on_line=None, timeout=None):
        """Read one complete reply (all its lines); return a Reply. Lines are handed to
        on_line(index, buffer, start, end) as they arrive (used for EHLO)."""
        deadline = self._deadline(timeout)
        code = None
        texts = []
        kept = 0
        index = 0
        while True:
            nl = yield from self._read_line(deadline, command)
            start = self._rpos
            end = nl - 1 if nl > start and self._rbuf[nl - 1] == 0x0D else nl
            line = self._rmv[start:end]
            c, last = _parse_code(line, end - start)
            if c is None or (code is not None and c != code):
                self._close()
                raise SMTPProtocolError(
                    "malformed reply to %s: %r" % (command, bytes(line[:80])),
                    SERVER_ERROR_REPLY if c is None else INVALID_SERVER_REPLY, command,
                )
            code = c
            if on_line is not None:
                on_line(index, self._rbuf, start + 4, end)
            if self._debug is not None:
                self._trace("<", bytes(line))
            if kept < _REPLY_TEXT_MAX:
                t = _decode(bytes(line[4:])) if end - start > 4 else ""
                texts.append(t)
                kept += len(t) + 1
            self._rpos = nl + 1
            if self._rpos == self._rend:
                self._rpos = self._rend = 0
            index += 1
            if last:
                break
            if index >= _REPLY_LINES_MAX:
                self._close()
                raise SMTPProtocolError(
                    "reply to %s has more than %d lines" % (command, _REPLY_LINES_MAX),
                    OVERSIZE_SERVER_REPLY, command,
                )
        text = "\n".join(texts)
        enhanced = None
        if self._ext & _X_ENHANCED and command not in ("greeting", "EHLO", "HELO") and code // 100 != 3:
            enhanced, text = _enhanced_split(code, text)
        reply = Reply(code, text, enhanced)
        if code == 421 and command != "QUIT":
            # RFC 5321 3.8: the server is going away; the connection is no longer usable.
            self._close()
        return reply

    # -- authentication --------------------------------------------------------------------------

    def _password_bytes(self):
        p = self._password
        if callable(p):
            p = p()
            if not isinstance(p, (str, bytes)) or not p:
                raise SMTPAuthenticationError("XOAUTH2 token provider returned no token",
                                              AUTHENTICATION_ERROR, None, "AUTH", False)
            try:
                _check_text(p if isinstance(p, str) else _decode(p), "XOAUTH2 token", True)
            except ValueError as e:  # a provider's bug, not the caller's argument: typed, no token
                raise SMTPAuthenticationError(str(e), AUTHENTICATION_ERROR, None, "AUTH", False)
        return _bytes(p)

    def _choose_mechanism(self):
        offered = self._auth_mechs
        wanted = self.authentication_type
        if not self._ext & _X_AUTH:
            raise SMTPNotSupportedError(
                "credentials are configured but the server offers no AUTH (is TLS needed first?)",
                AUTHENTICATION_ERROR, None, "AUTH",
            )
        if wanted == AUTH_AUTO:
            for name, mech in _MECHS:
                if offered & (1 << mech) and (mech == AUTH_XOAUTH2) == callable(self._password):
                    return mech
            raise SMTPNotSupportedError(
                "server offers no AUTH mechanism smtp_duo supports for these credentials",
                AUTHENTICATION_ERROR, None, "AUTH",
            )
        if not offered & (1 << wanted):
            for name, mech in _MECHS:
                if mech == wanted:
                    raise SMTPNotSupportedError(
                        "server does not offer AUTH %s" % name.decode(), AUTHENTICATION_ERROR, None,
                        "AUTH",
                    )
        return wanted

    def _authenticate(self):
        if self.username is None:
            return
        if not (self._secure and self.tls_verified or self.allow_insecure_auth):
            raise SMTPAuthenticationError(
                "refusing to send credentials without verified TLS", AUTHENTICATION_ERROR
            )
        mech = self._choose_mechanism()
        user = self.username.encode()
        secret = self._password_bytes()
        if mech == AUTH_PLAIN:
            reply = yield from self._auth_start(b"PLAIN", b"\0" + user + b"\0" + secret)
        elif mech == AUTH_XOAUTH2:
            reply = yield from self._auth_start(b"XOAUTH2", xoauth2_string(user, secret))
        elif mech == AUTH_LOGIN:
            reply = yield from self._auth_start(b"LOGIN", None)
            if reply.code == 334:
                yield from self._auth_challenge(reply, "LOGIN")
                reply = yield from self._auth_respond(_b64(user))
            if reply.code == 334:
                yield from self._auth_challenge(reply, "LOGIN")
                reply = yield from self._auth_respond(_b64(secret))
        else:
            reply = yield from self._auth_start(b"CRAM-MD5", None)
            if reply.code == 334:
                challenge = yield from self._auth_challenge(reply, "CRAM-MD5")
                reply = yield from self._auth_respond(_b64(cram_md5_response(user, secret, challenge)))
        if reply.code == 334 and mech == AUTH_XOAUTH2:
            # Failure details come as a base64 JSON challenge; answer with an empty line.
            detail = yield from self._auth_challenge(reply, "XOAUTH2")
            reply = yield from self._auth_respond(b"")
            reply.text = reply.text + "\n" + _decode(detail)
        elif reply.code == 334:
            # More challenges than the mechanism has: cancel (RFC 4954 4).
            reply = yield from self._auth_respond(b"*")
        if reply.code != 235:
            raise SMTPAuthenticationError("authentication failed: %s" % reply, AUTH_REPLY_ERROR,
                                          reply, "AUTH")

    def _auth_start(self, name, initial):
        # RFC 4954 4: the initial response goes on the AUTH line if the line fits 512 octets.
        if initial is not None:
            ir = _b64(initial) if initial else b"="
            line = b"AUTH " + name + b" " + ir
            if len(line) + 2 <= _CMD_MAX:
                return (yield from self._auth_send(line))
        reply = yield from self._auth_send(b"AUTH " + name)
        if initial is not None and reply.code == 334:
            reply = yield from self._auth_respond(_b64(initial) if initial else b"")
        return reply

    def _auth_send(self, line):
        words = line.split(b" ")
        self._trace(">", b" ".join(words[:2]) + (b" ****" if len(words) > 2 else b""))
        yield from self._send(line + b"\r\n", "AUTH")
        return (yield from self._read_reply("AUTH"))

    def _auth_respond(self, line):
        # Responses may exceed 512 octets (long OAuth tokens); RFC 4954 allows 12288.
        self._trace(">", line if line in (b"*", b"") else b"****")  # secrets never in a transcript
        yield from self._send(line + b"\r\n", "AUTH")
        return (yield from self._read_reply("AUTH"))

    def _auth_challenge(self, reply, what):
        data = reply.text.encode().strip()
        try:
            return _b64decode(data, what)
        except SMTPAuthenticationError:
            yield from self._auth_respond(b"*")  # cancel, then report
            raise

    # -- the mail transaction ------------------------------------------------------------------

    def _transaction(self, msg):
        # RFC 5321 3.3. With PIPELINING (RFC 2920) the envelope and DATA go in one flight and
        # the replies are checked in order; with CHUNKING (RFC 3030) and a known size the whole
        # message follows as one BDAT chunk, without dot-stuffing, in the same flight.
        msg.negotiate(self)
        msg.answered = False
        yield from self._quiet("MAIL")
        pipe = self._ext & _X_PIPELINING != 0
        out = _Out(self)
        env = _Envelope()
        if self._dirty:
            yield from self._ask(out, env, msg, b"RSET", not pipe)
        params = b""
        if msg.size is not None and self._ext & _X_SIZE:
            params += b" SIZE=%d" % msg.size
        if msg.eight_bit:
            params += b" BODY=8BITMIME"
        if msg.utf8:
            params += b" SMTPUTF8"
        self._dirty = True
        yield from self._ask(out, env, msg, b"MAIL FROM:<" + msg.sender + b">" + params, not pipe)
        if not pipe:
            self._check_sender(env)
        for rcpt in msg.recipients:
            yield from self._ask(out, env, msg, b"RCPT TO:<" + rcpt.encode() + b">", not pipe)
            if self._link is None:  # 421: the server went away
                break
        if not pipe:
            self._check_recipients(env)
        if msg.size is not None and self._ext & _X_CHUNKING:
            yield from self._ask(out, env, msg, b"BDAT %d LAST" % msg.size, False)
            out.chunk(msg.size)
            yield from self._message(out, msg)
            reply = yield from self._replies(out, env, msg)
            self._check_sender(env)
            self._check_recipients(env)
        else:
            yield from self._ask(out, env, msg, b"DATA", False)
            reply = yield from self._replies(out, env, msg)
            if reply.code == 354 and not (env.mail is not None and env.mail.code // 100 == 2 and env.accepted):
                # RFC 2920 3.1: DATA accepted with nothing to deliver: end it with a lone dot.
                yield from self._command(b".")
                yield from self._read_reply("DATA")
            self._check_sender(env)
            self._check_recipients(env)
            if reply.code != 354:
                raise SMTPError("DATA refused: %s" % reply, DATA_REPLY_ERROR, reply, "DATA")
            yield from self._message(out, msg)
            reply = yield from self._read_reply("DATA")  # the final reply to the message
        self._dirty = False
        # More replies than commands sent, now or in a moment: this one may not be the final one.
        yield from self._quiet("the next command", True)
        if reply.code // 100 != 2:
            raise SMTPError("message refused: %s" % reply, MESSAGE_REPLY_ERROR, reply, "DATA")
        reply.refused = env.refused
        return reply

    def _ask(self, out, env, msg, line, wait):
        # Queue one command; when told to wait (no PIPELINING), send it and read its reply now.
        self._trace(">", line)
        if out.full():
            yield from out.flush()
        out.put(line)
        out.put(b"\r\n")
        env.queue.append(line.split(b" ", 1)[0].decode())
        if wait:
            yield from self._replies(out, env, msg)

    def _replies(self, out, env, msg):
        # Send what is queued, then read the replies to it, in order; return the last one.
        yield from out.flush()
        reply = None
        while env.queue and self._link is not None:
            command = env.queue.pop(0)
            reply = yield from self._read_reply(command)
            if reply.code != 421:
                msg.answered = True
            if command == "RCPT":
                rcpt = msg.recipients[env.rcpts]
                env.rcpts += 1
                if reply.code // 100 == 2:
                    env.accepted += 1
                else:
                    env.refused[rcpt] = reply
                    if reply.code == 421:
                        env.closed = reply
            elif command == "MAIL":
                env.mail = reply
            elif command == "RSET" and reply.code // 100 != 2:
                self._close()  # state unknown: the next mail reconnects
                raise SMTPError("RSET refused: %s" % reply, SERVER_ERROR_CODE_RECEIVED, reply, "RSET", True)
        if reply is None:
            raise SMTPConnectionError("not connected", command=env.queue[0] if env.queue else None)
        return reply

    def _check_sender(self, env):
        reply = env.mail
        if reply is None:
            raise SMTPConnectionError("server closed the connection before MAIL", command="MAIL")
        if reply.code // 100 != 2:
            if reply.code == 530:
                raise SMTPAuthenticationError(
                    "server requires authentication: %s" % reply, MAIL_REPLY_ERROR, reply, "MAIL"
                )
            raise SMTPError("sender refused: %s" % reply, MAIL_REPLY_ERROR, reply, "MAIL")

    def _check_recipients(self, env):
        if env.closed is not None:
            raise SMTPRecipientsRefused("server closed during RCPT: %s" % env.closed, env.refused, "RCPT")
        if not env.accepted:
            raise SMTPRecipientsRefused("all recipients refused", env.refused, "RCPT")

    def _message(self, out, msg):
        out.begin()
        try:
            yield from msg.write(out)
        except SMTPError:
            raise
        except BaseException:
            # The body source failed: the message is never completed (no terminator, or fewer
            # octets than BDAT announced), so the server drops it when the connection closes.
            self._close()
            raise


class _Envelope:
    # The commands of one mail awaiting replies, and what the replies said.
    def __init__(self):
        self.queue = []
        self.mail = None
        self.rcpts = 0
        self.accepted = 0
        self.refused = {}
        self.closed = None  # a 421 reply to RCPT


class _Session:
    def __init__(self, client):
        self.client = client

    def __enter__(self):
        c = self.client
        if c._in_session:
            raise ValueError("a session is already open on this client")
        c._run(c._open())
        c._in_session = True
        return c

    def __exit__(self, *exc):
        c = self.client
        c._in_session = False
        c._run(c._quit())
        return False


# ---------------------------------------------------------------------------------------------
# The message: headers and body, streamed through the client's fixed buffers.

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PRIORITY_HEADERS = {
    PRIORITY_HIGH: (b"1 (Highest)", b"high"),
    PRIORITY_NORMAL: (b"3 (Normal)", b"normal"),
    PRIORITY_LOW: (b"5 (Lowest)", b"low"),
}
# A clock before this year is taken as unset (boards boot at 1970 or 2000 without NTP).
CLOCK_VALID_FROM_YEAR = 2024
_msg_counter = 0


def date_header(t=None):
    """RFC 5322 date for UTC tuple `t` (time.gmtime() when None); None if the clock is unset."""
    if t is None:
        if _time is None:
            return None
        t = _time.gmtime()
    if t[0] < CLOCK_VALID_FROM_YEAR:
        return None
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        _DAYS[t[6]], t[2], _MONTHS[t[1] - 1], t[0], t[3], t[4], t[5])


def _random_hex(n):
    try:
        import os

        return binascii.hexlify(os.urandom(n)).decode()
    except (ImportError, AttributeError, NotImplementedError):
        import random

        return "".join(["%02x" % random.getrandbits(8) for _ in range(n)])


def make_message_id(domain):
    """A new, globally unique Message-ID on `domain`: <random.counter@domain>."""
    global _msg_counter
    _msg_counter += 1
    return "<%s.%d@%s>" % (_random_hex(8), _msg_counter, domain)


def _encoded_words(b):
    # RFC 2047 B-encoding in words of at most 39 octets (64 characters), never splitting a
    # UTF-8 sequence, so every line holding a word stays within 76 characters.
    words = []
    i = 0
    n = len(b)
    while i < n:
        j = min(i + 39, n)
        while j < n and (b[j] & 0xC0) == 0x80:
            j -= 1
        words.append(b"=?utf-8?B?" + _b64(b[i:j]) + b"?=")
        i = j
    return words


def _phrase_tokens(text):
    """Header text (Subject, display name) as foldable tokens: plain words when the text is
    printable ASCII with short words, encoded-words otherwise."""
    if not text:
        return []
    b = text.encode()
    # Plain words only for printable ASCII with single spaces between them: any other
    # whitespace (a run, a tab, at either end) would either not fold or not survive unfolding.
    # (Checked before splitting: a run of spaces would make a list of empty words.)
    if len(b) == len(text) and b"=?" not in b and b"\t" not in b and b"  " not in b and \
            b[0] != 0x20 and b[-1] != 0x20:
        words = b.split(b" ")
        for w in words:
            if len(w) > 66:
                break
        else:
            return words
    return _encoded_words(b)


def _display_name_tokens(name):
    tokens = _phrase_tokens(name)
    if tokens and tokens[0][:2] != b"=?":
        for ch in '()<>[]:;@\\,."':
            if ch in name:  # RFC 5322 specials: a quoted-string (or encoded-words if long)
                if len(name) > 60:
                    return _encoded_words(name.encode())
                return [b'"' + name.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"']
    return tokens


def _mailbox_tokens(name, addr):
    if name is None:
        return [addr.encode()]
    return _display_name_tokens(name) + [b"<" + addr.encode() + b">"]


class _Message:
    """A validated mail ready to stream. Holds no copy of the body."""

    def __init__(self, client, to, priority, subject, body, cc, bcc, message_id=None, date=None,
                 html=None, attachments=(), headers=None):
        if priority not in _PRIORITY_HEADERS:
            raise ValueError("priority must be PRIORITY_LOW, PRIORITY_NORMAL or PRIORITY_HIGH")
        self.priority = priority
        _check_text(subject, "subject")
        self.to = _address_list(to, "recipient_address")
        self.cc = _address_list(cc, "cc")
        bcc = _address_list(bcc, "bcc")
        seen = []
        for name, addr in self.to + self.cc + bcc:
            if addr not in seen:
                seen.append(addr)
        if not seen:
            raise ValueError("no recipient given")
        self.recipients = seen
        self.from_name, from_addr = client._from
        self.sender = from_addr.encode()
        self.utf8 = not _is_ascii(from_addr)
        for a in seen:
            if not _is_ascii(a):
                self.utf8 = True
        self.subject = _phrase_tokens(subject)
        if message_id is None:
            message_id = client.new_message_id()
        else:
            _check_text(message_id, "message_id")
            if not (message_id[:1] == "<" and message_id[-1:] == ">" and "@" in message_id
                    and " " not in message_id and len(message_id) <= 250 and _is_ascii(message_id)):
                raise ValueError("message_id must look like <unique@domain>, in ASCII: %r" % message_id)
        self.message_id = message_id
        if date is not None:
            _check_text(date, "date")
            if len(date) > 80 or not _is_ascii(date):
                raise ValueError("date must be an RFC 5322 date (ASCII, at most 80 characters): %r" % date)
        self.date = date if date is not None else date_header()
        self.text = _Text(body, b"plain", client._cbuf)
        self.extra = []  # headers=: (name, tokens) pairs
        self.top = self.text  # the entity the header's Content-Type describes
        self.texts = [self.text]
        if headers or html is not None or attachments:
            try:
                import smtp_duo_mime
            except ImportError:
                raise ImportError("html=, attachments= and headers= need smtp_duo_mime.py beside "
                                  "smtp_duo (freeze it with mime=True, or mip-install it)")
            if headers:
                self.extra = smtp_duo_mime.extra_headers(headers)
            if html is not None or attachments:
                self.top, self.texts = smtp_duo_mime.compose(self.text, html, attachments, client._cbuf)
        self.size = None
        self.eight_bit = False
        self.answered = False  # the server replied (not 421) to a command of this mail

    def negotiate(self, client):
        """Decide the transfer encoding and size from what this server offered."""
        if self.utf8 and not client._ext & _X_SMTPUTF8:
            raise SMTPNotSupportedError(
                "a non-ASCII address needs the server's SMTPUTF8 extension, which it does not offer",
                INVALID_PARAM, None, "MAIL",
            )
        ext8 = bool(client._ext & _X_8BITMIME)
        eight = self.utf8
        for t in self.texts:
            if t.negotiate(ext8):
                eight = True
        self.eight_bit = ext8 and eight
        counter = _Count()
        counter.window = len(client._obuf) // 8
        try:
            for _ in self.write(counter):
                pass
            self.size = counter.n
        except _Unknown:  # a one-shot stream: sent with DATA, no SIZE= declared
            self.size = None
        if self.size is not None:
            limit = client._size_limit
            if limit and self.size > limit:
                raise SMTPError(
                    "message of %d octets exceeds the server's SIZE limit of %d" % (self.size, limit),
                    OVERSIZE_MAIL_DATA, None, "MAIL", False,
                )

    def write_headers(self, out):
        # A generator, like write(): a long header is written out a token at a time.
        if self.date:
            yield from _header(out, b"Date", [self.date.encode()])
        yield from _header(out, b"From", _mailbox_tokens(self.from_name, self.sender.decode()))
        if self.to:
            yield from _address_header(out, b"To", self.to)
        elif not self.cc:
            yield from _header(out, b"To", [b"undisclosed-recipients:;"])
        if self.cc:
            yield from _address_header(out, b"Cc", self.cc)
        yield from _header(out, b"Subject", self.subject)
        yield from _header(out, b"Message-ID", [self.message_id.encode()])
        for name, tokens in self.extra:
            yield from _header(out, name, tokens)
        yield from _header(out, b"MIME-Version", [b"1.0"])
        yield from self.top.head(out)
        xp, imp = _PRIORITY_HEADERS[self.priority]
        yield from _header(out, b"X-Priority", [xp])
        yield from _header(out, b"Importance", [imp])
        out.put(b"\r\n")

    def write(self, out):
        """The message into `out`: a generator of write requests for the driver. Into a
        _Count it only counts, and raises _Unknown if a part's size cannot be known."""
        yield from self.write_headers(out)
        yield from self.top.write(out)
        yield from out.terminate()


class _Unknown(Exception):
    pass


class _Text:
    """A text part (the plain body, or the HTML one): sent 7bit when it can, 8bit when it has
    8-bit octets and the server offers 8BITMIME, quoted-printable otherwise (and for a one-shot
    stream, lines over 998 octets or a NUL)."""

    def __init__(self, body, subtype, buf):
        self.body = _Body(body, buf)
        self.subtype = subtype
        self.cte = None

    def negotiate(self, ext8):
        # Returns True when the part goes as 8bit (the mail then needs BODY=8BITMIME).
        st = self.body.stats
        self.cte = b"quoted-printable"
        if st is not None and not st.nul and st.longest <= _TEXT_LINE_MAX:
            if not st.eight_bit:
                self.cte = b"7bit"
            elif ext8:
                self.cte = b"8bit"
        return self.cte == b"8bit"

    def head(self, out):
        yield from _header(out, b"Content-Type", [b"text/" + self.subtype + b";", b"charset=utf-8"])
        yield from _header(out, b"Content-Transfer-Encoding", [self.cte])

    def write(self, out):
        qp = self.cte == b"quoted-printable"
        if out.counting:  # from the scan: no second pass over the source
            st = self.body.stats
            if st is None:
                raise _Unknown
            if not qp:
                out.n += st.size
                return
        if qp:
            yield from self.body.feed(_QP(out), out.window, out)
        else:
            yield from self.body.feed(_Plain(out), len(out.buf) // 4 - 1, out)


def _address_header(out, name, mailboxes):
    tokens = []
    for i, (n, a) in enumerate(mailboxes):
        t = _mailbox_tokens(n, a)
        if i < len(mailboxes) - 1:
            t[-1] = t[-1] + b","
        tokens.extend(t)
    yield from _header(out, name, tokens)


def _header(out, name, tokens):
    # Tokens are separated by single spaces and folded (CRLF before the space) at 76 columns.
    # Every header line starts here: a name beginning with "." is stuffed under DATA.
    if out.dots and name[:1] == b".":
        out.stuff()
    out.put(name)
    out.put(b":")
    col = len(name) + 1
    for t in tokens:
        if out.full():
            yield from out.flush()
        if t and col + 1 + len(t) > 76:  # also right after the colon (RFC 5322 allows it)
            out.put(b"\r\n")
            col = 0
        out.put(b" ")
        out.put(t)
        col += 1 + len(t)
    out.put(b"\r\n")


# -- body sources --------------------------------------------------------------------------------


def _utf8_checked():
    # Does str() reject malformed UTF-8 here (CPython, and MicroPython's usual ports)?
    try:
        return len(str(b"\xc3a", "utf-8")) < 0
    except (UnicodeError, ValueError):
        return True


_UTF8_CHECKED = _utf8_checked()


def _has_8bit(data, i, j, piece):
    # Any octet >= 0x80 in data[i:j]? C-level passes over `piece` octets at a time (each makes
    # a temporary that size: small ones keep a board's heap unfragmented over a long body),
    # never a Python loop over each octet.
    if hasattr(data, "isascii"):  # CPython
        return not data[i:j].isascii()
    mv = memoryview(data)
    for k in range(i, j, piece):
        e = min(k + piece, j)
        if _UTF8_CHECKED:  # as text, octets >= 0x80 are either malformed or fewer characters
            try:
                if len(str(mv[k:e], "utf-8")) != e - k:
                    return True
            except (UnicodeError, ValueError):  # also a character split between two pieces
                return True
        elif max(mv[k:e]) >= 0x80:
            return True
    return False


class _Stats:
    # What a pass over content that can be read twice finds: decides 7bit / 8bit / quoted-
    # printable and the size (SIZE, BDAT). It looks at the raw windows with C-level count and
    # find over index ranges, never copying one, and reckons what the normaliser will make of
    # them. `longest` (the longest wire line, a stuffed dot included) is exact whenever it
    # matters, that is above _TEXT_LINE_MAX - 1; shorter lines are not all measured.
    def __init__(self, piece):
        self.piece = piece  # octets per 8-bit check
        self.size = 0
        self.longest = 0
        self.eight_bit = False
        self.nul = False
        self.line = 0  # wire octets of the current line so far
        self.cr = False  # the last window ended with CR: a leading LF belongs to it

    def _ended(self, n):
        if n > self.longest:
            self.longest = n

    def scan(self, data, i, j):
        if self.cr and i < j and data[i] == 0x0A:
            i += 1  # the LF of a CRLF split between windows: sent already
        self.cr = False
        if i >= j:
            return
        if not self.eight_bit and _has_8bit(data, i, j, self.piece):
            self.eight_bit = True
        if not self.nul and data.find(b"\0", i, j) >= 0:
            self.nul = True
        cr = data.count(b"\r", i, j)
        lf = data.count(b"\n", i, j)
        pairs = data.count(b"\r\n", i, j) if cr and lf else 0
        self.size += j - i + cr + lf - 2 * pairs  # a lone CR or LF becomes CRLF
        if not (cr or lf):
            self.line = self._start(data, i, j) + j - i
            return
        first = self._break(data, i, j, cr)
        self._ended(self._start(data, i, j) + first - i)
        last = max(data.rfind(b"\n", i, j), data.rfind(b"\r", i, j) if cr else -1)
        if last - first > _TEXT_LINE_MAX - 1 and self._gap(data, first + 1, last, cr):
            p = first + 1
            while p < last:
                e = self._break(data, p, last + 1, cr)
                self._ended(self._dot(data, p, e) + e - p)
                p = e + 1
        self.line = self._dot(data, last + 1, j) + j - last - 1
        self.cr = data[j - 1] == 0x0D

    def _break(self, data, i, j, cr):
        e = data.find(b"\n", i, j)
        if cr:
            r = data.find(b"\r", i, j if e < 0 else e)
            if r >= 0:
                return r
        return e

    def _gap(self, data, i, j, cr):
        # Is there a run of 997 or more octets without a line end in data[i:j]? Such a run
        # holds a whole aligned block of 499, so one find per block answers, cheaply when lines
        # are short (each find stops at the first line end).
        for k in range(i, j - 498, 499):  # whole blocks only
            if self._break(data, k, k + 499, cr) < 0:
                return True
        return False

    def _start(self, data, i, j):
        return self.line if self.line else self._dot(data, i, j)

    def _dot(self, data, i, j):
        return 1 if i < j and data[i] == 0x2E else 0  # a stuffed dot counts towards the line

    def end(self):
        if self.line:  # RFC 5321 4.1.1.4: a missing final CRLF is added
            self._ended(self.line)
            self.line = 0
            self.size += 2


class _Body:
    """The mail body as windows of bytes. Content that can be read twice (in RAM, a list of
    chunks, a seekable file) is scanned first; a one-shot stream is sent quoted-printable."""

    def __init__(self, body, buf):
        self.src = body
        self.buf = buf
        self.kind = None
        if isinstance(body, str):
            self.src = body.encode()
            self.kind = "mem"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            self.kind = "mem"
        elif isinstance(body, (list, tuple)):
            for c in body:
                if not isinstance(c, (str, bytes, bytearray)):
                    raise ValueError("mail_body chunks must be str or bytes")
            self.kind = "list"
        elif hasattr(body, "readinto") or hasattr(body, "read"):
            self.kind = "file"
            self.start = None
            if hasattr(body, "seek"):
                try:
                    self.start = body.tell()
                except (AttributeError, OSError, ValueError):
                    pass
        else:
            try:
                self.src = iter(body)
            except TypeError:
                raise ValueError("mail_body must be str, bytes, a file or an iterable of chunks")
            self.kind = "iter"
        self.stats = None
        if self.kind != "iter" and not (self.kind == "file" and self.start is None):
            st = self.stats = _Stats(max(16, min(len(buf) // 4, 1024)))  # 128 on a board's buffers
            for data, i, j in self._windows(len(buf)):
                st.scan(data, i, j)
            st.end()

    def feed(self, sink, size, out=None):
        """Encode the body through `sink`, `size` bytes at a time, then end it. With `out`, a
        generator that writes `out` whenever it is full; without, run it with stream()."""
        norm = _Normaliser(sink)
        for data, i, j in self._windows(size):
            norm.feed(data, i, j)
            if out is not None and out.full():
                yield from out.flush()
        sink.end()

    def stream(self, sink, size):
        for _ in self.feed(sink, size):
            pass

    def _windows(self, size):
        src = self.src
        if self.kind == "mem":
            yield from self._split(src, len(src), size)
        elif self.kind == "list":
            for c in src:
                c = c.encode() if isinstance(c, str) else c
                yield from self._split(c, len(c), size)  # pyright: ignore[reportArgumentType]
        elif self.kind == "file":
            # The ignores: self.src is a file here (self.kind says so), which the checker cannot see.
            if self.start is not None:
                src.seek(self.start)  # pyright: ignore[reportAttributeAccessIssue]
            buf = self.buf
            if hasattr(src, "readinto"):
                while True:
                    n = src.readinto(buf)  # pyright: ignore[reportAttributeAccessIssue]
                    if not n:
                        break
                    yield from self._split(buf, n, size)
            else:
                while True:
                    c = src.read(len(buf))  # pyright: ignore[reportAttributeAccessIssue]
                    if not c:
                        break
                    if isinstance(c, str):
                        c = c.encode()
                    yield from self._split(c, len(c), size)
        else:
            for c in src:
                if isinstance(c, str):
                    c = c.encode()
                elif not isinstance(c, (bytes, bytearray, memoryview)):
                    raise ValueError("mail_body chunks must be str or bytes")
                yield from self._split(c, len(c), size)

    def _split(self, data, n, size):
        # (data, i, j) windows. bytes and bytearray are used in place; a memoryview has no
        # find(), so it goes through the chunk buffer a piece at a time (never copied whole).
        if isinstance(data, memoryview):
            buf = self.buf
            for i in range(0, n, len(buf)):
                k = min(len(buf), n - i)
                buf[:k] = data[i : i + k]
                yield from self._split(buf, k, size)
            return
        for i in range(0, n, size):
            yield data, i, min(i + size, n)


class _Normaliser:
    """Makes every line end CRLF (from CRLF, a lone CR or a lone LF, also across windows).
    Plain and statistics sinks get CRLF text a window at a time, made with whole-window C
    string operations (find, count, replace); the quoted-printable sink, which looks at every
    octet anyway, gets line pieces and line ends without any copy."""

    def __init__(self, sink):
        self.sink = sink
        self.by_line = hasattr(sink, "eol")
        self.cr = False  # the previous window ended with CR: a leading LF belongs to it

    def feed(self, data, i, j):
        if self.cr:
            self.cr = False
            if i < j and data[i] == 0x0A:
                i += 1
        if i >= j:
            return
        sink = self.sink
        if self.by_line:
            while i < j:
                r = data.find(b"\r", i, j)
                n = data.find(b"\n", i, j if r < 0 else r)
                e = r if n < 0 else n
                if e < 0:
                    sink.seg(data, i, j)
                    return
                if e > i:
                    sink.seg(data, i, e)
                sink.eol()
                if data[e] == 0x0D:
                    if e + 1 == j:
                        self.cr = True
                    elif data[e + 1] == 0x0A:
                        e += 1
                i = e + 1
            return
        cr = data[j - 1] == 0x0D
        if cr:  # a line end already; sent as CRLF below
            j -= 1
        w = data[i:j]
        if w.find(b"\r") >= 0:
            n = w.count(b"\r\n")
            if n != w.count(b"\r") or n != w.count(b"\n"):  # a lone CR or LF among them
                w = w.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        elif w.find(b"\n") >= 0:
            w = w.replace(b"\n", b"\r\n")
        sink.text(w)
        if cr:
            sink.text(b"\r\n")
            self.cr = True


class _Plain:
    # 7bit/8bit content as is, dots stuffed (RFC 5321 4.5.2) unless the output says not to
    # (BDAT and size counting).
    def __init__(self, out):
        self.out = out
        self.bol = True

    def text(self, w):
        if not w:
            return
        out = self.out
        if out.dots:
            if self.bol and w[0] == 0x2E:
                out.stuff()
            if w.find(b"\n.") >= 0:
                out.stuffed += w.count(b"\n.")
                w = w.replace(b"\n.", b"\n..")
        out.put(w)
        self.bol = w[-1] == 0x0A

    def end(self):
        if not self.bol:  # RFC 5321 4.1.1.4: a missing final CRLF is added, never a second
            self.out.put(b"\r\n")
            self.bol = True


_HEX = b"0123456789ABCDEF"


class _QP:
    # Quoted-printable (RFC 2045 6.7): lines of at most 76 characters with soft breaks,
    # trailing blanks encoded, '=' and every non-printable or 8-bit octet as =XX.
    def __init__(self, out):
        self.out = out
        self.col = 0
        self.blank = -1  # a space or tab not yet written: encoded if the line ends after it

    def seg(self, data, i, j):
        for k in range(i, j):
            c = data[k]
            if self.blank >= 0:
                self._emit(self.blank)
                self.blank = -1
            if c == 0x20 or c == 0x09:
                self.blank = c
            else:
                self._emit(c)

    def _emit(self, c):
        out = self.out
        if c == 0x3D or c > 0x7E or (c < 0x20 and c != 0x09):
            if self.col + 3 > 75:
                out.put(b"=\r\n")
                self.col = 0
            out.put1(0x3D)
            out.put1(_HEX[c >> 4])
            out.put1(_HEX[c & 15])
            self.col += 3
        else:
            if self.col + 1 > 75:
                out.put(b"=\r\n")
                self.col = 0
            if self.col == 0 and c == 0x2E and out.dots:
                out.stuff()
            out.put1(c)
            self.col += 1

    def eol(self):
        if self.blank >= 0:
            c = self.blank
            self.blank = -1
            if self.col + 3 > 76:
                self.out.put(b"=\r\n")
                self.col = 0
            self.out.put1(0x3D)
            self.out.put1(_HEX[c >> 4])
            self.out.put1(_HEX[c & 15])
        self.out.put(b"\r\n")
        self.col = 0

    def end(self):
        if self.blank >= 0 or self.col:
            self.eol()


class _Count:
    # Counts what _Out would send, without the stuffed dots (RFC 1870 SIZE, RFC 3030 BDAT).
    dots = False
    counting = True
    window = 128  # quoted-printable window while counting

    def __init__(self):
        self.n = 0

    def terminate(self):
        return ()

    def put(self, data):
        self.n += len(data)

    def put1(self, c):
        self.n += 1

    def full(self):
        return False


class _Out:
    """The client's fixed output buffer: commands and message bytes collect here and go out
    a flight at a time, once it is half full (full()). The writers check after each window,
    token or command, and each adds at most the other half, so the buffer never overflows."""

    counting = False

    def __init__(self, client):
        self.client = client
        self.buf = client._obuf
        self.mv = memoryview(self.buf)
        self.half = len(self.buf) // 2
        self.n = 0
        self.total = 0
        self.window = len(self.buf) // 8  # quoted-printable: at most about 3.1 times that
        self.dots = True  # DATA: dot-stuffing and the CRLF.CRLF terminator
        self.left = None  # BDAT: message octets still owed to the chunk size announced
        self.mark = 0  # where the message starts in the buffer (commands before it)
        self.start = 0  # octets sent before the message (for the transcript's count)
        self.stuffed = 0  # dots added by dot-stuffing (not part of the message's size)

    def begin(self):
        self.start = self.total + self.n
        self.stuffed = 0

    def stuff(self):
        self.put1(0x2E)
        self.stuffed += 1

    def put(self, data):
        n = self.n
        k = len(data)
        if n + k > len(self.buf):
            raise SMTPError("output buffer overflow (%d + %d octets)" % (n, k), INTERNAL_ERROR)
        self.buf[n : n + k] = data
        self.n = n + k

    def put1(self, c):
        if self.n == len(self.buf):
            raise SMTPError("output buffer overflow", INTERNAL_ERROR)
        self.buf[self.n] = c
        self.n += 1

    def full(self):
        return self.n >= self.half

    def chunk(self, size):
        # RFC 3030: exactly `size` octets follow the BDAT command; nothing is stuffed.
        self.dots = False
        self.left = size
        self.mark = self.n

    def flush(self):
        n = self.n
        if not n:
            return
        if self.left is not None:
            k = n - self.mark
            if k > self.left:  # the source grew since it was measured: never send past the chunk
                self._changed()
            self.left -= k
            self.mark = 0
        yield from self.client._send(self.mv[:n], "DATA")
        self.total += n
        self.n = 0

    def terminate(self):
        # DATA: the sinks end the body with CRLF, so "." CRLF after it is the only CRLF.CRLF.
        end = self.total + self.n
        if self.dots:
            self.put(b".\r\n")
        yield from self.flush()
        if self.left:
            self._changed()
        # The message's own octets, as SIZE counts them: no stuffed dots, no terminator.
        self.client._trace(">", "<message: %d octets>" % (end - self.start - self.stuffed))

    def _changed(self):
        self.client._close()  # the server drops the incomplete chunk with the connection
        raise SMTPError("the mail body changed while it was being sent (its size was measured "
                        "first): connection closed, mail not sent", INVALID_PARAM, None, "BDAT", False)
