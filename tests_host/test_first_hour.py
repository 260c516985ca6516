"""Issue 14: every error a board user hits in the first hour, provoked on both runtimes.

Each test provokes one error class with the client on CPython and on the MicroPython unix port,
blocking and smtp_duo_async (the `runner` fixture), and asserts the exception class, its
`status`, `temporary` and the advice in its message: what to do next. lib/ is there whole, so
smtp_duo_explain adds its longer advice; the `core_runner` tests check what the core says alone
(its own short advice; README section 6 has the rest, keyed by status).

- DNS failure (a name under .invalid), connection refused, a listener that never answers;
- the wrong TLS mode for the port: plain SMTP (or STARTTLS) to an implicit-TLS port, implicit
  TLS to a plaintext port;
- a certificate from another CA, for another name, not yet valid (what a board whose clock was
  never set sees: the unix port's clock cannot be faked, so the certificate's notBefore is in
  the future instead);
- 530 (log in first), 535 (wrong user or password: app passwords, XOAUTH2), RCPT refused with
  "relay access denied", 552 (too big: the server's, and the SIZE limit checked before MAIL);
- out of memory in the TLS handshake (MicroPython with a small fixed heap, -X heapsize).

No secret appears in any message.
"""

import datetime
import json
import socket
import ssl
import subprocess
import sys

import pytest
from conftest import DEFAULT_HEAP, HERE, ROOT, USERS, Recorder, client_config, run_micropython
from hostkit.mpy import compile_all

import smtp_duo

MAIL = {"recipient_address": "bob@example.org", "subject": "alert", "mail_body": {"str": "x" * 100}}
EHLO_IN_TLS = b"250-fake.test\r\n250 8BITMIME\r\n"
EHLO_STARTTLS = b"250-fake.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
PASSWORD = "not-the-app-password"


def failure(result, kind, status, temporary, *advice):
    """The error of `result`: of class `kind`, with `status` and `temporary`, its message holding
    every piece of `advice` and never a password."""
    assert "error" in result, result
    e = result["error"]
    assert (e["type"], e["status"], e["temporary"]) == (kind, status, temporary), e
    for words in advice:
        assert words in e["message"], (words, e["message"])
    for secret in [PASSWORD] + list(USERS.values()):
        assert secret not in e["message"]
    return e


def tls_config(port, pki, mode="TLS_IMPLICIT", **kw):
    cfg = client_config(port, tls=mode, cadata={"file": str(pki.ca_der)}, server_hostname="localhost",
                        timeout=5)
    cfg.update(kw)
    return cfg


