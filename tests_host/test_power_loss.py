"""Power loss: the outbox survives SIGKILL at random points of put() and flush().

A worker process (portable/power_loss_worker.py; CPython and the MicroPython unix port taking
turns) puts mails with unique subjects into one outbox directory and flushes them to aiosmtpd in
this process, forever, announcing each step on stdout before it starts ("put S", "FLUSH") and
each put() that returned ("PUT id S"). The test kills it with SIGKILL after a random delay: in
most runs 1-150 ms after it opened the outbox (kills then land mostly in flush()), in some
right after it announced one of its first puts (within about the time a put() takes: the
write, fsync, rename), in a few from the moment it was started (start-up, opening the outbox).
Then it looks at what the kill left in the directory and starts the next run, at least 100
times per runtime. The server widens the window between the final "." and the outbox's record
of the 250 (the file's removal) with random delays before its 250, and now and then answers 451
(the mail stays and is retried after a short backoff). A last run, not killed, flushes
everything.

Checked:
  - after every kill, each <id>.mail in the directory is readable (JSON head, the body put()
    was given); each restarted run opens the outbox with no ".tmp-" file left, nothing
    unreadable, and exactly the items the kill left pending;
  - every subject announced with "PUT" is delivered at least once, every delivery is complete
    (body equal to what its subject stands for) and of a subject some put() was called for;
    all deliveries of a subject carry the Message-ID stored at put();
  - a subject whose put() was cut by the kill is delivered exactly when its <id>.mail existed
    after the kill (the rename is the commit point);
  - duplicates: never two deliveries in one run; every delivery but a subject's last comes from
    a killed run, is the last mail the server accepted from that run, and its file was still
    there after the kill; and the number of duplicates equals the number of killed runs whose
    last accepted mail's file survived the kill.

Note: SIGKILL ends the process, not the machine: what the process wrote (and renamed) is in the
kernel's page cache and survives. This test checks the outbox's own commit protocol
(write-temp, rename, remove after 250), not the flash file system's behaviour on power cut.

SMTP_DUO_POWER_LOSS_KILLS (kills per runtime, default 110) and SMTP_DUO_POWER_LOSS_SEED change
the run.
"""

import asyncio
import email
import email.policy
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

from conftest import HERE, ROOT, require
from hostkit.mpy import compile_all
from hostkit.ports import free_port

import power_loss_worker as worker  # the body every subject stands for

WORKER = HERE / "portable" / "power_loss_worker.py"
KILLS_PER_RUNTIME = int(os.environ.get("SMTP_DUO_POWER_LOSS_KILLS", "110"))
HEAP = "256k"


class Handler:
    """aiosmtpd handler: keeps every accepted message with the time it was accepted (the final
    "." received) and the EHLO name (which run sent it); delays some replies."""

    def __init__(self, seed):
        self.rng = random.Random(seed)  # used in the server's thread only
        self.accepted = []
        self.refused_451 = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rng.random() < 0.2:
            await asyncio.sleep(self.rng.uniform(0, 0.005))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.rng.random() < 0.03:
            self.refused_451 += 1
            return "451 4.3.0 try again later"  # not accepted: the mail stays in the outbox
        self.accepted.append({"t": time.monotonic(), "ehlo": session.host_name,
                              "content": envelope.original_content or envelope.content})
        if self.rng.random() < 0.5:  # the window between "." and the outbox removing the file
            await asyncio.sleep(self.rng.uniform(0, 0.015))
        return "250 2.0.0 OK: queued as PL%d" % len(self.accepted)


