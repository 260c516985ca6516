"""The core alone: smtp_duo without any of its extension modules, on both runtimes.

Each job runs in its own process whose import path holds one folder (coreonly.py runs the
driver.py job there and reports the extension modules loaded): "core" has only smtp_duo (and
the test driver), as a board with `mip install smtp-duo` or `include(".../manifest.py")`; "full"
has lib/ as it is. On CPython the folder holds the .py files and Python runs isolated (-I -S:
no site-packages, no script folder); on the MicroPython unix port it holds the .mpy files and
is the whole MICROPYPATH. Each core job also checks that no extension can be imported at all.

- The core alone sends what an alert needs, end to end against aiosmtpd and Postfix: a plain
  ASCII alert (7bit), 8-bit UTF-8 text to an 8BITMIME server, a session of several mails, AUTH
  PLAIN and LOGIN, verified STARTTLS, a 1 MiB file streamed; it ignores what it has no module
  for (SIZE and CHUNKING: Postfix gets DATA, never SIZE= or BDAT; CRAM-MD5 offered first: PLAIN).
- A mail or a server that needs a missing extension fails before anything of the mail is sent:
  ImportError naming the module, its mip package and its manifest option for html=,
  attachments=, headers= (no connection), CRAM-MD5 and XOAUTH2 (at construction) and non-ASCII
  addresses (no connection) and text that needs quoted-printable whatever the server (a stream,
  a long line, a NUL: no connection); SMTPNotSupportedError after EHLO, before MAIL, naming the
  same, for 8-bit text to a server without 8BITMIME. A failed TLS handshake gives the short
  message (no smtp_duo_explain).
- With every extension present the same inputs succeed, and each extension is imported only
  by the mail or server that needs it (a plain alert: none; SIZE offered: smtp_duo_chunking).
"""

import base64
import email
import email.policy
import hmac
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import (DEFAULT_HEAP, HERE, ROOT, USERS, XOAUTH2_TOKEN, Recorder, client_config, delivered,
                      require, run_micropython)
from hostkit.mpy import compile_all
from hostkit.postfix import strip_received

import coreonly
import smtp_duo

# -- running a job with only some modules in reach ------------------------------------------------

CORE = [ROOT / "lib" / "smtp_duo.py"]
TOOLS = [HERE / "driver.py", HERE / "coreonly.py"]
BOOT = "import sys; sys.path.insert(0, %r); import coreonly; coreonly.main()"


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    """{(reach, runtime): folder}, made when first asked for."""
    base = tmp_path_factory.mktemp("reach")
    made = {}

    def get(reach, runtime):
        if (reach, runtime) not in made:
            sources = (CORE if reach == "core" else sorted((ROOT / "lib").glob("*.py"))) + TOOLS
            folder = base / ("%s-%s" % (reach, runtime))
            if runtime == "cpython":
                folder.mkdir()
                for src in sources:
                    shutil.copy(src, folder)
            else:
                compile_all(sources, folder)
            made[reach, runtime] = folder
        return made[reach, runtime]

    return get


class Isolated:
    """Runs driver.py jobs (see there) in a fresh process with `folder` as its import path;
    returns the driver's report plus "loaded" (coreonly.py)."""

    def __init__(self, reach, runtime, folder, tmp_path, micropython=None):
        self.reach = reach
        self.runtime = runtime
        self.folder = folder
        self.tmp_path = tmp_path
        self.micropython = micropython

    def run(self, client, mails, session=False, heap=DEFAULT_HEAP, timeout=120):
        core = self.reach == "core"
        job = {"client": client, "mails": mails, "session": session, "async": False, "probe": core}
        path = self.tmp_path / "job.json"
        # CPython reads \u escapes; MicroPython's json needs raw UTF-8 (no surrogate pairs).
        path.write_text(json.dumps(job, ensure_ascii=self.runtime == "cpython"), encoding="utf-8")
        if self.runtime == "cpython":
            p = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", BOOT % str(self.folder), str(path)],
                               capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        else:
            p = run_micropython(self.micropython, self.folder, ["-m", "coreonly", str(path)], heap,
                                timeout, cwd=self.folder)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            raise AssertionError("%s failed (rc %s):\n%s\n%s" % (self.runtime, p.returncode, p.stdout,
                                                                 p.stderr))
        report = json.loads(lines[-1])
        if core:  # nothing but the core was there to import, and nothing else was imported
            assert (report["reachable"], report["loaded"]) == ([], []), report
        return report

    def send(self, client, **mail):
        """One mail_send; {"ok": reply} or {"error": ...} (of the mail or of the client), plus
        "report" (the whole)."""
        report = self.run(client, [mail])
        result = {"error": report["error"]} if "error" in report else dict(report["results"][0])
        result["report"] = report
        return result


