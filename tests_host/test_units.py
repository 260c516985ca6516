"""CPython-only unit tests with independent oracles: Hypothesis properties for the body
pipeline, quopri / email for the encoders, and argument validation."""

import email.header
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtp_duo
from smtp_duo_qp import QP

from test_portable import Collect, normalise, unstuff


def stream(chunks, sink, window):
    # A text part through a sink (smtp_duo's plain one, or quoted-printable) into memory.
    for _ in smtp_duo.Text(chunks, b"plain", bytearray(16)).feed(sink, window, Collect()):
        pass


def wire(chunks, sink=smtp_duo._Plain):
    out = Collect()
    stream(list(chunks), sink(out), 5)
    return out.value()


def split(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=6))
def test_wire_is_normalised_stuffed_and_has_no_end_of_data(data, cuts):
    w = wire(split(data, cuts))
    assert unstuff(w) == normalise(data)
    assert (b"\r\n" + w).find(b"\r\n.\r\n") < 0
    assert b"\r" not in w.replace(b"\r\n", b"") and b"\n" not in w.replace(b"\r\n", b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 600), max_size=4))
def test_quoted_printable_decodes_with_quopri(data, cuts):
    w = wire(split(data, cuts), QP)
    assert quopri.decodestring(unstuff(w).replace(b"\r\n", b"\n")) == normalise(data).replace(b"\r\n", b"\n")
    assert all(len(line) <= 76 for line in unstuff(w).split(b"\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_encoded_words_decode_with_email_header(text):
    words = smtp_duo.phrase(text, True)
    if not text:
        assert words == []
        return
    decoded = b"".join(part for part, _ in email.header.decode_header(b" ".join(words).decode()))
    assert decoded.decode() == text
    assert all(len(w) <= 75 for w in words)


def test_body_types_refused_before_anything_is_sent():
    for bad in (5, None, 3.5, [b"ok", 5], object()):
        with pytest.raises(ValueError):
            smtp_duo.Text(bad, b"plain", bytearray(16))


def test_constructor_positional_order_and_keywords():
    c = smtp_duo.SMTPClient("mail.example.com", None, "u", "p", "me@example.com", "dev.example.com",
                            smtp_duo.AUTH_LOGIN, 12, smtp_duo.TLS_NONE, True)
    assert (c.port, c.username, c.from_address, c.client_domain, c.timeout) == (
        25, "u", "me@example.com", "dev.example.com", 12)
    assert smtp_duo.SMTPClient(server_address="h", tls=smtp_duo.TLS_IMPLICIT, from_address="a@b.c").port == 465
    assert smtp_duo.SMTPClient(server_address="h", tls=smtp_duo.TLS_STARTTLS, from_address="a@b.c").port == 587
    assert smtp_duo.SMTPClient(server_address="[::1]", from_address="a@b.c").server_address == "::1"


def test_status_values_match_the_reference():
    assert (smtp_duo.GREET_REPLY_ERROR, smtp_duo.HELLO_REPLY_ERROR, smtp_duo.MAIL_REPLY_ERROR,
            smtp_duo.RCPT_REPLY_ERROR, smtp_duo.MESSAGE_REPLY_ERROR, smtp_duo.DATA_REPLY_ERROR,
            smtp_duo.AUTH_REPLY_ERROR, smtp_duo.SERVER_ERROR_REPLY) == (
        0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE)
    assert (smtp_duo.AUTH_NONE, smtp_duo.AUTH_LOGIN, smtp_duo.AUTH_PLAIN) == (0xFFFF, 1, 3)
    assert (smtp_duo.PRIORITY_LOW, smtp_duo.PRIORITY_NORMAL, smtp_duo.PRIORITY_HIGH) == (1, 2, 4)


def test_error_hierarchy():
    assert issubclass(smtp_duo.SMTPTimeoutError, smtp_duo.SMTPConnectionError)
    for cls in (smtp_duo.SMTPConnectionError, smtp_duo.SMTPAuthenticationError, smtp_duo.SMTPProtocolError,
                smtp_duo.SMTPRecipientsRefused, smtp_duo.SMTPNotSupportedError):
        assert issubclass(cls, smtp_duo.SMTPError)
    r = smtp_duo.Reply(451, "later", "4.3.0")
    e = smtp_duo.SMTPError("x", smtp_duo.MAIL_REPLY_ERROR, r, "MAIL")
    assert (e.code, e.enhanced, e.text, e.command, e.temporary) == (451, "4.3.0", "later", "MAIL", True)
    assert tuple(r) == (451, "later") and str(r) == "451 4.3.0 later"


# -- quoted-printable against quopri on random data at random chunk and window boundaries ---------

import binascii  # noqa: E402
import random  # noqa: E402

QP_ALPHABETS = (
    bytes(range(256)),  # every octet
    b"\r\n \t",  # nothing but line ends and blanks
    b"\r\n \t\t  \r\n\n\ra=.\x00\xff\x7f",  # blanks and line ends among specials
    b"abc xyz=.\t" + bytes(range(0x80, 0x90)),  # text with 8-bit octets, '=' and dots
)


class QPCollect(Collect):
    dots = False  # BDAT and counting: no stuffed dots, so the output is quoted-printable alone


def qp_data(rnd):
    kind = rnd.randrange(6)
    n = rnd.choice((0, 1, 2, 3, rnd.randrange(80), rnd.randrange(400), rnd.randrange(4000)))
    if kind < len(QP_ALPHABETS):
        alphabet = QP_ALPHABETS[kind]
        return bytes(rnd.choice(alphabet) for _ in range(n))
    if kind == 4:  # long lines: printable runs of 70 to 400 octets, blanks at their ends
        lines = []
        while sum(map(len, lines)) < n:
            line = bytes(rnd.randrange(0x21, 0x7F) for _ in range(rnd.randrange(70, 400)))
            blanks = rnd.choice((b"", b" ", b"\t", b"  \t "))
            lines.append(line + blanks + rnd.choice((b"\r\n", b"\n", b"\r")))
        return b"".join(lines)
    # words, dots at line starts, '=' signs, blanks before the line end, UTF-8 text
    words = (b"a", b"word", b".", b"..", b"=", b"=3D", b"=\r\n", b" ", b"\t", b"\r\n", b"\n",
             "za\u017c\u00f3\u0142\u0107".encode(), b"x" * 75, b"y" * 76, b"z" * 77)
    return b"".join(rnd.choice(words) for _ in range(n // 4))


def qp_check(data, out):
    want = normalise(data)
    # the independent decoder: quopri's own Python code, not binascii's C one
    real = quopri.a2b_qp
    quopri.a2b_qp = None
    try:
        decoded = quopri.decodestring(out)
    finally:
        quopri.a2b_qp = real
    assert decoded == want.replace(b"\r\n", b"\n")
    assert binascii.a2b_qp(out) == want
    assert quopri.decodestring(out) == want
    assert out[-2:] == b"\r\n" or out == b"" == want
    assert b"=_" not in out  # a multipart boundary can never occur in it
    for line in out[:-2].split(b"\r\n") if out else ():
        assert len(line) <= 76, line
        assert line[-1:] not in (b" ", b"\t"), line  # trailing blanks are encoded
        assert all(0x21 <= c <= 0x7E or c in b" \t" for c in line), line
        i = line.find(b"=")
        while 0 <= i < len(line) - 1:  # '=' starts =XX (upper-case hex) or ends the line (a soft break)
            hex2 = line[i + 1 : i + 3]
            assert len(hex2) == 2 and all(c in b"0123456789ABCDEF" for c in hex2), line
            i = line.find(b"=", i + 3)


@pytest.mark.parametrize("seed", range(8))
def test_quoted_printable_against_quopri_at_random_boundaries(seed):
    rnd = random.Random(seed)
    for _ in range(150):
        data = qp_data(rnd)
        chunks = split(data, [rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(12))])
        window = rnd.choice((1, 2, 3, rnd.randrange(1, 80), rnd.randrange(1, 1500)))
        out = QPCollect()
        stream(chunks, QP(out), window)
        qp_check(data, out.value())
        # With dot-stuffing (DATA): the same lines, a dot before each line that starts with one.
        stuffed = Collect()
        stream(chunks, QP(stuffed), window)
        assert unstuff(stuffed.value()) == out.value()
        assert (b"\r\n" + stuffed.value()).find(b"\r\n.\r\n") < 0


def test_quoted_printable_edge_lines():
    # Lines of exactly 75, 76 and 77 octets, a blank in the last column, an '=' at the soft break.
    cases = [b"a" * n + tail for n in (72, 73, 74, 75, 76, 77, 150, 151) for tail in
             (b"", b" ", b"\t", b"=", b"\xff", b" \r\n", b"\t\n", b"=\r", b"\xff\r\n")]
    for data in cases:
        for window in (1, 7, 255):
            out = QPCollect()
            stream([data], QP(out), window)
            qp_check(data, out.value())


# -- RFC 2231 filenames as a mail reader decodes them ---------------------------------------------

import email  # noqa: E402
import email.policy  # noqa: E402
import email.utils  # noqa: E402

import smtp_duo_mime  # noqa: E402
from test_mime_portable import rand_text  # noqa: E402


@pytest.mark.parametrize("policy", [email.policy.compat32, email.policy.default])
def test_attachment_filenames_decode_with_the_email_package(policy):
    rnd = random.Random(2231)
    names = ["report.txt", 'a"b.txt', "x" * 61, "z\u0105b.txt", "\U0001f600" * 30, "\u4e2d" * 100,
             "it's 100%.csv", "a;b=c.txt", "  spaced  name .txt"]
    names += [rand_text(rnd, (5, 20, 60, 200)[i % 4]) for i in range(200)]
    for name in names:
        name = name.replace("/", "_").replace("\\", "_")
        if not name.strip():
            continue
        out = Collect()
        for _ in smtp_duo_mime._Attachment((name, b"x", "image/png"), bytearray(512)).head(out):
            pass
        msg = email.message_from_bytes(out.value() + b"\r\nx\r\n", policy=policy)
        assert msg.get_filename() == name.strip(), out.value()  # get_filename() strips blanks
        value = msg.get_param("name")
        assert email.utils.collapse_rfc2231_value(value) == name, out.value()
