"""Replies in step with commands, over real sockets (both clients, both runtimes): a reply the
client did not ask for is an SMTPProtocolError and the connection is closed, so a stray or
early line is never taken as the answer to the next command. The property over random
interleavings is in portable/replies_portable.py (in memory, on both runtimes)."""

import time

from conftest import client_config
from test_wire import error, lines, send, verbs

import smtp_duo

EHLO_PIPE_CHUNK = b"250-fake.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
EHLO_PIPE = b"250-fake.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
STRAY = b"250 2.0.0 stray\r\n"


def test_stray_line_in_the_ehlo_segment_stops_before_mail(runner, fake):
    # The hostile suite's case: EHLO reply and a stray 250 in one segment, the message refused.
    srv = fake({"EHLO": EHLO_PIPE_CHUNK + STRAY, "DOT": b"554 5.7.1 refused\r\n"})
    e = error(send(runner, srv), "SMTPProtocolError", smtp_duo.INVALID_SERVER_REPLY)
    assert e["temporary"] is True
    assert verbs(srv) == ["EHLO"]  # no MAIL, no message, and no QUIT on a stream out of step


def test_stray_line_in_a_later_segment_never_makes_a_success(runner, fake):
    def ehlo(conn, line):
        conn.sendall(EHLO_PIPE)
        time.sleep(0.3)  # the client's pipelined envelope is on its way meanwhile
        return STRAY

    srv = fake({"EHLO": ehlo, "DOT": b"554 5.7.1 refused\r\n"})
    r = send(runner, srv)
    assert "error" in r, r  # DATA answered by the RCPT's 250: out of step, never a success
    assert r["error"]["type"].startswith("SMTP"), r


def test_early_final_reply_behind_354(runner, fake):
    srv = fake({"DATA": b"354 go ahead\r\n250 2.0.0 early\r\n", "DOT": b"554 5.7.1 refused\r\n"})
    error(send(runner, srv), "SMTPProtocolError", smtp_duo.INVALID_SERVER_REPLY)
    assert srv.messages == []  # the message was not sent after the stream went out of step


def test_stray_line_behind_a_final_reply_in_a_session(runner, fake):
    # Mail 1's 250 comes with a stray line behind it: mail 1 is not trusted (protocol error);
    # mail 2 goes over a new connection and gets the server's real answer.
    srv = fake({"DOT": [b"250 2.0.0 queued\r\n" + STRAY, b"554 5.7.1 refused\r\n"]}, connections=2)
    m = {"recipient_address": "rcpt@example.com", "subject": "alert", "mail_body": {"str": "x"}}
    report = runner.run(client_config(srv.port), [m, m], session=True)
    r1, r2 = report["results"]
    assert r1["error"]["type"] == "SMTPProtocolError", r1
    assert (r2["error"]["type"], r2["error"]["code"]) == ("SMTPError", 554), r2
    assert srv.accepted == 2


def test_quit_answered_with_a_mail_reply_fails_the_mail(runner, fake):
    srv = fake({"QUIT": b"554 5.7.1 refused\r\n"})
    error(send(runner, srv), "SMTPProtocolError", smtp_duo.INVALID_SERVER_REPLY)
    assert lines(srv)[-1] == "QUIT"
