"""mip 0.3.0 (the MicroPython unix port's) and this repository served as plain files, the way
`github:ORG/REPO/<path>` resolves to a raw file on raw.githubusercontent.com:

- the single-file form, mip.install("<repository>/lib/smtp_duo.py"), installs the .py as it is,
  and the installed copy sends a mail to aiosmtpd (with lib/smtp_duo_md5.py also an MD5, with
  lib/smtp_duo_mime.py a mail with an attachment): the github: form README section 1 gives for
  on-board mip, which works with every mip version;
- the package.json form does not work with mip 0.3.0: it fetches package.json, then fails on
  its relative "urls" (a ValueError inside its requests module) before writing any file. README
  says so, and gives the index route instead (tools/mip_index.py, tests in test_packages.py).

The loopback server serves the checkout's files as they are, nothing rewritten. The send checks
here are shared with test_packages.py.
"""

import email
import hashlib
import http.server
import subprocess
import threading
import urllib.parse
from functools import partial

import pytest
from conftest import ROOT


class _FilesHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that remembers the paths asked for (server.requests)."""

    def do_GET(self):
        self.server.requests.append(urllib.parse.urlsplit(self.path).path)
        super().do_GET()

    def log_message(self, *args):
        pass


class FileServer(http.server.ThreadingHTTPServer):
    """`folder` served on loopback from a thread of its own, started at once: .url is its address,
    .requests the paths asked for, .stop() ends it. Any static web server would do as well."""

    daemon_threads = True

    def __init__(self, folder):
        super().__init__(("127.0.0.1", 0), partial(_FilesHandler, directory=str(folder)))
        self.requests = []
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()
        self._thread.join(10)


@pytest.fixture
def repo_server():
    srv = FileServer(ROOT)
    yield srv
    srv.stop()


def micropython_run(micropython, code, micropypath, cwd):
    """`micropython -c code` with only `micropypath` on its path (MICROPYPATH=.frozen alone keeps
    any ~/.micropython/lib out), default heap: an installed .py is compiled on import."""
    return subprocess.run([str(micropython), "-c", code], capture_output=True, text=True, timeout=120,
                          env={"MICROPYPATH": micropypath}, cwd=cwd)


SEND = """
import smtp_duo
print("FILE", smtp_duo.__file__)
c = smtp_duo.SMTPClient("127.0.0.1", port=%d, from_address="sensor@example.com", timeout=10)
r = c.mail_send("ops@example.org", subject="installed by mip", mail_body="sent by the mip-installed copy\\n")
print("REPLY", r.code)
"""

MD5_CHECK = """
import smtp_duo_md5
print("FILE", smtp_duo_md5.__file__)
print("MD5", smtp_duo_md5.md5(b"installed by mip").digest().hex())
"""

MIME_SEND = """
import smtp_duo
import smtp_duo_mime
print("FILE", smtp_duo_mime.__file__)
c = smtp_duo.SMTPClient("127.0.0.1", port=%d, from_address="sensor@example.com", timeout=10)
r = c.mail_send("ops@example.org", subject="attached by mip", mail_body="log attached\\n",
                attachments=[("log.csv", b"t,v\\n1,2\\n", "text/csv")], headers={"X-Sensor": "7"})
print("REPLY", r.code)
"""


def check_plain_mail(micropython, ctl, target, cwd, core_file):
    """SEND with only `target` (and frozen modules) in reach: the copy at `core_file` sent it."""
    p = micropython_run(micropython, SEND % ctl.port, "%s:.frozen" % target, cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FILE %s/%s" % (target, core_file) in p.stdout, p.stdout
    assert "REPLY 250" in p.stdout, p.stdout + p.stderr
    env = ctl.handler.messages[-1]
    assert env.mail_from == "sensor@example.com" and env.rcpt_tos == ["ops@example.org"]
    assert b"Subject: installed by mip" in env.original_content
    assert b"sent by the mip-installed copy\r\n" in env.original_content


def check_mime_mail(micropython, ctl, target, cwd, mime_file):
    """MIME_SEND likewise: a multipart mail with the attachment and header, byte-exact."""
    p = micropython_run(micropython, MIME_SEND % ctl.port, "%s:.frozen" % target, cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FILE %s/%s" % (target, mime_file) in p.stdout, p.stdout
    assert "REPLY 250" in p.stdout, p.stdout + p.stderr
    msg = email.message_from_bytes(ctl.handler.messages[-1].original_content)
    assert msg.get_content_type() == "multipart/mixed" and msg["X-Sensor"] == "7"
    text, csv = msg.get_payload()
    assert text.get_payload(decode=True) == b"log attached\r\n"
    assert csv.get_content_type() == "text/csv" and csv.get_filename() == "log.csv"
    assert csv.get_payload(decode=True) == b"t,v\n1,2\n"


@pytest.mark.parametrize("modules", [["smtp_duo"], ["smtp_duo", "smtp_duo_md5"],
                                     ["smtp_duo", "smtp_duo_mime"]])
def test_single_file_install_then_send(micropython, repo_server, smtpd, tmp_path, modules):
    target = tmp_path / "lib"
    code = "import mip\nprint('MIP', mip.__version__)\n"
    for m in modules:  # what mip.install("github:ORG/REPO/lib/<m>.py") fetches
        code += "mip.install(%r, target=%r)\n" % ("%s/lib/%s.py" % (repo_server.url, m), str(target))
    p = micropython_run(micropython, code, ".frozen", tmp_path)
    assert p.returncode == 0 and p.stdout.count("Done") == len(modules), p.stdout + p.stderr
    print("mip", p.stdout.split("MIP ", 1)[1].split()[0])

    assert repo_server.requests == ["/lib/%s.py" % m for m in modules]
    assert sorted(f.name for f in target.iterdir()) == sorted(m + ".py" for m in modules)
    for m in modules:  # installed as they are in the repository
        assert (target / (m + ".py")).read_bytes() == (ROOT / "lib" / (m + ".py")).read_bytes()

    ctl = smtpd()
    check_plain_mail(micropython, ctl, target, tmp_path, "smtp_duo.py")
    if "smtp_duo_md5" in modules:
        p = micropython_run(micropython, MD5_CHECK, "%s:.frozen" % target, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "FILE %s/smtp_duo_md5.py" % target in p.stdout, p.stdout
        assert "MD5 " + hashlib.md5(b"installed by mip").hexdigest() in p.stdout, p.stdout
    if "smtp_duo_mime" in modules:
        check_mime_mail(micropython, ctl, target, tmp_path, "smtp_duo_mime.py")


def test_package_json_with_relative_urls_fails_on_mip_0_3_0(micropython, repo_server, tmp_path):
    # mip 0.3.0 hands "lib/smtp_duo.py" to requests.get() as it is. If the unix port's mip is
    # ever newer and this starts to pass, README section 1 and board/README.md must say so.
    target = tmp_path / "lib"
    p = micropython_run(micropython, "import mip\nprint('MIP', mip.__version__)\nmip.install(%r, target=%r)"
                        % (repo_server.url + "/package.json", str(target)), ".frozen", tmp_path)
    assert "MIP 0.3.0" in p.stdout, p.stdout + p.stderr
    assert p.returncode == 1, p.stdout + p.stderr
    assert "ValueError: need more than 2 values to unpack" in p.stderr, p.stdout + p.stderr
    assert repo_server.requests == ["/package.json"]
    assert not target.exists()  # nothing half-installed
