#!/usr/bin/env python3
"""Fetch the CA certificate a board needs to verify an SMTP server (CPython 3.11+, stdlib only).

    python tools/fetch_ca.py smtp.gmail.com:465
    python tools/fetch_ca.py 192.0.2.7:587 --server-name mail.example.com --cafile my-ca.pem

Connects (implicit TLS, or EHLO + STARTTLS: the default on ports 25 and 587), verifies the
server's chain and name against this computer's trust store (or --cafile), and writes the
root of the verified chain (the trust anchor) as DER: give those bytes to the board as
cadata. Exit status: 0 written, 1 connection or SMTP failure, 2 verification failed (or a
usage error).
"""

import argparse
import hashlib
import os
import socket
import ssl
import sys

TIMEOUT = 15
NAME_OIDS = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU", b"\x55\x04\x06": "C"}


class Failure(Exception):
    """A connection or SMTP problem (exit status 1)."""


def smtp_reply(sock):
    """Read one (possibly multi-line) SMTP reply: (code, [lines])."""
    data = b""
    while not (data.endswith(b"\r\n") and data.split(b"\r\n")[-2][3:4] in (b" ", b"")):
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure("the server closed the connection")
        data += chunk
    lines = data.decode("utf-8", "replace").split("\r\n")[:-1]
    if not lines[-1][:3].isdigit():
        raise Failure("not an SMTP reply: %r" % lines[-1][:80])
    return int(lines[-1][:3]), lines


def command(sock, line, want, what):
    """Send line (None: just read the greeting); the reply's lines if its code is want."""
    if line:
        sock.sendall(line)
    code, lines = smtp_reply(sock)
    if code != want:
        raise Failure("%s refused: %s" % (what, lines[-1]))
    return lines


def starttls(sock):
    """Greeting, EHLO, STARTTLS on a plaintext connection; returns when TLS may start."""
    try:
        command(sock, None, 220, "connection")
    except socket.timeout:
        raise Failure("no SMTP greeting within %d s (an implicit TLS port? try --implicit)" % TIMEOUT)
    addr = sock.getsockname()[0]
    ehlo = command(sock, b"EHLO [%s%s]\r\n" % (b"IPv6:" if ":" in addr else b"", addr.encode()), 250, "EHLO")
    if not any(line[4:].strip().upper() == "STARTTLS" for line in ehlo):
        raise Failure("the server does not offer STARTTLS")
    command(sock, b"STARTTLS\r\n", 220, "STARTTLS")


def der_names(der):
    """(subject, issuer) of a DER certificate, as "O=..., CN=..." (a minimal DER walk)."""

    def items(data):
        i = 0
        while i < len(data):
            tag, n, i = data[i], data[i + 1], i + 2
            if n & 0x80:
                n, i = int.from_bytes(data[i:i + (n & 0x7F)], "big"), i + (n & 0x7F)
            yield tag, data[i:i + n]
            i += n

    def name(seq):  # Name: SEQUENCE OF SET OF SEQUENCE {OID, value}
        pairs = [[v for _, v in items(atv)] for _, rdn in items(seq) for _, atv in items(rdn)]
        return ", ".join("%s=%s" % (NAME_OIDS[oid], value.decode("utf-8", "replace"))
                         for oid, value in pairs if oid in NAME_OIDS) or "(no name)"

    (_, cert), = items(der)
    tbs = [v for t, v in items(next(items(cert))[1]) if t != 0xA0]  # drop [0] version
    return name(tbs[4]), name(tbs[2])  # serial, algorithm, issuer, validity, subject


def verified_chain(tls):
    """The chain OpenSSL built and verified, server first, trust anchor last, as DER."""
    if hasattr(tls, "get_verified_chain"):  # public from Python 3.13
        return [bytes(c) for c in tls.get_verified_chain()]
    import _ssl
    return [c.public_bytes(_ssl.ENCODING_DER) for c in tls._sslobj.get_verified_chain()]


def fail(status, *lines):
    print("\n".join(lines), file=sys.stderr)
    return status


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("server", metavar="HOST:PORT")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--starttls", action="store_true", help="plaintext + STARTTLS (default on 25, 587)")
    how.add_argument("--implicit", action="store_true", help="implicit TLS even on 25 or 587")
    ap.add_argument("--cafile", help="trust these PEM CA certificates instead of the system store")
    ap.add_argument("--server-name", help="name to send (SNI) and check (default: HOST)")
    ap.add_argument("--out", help="output file (default: HOST-ca.der, or .pem with --pem)")
    ap.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    args = ap.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        ap.error("give the server as HOST:PORT, e.g. smtp.example.com:465 or [::1]:587")
    port, name = int(port), args.server_name or host
    use_starttls = args.starttls or (port in (25, 587) and not args.implicit)
    mode = "STARTTLS" if use_starttls else "implicit TLS"
    out = args.out or "%s-ca.%s" % (host.replace(":", "_"), "pem" if args.pem else "der")
    trusted = args.cafile or "the system trust store"
    try:
        ctx = ssl.create_default_context(cafile=args.cafile)
    except OSError as e:  # also ssl.SSLError: a file without certificates
        return fail(1, "Cannot load --cafile %s: %s" % (args.cafile, e))
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            if use_starttls:
                starttls(sock)
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                chain, version = verified_chain(tls), tls.version()
    except ssl.SSLCertVerificationError as e:
        why = e.verify_message or str(e)
        return fail(2, "VERIFICATION FAILED for %s (%s:%d, %s): %s" % (name, host, port, mode, why),
                    "The certificate is not for %r: give the name it is for with --server-name." % name
                    if "mismatch" in why else  # "Hostname mismatch", "IP address mismatch"
                    "The chain does not lead to a CA in %s. If the server uses a private CA, pass "
                    "that CA's certificate with --cafile FILE." % trusted)
    except (OSError, Failure) as e:  # socket.timeout, ssl.SSLError and DNS errors are OSErrors
        hint = " (a STARTTLS port? try --starttls)" if "WRONG_VERSION_NUMBER" in str(e) else ""
        return fail(1, "Cannot fetch from %s:%d (%s): %s%s" % (host, port, mode, e, hint))

    print("%s:%d, %s, %s: certificate for %r verified against %s" % (
        host, port, mode, version, name, trusted))
    print("Verified chain (server first):")
    for i, der in enumerate(chain):
        print("  [%d] subject: %s\n      issuer:  %s" % ((i,) + der_names(der)))
    print("      ^ the trust anchor (root CA): this one is written")
    root = chain[-1]
    data = ssl.DER_cert_to_PEM_cert(root).encode() if args.pem else root
    try:
        with open(out, "wb") as f:
            f.write(data)
    except OSError as e:
        return fail(1, "Cannot write %s: %s" % (out, e))
    fp = hashlib.sha256(root).hexdigest().upper()
    print("Wrote %s (%s, %d bytes), SHA-256 %s" % (
        out, "PEM" if args.pem else "DER", len(data), ":".join(fp[i:i + 2] for i in range(0, 64, 2))))
    print('On the board:\n  cadata = open("%s", "rb").read()\n  client = smtp_duo.SMTPClient("%s", port=%d, '
          'tls=smtp_duo.%s, cadata=cadata, ...)' % (os.path.basename(out), name, port,
                                                     "TLS_STARTTLS" if use_starttls else "TLS_IMPLICIT"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