class Mute:
    """A listener that never answers: the kernel accepts the connection, nobody speaks."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]


@pytest.fixture
def mute():
    m = Mute()
    yield m
    m.sock.close()


# -- the core alone: its own short advice ---------------------------------------------------------


class CoreOnly:
    """driver.py jobs in a fresh process whose import path holds only smtp_duo and driver.py."""

    def __init__(self, runtime, folder, micropython=None, tmp_path=None):
        self.runtime, self.folder, self.micropython, self.tmp_path = runtime, folder, micropython, tmp_path

    def send(self, client, **mail):
        job = {"client": client, "mails": [mail], "session": False, "async": False}
        path = self.tmp_path / "job.json"
        path.write_text(json.dumps(job))
        if self.runtime == "cpython":
            boot = "import sys; sys.path.insert(0, %r); import driver; driver.main()" % str(self.folder)
            p = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", boot, str(path)],
                               capture_output=True, text=True, timeout=60, cwd=self.folder)
        else:
            p = run_micropython(self.micropython, self.folder, ["-m", "driver", str(path)], DEFAULT_HEAP, 60,
                                cwd=self.folder)
        assert p.returncode == 0 and p.stdout.strip(), (p.stdout, p.stderr)
        report = json.loads(p.stdout.strip().splitlines()[-1])
        return {"error": report["error"]} if "error" in report else report["results"][0]


@pytest.fixture(params=["cpython", "micropython"])
def core_runner(request, tmp_path_factory, tmp_path):
    folder = tmp_path_factory.mktemp("core-" + request.param)
    sources = [ROOT / "lib" / "smtp_duo.py", HERE / "driver.py"]
    if request.param == "cpython":
        for src in sources:
            (folder / src.name).write_bytes(src.read_bytes())
        return CoreOnly("cpython", folder, tmp_path=tmp_path)
    mp = request.getfixturevalue("micropython")
    compile_all(sources, folder)
    return CoreOnly("micropython", folder, mp, tmp_path)


# -- the network: name, port, silence ---------------------------------------------------------------


def test_dns_failure(runner):
    # RFC 6761: no name under .invalid resolves, so no lookup leaves the resolver.
    cfg = client_config(25, server_address="smtp.invalid", timeout=5)
    e = failure(runner.send(cfg, **MAIL), "SMTPConnectionError", smtp_duo.IP_ADDRESS_ERROR, True,
                "cannot resolve 'smtp.invalid'", "is the network up and the name right?")
    assert e["command"] == "connect"


def test_connection_refused(runner, mute):
    port = mute.port
    mute.sock.close()  # nothing listens there now
    e = failure(runner.send(client_config(port, timeout=5), **MAIL), "SMTPConnectionError",
                smtp_duo.NOT_CONNECTED, True, "ECONNREFUSED", "nothing listens on 127.0.0.1 port %d" % port,
                "check the host and port")
    assert e["command"] == "connect"


def test_a_listener_that_never_answers(runner, mute):
    e = failure(runner.send(client_config(mute.port, timeout=1), **MAIL), "SMTPTimeoutError",
                smtp_duo.NO_PACKET, True, "no reply to greeting within 1s",
                "is this a TLS port? use tls=TLS_IMPLICIT")
    assert e["command"] == "greeting"


# -- the wrong TLS mode for the port ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["TLS_NONE", "TLS_STARTTLS"])
def test_plain_smtp_to_an_implicit_tls_port(runner, fake, pki, mode):
    # Not 465: the client cannot tell from the number; the server waits for a ClientHello.
    srv = fake(tls_context=pki.server_context(), implicit=True)
    cfg = tls_config(srv.port, pki, mode, timeout=1) if mode != "TLS_NONE" else client_config(srv.port, timeout=1)
    e = failure(runner.send(cfg, **MAIL), "SMTPTimeoutError", smtp_duo.NO_PACKET, True,
                "no reply to greeting within 1s: is this a TLS port? use tls=TLS_IMPLICIT")
    assert e["command"] == "greeting"


def test_implicit_tls_to_a_plaintext_port(runner, fake, pki):
    srv = fake()
    failure(runner.send(tls_config(srv.port, pki), **MAIL), "SMTPTLSError", smtp_duo.TLS_ERROR, False,
            "TLS handshake failed on port %d" % srv.port, "did not answer in TLS", "use tls=TLS_STARTTLS")


# -- certificates ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def future_context(pki, tmp_path_factory):
    """A server context presenting a certificate from the good CA, valid only from next year on:
    to the client, what any certificate is to a board whose clock reads 1970 or 2000."""
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = pki.ca.issue_cert("localhost", "127.0.0.1", not_before=now + datetime.timedelta(days=365),
                             not_after=now + datetime.timedelta(days=730))
    folder = tmp_path_factory.mktemp("future")
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(chain), str(key))
    return ctx


@pytest.mark.parametrize("mode", ["TLS_IMPLICIT", "TLS_STARTTLS"])
def test_certificate_from_another_ca(runner, fake, pki, mode):
    srv = fake({"EHLO": [EHLO_STARTTLS, EHLO_IN_TLS]}, tls_context=pki.server_context("evil"),
               implicit=mode == "TLS_IMPLICIT")
    failure(runner.send(tls_config(srv.port, pki, mode), **MAIL), "SMTPTLSError", smtp_duo.TLS_ERROR, False,
            "TLS handshake failed on port %d" % srv.port, "give the CA that signed this server's certificate",
            "tools/fetch_ca.py")


@pytest.mark.parametrize("mode", ["TLS_IMPLICIT", "TLS_STARTTLS"])
def test_certificate_for_another_name(runner, fake, pki, mode):
    srv = fake({"EHLO": [EHLO_STARTTLS, EHLO_IN_TLS]}, tls_context=pki.server_context("other"),
               implicit=mode == "TLS_IMPLICIT")
    failure(runner.send(tls_config(srv.port, pki, mode), **MAIL), "SMTPTLSError", smtp_duo.TLS_ERROR, False,
            "TLS handshake failed on port %d" % srv.port, "the certificate is for another name",
            "set server_hostname")


def test_certificate_not_yet_valid_asks_for_the_clock(runner, fake, pki, future_context):
    # Temporary: once the board's clock is set the same mail goes through (the outbox keeps it).
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=future_context, implicit=True)
    failure(runner.send(tls_config(srv.port, pki), **MAIL), "SMTPTLSError", smtp_duo.TLS_ERROR, True,
            "TLS handshake failed on port %d" % srv.port, "is the clock set?", "ntptime.settime()")


# -- the server's refusals ---------------------------------------------------------------------------


def test_530_authentication_required(runner, smtpd):
    ctl = smtpd(auth_required=True)
    e = failure(runner.send(client_config(ctl.port), **MAIL), "SMTPAuthenticationError",
                smtp_duo.MAIL_REPLY_ERROR, False, "sender refused: 530",
                "the server wants you to log in first: give username and password")
    assert (e["code"], e["command"]) == (530, "MAIL")
    assert ctl.handler.messages == []


def test_535_wrong_password(runner, smtpd):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password=PASSWORD, allow_insecure_auth=True)
    e = failure(runner.send(cfg, **MAIL), "SMTPAuthenticationError", smtp_duo.AUTH_REPLY_ERROR, False,
                "authentication failed: 535",
                ": wrong user or password (Gmail/Outlook: an app password, or XOAUTH2)",
                "make an app password, or use XOAUTH2")
    assert (e["code"], e["command"]) == (535, "AUTH")


class RelayDenied(Recorder):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.7.1 <%s>: Relay access denied" % address


def test_550_relay_access_denied(runner, smtpd):
    ctl = smtpd(RelayDenied())
    e = failure(runner.send(client_config(ctl.port), **MAIL), "SMTPRecipientsRefused",
                smtp_duo.RCPT_REPLY_ERROR, False,
                "recipients refused: 550 5.7.1 <bob@example.org>: Relay access denied",
                "the server does not relay for you", "log in", "use your provider's server")
    assert (e["code"], e["command"]) == (550, "RCPT")
    assert e["recipients"] == {"bob@example.org": [550, "5.7.1 <bob@example.org>: Relay access denied"]} or \
        e["recipients"] == {"bob@example.org": [550, "<bob@example.org>: Relay access denied"]}
    assert ctl.handler.messages == []


def test_552_message_too_big_after_data(runner, fake):
    srv = fake({"EHLO": b"250-fake.test\r\n250 ENHANCEDSTATUSCODES\r\n",
                "DOT": b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"})
    e = failure(runner.send(client_config(srv.port), **MAIL), "SMTPError", smtp_duo.MESSAGE_REPLY_ERROR, False,
                "message refused: 552 5.3.4 Message size exceeds", "send less")
    assert (e["code"], e["enhanced"], e["command"]) == (552, "5.3.4", "DATA")


def test_over_the_size_limit_is_refused_before_mail(runner, smtpd):
    ctl = smtpd(data_size_limit=1000)
    mail = dict(MAIL, mail_body={"str": "x" * 2000})
    e = failure(runner.send(client_config(ctl.port), **mail), "SMTPError", smtp_duo.OVERSIZE_MAIL_DATA, False,
                "over the server's SIZE limit 1000")
    assert e["command"] == "MAIL"
    assert ctl.handler.messages == []


# -- out of memory in the handshake ------------------------------------------------------------------

# On the unix port mbedTLS takes its buffers from the C heap, so a small `-X heapsize` alone fails
# the import or the client, never the handshake. As on a board, the client is made first, then the
# application fills the GC heap (the ballast) and frees it a block at a time, trying the mail
# after each: some tries fail before the handshake (a plain MemoryError), then the handshake's own
# allocations fail, then the mail goes. Each try prints its outcome as one JSON line.
OOM_WORKER = 'import gc, sys, json\nimport driver, smtp_duo\n\njob = json.load(open(sys.argv[1]))\ncfg = driver._constants(job["client"])\nif job["async"]:\n    import asyncio, smtp_duo_async\n    client = smtp_duo_async.AsyncSMTPClient(**cfg)\nelse:\n    client = smtp_duo.SMTPClient(**cfg)\nimport smtp_duo_explain  # noqa: installed, as on a board that has it\nmail = job["mail"]\nstep = job["step"]\noutcomes = []\nballast = []\ndone = False\ne = r = None\ngc.collect()\ntry:\n    while True:\n        ballast.append(bytearray(step))\nexcept MemoryError:\n    pass\nwhile ballast and not done:\n    del ballast[-1]\n    gc.collect()\n    try:\n        try:\n            if job["async"]:\n                r = asyncio.run(client.mail_send(**mail))\n            else:\n                r = client.mail_send(**mail)\n            done = True\n            print(json.dumps({"ok": r.code}))\n        except Exception as e:\n            print(json.dumps({"error": driver._error(e)}))\n    except MemoryError:  # no room even to describe it\n        pass\n'


@pytest.mark.parametrize("flavour", ["blocking", "async"])
def test_out_of_memory_in_the_tls_handshake(micropython, mpy_dir, tmp_path, fake, pki, flavour):
    srv = fake({"EHLO": EHLO_IN_TLS}, tls_context=pki.server_context(), implicit=True, connections=1000)
    job = {"client": tls_config(srv.port, pki, timeout=2), "async": flavour == "async", "step": 256,
           "mail": {"recipient_address": "bob@example.org", "subject": "alert", "mail_body": "x" * 100}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "oom_worker.py").write_text(OOM_WORKER)
    p = run_micropython(micropython, mpy_dir, [str(tmp_path / "oom_worker.py"), str(tmp_path / "job.json")],
                        "256k", timeout=300)
    assert p.returncode == 0, (p.stdout, p.stderr)
    tries = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert tries and "ok" in tries[-1], tries  # with enough RAM the same client sends
    tls = [t for t in tries if t.get("error", {}).get("type") == "SMTPTLSError"]
    if flavour == "async":
        # README section 9: out of memory, asyncio can lose a wake-up, and the connect or the
        # handshake then ends by its deadline (a timeout, not a wrong verdict). Whether a try
        # fails inside the handshake at all depends on the heap's layout (one layout goes from
        # connect timeouts straight to success), so here every failure must be a MemoryError
        # with no room to describe it or a typed SMTP error, and any TLS verdict must say what it is.
        tls = [t for t in tls if "TLS handshake timed out" not in t["error"]["message"]]
        kinds = {t["error"]["type"] for t in tries if "error" in t}
        assert kinds <= {"MemoryError", "SMTPTLSError", "SMTPTimeoutError", "SMTPConnectionError"}, tries
    else:
        assert tls, tries  # the handshake itself ran out of memory at least once
    for t in tls:
        e = failure(t, "SMTPTLSError", smtp_duo.TLS_ERROR, True, "TLS handshake failed on port %d" % srv.port,
                    "out of memory", "free RAM", "make the client first", "freeze the library")
        assert e["command"] == "TLS"


# -- the core alone: short, and still says what to do --------------------------------------------------


def test_core_alone_535_says_app_password(core_runner, smtpd):
    ctl = smtpd(auth_required=True)
    cfg = client_config(ctl.port, username="alice", password=PASSWORD, allow_insecure_auth=True)
    e = failure(core_runner.send(cfg, **MAIL), "SMTPAuthenticationError", smtp_duo.AUTH_REPLY_ERROR, False,
                "535")
    assert e["message"].endswith(": wrong user or password (Gmail/Outlook: an app password, or XOAUTH2)")
    assert "make an app password" not in e["message"]  # smtp_duo_explain's, not there


def test_core_alone_greeting_timeout_asks_for_tls(core_runner, fake, pki):
    srv = fake(tls_context=pki.server_context(), implicit=True)
    e = failure(core_runner.send(client_config(srv.port, timeout=1), **MAIL), "SMTPTimeoutError",
                smtp_duo.NO_PACKET, True)
    assert e["message"] == "no reply to greeting within 1s: is this a TLS port? use tls=TLS_IMPLICIT"


def test_core_alone_relay_denied_quotes_the_server(core_runner, smtpd):
    ctl = smtpd(RelayDenied())
    e = failure(core_runner.send(client_config(ctl.port), **MAIL), "SMTPRecipientsRefused",
                smtp_duo.RCPT_REPLY_ERROR, False)
    assert e["message"] == "recipients refused: 550 <bob@example.org>: Relay access denied" or \
        e["message"] == "recipients refused: 550 5.7.1 <bob@example.org>: Relay access denied", e
