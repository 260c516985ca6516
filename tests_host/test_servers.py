"""End to end against real servers: aiosmtpd in process and a private Postfix on loopback.

aiosmtpd keeps exactly what the client put on the wire (un-stuffed), so byte-exact checks are
made there; Postfix is the real MTA that proves interoperability (AUTH through Cyrus SASL,
ENHANCEDSTATUSCODES, delivery with the envelope). Every test runs the client on CPython and on
the MicroPython unix port.
"""

import base64
import email
import email.policy
import random

import pytest
from conftest import USERS, XOAUTH2_TOKEN, client_config, delivered
from hostkit.postfix import strip_received

import smtp_duo


def normalise(body):
    """What the wire must carry for a body: every line break CRLF, a final CRLF if missing."""
    body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def split_message(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def ok(result):
    assert "ok" in result, result
    return result["ok"]


def mail(**kw):
    m = {"recipient_address": "bob@example.org", "subject": "Sensor alert", "mail_body": {"str": "x\n"}}
    m.update(kw)
    return m


# -- aiosmtpd: byte-exact -------------------------------------------------------------------------

TEXT = b"Temperature 81.5 C\nthreshold 80.0 C\r\n.\n..leading dots\rlone CR\r\n\r\nend"


@pytest.mark.parametrize("kind", ["str", "hex", "bytearray", "memoryview", "chunks"])
def test_in_memory_bodies_arrive_byte_exact(runner, smtpd, kind):
    ctl = smtpd()
    if kind == "str":
        body = {"str": TEXT.decode()}
    elif kind == "chunks":  # split inside CRLF, before a dot, mid-word
        cuts = [0, 19, 20, 38, 39, 40, 61, len(TEXT)]
        body = {"chunks": [{"hex": TEXT[a:b].hex()} for a, b in zip(cuts, cuts[1:])]}
    else:
        body = {kind: TEXT.hex()}
    r = ok(runner.send(client_config(ctl.port), **mail(mail_body=body)))
    assert r["code"] == 250 and "queued as AIO1" in r["text"]
    env = ctl.handler.messages[0]
    head, got = split_message(env.content)
    assert got == normalise(TEXT)
    assert b"Content-Transfer-Encoding: 7bit" in head
    assert env.mail_from == "sensor@example.com" and env.rcpt_tos == ["bob@example.org"]


@pytest.mark.parametrize("mode", ["file", "text_file"])
def test_file_body_is_streamed_and_arrives_byte_exact(runner, smtpd, tmp_path, mode):
    rnd = random.Random(7)
    lines = [bytes(rnd.choice(b"abcdefghij .,;") for _ in range(rnd.randrange(0, 120))) for _ in range(9000)]
    data = b"\n".join(lines)  # about 0.5 MiB, LF line ends, some lines starting with '.'
    path = tmp_path / "log.txt"
    path.write_bytes(data)
    ctl = smtpd()
    ok(runner.send(client_config(ctl.port), **mail(mail_body={mode: str(path)})))
    _, got = split_message(ctl.handler.messages[0].content)
    assert got == normalise(data)


def test_generator_body_goes_quoted_printable_and_decodes_exactly(runner, smtpd):
    ctl = smtpd()
    parts = ["Grüße\n", "=equals= ", "trailing \t\n", "x" * 200, "\n.dot line\n", "ünïcödé"]
    ok(runner.send(client_config(ctl.port), **mail(mail_body={"generator": [{"str": p} for p in parts]})))
    content = ctl.handler.messages[0].content
    msg = parse(content)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True) == normalise("".join(parts).encode())
    assert max(len(x) for x in content.split(b"\r\n")) <= 76


def test_eight_bit_without_8bitmime_is_encoded(runner, smtpd):
    ctl = smtpd(decode_data=True)  # aiosmtpd then does not offer 8BITMIME
    text = "Pchnąć w tę łódź jeża lub ośm skrzyń fig.\nСъешь же ещё этих мягких французских булок"
    ok(runner.send(client_config(ctl.port), **mail(mail_body={"str": text})))
    msg = parse(ctl.handler.messages[0].original_content)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == normalise(text.encode()).decode()


