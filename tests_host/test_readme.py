"""Every code block of README.md and board/README.md is executed or checked against something
real, so a stale example fails the suite (issue 14).

Each fenced block (```python, ```sh, ``` plain) and each 4-space-indented block carries an
annotation right before it, `<!-- run: KIND notes -->`; a block without one, or with an unknown
KIND, fails test_every_block_is_annotated. The kinds:

    unix      Python for a board: run on the MicroPython unix port (library as .mpy, fixed heap)
              with tests_host/readme/mp/ first on the path: its `socket` maps the names the
              examples use to this module's local servers (192.168.1.10, mail.lan, lab.example:
              an aiosmtpd relay; smtp.gmail.com, smtp.office365.com, smtp.example.com port 587:
              an aiosmtpd with STARTTLS and AUTH whose trustme certificate is for those names;
              192.168.1.20:8000: a web server holding the mip index) and fails any other name,
              so nothing reaches the network; its `ntptime` stands in for NTP. Documented
              fill-ins: `ca.der` is the run's CA; an elided `...` line is dropped, `, ...)` gets
              the STARTTLS server's CA and login, `(...)` a mail; a board path "/x" is "x" in the
              run's folder; `client`/`wlan`/`sensor_loop` are given when the block uses them
              without defining them; `async def main` is run. The mail must arrive as written.
    sh        shell lines run for real with bash in a folder that mirrors the checkout (so files
              they write stay out of it), HOME there too; CPython gets readme/cpython/
              (sitecustomize: the same name map) and the run's CA as its trust store
              (SSL_CERT_FILE); tools/demo.sh's MicroPython gets the mp/ shim. `bash tools/test.sh`
              runs as `--co -q` (it must not recurse). Each command has a check in COMMANDS; a
              command without one fails.
    qemu      as sh, with the qemu Cortex-M3 board (tools/build_firmware.sh qemu-ram: littlefs
              flash) as the board: `/dev/ttyACM0` becomes its pty plus --no-soft-reset, and
              `mpremote` is `mpremote connect <pty> resume` (the test mounts the flash first; a
              soft reset would unmount it). Files copied are compared with the board's.
    api       a signature listing: compared with inspect.signature of the library (CPython).
    output    output, a transcript or a listing: compared with a real run (the wire bytes, the
              app's messages, the checkout's files).
    config    config.py lines: applied to board/config_example.py, board/esp32/main.py run under
              tests_host/boardshim (and the name map); the alert must arrive.
    manifest  a FROZEN_MANIFEST (MicroPython's tools/manifestfile.py reads it with the port's or
              board's real manifest; the checkout for /home/me/smtp_duo; require() recorded, as
              micropython-lib is not here) or its make lines (no ESP-IDF or pico-sdk here: the
              manifest file, port, board and folders they name are checked).

One set of servers and one qemu board serve the whole module. Under CI=true a missing runtime,
firmware or server fails (conftest.require).
"""

import ast
import email
import email.policy
import hashlib
import inspect
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import smtp_duo
from conftest import DEFAULT_HEAP, HERE, ROOT, require
from hostkit.mpy import compile_all
from hostkit.ports import free_port

READMES = [ROOT / "README.md", ROOT / "board" / "README.md"]
KINDS = ("unix", "sh", "qemu", "api", "output", "config", "manifest")
MP_SHIM = HERE / "readme" / "mp"
CPY_SHIM = HERE / "readme" / "cpython"
PROVIDER_NAMES = ("smtp.gmail.com", "smtp.office365.com", "smtp.example.com")
RELAY_NAMES = ("192.168.1.10", "mail.lan", "lab.example")
USERS = {"greenhouse@gmail.com": ("app password", "app-password"), "alice": ("secret",)}
LAB_PASSWORD = "secret"


# -- the blocks -------------------------------------------------------------------------------------

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
ANNOTATION = re.compile(r"^\s*<!-- run: (\w+)(.*?)-->\s*$")


@dataclass
class Block:
    file: Path
    line: int  # 1-based, the fence or first indented line
    how: str  # "fence" or "indent"
    lang: str
    text: str  # dedented content
    kind: str  # "" when not annotated
    notes: str

    @property
    def id(self):
        return "%s:%d:%s" % (self.file.relative_to(ROOT), self.line, self.kind or "none")


def _annotation(lines, i):
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    m = ANNOTATION.match(lines[j]) if j >= 0 else None
    return (m.group(1), m.group(2).strip()) if m else ("", "")


def _dedent(lines):
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines).strip("\n") + "\n"


