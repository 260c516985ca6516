"""TLS and security: STARTTLS and implicit TLS with verified certificates, and the attacks.

The scripted server speaks TLS with the run's test PKI (conftest.PKI) and records what the
client sent before TLS started (`plaintext`), so each attack test checks that no credential
and no mail crossed the wire where none may. aiosmtpd with STARTTLS and implicit TLS gives
byte-exact delivery. Every test runs with the client on CPython and on the MicroPython unix
port (its `tls` module, the CA given as DER, as on a board).
"""

import base64
import re
import ssl
import time

import pytest
from conftest import USERS, client_config, delivered

import smtp_duo

EHLO_TLS = b"250-fake.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
EHLO_IN_TLS = b"250-fake.test\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE 10000\r\n250 8BITMIME\r\n"
MAIL = {"recipient_address": "bob@example.org", "subject": "alert", "mail_body": {"str": "x" * 100}}


def verbs(data):
    return [re.split(rb"[ :\r\n]", line, maxsplit=1)[0].upper().decode()
            for line in data.split(b"\r\n") if line and not line.startswith(b"Date")][:12]


def tls_config(port, pki, mode="TLS_STARTTLS", **kw):
    cfg = client_config(port, tls=mode, cadata={"file": str(pki.ca_der)}, server_hostname="localhost",
                        timeout=5)
    cfg.update(kw)
    return cfg


def creds(**kw):
    d = dict(username="alice", password=USERS["alice"])
    d.update(kw)
    return d


def error(result, kind="SMTPTLSError"):
    assert "error" in result, result
    assert result["error"]["type"] == kind, result["error"]
    return result["error"]


def secrets_absent(data):
    for secret in (USERS["alice"].encode(), base64.b64encode(b"\0alice\0" + USERS["alice"].encode()),
                   base64.b64encode(USERS["alice"].encode()), b"AUTH", b"MAIL FROM"):
        assert secret not in data, secret


# -- STARTTLS done right --------------------------------------------------------------------------


def test_starttls_verified_then_auth_and_mail_inside_tls(runner, fake, pki):
    srv = fake({"EHLO": [EHLO_TLS, EHLO_IN_TLS]}, tls_context=pki.server_context())
    r = runner.send(tls_config(srv.port, pki, **creds()), **MAIL)
    assert "ok" in r, r
    srv.wait_done(5)
    assert srv.plaintext.startswith(b"EHLO ") and srv.plaintext.endswith(b"\r\nSTARTTLS\r\n")
    assert verbs(srv.plaintext) == ["EHLO", "STARTTLS"]  # STARTTLS is the last thing before TLS
    secrets_absent(srv.plaintext)
    inside = srv.received[srv.tls_at:]
    assert verbs(inside)[:3] == ["EHLO", "AUTH", "MAIL"]  # EHLO again, first thing inside TLS
    assert r["report"]["tls_verified"] is True


def test_knowledge_from_before_tls_is_dropped(runner, fake, pki):
    # Before TLS the server claims SIZE 10 and no 8BITMIME; only the in-TLS EHLO counts.
    srv = fake({"EHLO": [b"250-fake\r\n250-STARTTLS\r\n250 SIZE 10\r\n", EHLO_IN_TLS]},
               tls_context=pki.server_context())
    r = runner.send(tls_config(srv.port, pki), **dict(MAIL, mail_body={"str": "Grüße " * 20}))
    assert "ok" in r, r
    assert b"BODY=8BITMIME" in srv.received[srv.tls_at:]


def test_implicit_tls_verified(runner, fake, pki):
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=pki.server_context(), implicit=True)
    r = runner.send(tls_config(srv.port, pki, "TLS_IMPLICIT", **creds()), **MAIL)
    assert "ok" in r, r
    assert srv.tls_at == 0  # not a byte in clear
    assert verbs(srv.received)[:3] == ["EHLO", "AUTH", "MAIL"]


