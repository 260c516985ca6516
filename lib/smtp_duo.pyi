# Type stub for smtp_duo: the public API, for editors and type checkers (Pylance, pyright, mypy)
# on a PC. MicroPython never reads it; it is not installed by mip (copy it next to smtp_duo.py in
# your project, or point your editor's stub path at this folder). tests_host/test_types.py keeps
# it in step with smtp_duo.py.

from typing import (
    Any, Callable, ClassVar, Final, Generator, Iterable, Iterator, Literal, Mapping, Protocol, Sequence,
)

__version__: Final[str]

# Authentication (authentication_type=)
AUTH_AUTO: Final = 0
AUTH_LOGIN: Final = 1
AUTH_CRAM_MD5: Final = 2
AUTH_PLAIN: Final = 3
AUTH_XOAUTH2: Final = 8
AUTH_NONE: Final = 0xFFFF

# Priority (mail_send priority=)
PRIORITY_LOW: Final = 1
PRIORITY_NORMAL: Final = 2
PRIORITY_HIGH: Final = 4

# TLS mode (tls=)
TLS_NONE: Final = 0
TLS_STARTTLS: Final = 1
TLS_IMPLICIT: Final = 2

# SMTPError.status values (NetX Duo's NX_SMTP_* / NX_* names)
NO_PACKET: Final = 0x01
SIZE_ERROR: Final = 0x09
IP_ADDRESS_ERROR: Final = 0x21
NOT_CONNECTED: Final = 0x38
AUTHENTICATION_ERROR: Final = 0xA0
OVERSIZE_MAIL_DATA: Final = 0xA1
INVALID_SERVER_REPLY: Final = 0xA2
INTERNAL_ERROR: Final = 0xA3
SERVER_ERROR_CODE_RECEIVED: Final = 0xA4
INVALID_PARAM: Final = 0xA5
PACKET_ALLOCATE_ERROR: Final = 0xA6
GREET_REPLY_ERROR: Final = 0xA7
HELLO_REPLY_ERROR: Final = 0xA8
MAIL_REPLY_ERROR: Final = 0xA9
RCPT_REPLY_ERROR: Final = 0xAA
MESSAGE_REPLY_ERROR: Final = 0xAB
DATA_REPLY_ERROR: Final = 0xAC
AUTH_REPLY_ERROR: Final = 0xAD
SERVER_ERROR_REPLY: Final = 0xAE
TRANSMIT_ERROR: Final = 0xAF
INVALID_SERVER_CHALLENGE: Final = 0xB0
OVERSIZE_SERVER_REPLY: Final = 0xB1
TLS_ERROR: Final = 0xC0

# A clock before this year is taken as unset: no Date header (settable).
CLOCK_VALID_FROM_YEAR: int

# -- replies and errors --------------------------------------------------------------------------

class Reply:
    code: int
    text: str
    enhanced: str | None
    # Recipients refused while others were accepted (on the reply mail_send returns).
    refused: dict[str, Reply]
    def __init__(self, code: int, text: str, enhanced: str | None = None) -> None: ...
    # `code, text = reply`: yields the code (int), then the text (str).
    def __iter__(self) -> Iterator[Any]: ...

class SMTPError(Exception):
    message: str
    status: int
    code: int | None
    enhanced: str | None
    text: str | None
    command: str | None
    temporary: bool
    def __init__(
        self,
        message: str,
        status: int,
        reply: Reply | None = None,
        command: str | None = None,
        temporary: bool | None = None,
    ) -> None: ...

class SMTPConnectionError(SMTPError):
    def __init__(self, message: str, status: int = 0x38, command: str | None = None) -> None: ...

class SMTPTimeoutError(SMTPConnectionError):
    def __init__(self, message: str, command: str | None = None) -> None: ...

class SMTPProtocolError(SMTPError):
    def __init__(self, message: str, status: int = 0xAE, command: str | None = None) -> None: ...

class SMTPAuthenticationError(SMTPError): ...
class SMTPTLSError(SMTPError): ...
class SMTPNotSupportedError(SMTPError): ...

class SMTPRecipientsRefused(SMTPError):
    recipients: dict[str, Reply]
    def __init__(self, message: str, recipients: dict[str, Reply], command: str | None = None) -> None: ...

# -- the client ----------------------------------------------------------------------------------

class _ReadInto(Protocol):
    def readinto(self, buf: bytearray, /) -> int | None: ...

class _Read(Protocol):
    def read(self, size: int, /) -> str | bytes: ...

class _ReadBytes(Protocol):
    def read(self, size: int, /) -> bytes: ...