def collect(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    out, i, n = [], 0, len(lines)
    while i < n:
        m = FENCE.match(lines[i])
        if m:
            j = i + 1
            while j < n and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            out.append(Block(path, i + 1, "fence", m.group(2), _dedent(lines[i + 1 : j]), *_annotation(lines, i)))
            i = j + 1
            continue
        if lines[i].startswith("    ") and lines[i].strip() and i > 0 and not lines[i - 1].strip():
            j = i
            while j < n and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append(Block(path, i + 1, "indent", "", _dedent(lines[i:j]), *_annotation(lines, i)))
            i = j
            continue
        i += 1
    return out


BLOCKS = [b for path in READMES for b in collect(path)]


def test_every_block_is_annotated():
    bad = ["%s: %r" % (b.id, b.text.splitlines()[0]) for b in BLOCKS if b.kind not in KINDS]
    assert not bad, ("blocks without a known `<!-- run: KIND -->` annotation (KIND one of %s):\n  %s"
                     % (", ".join(KINDS), "\n  ".join(bad)))
    assert len(BLOCKS) >= 26  # both files' blocks were found


# -- servers ----------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: each message with its envelope and the login it came under."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.decode() if session.authenticated else None
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "login": login,
                              "tls": bool(session.ssl), "msg": email.message_from_bytes(
                                  envelope.content, policy=email.policy.default), "raw": envelope.content})
        return "250 2.0.0 OK: queued as README%d" % len(self.messages)


def _authenticator(server, session, envelope, mechanism, data):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and data.password.decode() in USERS.get(data.login.decode(), ())
    return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)


class Servers:
    def __init__(self, folder):
        import trustme
        from aiosmtpd.controller import Controller

        self.folder = folder
        self.ca = trustme.CA()
        self.ca_pem = folder / "ca.pem"
        self.ca_pem.write_bytes(self.ca.cert_pem.bytes())
        self.ca_der = ssl.PEM_cert_to_DER_cert(self.ca.cert_pem.bytes().decode())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*PROVIDER_NAMES, "localhost").configure_cert(ctx)
        self.relay = Controller(Inbox(), hostname="127.0.0.1", port=free_port(), authenticator=_authenticator,
                                auth_require_tls=False, enable_SMTPUTF8=True)
        self.provider = Controller(Inbox(), hostname="127.0.0.1", port=free_port(), authenticator=_authenticator,
                                   tls_context=ctx, require_starttls=True, auth_required=True,
                                   auth_require_tls=True)
        self.relay.start()
        self.provider.start()
        self.mip_port = None  # set by the mip_server fixture

    def hosts(self):
        m = {"%s:25" % n: ["127.0.0.1", self.relay.port] for n in RELAY_NAMES}
        m.update({"%s:587" % n: ["127.0.0.1", self.provider.port] for n in PROVIDER_NAMES})
        if self.mip_port:
            m["192.168.1.20:8000"] = ["127.0.0.1", self.mip_port]
        return m

    def clear(self):
        self.relay.handler.messages.clear()
        self.provider.handler.messages.clear()

    def stop(self):
        self.relay.stop()
        self.provider.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    try:
        import aiosmtpd  # noqa: F401
        import trustme  # noqa: F401
    except ImportError:
        require(False, "aiosmtpd and trustme")
    srv = Servers(tmp_path_factory.mktemp("readme-servers"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mip_server(servers, tmp_path_factory):
    """The mip index of tools/mip_index.py on a loopback web server (192.168.1.20:8000 maps here)."""
    from test_mip import FileServer

    out = tmp_path_factory.mktemp("readme-index") / "mip"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "mip_index.py"), str(out)],
                       capture_output=True, text=True, timeout=300)
    require(p.returncode == 0, "mpy-cross for tools/mip_index.py: " + p.stdout + p.stderr)
    srv = FileServer(out)
    servers.mip_port = srv.server_address[1]
    yield out
    servers.mip_port = None
    srv.stop()


# -- the unix port ----------------------------------------------------------------------------------


def run_mp(micropython, mpy_dir, servers, code, cwd, extra_path=(), heap=DEFAULT_HEAP, timeout=120):
    script = cwd / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    path = [str(MP_SHIM), *map(str, extra_path), str(mpy_dir), ".frozen", str(cwd / "lib")]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path), SMTP_DUO_README_HOSTS=json.dumps(servers.hosts()))
    p = subprocess.run([str(micropython), "-X", "heapsize=" + heap, str(script)], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=cwd)
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, (
        "rc %d\n--- code\n%s\n--- stdout\n%s\n--- stderr\n%s" % (p.returncode, code, p.stdout, p.stderr))
    return p.stdout


def fill_in(code):
    """The documented fill-ins for a unix block (see the module's docstring)."""
    prelude = ["import smtp_duo", "README_CA = open('ca.der', 'rb').read()",
               "README_LOGIN = dict(cadata=README_CA, username='greenhouse@gmail.com', "
               "password='app password', from_address='greenhouse@gmail.com')"]
    if re.search(r"\bclient\b", code) and not re.search(r"^client\s*=", code, re.M):
        prelude.append('client = smtp_duo.SMTPClient(server_address="192.168.1.10", '
                       'from_address="greenhouse@example.com")')
    if re.search(r"\bwlan\b", code) and "wlan =" not in code:
        prelude.append("class wlan:\n    isconnected = staticmethod(lambda: True)")
    if "sensor_loop" in code and "def sensor_loop" not in code:
        prelude.append("async def sensor_loop():\n    print('@@readme-sensor-loop')")
    code = re.sub(r"^\s*\.\.\.\s*$", "", code, flags=re.M)
    code = code.replace(", ...)", ", **README_LOGIN)")
    code = code.replace("(...)", '("ops@example.com", subject="README: the session\'s mail", '
                                 'mail_body="second\\n")')
    code = re.sub(r'"/([A-Za-z0-9_.]+)"', r'"\1"', code)
    if "async def main" in code and "asyncio.run(main())" not in code:
        code += "\nasyncio.run(main())\n"
    return "\n".join(prelude) + "\n" + code