def _isolated(reach, request, folders, tmp_path):
    runtime = request.param
    mp = request.getfixturevalue("micropython") if runtime == "micropython" else None
    return Isolated(reach, runtime, folders(reach, runtime), tmp_path, mp)


@pytest.fixture(params=["cpython", "micropython"])
def core(request, folders, tmp_path):
    """Jobs with only smtp_duo (the core) importable."""
    return _isolated("core", request, folders, tmp_path)


@pytest.fixture(params=["cpython", "micropython"])
def full(request, folders, tmp_path):
    """Jobs with lib/ as it is: every extension importable."""
    return _isolated("full", request, folders, tmp_path)


def test_the_extension_list_is_lib():
    # coreonly.EXTENSIONS is what "loaded" and "reachable" look for: every sibling module.
    assert sorted(coreonly.EXTENSIONS) == sorted(p.stem for p in (ROOT / "lib").glob("smtp_duo_*.py"))


# -- servers and what they saw --------------------------------------------------------------------


class Handler(Recorder):
    """conftest's Recorder (XOAUTH2 too) that also serves AUTH CRAM-MD5, listed first by
    aiosmtpd (alphabetical), and keeps the mechanism of every successful AUTH."""

    def __init__(self):
        Recorder.__init__(self)
        self.mechanisms = []

    def authenticate(self, server, session, envelope, mechanism, data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(data, LoginPassword) and USERS.get(data.login.decode()) == data.password.decode()
        if ok:
            self.mechanisms.append(mechanism)
        return AuthResult(success=ok, handled=False)

    async def auth_CRAM__MD5(self, server, args):  # aiosmtpd: "CRAM__MD5" is CRAM-MD5
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) > 1:  # CRAM-MD5 has no initial response
            return AuthResult(success=False, handled=False)
        challenge = b"<%d.%d@aiosmtpd.test>" % (os.getpid(), time.time_ns())
        data = await server.challenge_auth(challenge)
        if data is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, digest = data.partition(b" ")
        secret = USERS.get(user.decode("utf-8", "replace"), "").encode()
        ok = hmac.compare_digest(digest, hmac.new(secret, challenge, "md5").hexdigest().encode())
        if ok:
            self.mechanisms.append("CRAM-MD5")
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server, args):
        result = await Recorder.auth_XOAUTH2(self, server, args)
        if result.success:
            self.mechanisms.append("XOAUTH2")
        return result


@pytest.fixture
def aio(smtpd):
    """aio(**Controller options) -> a started aiosmtpd Controller with Handler: "AUTH CRAM-MD5
    LOGIN PLAIN XOAUTH2" without TLS, SIZE, 8BITMIME, SMTPUTF8 (no PIPELINING, no CHUNKING)."""

    def start(**options):
        handler = Handler()
        return smtpd(handler, authenticator=handler.authenticate, **options)

    return start


class Listener:
    """A port nobody answers on: connections() counts the connections made to it. A client's
    connect() returns only once the kernel has queued the connection, so after the job none
    can be missed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def connections(self):
        self.sock.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.sock.close()


class Tee:
    """A TCP relay in front of a server that keeps both directions: `to_server` (what the
    server got) and `to_client` (its replies)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
                self._pump(conn, up)

    def _pump(self, client, server):
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, (server, self.to_server))
        sel.register(server, selectors.EVENT_READ, (client, self.to_client))
        while not self._stop.is_set():
            for key, _ in sel.select(0.2):
                dst, kept = key.data
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.close()
                    return
                kept.extend(data)
                dst.sendall(data)
        sel.close()

    def stop(self):
        self._stop.set()
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def tee():
    tees = []

    def start(upstream):
        t = Tee(upstream)
        tees.append(t)
        return t

    yield start
    for t in tees:
        t.stop()


def commands(stream):
    """The command lines of a client's plaintext SMTP stream, message data left out."""
    out = []
    in_data = False
    for line in bytes(stream).split(b"\r\n"):
        if in_data:
            in_data = line != b"."
        elif line:
            out.append(line)
            in_data = line.upper() == b"DATA"
    return out