def test_pem_cadata_where_the_runtime_reads_pem(runner, fake, pki):
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=pki.server_context(), implicit=True)
    r = runner.send(tls_config(srv.port, pki, "TLS_IMPLICIT", cadata={"file": str(pki.ca_pem)}), **MAIL)
    assert "ok" in r, r


def test_unverified_tls_connects_and_says_so(runner, fake, pki):
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=pki.server_context("evil"), implicit=True)
    cfg = client_config(srv.port, tls="TLS_IMPLICIT", timeout=5, debug=True)
    r = runner.send(cfg, **MAIL)
    assert "ok" in r, r
    assert r["report"]["tls_verified"] is False
    assert any("not authenticated" in line for line in r["report"]["transcript"])


# -- attacks on STARTTLS ----------------------------------------------------------------------------


def test_starttls_not_offered_sends_nothing_more(runner, fake, pki):
    srv = fake({"EHLO": b"250-fake\r\n250 AUTH PLAIN\r\n"}, tls_context=pki.server_context())
    e = error(runner.send(tls_config(srv.port, pki, **creds()), **MAIL))
    assert e["temporary"] is False and "STARTTLS" in e["message"]
    srv.wait_done(5)
    assert verbs(srv.received) == ["EHLO", "QUIT"]
    secrets_absent(srv.received)


def test_starttls_answered_454(runner, fake, pki):
    srv = fake({"EHLO": EHLO_TLS, "STARTTLS": b"454 4.7.0 TLS not available\r\n"},
               tls_context=pki.server_context())
    e = error(runner.send(tls_config(srv.port, pki, **creds()), **MAIL))
    assert (e["code"], e["temporary"]) == (454, True)
    srv.wait_done(5)
    assert verbs(srv.received) == ["EHLO", "STARTTLS", "QUIT"]
    secrets_absent(srv.received)


def test_bytes_injected_after_the_starttls_220_are_an_attack(runner, fake, pki):
    injected = b"220 2.0.0 go ahead\r\n250-evil.example\r\n250 AUTH PLAIN LOGIN\r\n"
    srv = fake({"EHLO": EHLO_TLS, "STARTTLS": injected}, tls_context=pki.server_context())
    e = error(runner.send(tls_config(srv.port, pki, **creds()), **MAIL))
    assert e["temporary"] is False and "before the TLS handshake" in e["message"]
    srv.wait_done(5)
    assert verbs(srv.received) == ["EHLO", "STARTTLS"]  # and then nothing: no handshake, no AUTH
    secrets_absent(srv.received)


@pytest.mark.parametrize("mode", ["TLS_STARTTLS", "TLS_IMPLICIT"])
@pytest.mark.parametrize("cert,why", [("evil", "another CA"), ("other", "another name")])
def test_certificate_of_another_ca_or_name_is_refused(runner, fake, pki, mode, cert, why):
    srv = fake({"EHLO": [EHLO_TLS, EHLO_IN_TLS] if mode == "TLS_STARTTLS" else EHLO_IN_TLS},
               tls_context=pki.server_context(cert), implicit=mode == "TLS_IMPLICIT")
    e = error(runner.send(tls_config(srv.port, pki, mode, **creds()), **MAIL))
    assert e["temporary"] is False and "certificate" in e["message"], why
    srv.wait_done(5)
    assert srv.tls_at is None and srv.tls_errors  # the handshake never completed
    secrets_absent(srv.received)


def test_tls_to_a_plaintext_port_fails_fast_and_clearly(runner, fake, pki):
    srv = fake()
    t = time.monotonic()
    e = error(runner.send(tls_config(srv.port, pki, "TLS_IMPLICIT", timeout=10), **MAIL))
    assert "did not answer in TLS" in e["message"] and e["temporary"] is False
    assert time.monotonic() - t < 9  # well before the timeout