def literal_subjects(code):
    """The subjects the block's mail_send()/put() calls give as literals."""
    subjects = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("mail_send", "put"):
            args = {k.arg: k.value for k in node.keywords}
            if "subject" not in args and len(node.args) >= 3:
                args["subject"] = node.args[2 if node.func.attr == "mail_send" else 1]
            if node.func.attr == "put" and len(node.args) >= 2:
                args["subject"] = node.args[1]
            if isinstance(args.get("subject"), ast.Constant):
                subjects.append(args["subject"].value)
    return subjects


def check_unix_block(block, code, out, servers, cwd):
    """What each unix block must have done, beyond running cleanly."""
    relay, provider = servers.relay.handler.messages, servers.provider.handler.messages
    got = relay + provider
    if "import mip" in code:
        index = json.loads((cwd / "mip-index.json").read_text())
        installed = sorted(p.name for p in (cwd / "lib").iterdir())
        assert installed == ["smtp_duo.mpy", "smtp_duo_outbox.mpy"], installed
        for name in installed:
            assert hashlib.sha256((cwd / "lib" / name).read_bytes()).hexdigest().startswith(index[name]), name
        return
    subjects = literal_subjects(fill_in(code))
    assert subjects, "no mail in this unix block: add a check for it to check_unix_block"
    assert set(subjects) <= {str(m["msg"]["subject"]) for m in got}, (subjects, got, out)
    for m in got:
        if m["login"]:
            assert m["tls"] and m["login"] == "greenhouse@gmail.com", m
    if "smtp.gmail.com" in code or "smtp.office365.com" in code or "smtp.example.com" in code:
        assert provider and all(m["tls"] and m["login"] == "greenhouse@gmail.com" for m in provider), out
        assert not relay, relay
    else:
        assert relay and not provider, (relay, provider)
    if "ntptime.settime()" in code:
        assert "@@readme-ntp settime" in out
    for m in got:  # the body as written, where the block gives it as a literal
        body = m["msg"].get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body.strip() and body.strip() in code.replace("\\n", "\n") or "second" in body, (body, code)
    if "cid:" in code:  # inline images (issue 16): each cid: in the HTML names exactly one part
        [m] = got
        msg = m["msg"]
        refs = re.findall(r"cid:([^\"']+)", msg.get_body(("html",)).get_content())
        assert refs, msg
        for ref in refs:
            hits = [p for p in msg.walk() if str(p.get("Content-ID", "")).strip() == "<%s>" % ref]
            assert len(hits) == 1 and hits[0].get_payload(decode=True) == (cwd / "snap.jpg").read_bytes(), ref
        assert [p.get_content_type() for p in msg.walk()] == [
            "multipart/mixed", "multipart/alternative", "text/plain", "multipart/related", "text/html",
            "image/jpeg", "text/csv"]
    elif "attachments=" in code:
        [m] = got
        names = sorted(p.get_filename() for p in m["msg"].iter_attachments())
        assert names == ["log.csv", "snap.jpg", "status.json"], names
        assert m["msg"]["X-Sensor"] == "greenhouse-3" and "Ops" in m["msg"]["Reply-To"]
        assert m["msg"].get_body(("html",)) is not None
    if "Outbox(" in code:
        assert out.strip().splitlines()[-1] == "0 0", out


# -- shell lines ------------------------------------------------------------------------------------


class Workspace:
    """A folder mirroring the checkout (a symlink per top-level entry) where sh/qemu lines run,
    with HOME in it, and the wrappers that point tools at the shims and the board."""

    def __init__(self, folder, servers):
        self.dir = folder / "checkout"
        self.home = folder / "home"
        self.bin = folder / "bin"
        for d in (self.dir, self.home, self.bin):
            d.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in (".git",):
                (self.dir / entry.name).symlink_to(entry)
        self.servers = servers
        self.board = None
        self.mp = folder / "micropython-readme"
        real = os.environ.get("SMTP_DUO_MICROPYTHON") or str(ROOT / ".deps" / "bin" / "micropython")
        self.mp.write_text('#!/bin/sh\nMICROPYPATH="%s${MICROPYPATH:+:$MICROPYPATH}" exec "%s" "$@"\n'
                           % (MP_SHIM, real))
        self.mp.chmod(0o755)
        self.background = []

    def env(self):
        env = dict(os.environ, HOME=str(self.home), SMTP_DUO_MICROPYTHON=str(self.mp),
                   SMTP_DUO_README_HOSTS=json.dumps(self.servers.hosts()), SSL_CERT_FILE=str(self.servers.ca_pem),
                   PYTHONPATH=str(CPY_SHIM),
                   PATH=str(self.bin) + os.pathsep + os.environ.get("PATH", ""),
                   no_proxy=",".join(x for x in (os.environ.get("no_proxy"), "127.0.0.1") if x))
        return env

    def stop(self):
        for p in self.background:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