# Addresses: "a@b.c", "<a@b.c>" or "Name <a@b.c>"; one or a list/tuple of them.
_Addresses = str | list[str] | tuple[str, ...]
# A body: text or bytes, a file (readinto() or read()), or chunks (a list, tuple or generator).
_MailBody = str | bytes | bytearray | memoryview | _ReadInto | _Read | Iterable[str | bytes | bytearray]
# An attachment (smtp_duo_mime): (filename, source) or (filename, source, content_type), the
# source in RAM or an open binary file (streamed); content_type None: application/octet-stream.
# An inline image, shown by the HTML as cid:<content_id>: (filename, source, content_type,
# content_id), or an smtp_duo_mime.Inline (content_id None: made, as its .cid).
_AttachmentSource = bytes | bytearray | memoryview | _ReadInto | _ReadBytes

class _Inline(Protocol):
    cid: str

_Attachment = (tuple[str, _AttachmentSource] | tuple[str, _AttachmentSource, str | None]
               | tuple[str, _AttachmentSource, str | None, str | None] | _Inline)
# Extra headers (smtp_duo_mime): {name: value} or (name, value) pairs; Reply-To and Sender take
# addresses, the others text.
_Headers = Mapping[str, _Addresses] | Sequence[tuple[str, _Addresses]]

class SMTPClient:
    server_address: str
    port: int
    username: str | None
    from_address: str
    client_domain: str | None
    authentication_type: int
    timeout: float
    tls: int
    allow_insecure_auth: bool
    server_hostname: str | None
    # None: no TLS; True: the server's certificate was verified; False: encrypted, not authenticated.
    tls_verified: bool | None
    # The SSLContext used (yours, or made from cadata); None without TLS.
    tls_context: Any
    def __init__(
        self,
        server_address: str,
        port: int | None = None,
        username: str | None = None,
        # A str, or for XOAUTH2 a callable returning the current token (needs smtp_duo_auth).
        password: str | Callable[[], str | bytes] | None = None,
        # Required (ValueError without it).
        from_address: str | None = None,
        client_domain: str | None = None,
        authentication_type: int = 0,
        timeout: float = 30,
        tls: int = 0,
        allow_insecure_auth: bool = False,
        # The CA certificate that verifies the server: DER bytes (PEM where the runtime reads it).
        cadata: bytes | bytearray | str | None = None,
        # A ready SSLContext (ssl or tls), used as is.
        ssl_context: Any = None,
        server_hostname: str | None = None,
        # debug(direction, line): ">" sent, "<" received, "*" a note.
        debug: Callable[[str, str], object] | None = None,
        # Output buffer octets (1024..65536); None: 1024 on a heap under 384 KiB, else 8192.
        buffer_size: int | None = None,
    ) -> None: ...
    def has_extension(self, name: str | bytes) -> bool: ...
    @property
    def size_limit(self) -> int: ...
    # `with client.session() as s:` (the client itself is the context manager).
    def session(self) -> SMTPClient: ...
    def __enter__(self) -> SMTPClient: ...
    def __exit__(self, *exc: object) -> None: ...
    def mail_send(
        self,
        recipient_address: _Addresses,
        priority: int = 2,
        subject: str = "",
        mail_body: _MailBody = "",
        cc: _Addresses = (),
        bcc: _Addresses = (),
        message_id: str | None = None,
        date: str | None = None,
        # html, attachments and headers need smtp_duo_mime (ImportError without it).
        # An HTML alternative to mail_body (multipart/alternative).
        html: _MailBody | None = None,
        # Files after the text (multipart/mixed), sent base64.
        attachments: Sequence[_Attachment] = (),
        headers: _Headers | None = None,
    ) -> Reply: ...
    def check_mail(
        self,
        recipient_address: _Addresses,
        priority: int = 2,
        subject: str = "",
        cc: _Addresses = (),
        bcc: _Addresses = (),
        headers: _Headers | None = None,
    ) -> None: ...
    def new_message_id(self) -> str: ...
    # -- the extension surface (README section 10): generators of I/O requests, and helpers.
    def send_steps(self, msg: Message) -> Generator[_Request, Any, Reply]: ...
    def open_steps(self) -> Generator[_Request, Any, None]: ...
    def quit_steps(self) -> Generator[_Request, Any, Reply | None]: ...
    def write_message(self, out: Output, msg: Message) -> Generator[_Request, Any, None]: ...
    def resolve(self, socket: Any) -> list[Any]: ...
    def connect_error(self, e: BaseException | None) -> SMTPError: ...
    # Internals a driver (smtp_duo_async) uses; not API.
    _link: Any
    _in_session: bool
    _v6: bool
    def _close(self) -> None: ...

