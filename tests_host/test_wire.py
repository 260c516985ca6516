"""What the client puts on the wire and how it reacts, against the scripted server.

Rows of the reference's scenario table (netx-duo-behaviour.md section 8) are marked "row N";
where the reference has a defect (section 7, "Dn") the test asserts our fixed behaviour.
Every test runs with the client on CPython and on the MicroPython unix port.
"""

import base64
import re
import time

import pytest
from conftest import client_config
from fakeserver import CLOSE, SILENT, Segments

import smtp_duo

EHLO_AUTH = b"250-fake.test\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 8BITMIME\r\n"
EHLO_PLAIN = b"250 fake.test\r\n"
AUTH_CFG = dict(username="alice", password="secret", allow_insecure_auth=True)


def lines(srv):
    return [c.decode("utf-8", "replace").rstrip("\r\n") for c in srv.commands]


def verbs(srv):
    return [re.split(r"[ :]", c, maxsplit=1)[0].upper() for c in lines(srv)]


def send(runner, srv, mail=None, **cfg):
    m = {"recipient_address": "rcpt@example.com", "subject": "alert", "mail_body": {"str": "x"}}
    m.update(mail or {})
    result = runner.send(client_config(srv.port, **cfg), **m)
    srv.wait_done(5)
    return result


def error(result, kind=None, status=None):
    assert "error" in result, result
    e = result["error"]
    if kind:
        assert e["type"] == kind, e
    if status is not None:
        assert e["status"] == status, e
    return e


# -- greeting (rows 1, 2, 27) ----------------------------------------------------------------


def test_greeting_554_sends_quit_and_fails_permanently(runner, fake):
    srv = fake({"greeting": b"554 5.3.2 go away\r\n"})
    e = error(send(runner, srv), "SMTPError", smtp_duo.GREET_REPLY_ERROR)
    assert (e["code"], e["temporary"]) == (554, False)
    assert lines(srv) == ["QUIT"]


def test_greeting_421_is_temporary_and_no_quit(runner, fake):
    srv = fake({"greeting": b"421 4.3.2 busy\r\n"})
    e = error(send(runner, srv), "SMTPError", smtp_duo.GREET_REPLY_ERROR)
    assert (e["code"], e["temporary"]) == (421, True)
    assert lines(srv) == []


def test_close_before_greeting_is_a_connection_error(runner, fake):
    srv = fake({"greeting": CLOSE})
    e = error(send(runner, srv), "SMTPConnectionError", smtp_duo.NOT_CONNECTED)
    assert e["temporary"] is True


def test_multiline_greeting_in_two_segments_is_read_whole_first(runner, fake):
    early = []

    def greeting(conn, line):
        conn.sendall(b"220-first line\r\n")
        conn.settimeout(0.4)
        try:
            early.append(conn.recv(100))  # the client must not speak yet (D6, row 27)
        except OSError:
            pass
        conn.settimeout(30)
        return b"220 second line\r\n"

    srv = fake({"greeting": greeting})
    assert "ok" in send(runner, srv)
    assert early == []
    assert verbs(srv)[:2] == ["EHLO", "MAIL"]


# -- EHLO / HELO (rows 3, 26; D1) ------------------------------------------------------------


@pytest.mark.parametrize("code", [b"500", b"501", b"502", b"550"])
def test_ehlo_refused_falls_back_to_helo_without_extensions(runner, fake, code):
    srv = fake({"EHLO": code + b" what\r\n"})
    assert "ok" in send(runner, srv, {"mail_body": {"str": "caf\u00e9"}})
    assert verbs(srv) == ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert lines(srv)[2] == "MAIL FROM:<sensor@example.com>"  # no SIZE/BODY after HELO
    assert b"Content-Transfer-Encoding: quoted-printable" in srv.messages[0]


def test_ehlo_421_does_not_fall_back(runner, fake):
    srv = fake({"EHLO": b"421 4.7.0 closing\r\n"})
    e = error(send(runner, srv), "SMTPError", smtp_duo.HELLO_REPLY_ERROR)
    assert e["temporary"] is True
    assert verbs(srv) == ["EHLO"]