def test_plaintext_to_a_tls_port_times_out_clearly(runner, fake, pki):
    srv = fake(tls_context=pki.server_context(), implicit=True)
    t = time.monotonic()
    e = error(runner.send(client_config(srv.port, timeout=1), **MAIL), "SMTPTimeoutError")
    assert e["command"] == "greeting" and time.monotonic() - t < 6


def test_plaintext_to_port_465_says_what_to_do():
    c = smtp_duo.SMTPClient("127.0.0.1", 465, from_address="a@b.example")
    assert c.tls == smtp_duo.TLS_NONE  # the hint itself is in _greeting_and_hello's timeout path


# -- credentials only where they are safe ---------------------------------------------------------


@pytest.mark.parametrize("tls", ["TLS_NONE", "TLS_STARTTLS", "TLS_IMPLICIT"])
def test_credentials_refused_without_verified_tls(runner, fake, tls):
    srv = fake()
    cfg = client_config(srv.port, tls=tls, **creds())  # TLS modes here have no cadata
    r = runner.run(cfg, [MAIL])
    assert r["error"]["type"] == "ValueError" and "verified TLS" in r["error"]["message"]
    assert srv.accepted == 0


def test_auth_offered_only_in_clear_is_never_used(runner, fake, pki):
    # A server (or a man in the middle) offering AUTH without STARTTLS gets nothing: the client
    # wants STARTTLS first.
    srv = fake({"EHLO": b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n"})
    error(runner.send(tls_config(srv.port, pki, **creds()), **MAIL))
    srv.wait_done(5)
    secrets_absent(srv.received)


def test_transcript_redacts_secrets(runner, fake, pki):
    srv = fake({"EHLO": [EHLO_TLS, EHLO_IN_TLS],
                "AUTH": [b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n"]},
               tls_context=pki.server_context())
    r = runner.send(tls_config(srv.port, pki, authentication_type="AUTH_LOGIN", debug=True, **creds()), **MAIL)
    assert "ok" in r, r
    text = "\n".join(r["report"]["transcript"])
    assert "> AUTH LOGIN" in text and "> ****" in text and "< 235 ok" in text
    assert "> STARTTLS" in text and "> <message:" in text
    for secret in (USERS["alice"], base64.b64encode(USERS["alice"].encode()).decode(), "YWxpY2U="):
        assert secret not in text


def test_plain_initial_response_redacted(runner, fake, pki):
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=pki.server_context(), implicit=True)
    r = runner.send(tls_config(srv.port, pki, "TLS_IMPLICIT", authentication_type="AUTH_PLAIN", debug=True,
                               **creds()), **MAIL)
    assert "> AUTH PLAIN ****" in r["report"]["transcript"]


# -- hostile replies inside TLS -------------------------------------------------------------------


@pytest.mark.parametrize("reply", [b"250 " + b"x" * (1 << 20), b"250-x\r\n" * 5000 + b"250 x\r\n"])
def test_oversized_replies_inside_tls(runner, fake, pki, reply):
    srv = fake({"EHLO": reply}, tls_context=pki.server_context(), implicit=True)
    e = error(runner.send(tls_config(srv.port, pki, "TLS_IMPLICIT"), **MAIL), "SMTPProtocolError")
    assert e["status"] == smtp_duo.OVERSIZE_SERVER_REPLY


@pytest.mark.parametrize("bad", [
    {"server_hostname": "localhost\r\nMAIL"}, {"server_hostname": "a b"}, {"server_hostname": ""},
    {"cadata": "not a certificate"}, {"tls": "TLS_NONE"},  # cadata without TLS
    {"server_address": "127.0.0.1", "server_hostname": None},  # an IP and a CA: name needed
])
def test_bad_tls_arguments_raise_valueerror_before_connecting(runner, fake, pki, bad):
    srv = fake()
    cfg = tls_config(srv.port, pki)
    cfg.update(bad)
    if cfg.get("server_hostname") is None:
        del cfg["server_hostname"]
    r = runner.run(cfg, [MAIL])
    assert r["error"]["type"] == "ValueError", r
    assert srv.accepted == 0


# -- aiosmtpd over TLS: byte-exact --------------------------------------------------------------------


def test_aiosmtpd_starttls_required_byte_exact(runner, smtpd, pki):
    ctl = smtpd(tls_context=pki.server_context(), require_starttls=True, auth_require_tls=True,
                auth_required=True)
    body = b"line one\n.line two\r\nline three"
    r = runner.send(tls_config(ctl.port, pki, **creds()), **dict(MAIL, mail_body={"hex": body.hex()}))
    assert "ok" in r, r
    content = ctl.handler.messages[0].content
    assert content.split(b"\r\n\r\n", 1)[1] == b"line one\r\n.line two\r\nline three\r\n"


def test_aiosmtpd_implicit_tls(runner, smtpd, pki):
    # aiosmtpd does not count implicit TLS as TLS for auth_require_tls; the connection is TLS.
    ctl = smtpd(ssl_context=pki.server_context(), auth_require_tls=False, auth_required=True)
    r = runner.send(tls_config(ctl.port, pki, "TLS_IMPLICIT", **creds()), **MAIL)
    assert "ok" in r, r
    assert len(ctl.handler.messages) == 1


# -- Postfix over TLS: the real MTA -----------------------------------------------------------------



@pytest.mark.parametrize("auth", ["AUTH_PLAIN", "AUTH_LOGIN", "AUTH_CRAM_MD5"])
def test_postfix_starttls_with_auth(runner, postfix, pki, auth):
    body = "Reading 81.5 C\n.dot line\nZażółć\n"
    r = runner.send(tls_config(postfix.starttls_port, pki, authentication_type=auth, **creds()),
                    **dict(MAIL, subject="starttls " + auth, mail_body={"str": body}))
    assert "ok" in r, r
    m = delivered(postfix, r["ok"]["text"])
    assert m["sender"] == "sensor@example.com" and m["recipients"] == ["bob@example.org"]
    assert m["data"].split(b"\n\n", 1)[1] == body.encode()
    assert b"with ESMTPSA" in m["data"]  # Postfix: ESMTP, TLS, authenticated


def test_postfix_implicit_tls_with_auth(runner, postfix, pki):
    r = runner.send(tls_config(postfix.tls_port, pki, "TLS_IMPLICIT", **creds()), **MAIL)
    assert "ok" in r, r
    assert b"with ESMTPSA" in delivered(postfix, r["ok"]["text"])["data"]


def test_postfix_offers_no_auth_before_tls(runner, postfix):
    # smtpd_tls_auth_only: a client that will not do TLS has no AUTH to use, so it never sends
    # its password (it was allowed to, with allow_insecure_auth, and still cannot).
    cfg = client_config(postfix.starttls_port, allow_insecure_auth=True, **creds())
    e = runner.send(cfg, **MAIL)["error"]
    assert e["type"] == "SMTPNotSupportedError" and "offers no AUTH" in e["message"]


def test_postfix_refuses_mail_before_starttls(runner, postfix):
    e = runner.send(client_config(postfix.starttls_port), **MAIL)["error"]
    assert (e["type"], e["code"]) == ("SMTPAuthenticationError", 530)


def test_postfix_certificate_checked_against_the_wrong_ca(runner, postfix, pki, tmp_path):
    evil_der = tmp_path / "evil.der"
    evil_der.write_bytes(ssl.PEM_cert_to_DER_cert(pki.evil_ca.cert_pem.bytes().decode()))
    e = runner.send(tls_config(postfix.tls_port, pki, "TLS_IMPLICIT", cadata={"file": str(evil_der)},
                               **creds()), **MAIL)["error"]
    assert e["type"] == "SMTPTLSError" and "certificate" in e["message"]