# An I/O request a step yields: (kind, argument, deadline in ticks_ms); kind is "open", "tls",
# "read" (into a memoryview), "write" (a buffer) or "poll".
_Request = tuple[str, Any, int]

# -- helpers -------------------------------------------------------------------------------------

def date_header(t: Sequence[int] | None = None) -> str | None: ...
def make_message_id(domain: str) -> str: ...
# Served by the extensions through the module (smtp_duo_mime, smtp_duo_auth).
def b64encode_into(src: bytes | bytearray | memoryview, dst: bytearray, start: int = 0) -> int: ...
def cram_md5_response(username: bytes, secret: bytes, challenge: bytes) -> bytes: ...
def xoauth2_string(username: bytes, token: bytes) -> bytes: ...

# -- the extension surface (README section 10) ---------------------------------------------------

def ticks_ms() -> int: ...
def ticks_diff(a: int, b: int) -> int: ...
def ticks_add(a: int, b: int) -> int: ...
def unique(n: int) -> str: ...
def check_text(value: Any, what: str, secret: bool = False) -> str: ...
def address(value: Any, what: str) -> tuple[str | None, str]: ...
def address_list(value: Any, what: str) -> list[tuple[str | None, str]]: ...
def phrase(text: str, encode: bool = False) -> list[bytes]: ...
def mailbox(name: str | None, addr: str) -> list[bytes]: ...
def header(out: Any, name: bytes, tokens: list[bytes]) -> Generator[_Request, Any, None]: ...
def tls_error(e: BaseException, port: int) -> SMTPTLSError: ...
def native() -> Any: ...

# (authentication_type, name, respond(user, secret, step, challenge) -> response or None)
MECHANISMS: list[tuple[int, bytes, Callable[[bytes, bytes, int, bytes | None], bytes | None]]]

class Message:
    priority: int
    to: list[tuple[str | None, str]]
    cc: list[tuple[str | None, str]]
    from_name: str | None
    sender: bytes
    recipients: list[bytes]
    utf8: bool
    subject: list[bytes]
    message_id: str
    date: str | None
    text: Text
    # The text parts (smtp_duo_mime adds the HTML one) and the entity under the header.
    texts: list[Any]
    top: Any
    extra: list[tuple[bytes, list[bytes]]]
    size: int | None
    params: bytes
    answered: bool
    def __init__(
        self,
        client: SMTPClient,
        to: _Addresses,
        priority: int = 2,
        subject: str = "",
        body: _MailBody = "",
        cc: _Addresses = (),
        bcc: _Addresses = (),
        message_id: str | None = None,
        date: str | None = None,
        html: _MailBody | None = None,
        attachments: Sequence[_Attachment] = (),
        headers: _Headers | None = None,
    ) -> None: ...
    def negotiate(self, client: SMTPClient) -> None: ...
    def write(self, out: Any) -> Generator[_Request, Any, None]: ...

class Text:
    subtype: bytes
    src: Any
    kind: int
    size: int | None
    eight: bool
    long: bool
    cte: bytes
    def __init__(self, body: _MailBody, subtype: bytes, buf: bytearray) -> None: ...
    def negotiate(self, e8: int) -> bool: ...
    def head(self, out: Any) -> Generator[_Request, Any, None]: ...
    def write(self, out: Any) -> Generator[_Request, Any, None]: ...
    def feed(self, sink: Any, size: int, out: Any) -> Generator[_Request, Any, None]: ...

class Output:
    counting: ClassVar[bool]  # False; a counter's is True
    big: ClassVar[bytes | bytearray | None]  # CPython: a window too large for buf, sent right after it
    client: SMTPClient
    msg: Message
    buf: bytearray
    mv: memoryview
    n: int
    total: int
    start: int
    stuffed: int
    window: int
    dots: bool
    queue: list[str]
    mail: Reply | None
    closed: Reply | None
    rcpt: int
    accepted: int
    refused: dict[str, Reply]
    def __init__(self, client: SMTPClient, msg: Message) -> None: ...
    def put(self, data: bytes | bytearray | memoryview) -> None: ...
    def stuff(self) -> None: ...
    def full(self) -> bool: ...
    def begin(self) -> None: ...
    def flush(self) -> Generator[_Request, Any, None]: ...
    def terminate(self) -> Generator[_Request, Any, None]: ...
    def ask(self, line: bytes, wait: bool) -> Generator[_Request, Any, None]: ...
    def replies(self) -> Generator[_Request, Any, Reply]: ...
    def check(self, rcpts: bool) -> None: ...