def verbs(lines):
    return [re.split(rb"[ :\r\n]", c, maxsplit=1)[0].upper().decode() for c in lines]


def sent(report):
    """The command lines the client sent, from its debug transcript (AUTH secrets redacted)."""
    return [line[2:] for line in report["transcript"] if line.startswith("> ") and
            not line.startswith("> <message")]


def received(report):
    return [line[2:] for line in report["transcript"] if line.startswith("< ")]


# -- mails and what must arrive -------------------------------------------------------------------

ALERT_BODY = "Temperature above 30 C since 14:05.\n.\n..two dots\nend"
ALERT = {"recipient_address": "bob@example.org", "priority": "PRIORITY_HIGH",
         "subject": "Greenhouse at 31.5 C", "mail_body": {"str": ALERT_BODY},
         "message_id": "<alert-1@example.com>", "date": "Sat, 21 Nov 2026 23:58:21 +0000"}
ALERT_WIRE = (b"Date: Sat, 21 Nov 2026 23:58:21 +0000\r\n"
              b"From: Greenhouse <sensor@example.com>\r\n"
              b"To: bob@example.org\r\n"
              b"Subject: Greenhouse at 31.5 C\r\n"
              b"Message-ID: <alert-1@example.com>\r\n"
              b"MIME-Version: 1.0\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\n"
              b"Content-Transfer-Encoding: 7bit\r\n"
              b"X-Priority: 1 (Highest)\r\n"
              b"Importance: high\r\n"
              b"\r\n"
              b"Temperature above 30 C since 14:05.\r\n.\r\n..two dots\r\nend\r\n")
FROM = "Greenhouse <sensor@example.com>"

UTF8_SUBJECT = "Szklarnia: 41 °C — Zażółć"
UTF8_BODY = "Zażółć gęślą jaźń ✓\r\nТемпература 41 °C\n温度警报 🌡️\n"
UTF8 = {"recipient_address": "Zoë <z@example.org>", "subject": UTF8_SUBJECT, "mail_body": {"str": UTF8_BODY}}


def cfg(port, **kw):
    return client_config(port, **dict({"from_address": FROM, "debug": True}, **kw))


def tls_cfg(port, pki, **kw):
    return cfg(port, tls="TLS_STARTTLS", cadata={"file": str(pki.ca_der)}, server_hostname="localhost",
               **kw)


def creds(**kw):
    return dict(username="alice", password=USERS["alice"], **kw)


def normalise(body):
    body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def content(env):
    return env.original_content if env.original_content is not None else env.content


def ok(result):
    assert "ok" in result, result
    return result["ok"]


def check_utf8(data):
    """The 8-bit UTF-8 mail as it must arrive (data with CRLF)."""
    msg = parse(data)
    assert msg["subject"] == UTF8_SUBJECT
    assert msg["to"].addresses[0].display_name == "Zoë"
    assert msg["content-transfer-encoding"] == "8bit"
    assert data.split(b"\r\n\r\n", 1)[1] == normalise(UTF8_BODY.encode())