@pytest.fixture(scope="module")
def workspace(servers, tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("readme-ws"), servers)
    yield ws
    ws.stop()


BOARD_BOOT = r"""
import os, sys, vfs, qemuflash
try:
    os.stat("/lib")
except OSError:
    %s
sys.path[:] = ["", ".frozen", "/lib"]
""" % "vfs.mount(vfs.VfsLfs2(qemuflash.Flash(), progsize=256), '/')"


@pytest.fixture(scope="module")
def board(workspace, micropython, tmp_path_factory):
    from hostkit.qemu import QemuBoard, find_mpremote, flash_image, flash_loader

    fw = Path(os.environ.get("SMTP_DUO_QEMU_RAM_FIRMWARE") or ROOT / ".deps/firmware/qemu-ram/firmware.elf")
    require(shutil.which("qemu-system-arm"), "qemu-system-arm")
    require(fw.exists(), "the qemu-ram firmware (tools/build_firmware.sh qemu-ram)")
    require(find_mpremote(), "mpremote")
    work = tmp_path_factory.mktemp("readme-board")
    (work / "fs" / "lib").mkdir(parents=True)
    image = flash_image(micropython, work / "fs", work / "flash.img")
    wrapper = workspace.bin / "mpremote"

    def restart_board():
        if workspace.board is not None:
            workspace.board.stop()
        b = QemuBoard(fw, extra_args=flash_loader(image)).start()
        b.exec(BOARD_BOOT)
        wrapper.write_text('#!/bin/sh\nexec %s connect %s resume "$@"\n' % (" ".join(b.mpremote_cmd), b.port))
        wrapper.chmod(0o755)
        workspace.board = b
        return b

    workspace.restart_board = restart_board
    yield restart_board()
    workspace.board.stop()
    workspace.board = None
    wrapper.unlink()


def board_sha(board, path):
    out = board.exec("import hashlib, binascii\nh = hashlib.sha256()\nf = open(%r, 'rb')\n"
                     "while True:\n    d = f.read(512)\n    if not d:\n        break\n    h.update(d)\n"
                     "print('SHA', binascii.hexlify(h.digest()).decode())" % path, resume=True)
    return out.split("SHA ", 1)[1].split()[0]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _words(line):
    return line.split("#", 1)[0].split()


# Each command a sh/qemu block may hold: (regex on the line, substitution or None, check(ws, line, p)).
def _check_rc(ws, line, p):
    assert p.returncode == 0, "%s\n%s%s" % (line, p.stdout, p.stderr)


def _check_demo(ws, line, p):
    _check_rc(ws, line, p)
    args = _words(line)
    if "--server" in args:
        got = ws.servers.relay.handler.messages
        assert len(got) == 1 and "sent: 250 2.0.0 OK: queued as README1" in p.stdout, p.stdout
        m = got[0]
        if "--to" in args:
            assert m["to"] == [args[args.index("--to") + 1]] and m["from"] == args[args.index("--from") + 1], m
        if "--username" in args:
            assert m["login"] == args[args.index("--username") + 1], m
    else:
        assert "--- what arrived: MAIL FROM:<" in p.stdout and "Subject: Alert: greenhouse-7" in p.stdout, p.stdout


def _check_test_sh(ws, line, p):
    _check_rc(ws, line, p)
    assert re.search(r"^\d+ tests collected", p.stdout, re.M) and "test_readme.py::" in p.stdout, p.stdout[-3000:]


def _check_fetch_ca(ws, line, p):
    _check_rc(ws, line, p)
    args = _words(line)
    out = args[args.index("--out") + 1] if "--out" in args else args[2].split(":")[0] + "-ca.der"
    assert (ws.dir / out).read_bytes() == ws.servers.ca_der, p.stdout + p.stderr


def _check_cp(ws, line, p):
    _check_rc(ws, line, p)
    args = _words(line)
    args = args[1:] if args[0] == "mpremote" else args
    src = Path(os.path.expanduser(args[1]).replace(os.path.expanduser("~"), str(ws.home), 1)) \
        if args[1].startswith("~") else ws.dir / args[1]
    dst = args[2]
    if dst.startswith(":"):  # to the board
        dst = dst[1:] or "/"
        if dst.endswith("/"):
            dst += src.name
        assert board_sha(ws.board, "/" + dst.lstrip("/")) == sha(src), line
    else:
        dst = Path(dst.replace("~", str(ws.home), 1)) if dst.startswith("~") else ws.dir / dst
        assert sha(dst) == sha(src), line


