"""mip installs the library from this repository's package.json / package-md5.json /
package-async.json / package-mime.json, and the installed copy sends a mail (with
package-mime.json, one with an attachment too).

The MicroPython unix port carries mip (0.3.0 in the 1.25 build): it installs from http:// URLs
but does not resolve the relative "urls" of a package.json (later mip versions do), and
github: URLs need the internet. So a local HTTP server plays the repository host: it serves
the package files with each relative source turned into an absolute http://127.0.0.1:PORT/...
URL (resolved against the package file's own URL, as a newer mip or mpremote would) and
serves lib/. The unix port runs `mip.install(url, target=dir)`, then a fresh process imports
the installed .py (compiled on import, default heap) and sends a mail to aiosmtpd.
"""

import email
import hashlib
import http.server
import json
import subprocess
import threading
import urllib.parse

import pytest
from conftest import ROOT


class _RepoHandler(http.server.BaseHTTPRequestHandler):
    """GET /package*.json (urls made absolute) and GET /lib/<file>; everything else is 404."""

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        self.server.requests.append(path)
        body = None
        name = path.lstrip("/")
        if name in ("package.json", "package-md5.json", "package-async.json", "package-mime.json"):
            doc = json.loads((ROOT / name).read_text())
            here = "http://%s:%d%s" % (self.server.server_address[0], self.server.server_address[1], path)
            doc["urls"] = [[dest, self._absolute(here, src)] for dest, src in doc["urls"]]
            body = json.dumps(doc).encode()
        elif name.startswith("lib/"):
            f = (ROOT / name).resolve()
            if f.parent == (ROOT / "lib").resolve() and f.is_file():
                body = f.read_bytes()
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @staticmethod
    def _absolute(package_url, src):
        if src.startswith(("http://", "https://", "github:", "gitlab:")):
            return src
        return urllib.parse.urljoin(package_url, src)

    def log_message(self, *args):
        pass


@pytest.fixture
def repo_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RepoHandler)
    srv.daemon_threads = True
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def _micropython(micropython, code, micropypath, cwd):
    # Default heap (no -X heapsize): the installed .py is compiled on import, as on a board.
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


@pytest.mark.parametrize("package, modules", [
    ("package.json", ["smtp_duo"]),
    ("package-md5.json", ["smtp_duo", "smtp_duo_md5"]),
    ("package-async.json", ["smtp_duo", "smtp_duo_async"]),
    ("package-mime.json", ["smtp_duo", "smtp_duo_mime"]),
])
def test_mip_install_then_send(micropython, repo_server, smtpd, tmp_path, package, modules):
    target = tmp_path / "lib"
    url = "http://127.0.0.1:%d/%s" % (repo_server.server_address[1], package)

    # mip is frozen into the unix port; MICROPYPATH=.frozen keeps any ~/.micropython/lib out.
    p = _micropython(micropython, "import mip; print('MIP', mip.__version__); mip.install(%r, target=%r)"
                     % (url, str(target)), ".frozen", tmp_path)
    assert p.returncode == 0 and "Done" in p.stdout, p.stdout + p.stderr
    mip_version = p.stdout.split("MIP ", 1)[1].split()[0]
    print("mip", mip_version)

    # What mip fetched: the package file, then every file through its rewritten absolute URL.
    assert repo_server.requests == ["/" + package] + ["/lib/%s.py" % m for m in modules]
    installed = sorted(f.name for f in target.iterdir())
    assert installed == sorted(m + ".py" for m in modules)
    for name in installed:
        assert (target / name).read_bytes() == (ROOT / "lib" / name).read_bytes()

    # A fresh process, with only the installed copy (and frozen modules) on the path.
    ctl = smtpd()
    micropypath = "%s:.frozen" % target
    p = _micropython(micropython, SEND % ctl.port, micropypath, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FILE %s/smtp_duo.py" % target in p.stdout, p.stdout
    assert "REPLY 250" in p.stdout, p.stdout + p.stderr
    [env] = ctl.handler.messages
    assert env.mail_from == "sensor@example.com" and env.rcpt_tos == ["ops@example.org"]
    assert b"Subject: installed by mip" in env.original_content
    assert b"sent by the mip-installed copy\r\n" in env.original_content

    if "smtp_duo_md5" in modules:
        p = _micropython(micropython, MD5_CHECK, micropypath, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "FILE %s/smtp_duo_md5.py" % target in p.stdout, p.stdout
        assert "MD5 " + hashlib.md5(b"installed by mip").hexdigest() in p.stdout, p.stdout

    if "smtp_duo_mime" in modules:
        p = _micropython(micropython, MIME_SEND % ctl.port, micropypath, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "FILE %s/smtp_duo_mime.py" % target in p.stdout, p.stdout
        assert "REPLY 250" in p.stdout, p.stdout + p.stderr
        msg = email.message_from_bytes(ctl.handler.messages[-1].original_content)
        assert msg.get_content_type() == "multipart/mixed" and msg["X-Sensor"] == "7"
        text, csv = msg.get_payload()
        assert text.get_payload(decode=True) == b"log attached\r\n"
        assert csv.get_content_type() == "text/csv" and csv.get_filename() == "log.csv"
        assert csv.get_payload(decode=True) == b"t,v\n1,2\n"
