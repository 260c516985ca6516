"""The main job: send a sensor alert through smtp_duo running on MicroPython, and show it.

By default a local SMTP server is started in this process (aiosmtpd on 127.0.0.1), the
alert is sent by smtp_duo on the MicroPython unix port (fixed heap, library loaded from .mpy
as on a board), and the message as it arrived is printed. With --server the alert goes to a
real server instead and the server's reply is printed. Run through tools/demo.sh, which
installs what is needed first.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import compile_all, micropython_path  # noqa: E402
from hostkit.ports import free_port  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", help="send to this SMTP server instead of the local one")
    p.add_argument("--port", type=int, help="server port (default: 25, or 587/465 with --tls)")
    p.add_argument("--from", dest="sender", default="greenhouse-7@sensors.example.com")
    p.add_argument("--to", default="alerts@example.com", help="recipient (repeat with commas)")
    p.add_argument("--username")
    p.add_argument("--password", help="or set SMTP_DUO_PASSWORD")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none",
                   help="TLS mode; with the local server it gets a certificate from a CA made for the run")
    p.add_argument("--cadata", help="CA certificate (DER or PEM) to verify the server (tools/fetch_ca.py)")
    p.add_argument("--server-name", help="name to check in the server's certificate (default: --server)")
    p.add_argument("--debug", action="store_true", help="print the SMTP transcript (secrets redacted)")
    p.add_argument("--allow-insecure-auth", action="store_true",
                   help="allow credentials without TLS (lab servers only)")
    p.add_argument("--reading", type=float, default=81.5)
    p.add_argument("--threshold", type=float, default=80.0)
    p.add_argument("--runtime", choices=["micropython", "cpython"], default="micropython")
    p.add_argument("--heap", default="96k", help="MicroPython's fixed GC heap (default 96k)")
    return p.parse_args()


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 2.0.0 OK: queued as DEMO%d" % len(self.envelopes)


def local_tls(mode, work, settings):
    """For the local server in a TLS mode: a certificate for "localhost" from a CA made now, whose
    DER the client gets as cadata, as a board would."""
    if mode == "none":
        return {}
    import ssl

    import trustme

    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    der = work / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    settings.update(cadata=str(der), server_hostname="localhost")
    return {"ssl_context": ctx} if mode == "implicit" else {"tls_context": ctx, "require_starttls": True}


def run_sender(args, settings, work):
    job = work / "settings.json"
    job.write_text(json.dumps(settings))
    if args.runtime == "cpython":
        env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
        cmd = [sys.executable, str(ROOT / "tools" / "send_alert.py"), str(job)]
        print("client: smtp_duo on CPython %s" % sys.version.split()[0])
    else:
        mp = micropython_path()
        if mp is None:
            sys.exit("MicroPython unix port not found: run tools/setup.sh (or use --runtime cpython)")
        sources = [*sorted((ROOT / "lib").glob("*.py")), ROOT / "tools" / "send_alert.py"]
        mpy = compile_all(sources, work / "mpy")
        env = dict(os.environ, MICROPYPATH=str(mpy))
        cmd = [str(mp), "-X", "heapsize=" + args.heap, "-m", "send_alert", str(job)]
        version = subprocess.run([str(mp), "-c", "import sys; print(sys.version.split(';')[1].strip())"],
                                 capture_output=True, text=True).stdout.strip()
        print("client: smtp_duo from .mpy on %s, fixed heap %s" % (version, args.heap))
    return subprocess.run(cmd, env=env, timeout=120).returncode


def main():
    args = parse_args()
    settings = {
        "from": args.sender, "to": [a.strip() for a in args.to.split(",") if a.strip()],
        "username": args.username, "password": args.password or os.environ.get("SMTP_DUO_PASSWORD"),
        "tls": args.tls, "allow_insecure_auth": args.allow_insecure_auth,
        "reading": args.reading, "threshold": args.threshold, "debug": args.debug,
        "cadata": args.cadata, "server_hostname": args.server_name,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.server:
            settings.update(server=args.server, port=args.port)
            print("server: %s port %s" % (args.server, args.port or "(default for the TLS mode)"))
            return run_sender(args, settings, work)

        from aiosmtpd.controller import Controller

        inbox = Inbox()
        port = free_port()
        tls_kw = local_tls(args.tls, work, settings)
        ctl = Controller(inbox, hostname="127.0.0.1", port=port, **tls_kw)
        ctl.start()
        try:
            settings.update(server="127.0.0.1", port=port)
            print("server: local aiosmtpd on 127.0.0.1 port %d%s" % (
                port, {"none": "", "starttls": ", STARTTLS", "implicit": ", implicit TLS"}[args.tls]))
            rc = run_sender(args, settings, work)
            deadline = time.monotonic() + 5
            while rc == 0 and not inbox.envelopes and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            ctl.stop()
        for env in inbox.envelopes:
            print("\n--- what arrived: MAIL FROM:<%s> RCPT TO:%s ---" % (
                env.mail_from, ", ".join("<%s>" % r for r in env.rcpt_tos)))
            print(env.content.decode("utf-8", "replace").replace("\r\n", "\n"), end="")
            print("--- end of message (%d octets) ---" % len(env.content))
        if rc == 0 and not inbox.envelopes:
            print("nothing arrived")
            return 1
        return rc


if __name__ == "__main__":
    sys.exit(main())