class Worker:
    """One run of the worker; its stdout lines are kept with the time they arrived."""

    def __init__(self, cmd, env):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     text=True, encoding="utf-8")
        self.lines = []
        self.times = []  # when each line arrived, seconds from the start
        self.changed = threading.Condition()
        self.ready = threading.Event()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.changed:
                self.times.append(time.monotonic() - self.started)
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
            if line.startswith("READY"):
                self.ready_after = self.times[-1]
                self.ready.set()
        with self.changed:
            self.eof = True
            self.changed.notify_all()

    def wait_puts(self, n, timeout=30):
        """Until the worker has announced its n-th put() (False if it did not)."""
        with self.changed:
            puts = lambda: sum(1 for x in self.lines if x.startswith("put "))  # noqa: E731
            return self.changed.wait_for(lambda: self.eof or puts() >= n, timeout) and not self.eof

    def put_seconds(self):
        """How long each put() took, seen from here ("put S" to "PUT id S")."""
        out = []
        for i in range(1, len(self.lines)):
            if self.lines[i].startswith("PUT ") and self.lines[i - 1].startswith("put "):
                out.append(self.times[i] - self.times[i - 1])
        return out

    def finish(self, timeout=60):
        try:
            self.proc.wait(timeout)
        finally:
            self.reader.join(10)
            self.stderr = self.proc.stderr.read()
            self.proc.stdout.close()
            self.proc.stderr.close()


def scan(box):
    """What the directory holds: {subject: message_id} of the <id>.mail items (each checked
    readable and complete) and how many ".tmp-" files."""
    items, tmp = {}, 0
    if not os.path.isdir(box):  # killed before the Outbox made its directory: nothing stored
        return items, tmp
    for name in sorted(os.listdir(box)):
        if name.startswith(".tmp-"):
            tmp += 1
        elif name.endswith(".mail"):
            with open(os.path.join(box, name), "rb") as f:
                first, rest = f.readline(), f.read()
            try:
                head = json.loads(first)
            except ValueError:
                raise AssertionError("item %s is unreadable: head %r" % (name, first[:80])) from None
            assert rest.decode() == worker.body_for(head["subject"]), "item %s is damaged" % name
            assert head["subject"] not in items, "two items for %s" % head["subject"]
            items[head["subject"]] = head["message_id"]
    return items, tmp


def parse(content):
    msg = email.message_from_bytes(content, policy=email.policy.default)
    body = msg.get_content().replace("\r\n", "\n")
    return str(msg["Subject"]), str(msg["Message-ID"]), body