def test_utf8_subjects_and_names_round_trip(runner, smtpd):
    ctl = smtpd()
    subject = "Grüße aus Köln — テスト 🌡️ İstanbul şimdi, Москва, Göteborg, 温度警报 " * 2
    r = runner.send(client_config(ctl.port, from_address="Čujník Teploty <s@example.com>"),
                    **mail(subject=subject, recipient_address="Zoë Ångström <z@example.org>",
                           mail_body={"str": "Zażółć gęślą jaźń ✓"}))
    ok(r)
    content = ctl.handler.messages[0].content
    msg = parse(content)
    assert msg["subject"] == subject
    assert msg["from"].addresses[0].display_name == "Čujník Teploty"
    assert msg["to"].addresses[0].display_name == "Zoë Ångström"
    assert msg.get_content().replace("\r\n", "\n") == "Zażółć gęślą jaźń ✓\n"
    head, _ = split_message(content)
    for word in head.split():
        if word.startswith(b"=?"):
            assert len(word) <= 75
            payload = word.split(b"?")[3]
            base64.b64decode(payload).decode("utf-8")  # each word holds whole characters
    assert all(len(line) <= 76 for line in head.split(b"\r\n"))


def test_smtputf8_address(runner, smtpd):
    ctl = smtpd()
    ok(runner.send(client_config(ctl.port), **mail(recipient_address="jürgen@example.de")))
    env = ctl.handler.messages[0]
    assert env.rcpt_tos == ["jürgen@example.de"] and "SMTPUTF8" in env.mail_options


@pytest.mark.parametrize("auth", ["AUTH_PLAIN", "AUTH_LOGIN", "AUTH_AUTO"])
def test_aiosmtpd_auth(runner, smtpd, auth):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password=USERS["alice"], authentication_type=auth,
                        allow_insecure_auth=True)
    ok(runner.send(cfg, **mail()))
    assert len(ctl.handler.messages) == 1


def test_aiosmtpd_wrong_password(runner, smtpd):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password="wrong", allow_insecure_auth=True)
    e = runner.send(cfg, **mail())["error"]
    assert (e["type"], e["status"], e["code"], e["temporary"]) == (
        "SMTPAuthenticationError", smtp_duo.AUTH_REPLY_ERROR, 535, False)
    assert ctl.handler.messages == []


def test_aiosmtpd_authentication_required(runner, smtpd):
    ctl = smtpd(auth_required=True)
    e = runner.send(client_config(ctl.port), **mail())["error"]
    assert (e["type"], e["code"]) == ("SMTPAuthenticationError", 530)


@pytest.mark.parametrize("password", [XOAUTH2_TOKEN, {"token": XOAUTH2_TOKEN}])
def test_xoauth2_token_or_token_provider(runner, smtpd, password):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password=password, allow_insecure_auth=True,
                        authentication_type="AUTH_XOAUTH2" if isinstance(password, str) else "AUTH_AUTO")
    ok(runner.send(cfg, **mail()))


def test_xoauth2_refused_reports_the_server_detail(runner, smtpd):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password={"token": "expired"}, allow_insecure_auth=True)
    e = runner.send(cfg, **mail())["error"]
    assert e["type"] == "SMTPAuthenticationError" and e["code"] == 535
    assert '"status":"401"' in e["text"]


def test_size_limit_refused_before_mail(runner, smtpd):
    ctl = smtpd(data_size_limit=1000)
    e = runner.send(client_config(ctl.port), **mail(mail_body={"str": "y" * 2000}))["error"]
    assert (e["status"], e["code"], e["temporary"]) == (smtp_duo.OVERSIZE_MAIL_DATA, None, False)
    assert ctl.handler.messages == []


def test_session_several_mails_one_connection(runner, smtpd):
    ctl = smtpd()
    mails = [mail(subject="n%d" % i, mail_body={"str": "reading %d" % i}) for i in range(3)]
    report = runner.run(client_config(ctl.port), mails, session=True)
    assert [next(iter(r)) for r in report["results"]] == ["ok"] * 3
    msgs = ctl.handler.messages
    assert [parse(m.content)["subject"] for m in msgs] == ["n0", "n1", "n2"]
    assert len({parse(m.content)["message-id"] for m in msgs}) == 3


