"""A TLS handshake has one deadline: `timeout` for the whole of it, however slowly the server
sends, like a reply. Both clients, both runtimes (the `runner` fixture), implicit TLS and
STARTTLS; the outcome is the same everywhere: SMTPTLSError (TLS_ERROR, temporary) asking whether
it is a TLS port, returned within timeout + 1 s, the socket closed, nothing sent after the
handshake began. (The fault matrix, test_faults.py, runs the same servers with its 2 s timeout
among the other faults; these are the reported cases, with their own 3 s timeout.)

- A server that reads the ClientHello, then sends a record header announcing 16 KiB
  (16 03 03 40 00) and one byte every 0.5 s: MicroPython's blocking handshake waited anew for
  every byte, for as long as the server liked.
- A server that answers STARTTLS with 220 and then says nothing: CPython's asyncio client raised
  the timeout as SMTPTimeoutError, wrote QUIT to the half-switched stream and then escaped as
  CancelledError after 7 s.
"""

import time

import pytest
from conftest import client_config
from test_faults import EHLO_STARTTLS, FaultServer

import smtp_duo

TIMEOUT = 3
MAIL = {"recipient_address": "bob@example.org", "subject": "alert", "mail_body": {"str": "x"}}


def handshake_fault(runner, pki, mode, fault):
    """Runs one mail against a server failing the handshake with `fault`; returns the error,
    the seconds the call took, whether the server saw the client close by timeout + 1 s, what
    the client sent from the handshake's start, and its transcript."""
    srv = FaultServer({"EHLO": EHLO_STARTTLS, "STARTTLS": b"220 go ahead\r\n"}, tls_fault=fault,
                      tls_context=pki.server_context(), implicit=mode == "TLS_IMPLICIT")
    try:
        cfg = client_config(srv.port, tls=mode, cadata={"file": str(pki.ca_der)}, server_hostname="localhost",
                            timeout=TIMEOUT, debug=True)
        t0 = time.monotonic()
        r = runner.send(cfg, **MAIL)
        seconds = time.monotonic() - t0
        closed = srv.wait_closed(max(TIMEOUT + 1 - (time.monotonic() - t0), 0.01))
        after = srv.received[srv.hello_at :] if srv.hello_at is not None else None
    finally:
        srv.stop()
    assert "error" in r, r
    return r["error"], seconds, closed, after, r["report"]["transcript"]


def assert_handshake_timeout(e, seconds, closed, after, transcript):
    assert (e["type"], e["status"], e["temporary"], e["command"]) == \
        ("SMTPTLSError", smtp_duo.TLS_ERROR, True, "TLS"), e
    assert "TLS handshake timed out" in e["message"] and "is it a TLS port?" in e["message"], e
    assert seconds <= TIMEOUT + 1, seconds
    assert closed, "the server did not see the client close within timeout + 1 s"
    # From the handshake's start only TLS records (the ClientHello, maybe an alert): no QUIT,
    # no EHLO in clear.
    assert after is not None and after[:1] == b"\x16" and b"QUIT" not in after and b"EHLO" not in after, after
    # Not even tried: the failed link is dropped, no QUIT goes to it.
    assert not [line for line in transcript if line.startswith("> QUIT")], transcript


@pytest.mark.parametrize("mode", ["TLS_IMPLICIT", "TLS_STARTTLS"])
def test_a_dripping_handshake_ends_within_the_timeout(runner, pki, mode):
    assert_handshake_timeout(*handshake_fault(runner, pki, mode, "drip"))


def test_a_silent_server_after_its_starttls_220_is_a_tls_timeout(runner, pki):
    assert_handshake_timeout(*handshake_fault(runner, pki, "TLS_STARTTLS", "silence"))