def test_power_loss(micropython, mpy_dir, tmp_path):
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        require(False, "aiosmtpd")
    seed = int(os.environ.get("SMTP_DUO_POWER_LOSS_SEED", random.randrange(1 << 30)))
    print("\npower loss: seed %d (SMTP_DUO_POWER_LOSS_SEED)" % seed)
    rng = random.Random(seed)
    mpy = compile_all([WORKER], mpy_dir)
    handler = Handler(seed + 1)
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True,
                     data_size_limit=2 ** 25)
    ctl.start()
    box = str(tmp_path / "outbox")
    path = os.pathsep.join([str(ROOT / "lib"), str(HERE / "portable")])
    envs = {"cpython": dict(os.environ, PYTHONPATH=path),
            "micropython": dict(os.environ, MICROPYPATH="%s:.frozen" % mpy)}

    def start(runtime, run, final=False):
        args = [box, str(port), str(run), str(rng.randrange(1 << 30))] + (["final"] if final else [])
        if runtime == "cpython":
            cmd = [sys.executable, str(WORKER)] + args
        else:
            cmd = [str(micropython), "-X", "heapsize=" + HEAP, "-m", "power_loss_worker"] + args
        return Worker(cmd, envs[runtime])

    t0 = time.monotonic()
    ready_after = {"cpython": 0.05, "micropython": 0.01}  # seconds from start to READY (the last)
    put_seconds = {"cpython": [0.003], "micropython": [0.001]}  # how long put() takes
    runs = []  # one dict per killed run
    left = {}  # what the last kill left pending
    w = None
    try:
        for i in range(2 * KILLS_PER_RUNTIME):
            runtime = ("cpython", "micropython")[i % 2]
            run = i + 1
            w = start(runtime, run)
            mode = rng.random()
            if mode < 0.12:  # from the start: may land in start-up or the Outbox's opening
                time.sleep(rng.uniform(0, 1.2 * ready_after[runtime]))
            elif mode < 0.42:  # aimed at a put(): its write, flush, fsync or rename
                assert w.wait_puts(rng.randint(1, 4)), "run %d (%s) put nothing" % (run, runtime)
                took = sorted(put_seconds[runtime][-200:])
                time.sleep(rng.uniform(0, 1.5 * took[len(took) // 2]))
            else:
                assert w.ready.wait(30), "run %d (%s) never opened the outbox" % (run, runtime)
                time.sleep(rng.uniform(0.001, 0.15))
            os.kill(w.proc.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            w.finish()
            if w.ready.is_set():
                ready_after[runtime] = w.ready_after
            put_seconds[runtime] += w.put_seconds()
            assert w.proc.returncode == -signal.SIGKILL, "run %d (%s) ended by itself: rc %s\n%s" % (
                run, runtime, w.proc.returncode, w.stderr)
            assert not any(line.startswith("ERR") for line in w.lines), (run, runtime, w.lines)
            check_ready(run, runtime, w.lines, left)
            left, tmp = scan(box)  # after every kill: the outbox is readable
            runs.append({"run": run, "runtime": runtime, "lines": w.lines, "t_kill": t_kill,
                         "left": dict(left), "tmp": tmp})
        killing = time.monotonic() - t0
        w = start("micropython", len(runs) + 1, final=True)  # no kill: deliver everything
        w.finish(120)
        assert w.proc.returncode == 0, w.stderr
        check_ready(len(runs) + 1, "micropython", w.lines, left)
        assert w.lines[-1] == "DONE 0 0", w.lines[-10:]
        final_run = len(runs) + 1
    finally:
        if w is not None and w.proc.poll() is None:  # a failed check: do not leave it running
            w.proc.kill()
            w.finish()
        ctl.stop()
    assert scan(box) == ({}, 0)
    report = analyse(runs, final_run, handler)
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["killing_seconds"] = round(killing, 1)
    print_report(report)


def check_ready(run, runtime, lines, left):
    """A run that opened the outbox found it readable: no ".tmp-" left, nothing damaged, and
    exactly the items the previous kill left."""
    ready = [line for line in lines if line.startswith("READY")]
    if not ready:
        return
    pending, failed, tmp, bad = map(int, ready[0].split()[1:])
    assert (pending, failed, tmp, bad) == (len(left), 0, 0, 0), (run, runtime, ready[0], sorted(left))


def analyse(runs, final_run, handler):
    by_run = {r["run"]: r for r in runs}
    attempted = {}  # subject -> run whose put() was called for it
    announced = {}  # subject -> id put() returned
    ids = defaultdict(set)  # id -> subjects it was returned for
    for r in runs:
        for line in r["lines"]:
            if line.startswith("put "):
                attempted[line[4:]] = r["run"]
            elif line.startswith("PUT "):
                _, ident, subject = line.split(" ", 2)
                announced[subject] = ident
                ids[ident].add(subject)
            assert not line.startswith("FULL"), line

    # Every delivery: complete, of a subject some put() was called for, from a known run.
    deliveries = defaultdict(list)  # subject -> [(run, message_id, accepted time)]
    last_accepted = {}  # run -> the subject the server accepted last from it
    for a in handler.accepted:
        subject, mid, body = parse(a["content"])
        assert subject in attempted, "delivered a mail nobody put: %r" % subject
        assert body == worker.body_for(subject), "incomplete or damaged delivery of %s" % subject
        m = re.fullmatch(r"run(\d+)\.example", a["ehlo"] or "")
        assert m, a["ehlo"]
        run = int(m.group(1))
        deliveries[subject].append((run, mid, a["t"]))
        last_accepted[run] = subject  # handler.accepted is in order of acceptance

    missing = sorted(set(announced) - set(deliveries))
    assert not missing, "put() returned an id but the mail never arrived: %s" % missing[:20]

    # One Message-ID per subject, the one stored at put().
    stored_mid = {}
    for r in runs:
        stored_mid.update(r["left"])
    for subject, ds in deliveries.items():
        mids = {mid for _, mid, _ in ds}
        assert len(mids) == 1, (subject, ds)
        if subject in stored_mid:
            assert mids == {stored_mid[subject]}, (subject, mids, stored_mid[subject])

    # put() cut by the kill: delivered exactly when the rename had happened.
    cut = sorted(set(attempted) - set(announced))
    cut_delivered = 0
    for subject in cut:
        r = by_run[attempted[subject]]
        assert r["lines"][-1] == "put " + subject, (subject, r["lines"][-3:])
        assert (subject in deliveries) == (subject in r["left"]), (subject, subject in deliveries)
        cut_delivered += subject in deliveries

    # Duplicates: only a killed run's last accepted mail whose file survived the kill.
    duplicates = []
    for subject, ds in deliveries.items():
        ds.sort()
        runs_of = [d[0] for d in ds]
        assert len(set(runs_of)) == len(runs_of), "delivered twice in one run: %s %s" % (subject, runs_of)
        for run, _, t_acc in ds[:-1]:
            assert run != final_run and run in by_run, (subject, runs_of)
            r = by_run[run]
            assert last_accepted[run] == subject, (
                "duplicate of %s from run %d, which went on to another mail" % (subject, run))
            assert subject in r["left"], "duplicate of %s but its file was gone" % subject
            duplicates.append({"subject": subject, "run": run, "runtime": r["runtime"],
                               "accepted_before_kill_ms": round((r["t_kill"] - t_acc) * 1000, 1)})
    survived = [r for r in runs if r["run"] in last_accepted and last_accepted[r["run"]] in r["left"]]
    assert len(duplicates) == len(survived), (len(duplicates), [r["run"] for r in survived])

    # Where the kills landed (from the last line announced and what the directory held).
    landed = defaultdict(Counter)
    for r in runs:
        last = r["lines"][-1] if r["lines"] else ""
        if not any(line.startswith("READY") for line in r["lines"]):
            where = "start-up / opening the outbox"
        elif last.startswith("put "):
            if last[4:] in r["left"]:
                where = "put: after the rename, before it returned"
            elif r["tmp"]:
                where = "put: .tmp- file open or written, not renamed"
            else:
                where = "put: before its .tmp- file existed"
        elif last == "FLUSH":
            if r in survived:
                t_acc = [t for run, _, t in deliveries[last_accepted[r["run"]]] if run == r["run"]][0]
                before = r["t_kill"] > t_acc
                where = ("flush: after the server accepted, before the remove" if before else
                         "flush: after '.' was sent, before the server's handler ran")
            else:
                where = "flush: elsewhere (connect, commands, body, after a remove)"
        else:
            where = "between steps"
        landed[where][r["runtime"]] += 1
    return {
        "kills": dict(Counter(r["runtime"] for r in runs)),
        "landed": {k: dict(v) for k, v in sorted(landed.items())},
        "put_called": len(attempted), "put_returned": len(announced),
        "put_cut": len(cut), "put_cut_delivered": cut_delivered,
        "deliveries": sum(len(ds) for ds in deliveries.values()), "subjects_delivered": len(deliveries),
        "duplicates": len(duplicates), "duplicate_detail": duplicates,
        "tmp_left_by_kills": sum(r["tmp"] for r in runs), "server_451": handler.refused_451,
        "ids_reused": sum(1 for v in ids.values() if len(v) > 1), "ids": len(ids),
    }


def print_report(rep):
    print("power loss: %(seconds)ss (%(killing_seconds)ss killing); kills %(kills)s" % rep)
    for where, counts in rep["landed"].items():
        print("  %-68s %s" % (where, counts))
    print("  put() called %(put_called)d, returned %(put_returned)d, cut by a kill %(put_cut)d "
          "(%(put_cut_delivered)d of those delivered); .tmp- files left by kills %(tmp_left_by_kills)d"
          % rep)
    print("  deliveries %(deliveries)d of %(subjects_delivered)d subjects; duplicates %(duplicates)d; "
          "451 answers %(server_451)d" % rep)
    print("  put() returned %(ids)d distinct ids, %(ids_reused)d of them for more than one mail "
          "(an id is free again once its mail was sent)" % rep)
    gaps = sorted(d["accepted_before_kill_ms"] for d in rep["duplicate_detail"])
    if gaps:
        print("  each duplicate: a killed run's last accepted mail, its file still there after the kill;"
              " kill minus acceptance: min %s ms, median %s ms, max %s ms (negative: the '.' was on its way)"
              % (gaps[0], gaps[len(gaps) // 2], gaps[-1]))
    for d in rep["duplicate_detail"][:3]:
        print("    e.g. %(subject)s: run %(run)d (%(runtime)s) killed %(accepted_before_kill_ms)s ms "
              "after the server accepted it" % d)