def test_ehlo_odd_code_is_an_error(runner, fake):
    srv = fake({"EHLO": b"251 odd\r\n"})
    error(send(runner, srv), "SMTPError", smtp_duo.HELLO_REPLY_ERROR)
    assert verbs(srv) == ["EHLO", "QUIT"]


def test_helo_fallback_refused_when_authentication_is_needed(runner, fake):
    srv = fake({"EHLO": b"502 no\r\n"})
    error(send(runner, srv, **AUTH_CFG), "SMTPNotSupportedError", smtp_duo.AUTHENTICATION_ERROR)
    assert verbs(srv) == ["EHLO", "QUIT"]


def test_close_after_ehlo_reply(runner, fake):
    srv = fake({"MAIL": CLOSE})
    e = error(send(runner, srv), "SMTPConnectionError")
    assert e["temporary"] is True


def test_ehlo_argument_default_is_an_address_literal_and_client_domain_is_used(runner, fake):
    srv = fake()
    send(runner, srv)
    assert re.fullmatch(r"EHLO \[(IPv6:)?[0-9a-fA-F.:]+\]", lines(srv)[0])
    srv = fake()
    send(runner, srv, client_domain="sensor-7.example.com")
    assert lines(srv)[0] == "EHLO sensor-7.example.com"


def test_ehlo_keywords_case_insensitive_and_old_auth_form(runner, fake):
    ehlo = b"250-fake\r\n250-auth=plain\r\n250-size 300\r\n250 8bitmime\r\n"
    srv = fake({"EHLO": ehlo})
    e = error(send(runner, srv, {"mail_body": {"str": "x" * 400}}, **AUTH_CFG), "SMTPError",
              smtp_duo.OVERSIZE_MAIL_DATA)
    assert e["code"] is None and e["temporary"] is False
    assert lines(srv)[1].startswith("AUTH PLAIN ")  # AUTH= form understood
    assert "MAIL" not in verbs(srv)  # SIZE 300 understood: refused before MAIL


# -- AUTH (rows 4-16; D12-D16) -----------------------------------------------------------------


def test_auth_plain_initial_response_with_empty_authzid(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH})
    assert "ok" in send(runner, srv, username="user", password="pass",
                        authentication_type="AUTH_PLAIN", allow_insecure_auth=True)
    assert lines(srv)[1] == "AUTH PLAIN AHVzZXIAcGFzcw=="  # \0user\0pass (D16)
    assert verbs(srv)[2] == "MAIL"