def test_ipv6_literal(runner, smtpd):
    ctl = smtpd(hostname="::1")
    ok(runner.send(client_config(ctl.port, server_address="::1"), **mail()))
    assert len(ctl.handler.messages) == 1


def test_mebibyte_file_body(runner, smtpd, tmp_path):
    path = tmp_path / "big.csv"
    row = b"2026-11-21T23:59:59Z,sensor-7,81.5,ALERT\n"
    path.write_bytes(row * ((1 << 20) // len(row) + 1))
    ctl = smtpd()
    ok(runner.send(client_config(ctl.port), **mail(mail_body={"file": str(path)})))
    _, got = split_message(ctl.handler.messages[0].content)
    assert got == normalise(path.read_bytes())


# -- Postfix: the real MTA ------------------------------------------------------------------------



@pytest.mark.parametrize("auth", ["AUTH_PLAIN", "AUTH_LOGIN", "AUTH_CRAM_MD5", "AUTH_AUTO"])
def test_postfix_submission_with_auth(runner, postfix, auth):
    cfg = client_config(postfix.submission_port, username="alice", password=USERS["alice"],
                        authentication_type=auth, allow_insecure_auth=True)
    r = ok(runner.send(cfg, **mail(subject="auth " + auth, mail_body={"hex": TEXT.hex()})))
    assert (r["code"], r["enhanced"]) == (250, "2.0.0")
    m = delivered(postfix, r["text"])
    assert m["sender"] == "sensor@example.com" and m["recipients"] == ["bob@example.org"]
    head, _, body = strip_received(m["data"]).partition(b"\n\n")
    assert body == normalise(TEXT).replace(b"\r\n", b"\n")  # Postfix stores lines with LF
    assert parse(strip_received(m["data"]))["subject"] == "auth " + auth


def test_postfix_wrong_password(runner, postfix):
    cfg = client_config(postfix.submission_port, username="alice", password="nope",
                        allow_insecure_auth=True)
    e = runner.send(cfg, **mail())["error"]
    assert (e["type"], e["code"], e["enhanced"], e["temporary"]) == (
        "SMTPAuthenticationError", 535, "5.7.8", False)


def test_postfix_requires_authentication(runner, postfix):
    e = runner.send(client_config(postfix.submission_port), **mail())["error"]
    assert (e["type"], e["code"], e["enhanced"]) == ("SMTPAuthenticationError", 530, "5.7.0")


def test_postfix_relay_to_cc_bcc(runner, postfix):
    r = ok(runner.send(client_config(postfix.relay_port),
                       **mail(recipient_address=["a@one.example", "Bee <b@two.example>"], cc="c@three.example",
                              bcc=["hidden@four.example"], priority="PRIORITY_HIGH")))
    m = delivered(postfix, r["text"])
    assert m["recipients"] == ["a@one.example", "b@two.example", "c@three.example", "hidden@four.example"]
    msg = parse(strip_received(m["data"]))
    assert msg["to"] == "a@one.example, Bee <b@two.example>" and msg["cc"] == "c@three.example"
    assert "hidden" not in strip_received(m["data"]).decode()
    assert msg["x-priority"] == "1 (Highest)" and msg["importance"] == "high"


def test_postfix_session_and_mebibyte_file(runner, postfix, tmp_path):
    path = tmp_path / "log.txt"
    path.write_bytes(b"".join(b"%07d reading ok\n" % i for i in range(70000)))
    mails = [mail(subject="first"), mail(subject="big", mail_body={"file": str(path)}), mail(subject="third")]
    report = runner.run(client_config(postfix.relay_port), mails, session=True)
    texts = [ok(r)["text"] for r in report["results"]]
    m = delivered(postfix, texts[1])
    _, _, body = strip_received(m["data"]).partition(b"\n\n")
    assert body == path.read_bytes()
    assert all(delivered(postfix, t) for t in texts)
