"""RAM benchmark: the smallest GC heap each kind of send needs on the MicroPython unix port.

Run: .venv/bin/python tools/heap_bench.py [--quick | --core] [--kind KIND ...] [--no-str] [--json]

The requirement: a send's heap must not grow with the body. On the unix port (64-bit, so about
twice a board's object sizes) sending a 1 MiB body streamed from a file needs at most 16 KiB of
GC heap beyond what importing the module needs, and no more than a 1 KiB body needs plus 2 KiB.
A mail with attachments (smtp_duo_mime) - a 1 KiB text body, a 300 KiB random binary file
streamed from an open file and a 2 KiB CSV from another - needs no more than the plain 1 KiB
mail plus 4 KiB, both with smtp_duo_mime already imported (so the send is compared, not the
module's bytecode). The same 300 KiB file shown inline in an HTML part (multipart/related,
issue 16) is held to the same 4 KiB over the plain 1 KiB mail, and to at most 2 KiB over the
same HTML mail with the file as an attachment: the related level's object and generators, a
constant (measured +0.5 to +1.25 KiB), whatever the image's size.

How it measures: lib/*.py and a small probe script are cross-compiled to .mpy (compiling source
on the device needs far more heap than the library itself). For each scenario the smallest
`-X heapsize` (in steps of 256 bytes) at which a fresh micropython process succeeds is found by
bisection, then confirmed: the minimum reported is a size from which the next steps up all pass
too (the heap layout can make one smaller size pass by luck; that one is shown apart). A probe
succeeds only if the script prints its success marker AND the local SMTP sink (aiosmtpd, in this
process) received that probe's mail: one message, at least the body's size, and for bodies sent
unencoded exactly the file's content; for a multipart mail every part, decoded, must be exactly
what was attached. So a MemoryError swallowed somewhere cannot pass for a send. MemoryError is
recognised explicitly; timeouts and other errors count as failures.

The benchmark always exits 0 (it is a measurement); tests_host/test_ram.py runs it with
--json and asserts the bounds.
"""

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the repository's root: for hostkit/
from hostkit.mpy import compile_mpy, micropython_path, mpy_cross_cmd  # noqa: E402
from hostkit.ports import free_port  # noqa: E402

STEP = 256  # bisection granularity (bytes)
KIB = 1024
MIB = 1024 * 1024
IMPORT_BOUND = 16 * KIB  # 1 MiB send - import
SMALL_BOUND = 2 * KIB  # 1 MiB send - 1 KiB send
ATTACH_BOUND = 4 * KIB  # attachments send - 1 KiB send, smtp_duo_mime loaded for both
ATTACH_BIN = 300 * KIB  # the binary attachment, streamed from a file
ATTACH_CSV = 2 * KIB  # the CSV attachment, read from its file
ATTACH_FILES = ("attach.bin", "attach.csv")  # in the work folder, the probe's cwd
MIME_1K = "send 1 KiB mime loaded"  # the plain 1 KiB file body, smtp_duo_mime imported first
ATTACH = "send attachments"  # the same body, the binary and the CSV attached
ATTACH_HTML = "send attachments html"  # and an HTML part
INLINE = "send inline"  # the same, the binary shown inline in the HTML (multipart/related)
INLINE_BOUND = 2 * KIB  # inline - attachments html: one more multipart level, not the image
HTML = '<p>Snapshot:</p><img src="cid:snap@bench">'

