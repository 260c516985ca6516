"""tools/fetch_ca.py against a private Postfix serving the test PKI's certificate, and the CA it
writes handed to MicroPython's `tls` (mbedTLS, as on a board) to verify that same server.

The Postfix instance is this module's own (STARTTLS and implicit TLS ports), so the session
`postfix` fixture can change without affecting these tests.
"""

import hashlib
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, USERS, require, run_micropython

FETCH_CA = ROOT / "tools" / "fetch_ca.py"

# Run by the MicroPython unix port: argv = CA file, port. Prints the server's greeting.
MP_VERIFY = """\
import socket, sys, tls
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_REQUIRED
with open(sys.argv[1], "rb") as f:
    ctx.load_verify_locations(f.read())
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", int(sys.argv[2]))[0][-1])
s = ctx.wrap_socket(s, server_hostname="localhost")
print(s.readline().decode().strip())
s.write(b"QUIT\\r\\n")
s.close()
"""


@pytest.fixture(scope="module")
def tls_postfix(pki):
    require(shutil.which("postfix") or Path("/usr/sbin/postfix").exists(), "Postfix")
    from hostkit.postfix import PostfixServer

    srv = PostfixServer(users=USERS, tls_cert=pki.cert_pem, tls_key=pki.key_pem)
    srv.start()
    yield srv
    srv.stop()


def fetch_ca(*args):
    return subprocess.run([sys.executable, str(FETCH_CA), *args], capture_output=True, text=True,
                          timeout=60)


def port_of(server, mode):
    return server.starttls_port if mode == "starttls" else server.tls_port


def good_args(server, pki, mode, out):
    return [f"127.0.0.1:{port_of(server, mode)}", "--cafile", str(pki.ca_pem), "--server-name",
            "localhost", "--out", str(out)] + (["--starttls"] if mode == "starttls" else [])


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_writes_the_root_ca_as_der(tls_postfix, pki, tmp_path, mode):
    out = tmp_path / "ca.der"
    p = fetch_ca(*good_args(tls_postfix, pki, mode, out))
    assert p.returncode == 0, p.stdout + p.stderr
    ca_der = pki.ca_der.read_bytes()
    assert out.read_bytes() == ca_der
    fingerprint = hashlib.sha256(ca_der).hexdigest().upper()
    assert ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)) in p.stdout
    assert "(DER, %d bytes)" % len(ca_der) in p.stdout
    assert ("STARTTLS" if mode == "starttls" else "implicit TLS") in p.stdout
    assert 'cadata = open("ca.der", "rb").read()' in p.stdout
    assert p.stdout.count("subject:") == 2  # the server certificate, then the CA


def test_pem_output(tls_postfix, pki, tmp_path):
    out = tmp_path / "ca.pem"
    p = fetch_ca(*good_args(tls_postfix, pki, "tls", out), "--pem")
    assert p.returncode == 0, p.stdout + p.stderr
    assert ssl.PEM_cert_to_DER_cert(out.read_text()) == pki.ca_der.read_bytes()


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_system_store_does_not_know_the_test_ca(tls_postfix, tmp_path, mode):
    out = tmp_path / "ca.der"
    args = [f"127.0.0.1:{port_of(tls_postfix, mode)}", "--server-name", "localhost", "--out", str(out)]
    p = fetch_ca(*args, *(["--starttls"] if mode == "starttls" else []))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "VERIFICATION FAILED" in p.stderr and "--cafile" in p.stderr
    assert not out.exists()


def test_wrong_name_fails_verification(tls_postfix, pki, tmp_path):
    p = fetch_ca(f"127.0.0.1:{tls_postfix.tls_port}", "--cafile", str(pki.ca_pem),
                 "--server-name", "other.example", "--out", str(tmp_path / "x.der"))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "mismatch" in p.stderr and "--server-name" in p.stderr


def test_wrong_mode_and_no_server_are_connection_failures(tls_postfix, pki, tmp_path):
    # Implicit TLS against the STARTTLS port: the server greets in plaintext.
    p = fetch_ca(f"127.0.0.1:{tls_postfix.starttls_port}", "--cafile", str(pki.ca_pem),
                 "--out", str(tmp_path / "x.der"))
    assert p.returncode == 1 and "--starttls" in p.stderr, p.stdout + p.stderr
    # STARTTLS against the plaintext submission port, which does not offer it.
    p = fetch_ca(f"127.0.0.1:{tls_postfix.submission_port}", "--starttls", "--out", str(tmp_path / "x.der"))
    assert p.returncode == 1 and "does not offer STARTTLS" in p.stderr, p.stdout + p.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    p = fetch_ca(f"127.0.0.1:{port}", "--out", str(tmp_path / "x.der"))
    assert p.returncode == 1 and "Cannot fetch" in p.stderr, p.stdout + p.stderr


def test_micropython_verifies_the_server_with_the_fetched_der(tls_postfix, pki, micropython, tmp_path):
    der = tmp_path / "ca.der"
    p = fetch_ca(*good_args(tls_postfix, pki, "starttls", der))
    assert p.returncode == 0, p.stdout + p.stderr
    script = tmp_path / "verify.py"
    script.write_text(MP_VERIFY)
    r = run_micropython(micropython, tmp_path, [str(script), str(der), str(tls_postfix.tls_port)], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("220 mail.smtp-duo.test ESMTP"), r.stdout

    # The same code with another CA's DER must fail: the verification is real.
    evil = tmp_path / "evil.der"
    evil.write_bytes(ssl.PEM_cert_to_DER_cert(pki.evil_ca.cert_pem.bytes().decode()))
    r = run_micropython(micropython, tmp_path, [str(script), str(evil), str(tls_postfix.tls_port)], timeout=60)
    assert r.returncode != 0 and "220" not in r.stdout, r.stdout + r.stderr
    assert "signed by the trusted CA" in r.stderr, r.stderr  # mbedTLS: X509 - not trusted