def test_auth_login_exchange(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH,
                "AUTH": [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 ok\r\n"]})
    assert "ok" in send(runner, srv, username="user", password="pass",
                        authentication_type="AUTH_LOGIN", allow_insecure_auth=True)
    assert lines(srv)[1:4] == ["AUTH LOGIN", "dXNlcg==", "cGFzcw=="]


def test_auth_login_any_base64_prompt_is_answered(runner, fake):
    # The reference insists on "Username:"; aiosmtpd says "User Name\0", others say "foo:".
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 Zm9vOg==\r\n", b"334 \r\n", b"235 ok\r\n"]})
    assert "ok" in send(runner, srv, username="user", password="pass",
                        authentication_type="AUTH_LOGIN", allow_insecure_auth=True)


def test_auth_cram_md5_rfc2195_vector(runner, fake):
    challenge = b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 " + challenge + b"\r\n", b"235 ok\r\n"]})
    assert "ok" in send(runner, srv, username="tim", password="tanstaaftanstaaf",
                        authentication_type="AUTH_CRAM_MD5", allow_insecure_auth=True)
    assert lines(srv)[1:3] == ["AUTH CRAM-MD5", "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"]


def test_auth_auto_picks_the_strongest_offered(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 PDE+\r\n", b"235 ok\r\n"]})
    assert "ok" in send(runner, srv, **AUTH_CFG)
    assert lines(srv)[1] == "AUTH CRAM-MD5"
    srv = fake({"EHLO": b"250-x\r\n250 AUTH LOGIN PLAIN\r\n"})
    assert "ok" in send(runner, srv, **AUTH_CFG)
    assert lines(srv)[1].startswith("AUTH PLAIN ")


def test_credentials_but_no_auth_offered_fails_before_mail(runner, fake):
    srv = fake({"EHLO": EHLO_PLAIN})  # row 4 / D12 / A11: never fall back to sending unauthenticated
    e = error(send(runner, srv, **AUTH_CFG), "SMTPNotSupportedError", smtp_duo.AUTHENTICATION_ERROR)
    assert e["temporary"] is False
    assert verbs(srv) == ["EHLO", "QUIT"]


@pytest.mark.parametrize("auth", [None, "AUTH_NONE"])
def test_no_credentials_skips_auth_even_if_offered(runner, fake, auth):
    srv = fake({"EHLO": EHLO_AUTH})  # rows 5, 6
    cfg = {"authentication_type": auth} if auth else {}
    assert "ok" in send(runner, srv, **cfg)
    assert verbs(srv) == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("wanted,offered", [("AUTH_LOGIN", b"PLAIN"), ("AUTH_PLAIN", b"LOGIN"),
                                            ("AUTH_CRAM_MD5", b"PLAIN LOGIN")])
def test_explicit_mechanism_not_offered_is_a_clear_error(runner, fake, wanted, offered):
    srv = fake({"EHLO": b"250-x\r\n250 AUTH " + offered + b"\r\n"})  # rows 7, 8 (D15)
    e = error(send(runner, srv, authentication_type=wanted, **AUTH_CFG), "SMTPNotSupportedError")
    assert "does not offer AUTH" in e["message"]
    assert verbs(srv) == ["EHLO", "QUIT"]


@pytest.mark.parametrize("reply", [b"535 5.7.8 bad credentials\r\n", b"535-bad\r\n535 credentials\r\n",
                                   b"535\r\n"])
def test_auth_rejected(runner, fake, reply):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": reply})  # row 10
    e = error(send(runner, srv, authentication_type="AUTH_PLAIN", **AUTH_CFG),
              "SMTPAuthenticationError", smtp_duo.AUTH_REPLY_ERROR)
    assert (e["code"], e["temporary"], e["command"]) == (535, False, "AUTH")
    assert verbs(srv)[-1] == "QUIT" and "MAIL" not in verbs(srv)


def test_auth_rejected_after_login_password(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n",
                                            b"535 5.7.8 no\r\n"]})  # row 11
    error(send(runner, srv, authentication_type="AUTH_LOGIN", **AUTH_CFG), "SMTPAuthenticationError")


def test_auth_temporary_failure(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": b"454 4.7.0 try later\r\n"})
    e = error(send(runner, srv, **AUTH_CFG), "SMTPAuthenticationError")
    assert e["temporary"] is True


@pytest.mark.parametrize("reply", [b"250 ok\r\n", b"221 bye\r\n", b"354 go\r\n"])
def test_auth_unexpected_codes_are_failures_not_retries(runner, fake, reply):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": reply})  # rows 13, 14 (D14)
    error(send(runner, srv, authentication_type="AUTH_PLAIN", **AUTH_CFG), "SMTPAuthenticationError")
    assert verbs(srv).count("AUTH") == 1


def test_auth_undecodable_challenge_is_cancelled(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 !!!notb64\r\n", b"501 5.7.0 aborted\r\n"]})
    error(send(runner, srv, authentication_type="AUTH_LOGIN", **AUTH_CFG), "SMTPAuthenticationError",
          smtp_duo.INVALID_SERVER_CHALLENGE)
    assert lines(srv)[1:3] == ["AUTH LOGIN", "*"]


def test_auth_extra_challenge_is_cancelled_credentials_sent_once(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 \r\n", b"501 aborted\r\n"]})  # row 16
    error(send(runner, srv, authentication_type="AUTH_PLAIN", **AUTH_CFG), "SMTPAuthenticationError")
    assert lines(srv)[1:3] == ["AUTH PLAIN AGFsaWNlAHNlY3JldA==", "*"]


def test_auth_challenge_without_line_end_times_out(runner, fake):
    srv = fake({"EHLO": EHLO_AUTH, "AUTH": [b"334 x"]})  # row 15: no CRLF, then silence
    t = time.monotonic()
    e = error(send(runner, srv, authentication_type="AUTH_LOGIN", timeout=1, **AUTH_CFG),
              "SMTPTimeoutError", smtp_duo.NO_PACKET)
    assert e["temporary"] is True and time.monotonic() - t < 6


def test_xoauth2_initial_response_and_long_token_two_step(runner, fake):
    ehlo = b"250-x\r\n250 AUTH XOAUTH2\r\n"
    srv = fake({"EHLO": ehlo})
    assert "ok" in send(runner, srv, username="someuser@example.com",
                        password="ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
                        authentication_type="AUTH_XOAUTH2", allow_insecure_auth=True)
    assert lines(srv)[1] == ("AUTH XOAUTH2 dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5Ln"
                             "ZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==")
    srv = fake({"EHLO": ehlo, "AUTH": [b"334 \r\n", b"235 ok\r\n"]})
    assert "ok" in send(runner, srv, username="u@example.com", password="t" * 1500,
                        authentication_type="AUTH_XOAUTH2", allow_insecure_auth=True)
    assert lines(srv)[1] == "AUTH XOAUTH2"  # RFC 4954: IR would exceed 512 octets
    assert len(lines(srv)[2]) > 2000


def test_xoauth2_error_challenge_answered_with_empty_line(runner, fake):
    detail = b'{"status":"401","schemes":"bearer"}'
    srv = fake({"EHLO": b"250-x\r\n250 AUTH XOAUTH2\r\n",
                "AUTH": [b"334 " + base64.b64encode(detail) + b"\r\n", b"535 5.7.8 not accepted\r\n"]})
    e = error(send(runner, srv, username="u@example.com", password="tok",
                   authentication_type="AUTH_XOAUTH2", allow_insecure_auth=True),
              "SMTPAuthenticationError")
    assert lines(srv)[2] == ""
    assert '"status":"401"' in e["text"]


# -- replies (D5, D6; checklist C1-C5) -----------------------------------------------------------


@pytest.mark.parametrize("reply", [b"250\r\n", b"250 \r\n", b"250-a\r\n250-b\r\n250 c\r\n", b"299 odd\r\n",
                                   b"250 ok\n"])
def test_mail_replies_accepted(runner, fake, reply):
    srv = fake({"MAIL": reply})
    assert "ok" in send(runner, srv)
    assert verbs(srv)[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]


@pytest.mark.parametrize("reply", [b"hello 250 ok\r\n", b"2500 ok\r\n", b"199 x\r\n", b"650 x\r\n",
                                   b"25x ok\r\n", b" 25 x\r\n", b"+50 x\r\n", b"250x\r\n",
                                   b"250-a\r\n251 b\r\n"])
def test_malformed_replies_are_protocol_errors_and_close(runner, fake, reply):
    srv = fake({"MAIL": reply})  # rows 17, 18
    e = error(send(runner, srv), "SMTPProtocolError")
    assert e["temporary"] is True
    assert verbs(srv) == ["EHLO", "MAIL"]  # desynchronised: closed without another command


def test_reply_split_across_segments_is_read_whole(runner, fake):
    srv = fake({"MAIL": Segments(b"250-o", b"k\r\n25", b"0 ok\r\n")})  # row 19 (D6)
    assert "ok" in send(runner, srv)
    assert verbs(srv)[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]


def test_long_reply_line_accepted_up_to_the_cap(runner, fake):
    srv = fake({"MAIL": b"250 " + b"x" * 600 + b"\r\n"})
    assert "ok" in send(runner, srv)


def test_reply_line_of_a_mebibyte_is_refused_with_bounded_memory(runner, fake):
    srv = fake({"MAIL": b"250 " + b"x" * (1 << 20)})
    error(send(runner, srv), "SMTPProtocolError", smtp_duo.OVERSIZE_SERVER_REPLY)


def test_endless_multiline_reply_is_refused(runner, fake):
    srv = fake({"EHLO": b"250-x\r\n" * 5000 + b"250 x\r\n"})
    error(send(runner, srv), "SMTPProtocolError", smtp_duo.OVERSIZE_SERVER_REPLY)


def test_enhanced_status_codes_only_when_advertised(runner, fake):
    ehlo = b"250-fake\r\n250 ENHANCEDSTATUSCODES\r\n"
    srv = fake({"EHLO": ehlo, "RCPT": b"550 5.1.1 User unknown\r\n"})
    e = error(send(runner, srv), "SMTPRecipientsRefused")
    assert (e["code"], e["enhanced"], e["text"]) == (550, "5.1.1", "User unknown")
    srv = fake({"RCPT": b"550 5.1.1 User unknown\r\n"})
    e = error(send(runner, srv), "SMTPRecipientsRefused")
    assert (e["enhanced"], e["text"]) == (None, "5.1.1 User unknown")


# -- MAIL, RCPT, DATA (rows 17, 20-25; D9, D10, D11, D17) --------------------------------------


def test_envelope_addresses_are_bare_without_trailing_space(runner, fake):
    srv = fake()
    assert "ok" in send(runner, srv, {"recipient_address": ["<a@example.com>", "Bob <bob@example.com>"]},
                        from_address="<me@example.com>")
    assert lines(srv)[1:4] == ["MAIL FROM:<me@example.com> SIZE=%s" % lines(srv)[1].split("SIZE=")[1],
                               "RCPT TO:<a@example.com>", "RCPT TO:<bob@example.com>"]
    assert not any(c.endswith(" ") for c in lines(srv))


def test_sender_refused(runner, fake):
    srv = fake({"MAIL": b"550 5.7.1 no\r\n"})
    e = error(send(runner, srv), "SMTPError", smtp_duo.MAIL_REPLY_ERROR)
    assert (e["code"], e["command"], e["temporary"]) == (550, "MAIL", False)
    assert verbs(srv) == ["EHLO", "MAIL", "QUIT"]


def test_mail_answered_530_means_authentication_required(runner, fake):
    srv = fake({"MAIL": b"530 5.7.0 Authentication required\r\n"})
    error(send(runner, srv), "SMTPAuthenticationError", smtp_duo.MAIL_REPLY_ERROR)
    assert "DATA" not in verbs(srv)


@pytest.mark.parametrize("code", [b"250", b"251", b"252"])
def test_rcpt_2xx_accepts(runner, fake, code):
    srv = fake({"RCPT": code + b" ok\r\n"})  # row 20 (D17)
    assert "ok" in send(runner, srv)


def test_partial_refusal_reported_in_reply(runner, fake):
    srv = fake({"RCPT": [b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"251 forwarded\r\n"]})
    r = send(runner, srv, {"recipient_address": ["a@x.org", "b@x.org"], "cc": "c@x.org"})
    assert r["ok"]["refused"] == {"b@x.org": [550, "5.1.1 no such user"]}
    assert verbs(srv) == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]


def test_all_recipients_refused_sends_no_data(runner, fake):
    srv = fake({"RCPT": [b"550 no\r\n", b"450 4.2.0 later\r\n"]})
    e = error(send(runner, srv, {"recipient_address": ["a@x.org", "b@x.org"]}), "SMTPRecipientsRefused",
              smtp_duo.RCPT_REPLY_ERROR)
    assert e["recipients"] == {"a@x.org": [550, "no"], "b@x.org": [450, "4.2.0 later"]}
    assert e["temporary"] is False  # one refusal is permanent
    assert "DATA" not in verbs(srv) and verbs(srv)[-1] == "QUIT"


def test_rcpt_421_closes_and_is_temporary(runner, fake):
    srv = fake({"RCPT": b"421 4.3.0 shutting down\r\n"})
    e = error(send(runner, srv, {"recipient_address": ["a@x.org", "b@x.org"]}), "SMTPRecipientsRefused")
    assert e["temporary"] is True
    assert verbs(srv) == ["EHLO", "MAIL", "RCPT"]  # nothing after a 421


@pytest.mark.parametrize("reply", [b"554 5.5.1 no valid recipients\r\n", b"250 ok\r\n"])
def test_data_not_354_sends_no_body(runner, fake, reply):
    srv = fake({"DATA": reply})  # row 21 (C17)
    error(send(runner, srv), "SMTPError", smtp_duo.DATA_REPLY_ERROR)
    assert verbs(srv) == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert srv.messages == []


@pytest.mark.parametrize("reply,temporary", [(b"552 5.3.4 too big\r\n", False), (b"451 4.3.0 later\r\n", True)])
def test_final_reply_failure(runner, fake, reply, temporary):
    srv = fake({"DOT": reply})  # row 22
    e = error(send(runner, srv), "SMTPError", smtp_duo.MESSAGE_REPLY_ERROR)
    assert e["temporary"] is temporary


def test_final_reply_returned_with_queue_id(runner, fake):
    srv = fake({"DOT": b"250 2.0.0 Ok: queued as 4XyZ\r\n"})
    r = send(runner, srv)
    assert r["ok"]["code"] == 250 and "queued as 4XyZ" in r["ok"]["text"]


@pytest.mark.parametrize("quit", [b"500 huh\r\n", CLOSE, SILENT])
def test_success_once_the_message_is_accepted_whatever_quit_does(runner, fake, quit):
    srv = fake({"QUIT": quit})  # rows 23, 24 (D11)
    t = time.monotonic()
    assert "ok" in send(runner, srv, timeout=2)
    assert time.monotonic() - t < 8


def test_silent_server_times_out_and_closes(runner, fake):
    srv = fake({"MAIL": SILENT})  # row 25
    t = time.monotonic()
    e = error(send(runner, srv, timeout=1), "SMTPTimeoutError", smtp_duo.NO_PACKET)
    assert e["command"] == "MAIL" and e["temporary"] is True
    assert time.monotonic() - t < 6
    assert srv.wait_closed(5)
    assert verbs(srv) == ["EHLO", "MAIL"]  # no QUIT on a desynchronised connection


def test_connection_reset_during_data(runner, fake, tmp_path):
    srv = fake({"DATA": lambda conn, line: (conn.sendall(b"354 go\r\n"), CLOSE)[1]})  # row 31 (D7)
    big = tmp_path / "big.txt"
    big.write_bytes(b"line\n" * 400000)
    e = error(send(runner, srv, {"mail_body": {"file": str(big)}}), "SMTPConnectionError")
    assert e["temporary"] is True


def test_refused_connection(runner, fake):
    srv = fake()
    port = srv.port
    srv.stop()
    r = runner.send(client_config(port, timeout=2), recipient_address="a@x.org", subject="s",
                    mail_body={"str": "x"})
    e = error(r, "SMTPConnectionError", smtp_duo.NOT_CONNECTED)
    assert e["temporary"] is True and "ECONNREFUSED" in e["message"]


# -- the message on the wire (D2-D4, D22; smuggling) ----------------------------------------------

SMUGGLING = [b"A\n.\nMAIL FROM:<evil@x>\n", b"A\n.\r\nX", b"A\r.\r\nX", b"A\r\n.\rX", b"A\r\r\n.\r\nX",
             b"A\r\n.\nX", b".\r\n", b"..\r\n.\r\n", b"\r\n.\r\n", b"x\r\n", b"x", b""]


@pytest.mark.parametrize("body", SMUGGLING)
def test_only_one_end_of_data_and_no_bare_line_breaks(runner, fake, body):
    srv = fake()
    assert "ok" in send(runner, srv, {"mail_body": {"hex": body.hex()}})
    data = srv.received[srv.received.index(b"\r\n\r\n"):]  # from the end of the headers
    assert data.count(b"\r\n.\r\n") == 1 and data.endswith(b"\r\n.\r\nQUIT\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", srv.received) is None


@pytest.mark.parametrize("body,wire", [
    (b"x", b"x\r\n"), (b"x\r\n", b"x\r\n"), (b"a\nb\rc", b"a\r\nb\r\nc\r\n"),
    (b".\n..\n.x\n", b"..\r\n...\r\n..x\r\n"), (b"a\r\n\r\n", b"a\r\n\r\n"), (b"", b""),
])
def test_body_normalised_stuffed_and_terminated_once(runner, fake, body, wire):
    srv = fake()  # C6, C7, C8 (D3, D4)
    send(runner, srv, {"mail_body": {"hex": body.hex()}})
    assert srv.messages[0].split(b"\r\n\r\n", 1)[1] == wire


def test_headers_written(runner, fake):
    srv = fake()
    send(runner, srv, {"recipient_address": ["a@x.org", "Bob <b@x.org>"], "cc": ["c@x.org"],
                       "bcc": ["secret@x.org"], "priority": "PRIORITY_LOW", "subject": "Temp high"},
         from_address="Sensor 7 <s7@example.com>")
    head = srv.messages[0].split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    names = [h.split(":", 1)[0] for h in head.split("\n")]
    assert names == ["Date", "From", "To", "Cc", "Subject", "Message-ID", "MIME-Version", "Content-Type",
                     "Content-Transfer-Encoding", "X-Priority", "Importance"]
    assert "From: Sensor 7 <s7@example.com>" in head and "To: a@x.org, Bob <b@x.org>" in head
    assert "X-Priority: 5 (Lowest)\nImportance: low" in head
    assert "secret" not in head  # Bcc gets a RCPT, never a header (M7)
    assert "RCPT TO:<secret@x.org>" in lines(srv)
    assert re.search(r"^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                     r"|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$", head, re.M)
    assert re.search(r"^Message-ID: <[^<>@\s]+@example\.com>$", head, re.M)


def test_eight_bit_body_with_and_without_8bitmime(runner, fake):
    srv = fake({"EHLO": b"250-fake\r\n250 8BITMIME\r\n"})
    send(runner, srv, {"mail_body": {"str": "Zażółć gęślą jaźń"}})
    assert lines(srv)[1].endswith(" BODY=8BITMIME")
    assert b"Content-Transfer-Encoding: 8bit" in srv.messages[0]
    srv = fake({"EHLO": b"250 fake\r\n"})
    send(runner, srv, {"mail_body": {"str": "Zażółć gęślą jaźń"}})
    assert "BODY" not in lines(srv)[1]
    assert b"Content-Transfer-Encoding: quoted-printable" in srv.messages[0]
    assert max(srv.received) < 0x80


def test_overlong_line_is_encoded_never_sent_over_998(runner, fake):
    srv = fake()
    send(runner, srv, {"mail_body": {"str": "y" * 5000 + "\nshort\n"}})
    assert b"quoted-printable" in srv.messages[0]
    assert max(len(x) for x in srv.received.split(b"\r\n")) <= 998


def test_size_declared_matches_what_is_sent(runner, fake):
    srv = fake()
    send(runner, srv, {"mail_body": {"str": "a\nb\n.c"}})
    size = int(lines(srv)[1].split("SIZE=")[1])
    msg = srv.messages[0]
    assert size == len(msg.replace(b"\r\n..", b"\r\n."))  # RFC 1870: without stuffing dots


def test_smtputf8_address_needs_the_extension(runner, fake):
    srv = fake()
    e = error(send(runner, srv, {"recipient_address": "jürgen@example.de"}), "SMTPNotSupportedError")
    assert "SMTPUTF8" in e["message"] and "MAIL" not in verbs(srv)
    srv = fake({"EHLO": b"250-fake\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"})
    assert "ok" in send(runner, srv, {"recipient_address": "jürgen@example.de"})
    assert lines(srv)[1].endswith("BODY=8BITMIME SMTPUTF8")
    assert "RCPT TO:<jürgen@example.de>" in lines(srv)


# -- sessions (C18) ---------------------------------------------------------------------------------


def test_session_sends_several_mails_and_rsets_after_a_failed_one(runner, fake):
    srv = fake({"RCPT": [b"250 ok\r\n", b"550 no\r\n", b"250 ok\r\n"]})
    mail = {"recipient_address": "a@x.org", "subject": "s", "mail_body": {"str": "b"}}
    report = runner.run(client_config(srv.port), [mail, mail, mail], session=True)
    srv.wait_done(5)
    kinds = [next(iter(r)) for r in report["results"]]
    assert kinds == ["ok", "error", "ok"]
    assert verbs(srv) == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA",
                          "QUIT"]
    assert srv.accepted == 1


def test_session_reconnects_after_the_server_dropped_it(runner, fake):
    srv = fake({"DOT": [b"250 ok\r\n", b"421 4.4.2 bye\r\n", b"250 ok\r\n"]}, connections=2)
    mail = {"recipient_address": "a@x.org", "subject": "s", "mail_body": {"str": "b"}}
    report = runner.run(client_config(srv.port), [mail, mail, mail], session=True)
    kinds = [next(iter(r)) for r in report["results"]]
    assert kinds == ["ok", "error", "ok"]
    assert report["results"][1]["error"]["temporary"] is True
    assert srv.accepted == 2


# -- bad input: ValueError, nothing sent (D8) -----------------------------------------------------

INJECTIONS = [
    {"recipient_address": "a@x.org\r\nRCPT TO:<evil@x.com>"},
    {"recipient_address": "a@x.org>\nDATA"},
    {"cc": "c@x.org\n"}, {"bcc": ["b@x.org\x00"]},
    {"subject": "Hi\r\nBcc: evil@x.com"}, {"subject": "nul\x00"}, {"subject": "del\x7f"},
    {"recipient_address": "a@x.org SIZE=1"}, {"recipient_address": "no-at-sign"},
    {"recipient_address": "a" * 65 + "@x.org"}, {"recipient_address": []}, {"priority": 3},
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_bad_mail_arguments_raise_valueerror_before_connecting(runner, fake, bad):
    srv = fake()
    mail = {"recipient_address": "rcpt@example.com", "subject": "s", "mail_body": {"str": "x"}}
    mail.update(bad)
    r = runner.send(client_config(srv.port), **mail)
    error(r, "ValueError")
    time.sleep(0.1)
    assert srv.accepted == 0


@pytest.mark.parametrize("bad", [
    {"from_address": "me@x.org\r\nRCPT TO:<e@x>"}, {"client_domain": "x\nMAIL"}, {"client_domain": "a b"},
    {"username": "u\r\n", "password": "p", "allow_insecure_auth": True},
    {"username": "u", "password": "p\n", "allow_insecure_auth": True},
    {"username": "u", "password": "p"},  # no TLS and no allow_insecure_auth
    {"server_address": "127.0.0.1\r\nEHLO x"}, {"server_address": ""}, {"debug": "yes"},
    {"authentication_type": 7}, {"tls": 9}, {"port": 70000}, {"timeout": 0},
    {"from_address": None}, {"username": "u"},
])
def test_bad_client_arguments_raise_valueerror(runner, fake, bad):
    srv = fake()
    cfg = client_config(srv.port)
    cfg.update(bad)
    r = runner.run(cfg, [])
    assert r["error"]["type"] == "ValueError", r
    assert srv.accepted == 0


def test_session_rset_refused_closes_and_next_mail_reconnects(runner, fake):
    srv = fake({"RCPT": [b"550 no\r\n", b"250 ok\r\n"], "RSET": b"500 what\r\n"}, connections=2)
    mail = {"recipient_address": "a@x.org", "subject": "s", "mail_body": {"str": "b"}}
    report = runner.run(client_config(srv.port), [mail, mail, mail], session=True)
    results = [r.get("ok", r.get("error")) for r in report["results"]]
    assert [r["code"] for r in results] == [550, 500, 250]
    assert report["results"][1]["error"]["status"] == smtp_duo.SERVER_ERROR_CODE_RECEIVED
    assert report["results"][1]["error"]["temporary"] is True
    assert srv.accepted == 2


def test_final_reply_251_is_success(runner, fake):
    srv = fake({"DOT": b"251 2.1.5 forwarded\r\n"})  # row 22: any 2xx completes the mail
    assert send(runner, srv)["ok"]["code"] == 251


def test_subject_of_513_characters_is_folded_not_refused(runner, fake):
    subject = " ".join("w%03d" % i for i in range(103))[:513]  # row 28
    assert len(subject) == 513
    srv = fake()
    assert "ok" in send(runner, srv, {"subject": subject})
    head = srv.messages[0].split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 76 for line in head.split(b"\r\n"))
    unfolded = head.replace(b"\r\n ", b" ").decode()
    assert "Subject: " + subject + "\r\n" in unfolded


def test_long_credentials_have_no_arbitrary_limit(runner, fake):
    user, password = "u" * 41, "p" * 21  # row 30: the reference stops at 40 / 20 characters
    srv = fake({"EHLO": EHLO_AUTH})
    assert "ok" in send(runner, srv, username=user, password=password, authentication_type="AUTH_PLAIN",
                        allow_insecure_auth=True)
    assert base64.b64decode(lines(srv)[1].split()[2]) == b"\0" + user.encode() + b"\0" + password.encode()