# The probe runs on MicroPython from .mpy. It allocates nothing of its own beyond what the
# scenario needs; argv: scenario, port, recipient, body path or size.
PROBE_SRC = '''\
import sys


def _read(path):
    # A file into a bytearray of its size: the content held in RAM, nothing more.
    with open(path, "rb") as f:
        f.seek(0, 2)
        data = bytearray(f.tell())
        f.seek(0)
        f.readinto(data)
    return data


def run(argv):
    what = argv[1]
    if what == "none":  # the interpreter and this script alone
        return
    import smtp_duo

    if what == "import":
        return
    # Loaded before the send, so the send alone is compared.
    if what in ("mime", "attach", "attach_html", "inline"):
        import smtp_duo_mime  # noqa: F401
    if what in ("tls", "starttls"):  # verified against the CA in argv[5] (DER)
        with open(argv[5], "rb") as f:
            cadata = f.read()
        if what == "tls":  # implicit TLS
            client = smtp_duo.SMTPClient("127.0.0.1", int(argv[2]), from_address="bench@example.com",
                                         timeout=15, tls=smtp_duo.TLS_IMPLICIT, cadata=cadata,
                                         server_hostname="localhost")
        else:  # STARTTLS, then AUTH PLAIN
            client = smtp_duo.SMTPClient("127.0.0.1", int(argv[2]), "bench", "bench-password",
                                         "bench@example.com", timeout=15, tls=smtp_duo.TLS_STARTTLS,
                                         cadata=cadata, server_hostname="localhost",
                                         authentication_type=smtp_duo.AUTH_PLAIN)
        cadata = None
    else:
        client = smtp_duo.SMTPClient("127.0.0.1", int(argv[2]), from_address="bench@example.com",
                                     timeout=15)
    if what == "client":
        return
    attachments = ()
    if what in ("file", "tls", "starttls", "mime", "attach", "attach_html", "inline"):
        body = open(argv[4], "rb")
    elif what in ("bytearray", "memoryview"):  # the body held in RAM, in a buffer of its size
        body = _read(argv[4])
        if what == "memoryview":
            body = memoryview(body)
    else:  # "str": the body held in RAM, 64-byte lines
        body = ("x" * 63 + "\\n") * (int(argv[4]) // 64)
    html = None
    if what in ("attach", "attach_html", "inline"):  # streamed from open files, as on flash
        attachments = [("data.bin", open("attach.bin", "rb"), "application/octet-stream"),
                       ("readings.csv", open("attach.csv", "rb"), "text/csv")]
        if what != "attach":
            html = %r
        if what == "inline":
            attachments[0] += ("snap@bench",)
    try:
        if attachments:
            reply = client.mail_send(argv[3], smtp_duo.PRIORITY_NORMAL, "heap bench", body,
                                     html=html, attachments=attachments)
        else:
            reply = client.mail_send(argv[3], smtp_duo.PRIORITY_NORMAL, "heap bench", body)
    finally:
        if what in ("file", "tls", "starttls", "mime", "attach", "attach_html", "inline"):
            body.close()
        for a in attachments or ():
            a[1].close()
    if reply.code != 250:
        print("PROBE-REPLY", reply.code)
        sys.exit(2)


try:
    run(sys.argv)
except MemoryError:
    print("PROBE-MEMORYERROR")
    sys.exit(3)
print("PROBE-OK")
''' % HTML

SEND_MODES = ("file", "str", "bytearray", "memoryview", "tls", "starttls", "mime", "attach", "attach_html",
              "inline")
RAM_BODY = 32 * KIB  # a body held in RAM: a memoryview of it must cost no more than the buffer
VIEW_BOUND = 1 * KIB  # memoryview body - bytearray body

OK_MARK = "PROBE-OK"
MEM_MARK = "PROBE-MEMORYERROR"


# -- bodies ------------------------------------------------------------------------------------

_WORDS = (
    "sensor temperature humidity pressure reading alarm threshold battery voltage uptime "
    "node gateway packet retry interval sample average minimum maximum status ok warn fault "
    "the a of and to in is for on with at by from"
).split()
_WORDS8 = ("Grüße température Messwert Überlauf señal déjà-vu 温度 湿度 センサー "
           "naïve Ångström €42 µs °C").split()


def _text_body(size, seed, words, long_lines=False):
    """Deterministic printable text of exactly `size` bytes with line breaks (mostly LF, some
    CRLF, some lines starting with '.', some empty). long_lines: lines of 1-5 KB (over the
    998-octet limit, so the library must use quoted-printable)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        width = rng.randint(1000, 5000) if long_lines else rng.randint(0, 78)
        line = bytearray()
        if rng.random() < 0.03:
            line += b"."
        while len(line) < width:
            w = rng.choice(words).encode()
            line += w + b" "
        line = line[:width].rstrip(b" ")
        # never cut a UTF-8 sequence
        while line and (line[-1] & 0xC0) == 0x80:
            line = line[:-1]
        if line and line[-1] >= 0xC0:
            line = line[:-1]
        out += line + (b"\r\n" if rng.random() < 0.1 else b"\n")
        if rng.random() < 0.05:
            out += b"\n"
    return bytes(out[:size])


BODY_KINDS = {
    # kind: (words, long lines, label)
    "text": (_WORDS, False, "ASCII text"),
    "8bit": (_WORDS + _WORDS8, False, "UTF-8 text, short lines (8bit)"),
    "long": (_WORDS + _WORDS8, True, "UTF-8 text, 1-5 KB lines (quoted-printable)"),
}


def _normalised(data):
    """The body as the wire carries it once unstuffed: every line end CRLF, a final CRLF."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _parts_digest(parts):
    """sha256 over the sha256 of each part's content, in order."""
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def _mime_digest(data):
    """_parts_digest of a multipart message's leaf parts, each decoded (base64 and all)."""
    import email

    msg = email.message_from_bytes(data)
    return _parts_digest([p.get_payload(decode=True) for p in msg.walk() if not p.is_multipart()])