def _check_deploy(ws, line, p):
    _check_rc(ws, line, p)
    assert "deploy: import smtp_duo from /lib: version %s (/lib/smtp_duo.mpy)" % smtp_duo.__version__ in p.stdout, \
        p.stdout
    for ext in re.findall(r"--ext (\w+)", line):
        assert "deploy: import smtp_duo_%s: /lib/smtp_duo_%s.mpy" % (ext, ext) in p.stdout, p.stdout


def _check_mip_index(ws, line, p):
    _check_rc(ws, line, p)
    assert (ws.dir / "build" / "mip" / "index.json").exists(), p.stdout


def _check_mip_install(ws, line, p):
    _check_rc(ws, line, p)
    names = [a for a in _words(line)[5:]]
    files = ws.board.exec("import os\nprint('LIB', sorted(os.listdir('/lib')))", resume=True)
    for name in names:
        mod = name.replace("-", "_") + ".mpy"
        assert mod in files, (mod, files, p.stdout)


def _check_reset(ws, line, p):
    _check_rc(ws, line, p)
    # machine.reset() on the qemu port ends the emulator with exit code 0 (a real board reboots):
    # that is the reset; a fresh board (flash as at the start) serves the blocks after this one.
    b = ws.board
    deadline = time.monotonic() + 10
    while b.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b.proc.poll() == 0, "the board did not reset: %s" % "".join(b.log)
    ws.restart_board()


COMMANDS = [
    (r"^bash tools/setup\.sh --demo\b", None, _check_rc),
    (r"^bash tools/demo\.sh\b", None, _check_demo),
    (r"^bash tools/test\.sh\s*(#.*)?$", lambda line: line.split("#")[0].rstrip() + " --co -q", _check_test_sh),
    (r"^python3 tools/fetch_ca\.py ", None, _check_fetch_ca),
    (r"^cp ", None, _check_cp),
    (r"^mpremote cp ", None, _check_cp),
    (r"^\.venv/bin/python tools/deploy\.py --port /dev/ttyACM0", "deploy", _check_deploy),
    (r"^\.venv/bin/python tools/mip_index\.py", None, _check_mip_index),
    (r"^mpremote mip install --index ", None, _check_mip_install),
    (r"^mpremote reset\b", None, _check_reset),
]
BOARD_COMMANDS = (r"^mpremote ", r"--port /dev/ttyACM0")


