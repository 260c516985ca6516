"""CPython-only unit tests with independent oracles: Hypothesis properties for the body
pipeline, quopri / email for the encoders, and argument validation."""

import email.header
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtp_duo

from test_portable import Collect, normalise, unstuff


def wire(chunks, sink=smtp_duo._Plain):
    out = Collect()
    smtp_duo._Body(list(chunks), bytearray(16)).stream(sink(out), 5)
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
    w = wire(split(data, cuts), smtp_duo._QP)
    assert quopri.decodestring(unstuff(w).replace(b"\r\n", b"\n")) == normalise(data).replace(b"\r\n", b"\n")
    assert all(len(line) <= 76 for line in unstuff(w).split(b"\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_encoded_words_decode_with_email_header(text):
    words = smtp_duo._encoded_words(text.encode())
    if not text:
        assert words == []
        return
    decoded = b"".join(part for part, _ in email.header.decode_header(b" ".join(words).decode()))
    assert decoded.decode() == text
    assert all(len(w) <= 75 for w in words)


def test_body_types_refused_before_anything_is_sent():
    for bad in (5, None, 3.5, [b"ok", 5], object()):
        with pytest.raises(ValueError):
            smtp_duo._Body(bad, bytearray(16))


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