# -- the SMTP sink -----------------------------------------------------------------------------


class _CountingHandler:
    """Keeps, per recipient, the number of messages and the size and digest of the last one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        head, sep, body = data.partition(b"\r\n\r\n")
        if b"\ncontent-type: multipart/" in b"\n" + head.lower():  # the attachments scenario
            digest = _mime_digest(data)
        else:
            digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                n, _, _ = self.got.get(rcpt, (0, 0, None))
                self.got[rcpt] = (n + 1, len(data), digest)
        return "250 2.0.0 counted"

    def take(self, rcpt):
        with self.lock:
            return self.got.pop(rcpt, (0, 0, None))


def _accept_auth(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    return AuthResult(success=True)


class _Sink:
    """The local SMTP server: plaintext on `port`, implicit TLS on `tls_port` and STARTTLS with
    AUTH (any credentials) on `starttls_port`, with a certificate for "localhost" from a test
    CA whose DER is written to `ca_der`."""

    def __init__(self, work):
        import ssl

        import trustme
        from aiosmtpd.controller import Controller

        self.handler = _CountingHandler()
        self.port = free_port()
        self.ctl = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                              data_size_limit=64 * MIB, enable_SMTPUTF8=True)
        ca = trustme.CA()
        self.ca_der = work / "ca.der"
        self.ca_der.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost").configure_cert(ctx)
        self.tls_port = free_port()
        self.tls_ctl = Controller(self.handler, hostname="127.0.0.1", port=self.tls_port,
                                  data_size_limit=64 * MIB, ssl_context=ctx)
        self.starttls_port = free_port()
        self.starttls_ctl = Controller(self.handler, hostname="127.0.0.1", port=self.starttls_port,
                                       data_size_limit=64 * MIB, tls_context=ctx, require_starttls=True,
                                       authenticator=_accept_auth, auth_required=True)
        self.ctl.start()
        self.tls_ctl.start()
        self.starttls_ctl.start()

    def stop(self):
        self.ctl.stop()
        self.tls_ctl.stop()
        self.starttls_ctl.stop()


# -- probing -----------------------------------------------------------------------------------


class _Prober:
    def __init__(self, micropython, work, sink, timeout):
        self.micropython = str(micropython)
        self.work = work
        self.sink = sink
        self.timeout = timeout
        self.lock = threading.Lock()
        self.serial = 0
        self.probes = 0
        self.failures = {}  # scenario -> {kind: count}

    def probe(self, scen, heap):
        """True if scenario `scen` succeeds with a GC heap of `heap` bytes."""
        with self.lock:
            self.serial += 1
            self.probes += 1
            rcpt = "probe%d@example.com" % self.serial
        mode, arg = scen["mode"], scen.get("arg", "-")
        min_size, digest = scen.get("size", 0), scen.get("digest")
        port = {"tls": self.sink.tls_port, "starttls": self.sink.starttls_port}.get(mode, self.sink.port)
        args = [self.micropython, "-X", "heapsize=%d" % heap, "-m", "heap_probe", mode, str(port), rcpt,
                str(arg), str(self.sink.ca_der)]
        env = dict(os.environ, MICROPYPATH=str(self.work))
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout, env=env,
                               cwd=str(self.work))
            out = p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            self._fail(scen, "timeout")
            self.sink.handler.take(rcpt)
            return False
        count, size, got_digest = self.sink.handler.take(rcpt)
        if MEM_MARK in out or "MemoryError" in out:
            kind = "MemoryError"
        elif p.returncode != 0 or OK_MARK not in out:
            last = out.strip().splitlines()[-1:] or ["rc %d" % p.returncode]
            kind = "other: " + last[0][:120]
        elif mode in SEND_MODES and (count != 1 or size < min_size):
            kind = "success printed but server got %d mail(s) of %d bytes" % (count, size)
        elif digest is not None and got_digest != digest:
            kind = "body received differs from the file"
        else:
            return True
        self._fail(scen, kind)
        return False

    def _fail(self, scen, kind):
        with self.lock:
            d = self.failures.setdefault(scen["name"], {})
            d[kind] = d.get(kind, 0) + 1

    def minimum(self, scen, lo, hi, hi_max, window):
        """Bisect the smallest passing heap in (lo, hi], lo assumed failing (checked), hi
        doubled until it passes (at most hi_max). Then confirm: the heap found and the next
        `window` steps above it must all pass; a failure among them moves the minimum above
        it. Returns (first, stable): the lowest passing heap bisection found, and the heap
        from which every probed larger heap passed. (None, None) if hi_max fails."""
        while lo > STEP and self.probe(scen, lo):
            hi = lo
            lo = max(STEP, lo // 2 // STEP * STEP)
        while not self.probe(scen, hi):
            lo = hi
            if hi >= hi_max:
                return None, None
            hi = min(hi * 2, hi_max)
        while hi - lo > STEP:
            mid = (lo + hi) // 2 // STEP * STEP
            if mid <= lo:
                mid = lo + STEP
            if self.probe(scen, mid):
                hi = mid
            else:
                lo = mid
        first = stable = hi
        k = 1
        while k <= window:
            h = stable + k * STEP
            if h > hi_max:
                return first, None
            if self.probe(scen, h):
                k += 1
            else:  # a heap this size fails: the minimum lies above it
                stable = h + STEP
                k = 0
        return first, stable


def _core_scenarios(files):
    # The core alone in reach: a plain alert and a verified STARTTLS + AUTH PLAIN one, each with
    # a 1 KiB and a 1 MiB body streamed from a file.
    out = [{"name": "startup", "mode": "none"}, {"name": "import", "mode": "import"},
           {"name": "client", "mode": "client"}]
    for mode, label in (("file", ""), ("starttls", " STARTTLS AUTH")):
        for size, tag in ((KIB, "1 KiB"), (MIB, "1 MiB")):
            path, digest = files[("text", size)]
            out.append({"name": "send %s%s" % (tag, label), "mode": mode, "arg": path, "size": size,
                        "digest": digest, "kind": "text", "bytes": size})
    return out


# The core's targets on the unix port (issue 13): the whole heap a plain alert and a verified
# STARTTLS + AUTH PLAIN alert need, only the core's .mpy in reach.
CORE_PLAIN_BOUND = 36 * KIB
CORE_TLS_BOUND = 44 * KIB


def _scenarios(files, with_str, kinds, attach=None, attach_html=None):
    out = [{"name": "startup", "mode": "none"}, {"name": "import", "mode": "import"},
           {"name": "client", "mode": "client"}]
    if with_str:
        out.append({"name": "send 1 KiB str", "mode": "str", "arg": KIB, "size": KIB, "kind": "text",
                    "bytes": KIB})
    path, digest = files[("text", RAM_BODY)]
    for mode in ("bytearray", "memoryview"):
        out.append({"name": "send 32 KiB %s" % mode, "mode": mode, "arg": path, "size": RAM_BODY,
                    "digest": digest, "kind": "text", "bytes": RAM_BODY})
    for size, tag in ((KIB, "1 KiB"), (MIB, "1 MiB")):
        path, digest = files[("text", size)]
        out.append({"name": "send %s TLS" % tag, "mode": "tls", "arg": path, "size": size, "digest": digest,
                    "kind": "text", "bytes": size})
    for kind in kinds:
        label = "" if kind == "text" else " " + kind
        for size, tag in ((KIB, "1 KiB"), (MIB, "1 MiB")):
            path, digest = files[(kind, size)]
            out.append({"name": "send %s%s" % (tag, label), "mode": "file", "arg": path, "size": size,
                        "digest": digest, "kind": kind, "bytes": size})
    if attach is not None:  # the same 1 KiB text body, smtp_duo_mime imported in both
        path, digest = files[("text", KIB)]
        out.append({"name": MIME_1K, "mode": "mime", "arg": path, "size": KIB, "digest": digest,
                    "kind": "text", "bytes": KIB})
        out.append({"name": ATTACH, "mode": "attach", "arg": path, "size": ATTACH_BIN * 4 // 3,
                    "digest": attach, "kind": "text", "bytes": KIB + ATTACH_BIN + ATTACH_CSV})
        for name, mode in ((ATTACH_HTML, "attach_html"), (INLINE, "inline")):  # same leaves, same order
            out.append({"name": name, "mode": mode, "arg": path, "size": ATTACH_BIN * 4 // 3,
                        "digest": attach_html, "kind": "text", "bytes": KIB + ATTACH_BIN + ATTACH_CSV})
    return out


def _csv(size, seed):
    """A sensor log as CSV of exactly `size` bytes."""
    rng = random.Random(seed)
    out = bytearray(b"time,temperature,humidity,pressure\n")
    t = 1700000000
    while len(out) < size:
        t += 60
        out += b"%d,%.2f,%.1f,%.1f\n" % (t, rng.uniform(-10, 40), rng.uniform(0, 100),
                                         rng.uniform(950, 1050))
    return bytes(out[:size])


def measure(micropython=None, mpy_cross=None, kinds=("text", "8bit", "long"), with_str=True,
            with_attachments=True, window=8, probe_timeout=30, workers=None, lib_dir=None,
            verbose=False, core=False, repeat=3):
    """Measure the minimal heaps. Returns a dict:
      scenarios: [{name, heap, first_pass, delta_import, delta_1k}, ...] in order; heap is the
        stable minimum (it and the `window` steps above it pass), first_pass the lowest
        passing heap bisection met (lower when the heap layout makes a smaller size work by
        luck); None = never passed
      heap: {name: bytes}, mpy_size, verdicts: [{name, bound, value, ok}], ok (all verdicts),
      failures: {name: {kind: count}} (why probes failed), probes, seconds.
    kinds: body variants streamed from files ("text" is the one the requirement names).
    with_attachments: the attachments scenario and its comparison (left out when "text" is not
    in kinds or lib_dir has no smtp_duo_mime.py).
    lib_dir: where the library's .py files are (default: lib/ of this checkout).
    core: only the core (smtp_duo) in reach; its scenarios and targets instead of the others.
    repeat: each send scenario is bisected that many times and the largest stable minimum kept:
    whether a heap near the minimum passes depends on the heap layout, which the timing of
    the server's replies shifts, so one bisection can land up to about 1 KiB low."""
    t0 = time.monotonic()
    micropython = micropython or micropython_path()
    if micropython is None:
        raise FileNotFoundError("MicroPython unix port not found (run tools/setup.sh)")
    mpy_cross = list(mpy_cross or mpy_cross_cmd())
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    work = Path(tempfile.mkdtemp(prefix="heap_bench_"))
    sink = None
    try:
        for src in sorted(Path(lib_dir or ROOT / "lib").glob("*.py")):
            if not core or src.stem == "smtp_duo":
                compile_mpy(src, work / (src.stem + ".mpy"), cmd=mpy_cross)
        if core:
            kinds, with_attachments = ("text",), False
        (work / "heap_probe.py").write_text(PROBE_SRC)
        compile_mpy(work / "heap_probe.py", work / "heap_probe.mpy", cmd=mpy_cross)
        (work / "heap_probe.py").unlink()  # only .mpy on the path
        mpy_size = (work / "smtp_duo.mpy").stat().st_size
        mime = work / "smtp_duo_mime.mpy"
        mime_mpy_size = mime.stat().st_size if mime.exists() else None

        files = {}
        for i, kind in enumerate(kinds):
            words, long_lines, _ = BODY_KINDS[kind]
            for size in (KIB, RAM_BODY, MIB):
                data = _text_body(size, 1000 * i + size % 997, words, long_lines)
                path = work / ("body_%s_%d.txt" % (kind, size))
                path.write_bytes(data)
                # Exact content check only where the body goes unencoded (7bit/8bit).
                digest = None if long_lines else hashlib.sha256(_normalised(data)).hexdigest()
                files[(kind, size)] = (path.name, digest)
        attach = attach_html = None
        if with_attachments and "text" in kinds and mime_mpy_size is not None:
            blob = random.Random(300).randbytes(ATTACH_BIN)
            csv = _csv(ATTACH_CSV, 2)
            for name, data in zip(ATTACH_FILES, (blob, csv)):
                (work / name).write_bytes(data)
            text = (work / files[("text", KIB)][0]).read_bytes()
            attach = _parts_digest([_normalised(text), blob, csv])
            # The leaves in order: text, HTML, the binary (attached or inline), the CSV.
            attach_html = _parts_digest([_normalised(text), _normalised(HTML.encode()), blob, csv])

        sink = _Sink(work)
        prober = _Prober(micropython, work, sink, probe_timeout)
        scens = _core_scenarios(files) if core else _scenarios(files, with_str, kinds, attach, attach_html)

        first = {}
        heap = {}

        def find(s, lo, hi, hi_max, times=1):
            f, h = prober.minimum(s, lo, hi, hi_max, window)
            for _ in range(times - 1):
                f2, h2 = prober.minimum(s, lo, hi, hi_max, window)
                f = min(f, f2) if f is not None and f2 is not None else None
                h = max(h, h2) if h is not None and h2 is not None else None
            log("%-22s first pass %s, stable from %s" % (s["name"], f, h))
            first[s["name"]], heap[s["name"]] = f, h
            return h

        # The interpreter alone, then the import: both run before anything else, so a heap
        # one step below either minimum fails every later scenario too (minimum() checks).
        floor = find(scens[0], KIB, 16 * KIB, 1 * MIB)
        base = find(scens[1], floor - STEP, floor + 64 * KIB, 4 * MIB) if floor else None
        rest = scens[2:]
        if base is None:
            for s in rest:
                first[s["name"]] = heap[s["name"]] = None
        else:
            with ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 1))) as ex:
                list(ex.map(lambda s: find(s, base - STEP, base + 32 * KIB, base + 4 * MIB,
                                           repeat if s["mode"] in SEND_MODES else 1), rest))
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)

    def sub(a, b):
        return None if a is None or b is None else a - b

    small = heap.get("send 1 KiB")
    rows = []
    for s in scens:
        h = heap[s["name"]]
        rows.append({"name": s["name"], "heap": h, "first_pass": first[s["name"]],
                     "delta_import": sub(h, base) if s["mode"] != "none" else None,
                     "delta_1k": sub(h, small) if s["mode"] in SEND_MODES else None})
    verdicts = []
    if core:
        for name, bound in (("send 1 KiB", CORE_PLAIN_BOUND), ("send 1 KiB STARTTLS AUTH", CORE_TLS_BOUND)):
            v = heap.get(name)
            verdicts.append({"name": name + " (whole heap)", "bound": bound, "value": v,
                             "ok": v is not None and v <= bound, "kind": "text"})
            v = sub(heap.get(name.replace("1 KiB", "1 MiB")), v)
            verdicts.append({"name": "%s - %s" % (name.replace("1 KiB", "1 MiB"), name), "bound": SMALL_BOUND,
                             "value": v, "ok": v is not None and v <= SMALL_BOUND, "kind": "text"})
    for s in scens if not core else ():
        if s["mode"] != "file" or s["bytes"] != MIB:
            continue
        label = "" if s["kind"] == "text" else " " + s["kind"]
        small_name = "send 1 KiB" + label
        v1 = sub(heap[s["name"]], base)
        v2 = sub(heap[s["name"]], heap.get(small_name))
        verdicts.append({"name": "%s - import" % s["name"], "bound": IMPORT_BOUND, "value": v1,
                         "ok": v1 is not None and v1 <= IMPORT_BOUND, "kind": s["kind"]})
        verdicts.append({"name": "%s - %s" % (s["name"], small_name), "bound": SMALL_BOUND, "value": v2,
                         "ok": v2 is not None and v2 <= SMALL_BOUND, "kind": s["kind"]})
    if not core:
        v4 = sub(heap.get("send 1 MiB TLS"), heap.get("send 1 KiB TLS"))
        verdicts.append({"name": "send 1 MiB TLS - send 1 KiB TLS", "bound": SMALL_BOUND, "value": v4,
                         "ok": v4 is not None and v4 <= SMALL_BOUND, "kind": "text"})
        v3 = sub(heap.get("send 32 KiB memoryview"), heap.get("send 32 KiB bytearray"))
        verdicts.append({"name": "send 32 KiB memoryview - send 32 KiB bytearray", "bound": VIEW_BOUND,
                         "value": v3, "ok": v3 is not None and v3 <= VIEW_BOUND, "kind": "text"})
    if ATTACH in heap:
        v5 = sub(heap[ATTACH], heap.get(MIME_1K))
        verdicts.append({"name": "%s - %s" % (ATTACH, MIME_1K), "bound": ATTACH_BOUND, "value": v5,
                         "ok": v5 is not None and v5 <= ATTACH_BOUND, "kind": "text"})
    if INLINE in heap:
        v7 = sub(heap[INLINE], heap.get(MIME_1K))
        verdicts.append({"name": "%s - %s" % (INLINE, MIME_1K), "bound": ATTACH_BOUND, "value": v7,
                         "ok": v7 is not None and v7 <= ATTACH_BOUND, "kind": "text"})
        v6 = sub(heap[INLINE], heap.get(ATTACH_HTML))
        verdicts.append({"name": "%s - %s" % (INLINE, ATTACH_HTML), "bound": INLINE_BOUND, "value": v6,
                         "ok": v6 is not None and v6 <= INLINE_BOUND, "kind": "text"})
    return {
        "scenarios": rows,
        "heap": heap,
        "mpy_size": mpy_size,
        "mime_mpy_size": mime_mpy_size,
        "verdicts": verdicts,
        "ok": all(v["ok"] for v in verdicts),
        "failures": prober.failures,
        "probes": prober.probes,
        "seconds": time.monotonic() - t0,
        "window": window,
        "kinds": {k: BODY_KINDS[k][2] for k in kinds},
    }