def one_mb_file(tmp_path):
    path = tmp_path / "log.csv"
    row = b"2026-11-21T23:59:59Z,sensor-7,81.5,ALERT\n.dot line\n"
    path.write_bytes(row * ((1 << 20) // len(row) + 1))
    return path


# == 1. the core alone, end to end =================================================================


def test_plain_alert_byte_exact(core, aio):
    ctl = aio()  # offers SIZE: the core has no use for it
    r = ok(core.send(cfg(ctl.port), **ALERT))
    assert (r["code"], r["text"]) == (250, "2.0.0 OK: queued as AIO1")
    env = ctl.handler.messages[0]
    assert content(env) == ALERT_WIRE
    assert (env.mail_from, env.rcpt_tos, env.mail_options) == ("sensor@example.com", ["bob@example.org"], [])
    msg = parse(content(env))
    assert (msg["subject"], msg["x-priority"], msg.get_content()) == (
        "Greenhouse at 31.5 C", "1 (Highest)", normalise(ALERT_BODY.encode()).decode())


def test_utf8_text_goes_8bit_to_an_8bitmime_server(core, aio):
    ctl = aio()
    ok(core.send(cfg(ctl.port), **UTF8))
    env = ctl.handler.messages[0]
    assert env.mail_options == ["BODY=8BITMIME"]
    check_utf8(content(env))


def test_session_of_several_mails_on_one_connection(core, aio):
    ctl = aio()
    mails = [ALERT, UTF8, dict(ALERT, subject="third", message_id="<alert-3@example.com>")]
    report = core.run(cfg(ctl.port), mails, session=True)
    assert [ok(r)["text"] for r in report["results"]] == ["2.0.0 OK: queued as AIO%d" % i for i in (1, 2, 3)]
    assert verbs(s.encode() for s in sent(report)) == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 3 + ["QUIT"]
    first, second, third = (content(m) for m in ctl.handler.messages)
    assert first == ALERT_WIRE
    check_utf8(second)
    assert third == ALERT_WIRE.replace(b"Greenhouse at 31.5 C", b"third").replace(b"alert-1", b"alert-3")


@pytest.mark.parametrize("auth, mechanism", [("AUTH_PLAIN", "PLAIN"), ("AUTH_LOGIN", "LOGIN"),
                                             ("AUTH_AUTO", "PLAIN")])
def test_auth_plain_and_login(core, aio, auth, mechanism):
    # The server lists "AUTH CRAM-MD5 LOGIN PLAIN XOAUTH2": AUTO takes PLAIN, the best the core has.
    ctl = aio(auth_required=True)
    report = core.send(cfg(ctl.port, authentication_type=auth, allow_insecure_auth=True, **creds()),
                       **ALERT)["report"]
    ok(report["results"][0])
    assert "250-AUTH CRAM-MD5 LOGIN PLAIN XOAUTH2" in received(report)
    assert ctl.handler.mechanisms == [mechanism]
    assert [s for s in sent(report) if s.startswith("AUTH")] == [
        "AUTH PLAIN ****" if mechanism == "PLAIN" else "AUTH LOGIN"]
    assert content(ctl.handler.messages[0]) == ALERT_WIRE


def test_cram_md5_offered_first_still_gets_plain(core, fake):
    srv = fake({"EHLO": b"250-fake.test\r\n250-AUTH CRAM-MD5 PLAIN LOGIN\r\n250 8BITMIME\r\n"})
    ok(core.send(cfg(srv.port, allow_insecure_auth=True, **creds()), **ALERT))
    srv.wait_done(5)
    plain = base64.b64encode(b"\0alice\0" + USERS["alice"].encode())
    assert [c.rstrip(b"\r\n") for c in srv.commands if not c.startswith(b"EHLO")] == [
        b"AUTH PLAIN " + plain, b"MAIL FROM:<sensor@example.com>", b"RCPT TO:<bob@example.org>",
        b"DATA", b"QUIT"]
    stuffed = ALERT_WIRE.replace(b"\r\n.\r\n", b"\r\n..\r\n").replace(b"\r\n..two", b"\r\n...two")
    assert srv.messages == [stuffed]  # as on the wire: dot-stuffed


def test_mebibyte_file_streamed(core, aio, tmp_path):
    path = one_mb_file(tmp_path)
    ctl = aio()
    ok(core.send(cfg(ctl.port, debug=None), **dict(ALERT, mail_body={"file": str(path)})))
    data = content(ctl.handler.messages[0])
    assert data.split(b"\r\n\r\n", 1)[1] == normalise(path.read_bytes())
    assert b"Content-Transfer-Encoding: 7bit\r\n" in data


# -- Postfix: it offers SIZE and CHUNKING, the core sends neither ----------------------------------


def test_postfix_session_gets_data_never_size_or_bdat(core, postfix, tee, tmp_path):
    path = one_mb_file(tmp_path)
    relay = tee(postfix.relay_port)
    mails = [ALERT, UTF8, dict(ALERT, subject="log", message_id="<log@example.com>",
                               mail_body={"file": str(path)})]
    report = core.run(cfg(relay.port, debug=None), mails, session=True)
    texts = [ok(r)["text"] for r in report["results"]]
    assert relay.connections == 1
    ehlo = bytes(relay.to_client).split(b"\r\n")
    assert b"250-SIZE 10240000" in ehlo and b"250 CHUNKING" in ehlo and b"250-PIPELINING" in ehlo
    lines = commands(relay.to_server)
    assert verbs(lines) == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 3 + ["QUIT"]
    assert [c for c in lines if c.startswith(b"MAIL")] == [
        b"MAIL FROM:<sensor@example.com>", b"MAIL FROM:<sensor@example.com> BODY=8BITMIME",
        b"MAIL FROM:<sensor@example.com>"]
    first, second, third = (delivered(postfix, t) for t in texts)
    assert (first["sender"], first["recipients"]) == ("sensor@example.com", ["bob@example.org"])
    assert strip_received(first["data"]) == ALERT_WIRE.replace(b"\r\n", b"\n")  # Postfix stores LF
    check_utf8(strip_received(second["data"]).replace(b"\n", b"\r\n"))
    head, _, body = strip_received(third["data"]).partition(b"\n\n")
    assert body == path.read_bytes() and b"\nSubject: log\n" in head


@pytest.mark.parametrize("auth, mechanism", [("AUTH_AUTO", "PLAIN"), ("AUTH_LOGIN", "LOGIN")])
def test_postfix_starttls_verified_with_auth(core, postfix, pki, auth, mechanism):
    report = core.send(tls_cfg(postfix.starttls_port, pki, authentication_type=auth, **creds()),
                       **UTF8)["report"]
    r = ok(report["results"][0])
    assert report["tls_verified"] is True
    m = delivered(postfix, r["text"])
    assert b"with ESMTPSA" in m["data"]  # Postfix: TLS, authenticated
    check_utf8(strip_received(m["data"]).replace(b"\n", b"\r\n"))
    out, heard = sent(report), received(report)
    auth = ["AUTH PLAIN ****"] if mechanism == "PLAIN" else ["AUTH LOGIN", "****", "****"]  # redacted
    assert out[3 : 3 + len(auth)] == auth
    out = out[:3] + out[3 + len(auth) :]
    assert out[3] == "MAIL FROM:<sensor@example.com> BODY=8BITMIME"
    assert verbs(s.encode() for s in out) == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    inside = heard[heard.index("220 2.0.0 Ready to start TLS") + 1 :]  # the EHLO reply inside TLS
    assert "250-SIZE 10240000" in inside and "250 CHUNKING" in inside
    assert "250-AUTH PLAIN LOGIN CRAM-MD5" in inside


# == 2. what the core does not have: a clear error before anything of the mail is sent ================

MIME_MAILS = {
    "html": {"html": {"str": "<p>41 &deg;C</p>"}},
    "attachments": {"attachments": [["status.csv", {"hex": b"t,41\n".hex()}, "text/csv"]]},
    "headers": {"headers": {"X-Sensor": "greenhouse-3"}},
}
AUTH_CLIENTS = {
    "AUTH_CRAM_MD5": creds(authentication_type="AUTH_CRAM_MD5"),
    "AUTH_XOAUTH2": dict(username="alice", password=XOAUTH2_TOKEN, authentication_type="AUTH_XOAUTH2"),
    "token provider": dict(username="alice", password={"token": XOAUTH2_TOKEN}),
}
UTF8_ADDRESSES = {  # (client, mail)
    "recipient": ({}, {"recipient_address": "jürgen@example.de"}),
    "cc": ({}, {"cc": "Jürgen <jürgen@example.de>"}),
    "from_address": ({"from_address": "Jürgen <jürgen@example.de>"}, {}),
}
QP_BODIES = {  # (EHLO, mail_body): each needs quoted-printable
    "generator": (None, {"generator": [{"str": "one-shot\n"}, {"str": "stream\n"}]}),
    "line over 998": (None, {"str": "x" * 999 + "\n"}),
    "NUL": (None, {"str": "a\0b\n"}),
    "8-bit without 8BITMIME": (b"250-fake.test\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n",
                               {"str": "Zażółć\n"}),
}


def import_error(e, module, option):
    assert e["type"] == "ImportError", e
    for name in (module, module.replace("_", "-"), option + "=True"):
        assert name in e["message"], (name, e)


@pytest.mark.parametrize("kind", MIME_MAILS)
def test_mime_options_need_smtp_duo_mime_before_connecting(core, listener, kind):
    r = core.send(cfg(listener.port), **dict(ALERT, **MIME_MAILS[kind]))
    import_error(r["error"], "smtp_duo_mime", "mime")
    assert listener.connections() == 0


@pytest.mark.parametrize("kind", AUTH_CLIENTS)
def test_cram_md5_and_xoauth2_need_smtp_duo_auth_at_construction(core, listener, kind):
    report = core.run(cfg(listener.port, allow_insecure_auth=True, **AUTH_CLIENTS[kind]), [ALERT])
    assert report["results"] == []  # SMTPClient() raised
    import_error(report["error"], "smtp_duo_auth", "auth")
    assert listener.connections() == 0


@pytest.mark.parametrize("kind", UTF8_ADDRESSES)
def test_non_ascii_address_needs_smtp_duo_utf8_before_connecting(core, listener, kind):
    client, mail = UTF8_ADDRESSES[kind]
    r = core.send(cfg(listener.port, **client), **dict(ALERT, **mail))
    import_error(r["error"], "smtp_duo_utf8", "utf8")
    assert listener.connections() == 0


@pytest.mark.parametrize("kind", ["generator", "line over 998", "NUL"])
def test_text_needing_quoted_printable_whatever_the_server_fails_before_connecting(core, listener, kind):
    # A one-shot stream, a line over 998 octets or a NUL goes quoted-printable to any server:
    # known when the mail is made, so ImportError then, and no connection.
    ehlo, body = QP_BODIES[kind]
    r = core.send(cfg(listener.port), **dict(ALERT, mail_body=body))
    import_error(r["error"], "smtp_duo_qp", "qp")
    assert listener.connections() == 0


def test_8bit_text_to_a_server_without_8bitmime_fails_before_mail(core, fake):
    # Only the server's EHLO tells: after it, before MAIL, a permanent SMTPNotSupportedError
    # naming smtp_duo_qp, its mip package and manifest option; QUIT ends the session.
    ehlo, body = QP_BODIES["8-bit without 8BITMIME"]
    srv = fake({"EHLO": ehlo})
    r = core.send(cfg(srv.port), **dict(ALERT, mail_body=body))
    srv.wait_done(5)
    e = r["error"]
    assert (e["type"], e["status"], e["code"], e["command"], e["temporary"]) == (
        "SMTPNotSupportedError", smtp_duo.INVALID_PARAM, None, "MAIL", False)
    for name in ("smtp_duo_qp", "smtp-duo-qp", "qp=True", "8BITMIME"):
        assert name in e["message"], (name, e)
    assert verbs(srv.commands) == ["EHLO", "QUIT"] and srv.messages == []
    assert b"MAIL" not in srv.received


EHLO_STARTTLS = b"250-fake.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
TLS_TIP = ": give the CA that signed this server's certificate as cadata"


def test_tls_failure_without_smtp_duo_explain_is_short(core, fake, pki):
    # A certificate from another CA: the handshake's own words, without smtp_duo_explain's tip.
    srv = fake({"EHLO": EHLO_STARTTLS}, tls_context=pki.server_context("evil"))
    e = core.send(tls_cfg(srv.port, pki, timeout=5), **ALERT)["error"]
    deadline = time.monotonic() + 5
    while not srv.tls_errors and time.monotonic() < deadline:  # the server's side of the handshake
        time.sleep(0.01)
    assert (e["type"], e["status"], e["command"], e["temporary"]) == (
        "SMTPTLSError", smtp_duo.TLS_ERROR, "TLS", False)
    assert e["message"].startswith("TLS handshake failed on port %d: " % srv.port)
    assert TLS_TIP not in e["message"]
    assert srv.tls_errors and srv.tls_at is None  # the handshake failed on both sides
    assert srv.plaintext.endswith(b"\r\nSTARTTLS\r\n")  # the last thing in clear


# == 3. with every extension: the same inputs succeed, each extension imported only when needed ======


@pytest.mark.parametrize("size", [False, True], ids=["no SIZE", "SIZE"])
def test_plain_alert_imports_no_extension(full, aio, size):
    # A server offering SIZE (most do) is what imports smtp_duo_chunking, for SIZE=.
    ctl = aio(data_size_limit=2 ** 25 if size else None)
    report = full.send(cfg(ctl.port), **ALERT)["report"]
    ok(report["results"][0])
    env = ctl.handler.messages[0]
    assert content(env) == ALERT_WIRE
    if size:
        assert report["loaded"] == ["smtp_duo_chunking"]
        assert env.mail_options == ["SIZE=%d" % len(ALERT_WIRE)]  # unstuffed, no terminator
    else:
        assert report["loaded"] == [] and env.mail_options == []


def test_html_imports_smtp_duo_mime(full, aio):
    ctl = aio(data_size_limit=None)
    report = full.send(cfg(ctl.port), **dict(ALERT, **MIME_MAILS["html"]))["report"]
    ok(report["results"][0])
    assert report["loaded"] == ["smtp_duo_mime"]
    msg = parse(content(ctl.handler.messages[0]))
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("html",)).get_content() == "<p>41 &deg;C</p>\r\n"
    assert msg.get_body(("plain",)).get_content() == normalise(ALERT_BODY.encode()).decode()


@pytest.mark.parametrize("kind", ["attachments", "headers"])
def test_other_mime_options_import_smtp_duo_mime(full, aio, kind):
    ctl = aio(data_size_limit=None)
    report = full.send(cfg(ctl.port), **dict(ALERT, **MIME_MAILS[kind]))["report"]
    ok(report["results"][0])
    assert report["loaded"] == ["smtp_duo_mime"]
    msg = parse(content(ctl.handler.messages[0]))
    if kind == "attachments":
        att = next(msg.iter_attachments())
        assert (att.get_filename(), att.get_content_type(), att.get_payload(decode=True)) == (
            "status.csv", "text/csv", b"t,41\n")
    else:
        assert msg["x-sensor"] == "greenhouse-3" and msg.get_content_type() == "text/plain"


@pytest.mark.parametrize("kind", list(AUTH_CLIENTS) + ["AUTO, CRAM-MD5 offered"])
def test_auth_options_import_smtp_duo_auth(full, aio, kind):
    ctl = aio(auth_required=True, data_size_limit=None)
    client = AUTH_CLIENTS.get(kind) or creds()
    report = full.send(cfg(ctl.port, allow_insecure_auth=True, **client), **ALERT)["report"]
    ok(report["results"][0])
    assert report["loaded"] == ["smtp_duo_auth"]  # hashlib.md5: no smtp_duo_md5 on either runtime
    assert ctl.handler.mechanisms == ["XOAUTH2" if "XOAUTH2" in kind or "token" in kind else "CRAM-MD5"]


@pytest.mark.parametrize("kind", UTF8_ADDRESSES)
def test_non_ascii_address_imports_smtp_duo_utf8(full, aio, kind):
    ctl = aio(data_size_limit=None)
    client, mail = UTF8_ADDRESSES[kind]
    report = full.send(cfg(ctl.port, **client), **dict(ALERT, **mail))["report"]
    ok(report["results"][0])
    assert report["loaded"] == ["smtp_duo_utf8"]
    env = ctl.handler.messages[0]
    assert "SMTPUTF8" in env.mail_options and "jürgen@example.de" in [env.mail_from] + env.rcpt_tos


@pytest.mark.parametrize("kind", QP_BODIES)
def test_text_needing_quoted_printable_imports_smtp_duo_qp(full, aio, kind):
    ehlo, body = QP_BODIES[kind]
    ctl = aio(data_size_limit=None, decode_data=ehlo is not None)  # decode_data: no 8BITMIME
    report = full.send(cfg(ctl.port), **dict(ALERT, mail_body=body))["report"]
    ok(report["results"][0])
    assert report["loaded"] == ["smtp_duo_qp"]
    msg = parse(content(ctl.handler.messages[0]))
    assert msg["content-transfer-encoding"] == "quoted-printable"
    parts = body["generator"] if "generator" in body else [body]
    text = b"".join(p["str"].encode() for p in parts)
    assert msg.get_payload(decode=True) == normalise(text)


def test_tls_failure_imports_smtp_duo_explain(full, fake, pki):
    srv = fake({"EHLO": EHLO_STARTTLS}, tls_context=pki.server_context("evil"))
    r = full.send(tls_cfg(srv.port, pki, timeout=5), **ALERT)
    e = r["error"]
    assert (e["type"], e["temporary"]) == ("SMTPTLSError", False)
    assert e["message"].startswith("TLS handshake failed on port %d: " % srv.port) and TLS_TIP in e["message"]
    assert r["report"]["loaded"] == ["smtp_duo_explain"]


def test_connect_failure_explained_with_smtp_duo_explain(full, listener):
    port = listener.port
    listener.sock.close()  # nothing listens there now: ECONNREFUSED
    r = full.send(cfg(port), **ALERT)
    assert r["error"]["type"] == "SMTPConnectionError", r
    assert "nothing listens on 127.0.0.1 port %d" % port in r["error"]["message"]