def run_lines(ws, block):
    ws.servers.clear()
    lines = [x for x in block.text.splitlines() if x.strip()]
    for line in lines:
        needs_board = any(re.search(r, line) for r in BOARD_COMMANDS)
        assert not needs_board or block.kind == "qemu", "%s needs the board: annotate the block qemu" % line
        if line.rstrip().endswith("&"):  # a server for the next lines
            port = int(re.findall(r"\b(\d{4,5})\b", line)[-1])
            with socket.socket() as s:
                busy = s.connect_ex(("127.0.0.1", port)) == 0
            if busy:
                new = free_port()
                lines = [x.replace(":%d" % port, ":%d" % new) for x in lines]
                line = line.replace(" %d" % port, " %d" % new)
                port = new
            p = subprocess.Popen(["bash", "-c", "exec " + line.rstrip().rstrip("&")], cwd=ws.dir, env=ws.env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ws.background.append(p)
            deadline = time.monotonic() + 20
            while True:  # a user types the next line later than a script would
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert time.monotonic() < deadline and p.poll() is None, "the server did not start: " + line
                time.sleep(0.1)
            continue
        for rx, subst, check in COMMANDS:
            if re.search(rx, line):
                break
        else:
            pytest.fail("no check for this command in test_readme.COMMANDS: %r" % line)
        cmd = line
        if subst == "deploy":
            cmd = line.replace("/dev/ttyACM0", "%s --no-soft-reset" % ws.board.port)
        elif subst:
            cmd = subst(line)
        if ws.board is not None and needs_board:
            ws.board.exec(BOARD_BOOT, resume=True)
        env = ws.env()
        if "--username" in line:  # the password a login takes from $SMTP_DUO_PASSWORD
            env["SMTP_DUO_PASSWORD"] = LAB_PASSWORD
        p = subprocess.run(["bash", "-c", cmd], cwd=ws.dir, env=env, capture_output=True, text=True,
                           timeout=600)
        print("$ %s  -> %d\n%s%s" % (cmd, p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        check(ws, line, p)
        ws.servers.clear()


# -- the wire ---------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to `port` keeping what the client sent, for one connection."""

    def __init__(self, port):
        self.sent = bytearray()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = port
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pump(self, a, b, keep):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if keep:
                    self.sent += data
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _run(self):
        c, _ = self.sock.accept()
        s = socket.create_connection(("127.0.0.1", self.target))
        t = threading.Thread(target=self._pump, args=(s, c, False), daemon=True)
        t.start()
        self._pump(c, s, True)
        t.join(10)
        c.close()
        s.close()

    def close(self):
        self.thread.join(15)
        self.sock.close()


WIRE_JOB = r"""
import smtp_duo
c = smtp_duo.SMTPClient("127.0.0.1", port=%d, username="alice", password="secret", allow_insecure_auth=True,
                        from_address="Greenhouse <sensor@example.com>", debug=%s)
r = c.mail_send("a@example.com", smtp_duo.PRIORITY_HIGH, "Temp\u00e9rature",
                "Temp\u00e9rature 31.5 \u00b0C\n.a line starting with a dot\n")
print("REPLY", r.code)
"""


def _normal(line):
    line = re.sub(r"^EHLO \S+", "EHLO <name>", line)
    line = re.sub(r"\b(SIZE=|BDAT )\d+", r"\1<n>", line)
    line = re.sub(r"^Date: .*", "Date: <date>", line)
    line = re.sub(r"^Message-ID: <.*>", "Message-ID: <id>", line)
    line = re.sub(r"queued as \S+", "queued as <id>", line)
    line = re.sub(r"\b\d+ (octets|bytes)", r"<n> \1", line)
    return line


def check_wire_block(block, micropython, mpy_dir, servers, tmp_path):
    shown = [re.split(r"\s{3,}", x)[0] for x in block.text.splitlines()]
    proxy = Proxy(servers.relay.port)
    servers.clear()
    out = run_mp(micropython, mpy_dir, servers, WIRE_JOB % (proxy.port, "None"), tmp_path)
    proxy.close()
    assert "REPLY 250" in out, out
    sent = bytes(proxy.sent).decode("utf-8").split("\r\n")[:-1]
    assert sent[sent.index("") + 1 :][:2] == ["Temp\u00e9rature 31.5 \u00b0C", "..a line starting with a dot"], sent
    body = [i for i, x in enumerate(shown) if x.startswith("...body")]
    assert len(body) == 1, shown
    head, tail = shown[: body[0]], shown[body[0] + 1 :]
    end = sent.index(".")
    actual = [_normal(x) for x in sent[: sent.index("") + 1] + sent[end:]]
    assert [_normal(x) for x in head + tail] == actual, "\n".join(actual)


FLIGHT_JOB = r"""
import smtp_duo
lines = []
c = smtp_duo.SMTPClient("127.0.0.1", port=%d, from_address="sensor@example.com",
                        debug=lambda d, line: lines.append((d, line)))
r = c.mail_send("a@example.com", smtp_duo.PRIORITY_NORMAL, "alert", "Too warm.\n")
for d, line in lines:
    print("T", d, line)
"""


def check_flight_block(block, micropython, mpy_dir, servers, postfix, tmp_path):
    shown = [re.split(r"\s{3,}", x)[0] for x in block.text.splitlines()]
    out = run_mp(micropython, mpy_dir, servers, FLIGHT_JOB % postfix.relay_port, tmp_path)
    trans = [x[2:] for x in out.splitlines() if x.startswith("T ")]
    start = next(i for i, x in enumerate(trans) if x.startswith("> MAIL FROM:"))
    flight = [x for x in trans[start:] if not x.startswith("*")][: len(shown)]
    sizes = set(re.findall(r"(?:SIZE=|BDAT |: |<message: )(\d+)(?: LAST| bytes| octets|$)", "\n".join(flight)))
    assert len(sizes) == 1, flight  # SIZE=, BDAT, the message and the server's count agree
    for want, got in zip(shown, flight):
        if want.startswith("> Date:"):  # the message itself, as the transcript shows it
            assert re.fullmatch(r"> <message: \d+ octets>", got), (want, got)
        else:
            assert _normal(want) == _normal(got), (want, got, trans)
    assert len(flight) == len(shown), trans


def check_tree_block(block):
    for line in block.text.splitlines():
        if line[:1].isspace():
            continue  # a description's continuation
        first = line.split()[0]
        assert list(ROOT.glob(first.rstrip("/"))), first
        for part in re.findall(r"\b[\w.]+\.(?:py|sh|json)\b", line[len(first):]):
            if "*" not in part and not part.startswith("package"):
                folder = ROOT / first.rstrip("/") if first.endswith("/") else ROOT
                assert (folder / part).exists() or list(ROOT.glob("**/" + part)), (line, part)


# -- the board apps ---------------------------------------------------------------------------------


def run_app(micropython, mpy_dir, servers, tmp_path, config_text, raws, until_s=None):
    from test_board_apps import APPS, BOARDSHIM, BOOT_EPOCH, NTP_EPOCH, Run

    (tmp_path / "config.py").write_text(config_text) if config_text is not None else None
    scenario = {"board": "esp32", "readings": list(raws), "wifi": [], "ntp": [], "ntp_default": True,
                "boot_epoch": BOOT_EPOCH, "ntp_epoch": NTP_EPOCH}
    if until_s:
        scenario["until_s"] = until_s
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    path = [str(BOARDSHIM), str(MP_SHIM), str(tmp_path), str(mpy_dir), ".frozen"]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path), BOARDSIM_SCENARIO=str(tmp_path / "scenario.json"),
               SMTP_DUO_README_HOSTS=json.dumps(servers.hosts()))
    proc = subprocess.run([str(micropython), "-X", "heapsize=" + DEFAULT_HEAP, str(APPS["esp32"])],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    return Run(proc)


def check_config_block(block, micropython, mpy_dir, servers, tmp_path):
    from test_board_apps import EXAMPLE, edit_example, example_config, script, uncomment_provider_block

    settings = {}
    exec(block.text, {}, settings)
    text = edit_example(EXAMPLE, **settings)
    if len(settings) > 1:  # the provider block: the same as config_example.py's commented one
        provider = {}
        exec(uncomment_provider_block(EXAMPLE), {}, provider)
        assert {k: provider[k] for k in settings} == settings
        (tmp_path / settings["SMTP_CA_FILE"]).write_bytes(servers.ca_der)
    raws, _ = script("esp32", example_config(), [25.0, 31.0])
    servers.clear()
    run = run_app(micropython, mpy_dir, servers, tmp_path, text, raws)
    info = "%s\n%s" % (run.proc.stdout, run.proc.stderr)
    assert "ScenarioEnd: 2 scripted readings done" in run.proc.stderr and not run.app_lines("config:"), info
    assert run.app_lines("mail: sent:"), info
    inbox = servers.provider if settings.get("SMTP_TLS") else servers.relay
    [m] = inbox.handler.messages
    assert m["from"] == settings.get("MAIL_FROM", "sensor@example.com") and "ALERT" in str(m["msg"]["subject"]), m
    assert m["login"] == settings.get("SMTP_USERNAME"), m


def check_config_messages(block, micropython, mpy_dir, servers, tmp_path):
    from test_board_apps import EXAMPLE, edit_example, uncomment_provider_block

    makers = [  # what makes each message the block shows
        ("config: no config.py", None),
        ("config: SMTP_PORT in config.py must be", edit_example(EXAMPLE, SMTP_PORT="587")),
        ("config: cannot read the CA file", uncomment_provider_block(EXAMPLE)),
    ]
    lines = block.text.strip().splitlines()
    assert len(lines) == len(makers), lines
    for i, (line, (prefix, text)) in enumerate(zip(lines, makers)):
        assert line.startswith(prefix), (line, prefix)
        folder = tmp_path / str(i)
        folder.mkdir()
        run = run_app(micropython, mpy_dir, servers, folder, text, (), until_s=40)
        said = run.app_lines("config:")
        assert said and set(said) == {line}, (line, run.proc.stdout, run.proc.stderr)


# -- manifests --------------------------------------------------------------------------------------


def _mpy_source():
    src = ROOT / ".deps" / "src"
    try:
        return src / (src / ".unpacked").read_text().strip()
    except OSError:
        return None


BOARD_DIRS = {"ESP32_GENERIC": "esp32", "RPI_PICO_W": "rp2"}


def check_manifest_block(block, tmp_path):
    import importlib.util

    tree = _mpy_source()
    require(tree is not None and (tree / "tools" / "manifestfile.py").exists(),
            "MicroPython's source (tools/build_firmware.sh unpacks it)")
    if block.lang != "python":  # make lines: what they name must exist, the manifest must be the one above
        prev = [b for b in BLOCKS if b.file == block.file and b.line < block.line][-1]
        assert prev.kind == "manifest" and prev.lang == "python", prev.id
        name = prev.text.splitlines()[0].lstrip("# ").strip()
        lines = [_words(x) for x in block.text.splitlines()]
        for w in lines:
            if w[:2] == ["make", "-C"]:
                assert (tree / w[2]).is_dir(), w
            elif w[0] == "cd":
                port = tree / w[1]
                assert port.is_dir(), w
            else:
                board = next(x.split("=", 1)[1] for x in w if x.startswith("BOARD="))
                assert (port / "boards" / board).is_dir() and BOARD_DIRS[board] == port.name, w
                fm = [x.split("=", 1)[1] for x in w if x.startswith("FROZEN_MANIFEST=")]
                assert fm in ([], ["/home/me/" + name]), (fm, name)
        assert any("FROZEN_MANIFEST=" in x for x in block.text.splitlines())
        return
    spec = importlib.util.spec_from_file_location("readme_manifestfile", tree / "tools" / "manifestfile.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    board = block.notes.split()[0]
    port_dir = tree / "ports" / BOARD_DIRS[board]
    text = block.text.replace("/home/me/smtp_duo", str(ROOT))
    if "/home/me/other_lib" in text:
        other = tmp_path / "other_lib"
        other.mkdir()
        (other / "manifest.py").write_text('metadata(version="1.0")\nmodule("other.py")\n')
        (other / "other.py").write_text("x = 1\n")
        text = text.replace("/home/me/other_lib", str(other))

    def read(text):
        m = mf.ManifestFile(mf.MODE_FREEZE, {"MPY_DIR": str(tree), "MPY_LIB_DIR": str(tree / "lib"),
                                             "PORT_DIR": str(port_dir), "BOARD_DIR": str(port_dir / "boards" / board)})
        required = []
        m.require = lambda name, *a, **k: required.append(name)  # micropython-lib is not here
        path = tmp_path / "board_manifest.py"
        path.write_text(text)
        m.execute(str(path))
        return {Path(f.full_path) for f in m.files()}, required

    files, required = read(text)
    ours = {f.name for f in files if f.parent == ROOT / "lib"}
    want = {"smtp_duo.py"} | ({"smtp_duo_md5.py"} if "md5" in text else set())
    assert ours == want, ours
    assert "bundle-networking" in required, required  # ntptime, mip, ssl come with the port's manifest
    if "other_lib" in block.notes:  # and the README's reason for module() lines holds
        with pytest.raises(mf.ManifestFileError, match="Duplicate call to metadata"):
            read(text.replace('module("smtp_duo.py"', 'include("%s/manifest.py")\n#' % ROOT, 1))


# -- the API listing --------------------------------------------------------------------------------


def _listed_params(text, call):
    i = text.index(call + "(") + len(call) + 1
    depth, j = 1, i
    while depth:
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        j += 1
    args = re.sub(r"#[^\n]*", "", text[i : j - 1])
    fn = ast.parse("def f(%s): pass" % args).body[0].args
    names = [a.arg for a in fn.args]
    defaults = [ast.unparse(d) for d in fn.defaults]
    return names, dict(zip(names[len(names) - len(defaults):], defaults))


def check_api_block(block):
    for call, func in (("smtp_duo.SMTPClient", smtp_duo.SMTPClient.__init__),
                       ("client.mail_send", smtp_duo.SMTPClient.mail_send)):
        names, defaults = _listed_params(block.text, call)
        params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
        assert names == [p.name for p in params], (call, names)
        for p in params:
            if p.default is inspect.Parameter.empty:
                assert p.name not in defaults, p.name
            else:
                assert eval(defaults[p.name], {"smtp_duo": smtp_duo}) == p.default, (call, p.name)
    assert "client.session()" in block.text and callable(smtp_duo.SMTPClient.session)


# -- the test ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_mpy(tmp_path_factory):
    return compile_all(sorted((ROOT / "lib").glob("*.py")), tmp_path_factory.mktemp("readme-mpy"))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind in KINDS], ids=lambda b: b.id)
def test_block(block, request, tmp_path):
    kind = block.kind
    if kind == "api":
        return check_api_block(block)
    if kind == "manifest":
        return check_manifest_block(block, tmp_path)
    if kind == "output" and block.text.startswith("lib/"):
        return check_tree_block(block)
    servers = request.getfixturevalue("servers")
    if kind in ("sh", "qemu"):
        ws = request.getfixturevalue("workspace")
        if kind == "qemu":
            request.getfixturevalue("board")
        return run_lines(ws, block)
    micropython = request.getfixturevalue("micropython")
    mpy_dir = request.getfixturevalue("readme_mpy")
    if kind == "config":
        return check_config_block(block, micropython, mpy_dir, servers, tmp_path)
    if kind == "output":
        if block.text.startswith("config:"):
            return check_config_messages(block, micropython, mpy_dir, servers, tmp_path)
        if block.text.startswith("EHLO"):
            return check_wire_block(block, micropython, mpy_dir, servers, tmp_path)
        if block.text.startswith("> MAIL"):
            return check_flight_block(block, micropython, mpy_dir, servers, request.getfixturevalue("postfix"),
                                      tmp_path)
        pytest.fail("no check for this output block: add one to test_block")
    assert kind == "unix"
    (tmp_path / "ca.der").write_bytes(servers.ca_der)
    (tmp_path / "lib").mkdir()
    (tmp_path / "log.csv").write_text("t,value\n0,41.0\n")
    (tmp_path / "snap.jpg").write_bytes(bytes(range(256)) * 40)
    if "import mip" in block.text:
        index = request.getfixturevalue("mip_server")
        doc = {}
        for name in ("smtp-duo", "smtp-duo-outbox"):
            pkg = json.loads((index / "package" / "6" / name / "latest.json").read_text())
            doc.update({f: h for f, h in pkg["hashes"]})
        (tmp_path / "mip-index.json").write_text(json.dumps(doc))
    variants = [block.text]
    if "smtp.office365.com" in block.notes:
        variants.append(block.text.replace("smtp.gmail.com", "smtp.office365.com"))
    for text in variants:
        servers.clear()
        code = fill_in(text)
        out = run_mp(micropython, mpy_dir, servers, code, tmp_path)
        print(out)
        check_unix_block(block, text, out, servers, tmp_path)