# -- report ------------------------------------------------------------------------------------


def _fmt(n, signed=False):
    if n is None:
        return "-"
    return ("%+d (%+.2f KiB)" if signed else "%d (%.2f KiB)") % (n, n / KIB)


def report(r, out=sys.stdout):
    def p(line):
        print(line.rstrip(), file=out)

    p("smtp_duo heap benchmark: MicroPython unix port (64-bit), -X heapsize bisected in %d-byte steps"
      % STEP)
    p("smtp_duo.mpy: %d bytes" % r["mpy_size"])
    if r.get("mime_mpy_size"):
        p("smtp_duo_mime.mpy: %d bytes" % r["mime_mpy_size"])
    for k, label in r["kinds"].items():
        p("body '%s': %s" % (k, label))
    p("")
    row_fmt = "%-16s %-22s %-23s %-23s %s"
    p(row_fmt % ("scenario", "minimal heap", "vs import", "vs send 1 KiB", "lowest pass*"))
    for row in r["scenarios"]:
        fp = row["first_pass"]
        p(row_fmt % (
            row["name"], _fmt(row["heap"]), _fmt(row["delta_import"], True), _fmt(row["delta_1k"], True),
            "" if fp == row["heap"] else _fmt(fp)))
    p("* minimal heap: that size and the %d steps of %d bytes above it all pass. Lowest pass: a"
      % (r["window"], STEP))
    p("  smaller size that passed by luck of the heap layout, with a failing size above it.")
    p("")
    for v in r["verdicts"]:
        p("%-4s %-42s %s <= %d" % ("PASS" if v["ok"] else "FAIL", v["name"], _fmt(v["value"], True),
                                    v["bound"]))
    p("")
    if r["failures"]:
        p("why probes failed (expected: MemoryError below the minimum):")
        for name in [row["name"] for row in r["scenarios"] if row["name"] in r["failures"]]:
            kinds = r["failures"][name]
            p("  %-20s %s" % (name, ", ".join("%s x%d" % kv for kv in sorted(kinds.items()))))
    p("%d probes in %.1f s" % (r["probes"], r["seconds"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="ASCII text bodies only, no str body")
    ap.add_argument("--kind", action="append", choices=sorted(BODY_KINDS),
                    help="a body kind streamed from a file (repeatable; default: all)")
    ap.add_argument("--no-str", action="store_true", help="no body held in a str")
    ap.add_argument("--json", action="store_true",
                    help="print the result as one JSON object (the report goes to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each minimum as found")
    ap.add_argument("--core", action="store_true",
                    help="only the core (smtp_duo.mpy) in reach: a plain and a STARTTLS + AUTH alert")
    a = ap.parse_args(argv)
    kw = {"kinds": ("text",), "with_str": False} if a.quick else {}
    if a.kind:
        kw["kinds"] = tuple(a.kind)
    if a.no_str:
        kw["with_str"] = False
    try:
        if a.core:
            r = measure(core=True, verbose=a.verbose)
        else:
            r = measure(verbose=a.verbose, **kw)
    except Exception as e:  # a measurement tool: say what went wrong, exit 0
        print("heap benchmark could not run: %s: %s" % (type(e).__name__, e))
        return 0
    if a.json:
        import json

        report(r, sys.stderr)
        print(json.dumps(r, indent=1))
    else:
        report(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
