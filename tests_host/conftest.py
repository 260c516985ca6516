"""Fixtures: the client on both runtimes, aiosmtpd in process, Postfix, the scripted server.

Every end-to-end test takes the `runner` fixture, which is parametrised over the runtime that
executes the client: CPython (in process) and the MicroPython unix port (a subprocess with a
fixed heap, importing the library from .mpy). Under CI=true a missing runtime or server fails
the run; elsewhere it skips with the reason.

The repository's root goes on sys.path for hostkit/ (the host code the tests share with tools/:
free ports, mpy-cross, the qemu board, Postfix); the tests never import tools/ (a test that needs
a tool's figures runs it as a program).
"""

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "lib"), str(HERE), str(HERE / "portable"), str(ROOT)]
collect_ignore = ["portable"]  # collected through test_portable_runner.py, on both runtimes

import driver  # noqa: E402
import smtp_duo  # noqa: E402
from fakeserver import FakeServer  # noqa: E402
from hostkit.mpy import compile_all, micropython_path  # noqa: E402
from hostkit.ports import free_port  # noqa: E402

CI = os.environ.get("CI") == "true"
DEFAULT_HEAP = "128k"


def marker(out, prefix):
    """The JSON after the last line starting with `prefix ` in a board's output."""
    for line in reversed(out.splitlines()):
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1 :])
    raise AssertionError("no %s line in the board's output:\n%s" % (prefix, out))


def require(ok, what):
    """Fail under CI=true, skip elsewhere, when a needed runtime or server is missing."""
    if not ok:
        if CI:
            pytest.fail("%s is missing under CI=true (run tools/setup.sh)" % what)
        pytest.skip("%s is missing (run tools/setup.sh)" % what)


# -- the MicroPython runtime ------------------------------------------------------------------


def frozen_micropython_path():
    """The unix port built by tools/build_firmware.sh with smtp_duo frozen in, or None."""
    env = os.environ.get("SMTP_DUO_FROZEN_MICROPYTHON")
    path = Path(env) if env else ROOT / ".deps" / "firmware" / "unix" / "micropython"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def micropython():
    path = micropython_path()
    require(path is not None, "the MicroPython unix port (.deps/bin/micropython)")
    return path


@pytest.fixture(scope="session")
def mpy_dir(tmp_path_factory):
    """lib/*.py and the test driver cross-compiled to .mpy (what a board would load)."""
    sources = sorted((ROOT / "lib").glob("*.py")) + [HERE / "driver.py"]
    return compile_all(sources, tmp_path_factory.mktemp("mpy"))


def run_micropython(micropython, mpy_dir, args, heap=DEFAULT_HEAP, timeout=120, cwd=None):
    env = dict(os.environ, MICROPYPATH=f"{mpy_dir}:.frozen")
    return subprocess.run(
        [str(micropython), "-X", f"heapsize={heap}", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )


class Runner:
    """Runs client jobs (see driver.py) on one runtime and returns the driver's report."""

    def __init__(self, runtime, micropython=None, mpy_dir=None, tmp_path=None, asynchronous=False):
        self.runtime = runtime
        self.asynchronous = asynchronous  # the job runs on smtp_duo_async's AsyncSMTPClient
        self.micropython = micropython
        self.mpy_dir = mpy_dir
        self.tmp_path = tmp_path

    def run(self, client, mails, session=False, heap=DEFAULT_HEAP, timeout=120):
        job = {"client": client, "mails": mails, "session": session, "async": self.asynchronous}
        job = json.loads(json.dumps(job))  # exactly what MicroPython would get
        if self.runtime == "cpython":
            return driver.run_job(job)
        path = self.tmp_path / "job.json"
        # Raw UTF-8: MicroPython's json does not join \ud83c\udf21-style surrogate pairs.
        path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        p = run_micropython(self.micropython, self.mpy_dir, ["-m", "driver", str(path)], heap, timeout)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            raise AssertionError(f"micropython failed (rc {p.returncode}):\n{p.stdout}\n{p.stderr}")
        return json.loads(lines[-1])

    def send(self, client, heap=DEFAULT_HEAP, **mail):
        """One mail_send; returns {"ok": reply} or {"error": ...}, plus "report" (the whole)."""
        report = self.run(client, [mail], heap=heap)
        result = {"error": report["error"]} if "error" in report else dict(report["results"][0])
        result["report"] = report
        return result


@pytest.fixture(params=["cpython", "micropython", "cpython-async", "micropython-async"])
def runner(request, tmp_path):
    """The blocking client and smtp_duo_async's AsyncSMTPClient, each on both runtimes."""
    runtime, _, flavour = request.param.partition("-")
    if runtime == "cpython":
        return Runner("cpython", asynchronous=flavour == "async")
    mp = request.getfixturevalue("micropython")
    return Runner("micropython", mp, request.getfixturevalue("mpy_dir"), tmp_path, flavour == "async")


@pytest.fixture
def cpython_runner():
    return Runner("cpython")


# -- a test PKI ------------------------------------------------------------------------------------


class PKI:
    """Certificates made for this run (trustme): a CA and a server certificate for "localhost",
    "smtp.test" and 127.0.0.1 signed by it; a second, untrusted CA with its own certificate for
    the same names; and a certificate from the good CA for another name only. Files are PEM
    unless named *_der."""

    def __init__(self, folder):
        import trustme

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.ca_der = self._write("ca.der", ssl_pem_to_der(self.ca.cert_pem.bytes()))
        self.cert_pem, self.key_pem = self._issue(self.ca, "server", "localhost", "smtp.test", "127.0.0.1")
        self.evil_ca = trustme.CA()
        self.evil_cert_pem, self.evil_key_pem = self._issue(self.evil_ca, "evil", "localhost", "smtp.test",
                                                            "127.0.0.1")
        self.other_cert_pem, self.other_key_pem = self._issue(self.ca, "other", "other.example")

    def _write(self, name, data):
        path = self.folder / name
        path.write_bytes(data)
        return path

    def _issue(self, ca, stem, *names):
        cert = ca.issue_cert(*names)
        chain = self._write(stem + "-chain.pem", b"".join(p.bytes() for p in cert.cert_chain_pems))
        key = self._write(stem + "-key.pem", cert.private_key_pem.bytes())
        return chain, key

    def server_context(self, which="good"):
        """An ssl.SSLContext for a test server presenting the good, evil or other certificate."""
        import ssl

        cert, key = {"good": (self.cert_pem, self.key_pem), "evil": (self.evil_cert_pem, self.evil_key_pem),
                     "other": (self.other_cert_pem, self.other_key_pem)}[which]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        return ctx


def ssl_pem_to_der(pem):
    import ssl

    return ssl.PEM_cert_to_DER_cert(pem.decode())


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    try:
        import trustme  # noqa: F401
    except ImportError:
        require(False, "trustme")
    return PKI(tmp_path_factory.mktemp("pki"))


# -- servers ------------------------------------------------------------------------------------


@pytest.fixture
def fake():
    """fake(script, connections=1) -> a started FakeServer, stopped after the test."""
    servers = []

    def start(script=None, **kw):
        srv = FakeServer(script, **kw)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


USERS = {"alice": "correct horse", "bob": "s3cret!"}
XOAUTH2_TOKEN = "ya29.test-token"


class Recorder:
    """aiosmtpd handler keeping every envelope; also serves AUTH XOAUTH2."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 2.0.0 OK: queued as AIO%d" % len(self.messages)

    async def auth_XOAUTH2(self, server, args):
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) > 1:
            data = base64.b64decode(args[1])
        else:
            data = await server.challenge_auth("")
            if data is MISSING:
                return AuthResult(success=False, handled=True)
        expected = b"user=alice\x01auth=Bearer " + XOAUTH2_TOKEN.encode() + b"\x01\x01"
        if data == expected:
            return AuthResult(success=True, auth_data=data)
        detail = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'
        await server.challenge_auth(detail)  # the client must answer with an empty line
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


def _authenticator(server, session, envelope, mechanism, data):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and USERS.get(data.login.decode()) == data.password.decode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtpd():
    """smtpd(handler=None, **Controller options) -> a started aiosmtpd Controller on 127.0.0.1
    (handler: a Recorder unless given; AUTH PLAIN/LOGIN/XOAUTH2 allowed without TLS unless
    overridden)."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        require(False, "aiosmtpd")
    controllers = []

    def start(handler=None, **options):
        kw = dict(hostname="127.0.0.1", port=free_port(), authenticator=_authenticator,
                  auth_require_tls=False, enable_SMTPUTF8=True, data_size_limit=2 ** 25)
        kw.update(options)
        ctl = Controller(handler or Recorder(), **kw)
        ctl.start()
        controllers.append(ctl)
        return ctl

    yield start
    for ctl in controllers:
        ctl.stop()


@pytest.fixture(scope="session")
def postfix(pki):
    """A private Postfix instance on loopback (see hostkit/postfix.py), for the whole run, with the
    test PKI's certificate on its STARTTLS and implicit-TLS ports."""
    require(shutil.which("postfix") or Path("/usr/sbin/postfix").exists(), "Postfix")
    from hostkit.postfix import PostfixServer

    srv = PostfixServer(users=USERS, tls_cert=str(pki.cert_pem), tls_key=str(pki.key_pem))
    srv.start()
    yield srv
    srv.stop()


def delivered(postfix, reply_text, timeout=10):
    """The stored delivery of the message Postfix queued ("... queued as ID" in reply_text)."""
    import time

    queue_id = reply_text.rsplit(" ", 1)[-1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in postfix.messages():
            if m["queue_id"] == queue_id:
                return m
        time.sleep(0.05)
    raise AssertionError("message %s not delivered:\n%s" % (queue_id, postfix.log_tail()))


def client_config(port, **kw):
    cfg = {"server_address": "127.0.0.1", "port": port, "from_address": "sensor@example.com",
           "timeout": 10}
    cfg.update(kw)
    return cfg
