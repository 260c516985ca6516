"""The persistent outbox (lib/smtp_duo_outbox.py): mails put while the server is away are kept
on disk and delivered later, with the same Message-ID; permanent refusals go to failed/ with
the server's reply; a full outbox refuses new mails; backoff is respected; damaged items are
set aside while the others go out; a refusal on a full disk is never sent again; OS errors are
named. Each scenario runs the same job script (portable/outbox_job.py) on CPython and on the
MicroPython unix port (128 KiB heap). test_outbox_faults.py adds the exhaustive fault cases."""

import errno
import json
import os
import re
import subprocess
import sys

import outbox_faults
import pytest
from conftest import HERE, ROOT, run_micropython
from hostkit.mpy import compile_all
from hostkit.ports import free_port
from fakeserver import FakeServer

JOB = HERE / "portable" / "outbox_job.py"
DISK = HERE / "portable" / "outbox_disk.py"


@pytest.fixture(params=["cpython", "micropython"])
def run_job(request, tmp_path):
    if request.param == "micropython":
        mp = request.getfixturevalue("micropython")
        mpy = compile_all([JOB, DISK], request.getfixturevalue("mpy_dir"))

    def run(job, heap="128k"):
        path = tmp_path / ("job%d.json" % len(list(tmp_path.glob("job*.json"))))
        path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        if request.param == "cpython":
            env = dict(os.environ, PYTHONPATH="%s%s%s" % (ROOT / "lib", os.pathsep, HERE / "portable"))
            p = subprocess.run([sys.executable, str(JOB), str(path)], capture_output=True, text=True,
                               env=env, timeout=60)
        else:
            p = run_micropython(mp, mpy, ["-m", "outbox_job", str(path)], heap=heap, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    return run


def stored_ids(folder):
    heads = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".mail"):
            with open(folder / name, "rb") as f:
                heads[name] = json.loads(f.readline())["message_id"]
    return heads


def test_mails_wait_for_the_server_and_keep_their_message_id(run_job, smtpd, tmp_path):
    port = free_port()  # nothing listens yet: the network is "down"
    box = tmp_path / "outbox"
    src = tmp_path / "log.csv"
    src.write_bytes(b"t,reading\n" + b"".join(b"%d,%d.5\n" % (i, i) for i in range(3000)))
    puts = [["put", {"recipient_address": "a@example.org", "subject": "Grüße %d" % i,
                     "mail_body": body}]
            for i, body in enumerate([{"str": "first\n"}, {"file": str(src)}, {"chunks": ["a\n", "b\n"]}])]
    out = run_job({"dir": str(box), "port": port, "actions": puts + [["flush"], ["state"], ["flush"]]})
    assert [o[0] for o in out[:3]] == ["id"] * 3
    assert out[3] == ["sent", 0, True]  # connection refused: kept, backoff set
    assert out[4] == ["state", 3, 0]
    assert out[5] == ["sent", 0, True]  # the backoff is respected
    ids = stored_ids(box)
    ctl = smtpd(port=port)  # the server comes back
    out = run_job({"dir": str(box), "port": port, "actions": [["flush"], ["state"]]})
    assert out == [["sent", 3, False], ["state", 0, 0]]
    got = [m.content for m in ctl.handler.messages]
    assert len(got) == 3
    for content, (name, mid) in zip(got, sorted(ids.items())):
        assert ("Message-ID: %s" % mid).encode() in content  # the one made at put()
    assert b"Gr=C3=BC=C3=9Fe 0" not in got[0] and "Grüße 0".encode() not in got[0]  # RFC 2047 subject
    assert got[1].split(b"\r\n\r\n", 1)[1] == src.read_bytes().replace(b"\n", b"\r\n")


def test_permanent_refusal_goes_to_failed_with_the_reply(run_job, tmp_path):
    srv = FakeServer({"RCPT": [b"550 5.1.1 no such user\r\n", b"250 ok\r\n"]})
    try:
        box = tmp_path / "outbox"
        puts = [["put", {"recipient_address": "gone@example.org", "subject": "s", "mail_body": {"str": "x"}}],
                ["put", {"recipient_address": "ok@example.org", "subject": "t", "mail_body": {"str": "y"}}]]
        out = run_job({"dir": str(box), "port": srv.port, "actions": puts + [["flush"], ["state"]]})
        assert out[2:] == [["sent", 1, False], ["state", 0, 1]]
        reply = next((box / "failed").glob("*.reply")).read_text()
        assert "550" in reply and "no such user" in reply
    finally:
        srv.stop()


def test_full_outbox_refuses_and_drops_nothing(run_job, tmp_path):
    box = tmp_path / "outbox"
    put = ["put", {"recipient_address": "a@example.org", "subject": "s", "mail_body": {"str": "x" * 100}}]
    out = run_job({"dir": str(box), "port": free_port(), "outbox": {"max_items": 2},
                   "actions": [put, put, put, ["state"]]})
    assert [o[0] for o in out] == ["id", "id", "full", "state"] and out[3] == ["state", 2, 0]
    out = run_job({"dir": str(box), "port": free_port(), "outbox": {"max_bytes": 700},
                   "actions": [["put", dict(put[1], mail_body={"str": "y" * 1000})], ["state"]]})
    assert out[0][0] == "full" and out[1] == ["state", 2, 0]
    assert not [n for n in os.listdir(box) if n.startswith(".tmp-")]  # no half-written item left


def test_bad_arguments_are_refused_before_anything_is_stored(run_job, tmp_path):
    box = tmp_path / "outbox"
    out = run_job({"dir": str(box), "port": free_port(), "actions": [
        ["put", {"recipient_address": "a@b\r\nRCPT TO:<x@y>", "subject": "s", "mail_body": {"str": "x"}}],
        ["put", {"recipient_address": "a@example.org", "subject": "s\nBcc: x@y", "mail_body": {"str": "x"}}],
        ["state"]]})
    assert [o[0] for o in out] == ["ValueError", "ValueError", "state"] and out[2] == ["state", 0, 0]


def put(to, subject, text="x\n"):
    return ["put", {"recipient_address": to, "subject": subject, "mail_body": {"str": text}}]


def subjects(messages):
    return [re.search(rb"(?m)^Subject: (.*?)\r$", m).group(1).decode() for m in messages]


# How an item is damaged (outbox_faults.damage) and what its note in failed/ must say.
DAMAGES = [
    (("json", "null"), "damaged item: the head is not a JSON object"),
    (("json", "[1, 2]"), "damaged item: the head is not a JSON object"),
    (("json", '"to"'), "damaged item: the head is not a JSON object"),
    (("dir",), "unreadable item: [Errno 21] EISDIR: is a directory"),
    (("huge", 60000, False), "damaged item: no line end in the first 2048 bytes"),
    (("empty",), "damaged item: the file is empty"),
    (("truncate", 120), "damaged item: truncated: no line end after the head"),
    (("truncate", -5), "damaged item: the body is 25 bytes; 30 were stored"),
    (("flip", "subject", 0), "damaged item: its CRC does not match"),
    (("utf8", "old"), "damaged item: the head is not JSON in UTF-8"),
    (("field", "subject", "1", "old"), "damaged item: the head's subject has the wrong type"),
    (("field", "priority", "true", "crc"), "damaged item: the head's priority has the wrong type"),
    (("field", "cc", '{"a": [1]}', "crc"), "damaged item: the head is not an object of single values"),
    (("missing", "to", "old"), "damaged item: the head's keys are bcc, cc, date, message_id, priority"),
    (("field", "to", '["not an address"]', "crc"), "damaged item: recipient_address is not an address"),
    (("deep", 1500), "damaged item: the head is not an object of single values"),
]


def test_damaged_items_are_set_aside_and_every_other_mail_delivered_in_order(run_job, tmp_path):
    # A good mail before and after each damaged one: the damaged go to failed/ with a note
    # saying why, every good one is delivered once, in order, and nothing blocks the queue.
    box = tmp_path / "outbox"
    body = "the body, 30 bytes long......\n"
    actions = []
    for i in range(len(DAMAGES)):
        actions += [put("ok@example.org", "good-%d" % i, body), put("ok@example.org", "bad-%d" % i, body)]
    actions.append(put("ok@example.org", "good-last"))
    out = run_job({"dir": str(box), "port": free_port(), "actions": actions})
    ids = [o[1] for o in out]
    notes = {}
    for i, (case, note) in enumerate(DAMAGES):
        path = box / (ids[2 * i + 1] + ".mail")
        template = path.read_bytes()
        path.unlink()
        if case[0] == "truncate" and case[1] < 0:
            case = ("truncate", len(template) + case[1])
        elif case[0] == "flip":
            case = ("flip", template.index(b'"subject": "') + 12, case[2])
        outbox_faults.damage(str(path), case, template)
        notes[ids[2 * i + 1]] = note
    srv = FakeServer(connections=2)
    try:
        out = run_job({"dir": str(box), "port": srv.port, "actions": [["flush"], ["state"], ["ls"], ["flush"],
                                                                       ["state"]]})
    finally:
        srv.stop()
    good = ["good-%d" % i for i in range(len(DAMAGES))] + ["good-last"]
    assert subjects(srv.messages) == good  # each once, in order
    assert out[0] == ["sent", len(good), False] and out[1] == ["state", 0, len(DAMAGES)]
    files = out[2][1]
    assert files[""] == ["failed"]
    assert files["failed"] == sorted(i + ext for i in notes for ext in (".mail", ".reply"))
    for ident, note in notes.items():
        assert files["notes"][ident + ".reply"].startswith(note), (ident, files["notes"][ident + ".reply"])
    assert out[3:] == [["sent", 0, False], ["state", 0, len(DAMAGES)]]  # set aside for good
    kinds = [case for case, _ in DAMAGES]
    assert (box / "failed" / (ids[2 * kinds.index(("dir",)) + 1] + ".mail")).is_dir()  # moved as it was


def refusing_server(connections):
    return FakeServer({"RCPT": lambda conn, line: b"550 5.1.1 no such user\r\n" if b"gone@" in line
                       else b"250 2.1.5 ok\r\n"}, connections=connections)


def test_a_refusal_on_a_full_disk_is_recorded_in_place_and_never_sent_again(run_job, tmp_path):
    # The server refuses B for good (550) while moving it to failed/ fails with ENOSPC (the
    # disk takes no new data, mkdir or move between directories; see portable/outbox_disk.py).
    srv = refusing_server(6)
    try:
        box = tmp_path / "outbox"
        puts = [put("ok@example.org", "A"), put("gone@example.org", "B"), put("ok@example.org", "C")]
        out = run_job({"dir": str(box), "port": srv.port, "actions": puts + [
            ["disk", "full"], ["flush"], ["ls"], ["state"], ["flush"], ["ls"], ["state"],
            ["disk", "ok"], ["flush"], ["ls"], ["state"]]})
        b = out[1][1]
        # The disk is full: A and C are delivered; B's refusal is recorded by a rename in place,
        # with no note yet (it could only be empty) and counted as failed.
        assert out[3] == ["sent", 2, False]
        assert out[4][1] == {"": sorted(["failed", b + ".fail"]), "failed": [], "notes": {}}
        assert out[5] == ["state", 0, 1]
        assert out[6:8] == [["sent", 0, False], out[4]] and out[8] == ["state", 0, 1]  # not sent again
        # The disk has room again: the next flush writes the note and moves B to failed/.
        assert out[9] == ["sent", 0, False]
        files = out[10][1]
        assert files[""] == ["failed"] and files["failed"] == [b + ".mail", b + ".reply"]
        note = files["notes"][b + ".reply"]
        assert note.startswith("550 ") and "5.1.1 no such user\nstatus 0x" in note, note
        assert out[11] == ["state", 0, 1]

        # A restart comes before the disk has room: the refusal is still recorded, counted, and
        # filed with a note that says its reason was lost.
        box = tmp_path / "outbox2"
        out = run_job({"dir": str(box), "port": srv.port, "actions": [
            put("gone@example.org", "D"), put("ok@example.org", "E"), ["disk", "full"], ["flush"],
            ["state"]]})
        d = out[0][1]
        assert out[2:] == [["sent", 1, False], ["state", 0, 1]]
        out = run_job({"dir": str(box), "port": srv.port,
                       "actions": [["state"], ["flush"], ["ls"], ["state"]]})
        assert out[0] == ["state", 0, 1] and out[1] == ["sent", 0, False] and out[3] == ["state", 0, 1]
        assert out[2][1]["failed"] == [d + ".mail", d + ".reply"]
        assert out[2][1]["notes"][d + ".reply"].startswith("refused or damaged; why was not recorded")
    finally:
        srv.stop()
    assert subjects(srv.messages) == ["A", "C", "E"]  # each once, in order
    assert sum(1 for c in srv.commands if c.startswith(b"RCPT TO:<gone@")) == 2  # B once, D once


def test_os_errors_are_named_on_both_runtimes(run_job, tmp_path):
    # A board's OSError says "28" for a full disk; the outbox's errors say what it is.
    box = tmp_path / "outbox"
    out = run_job({"dir": str(box), "port": free_port(), "actions": [
        ["disk", "full"], put("ok@example.org", "A"), ["disk", "ok"], ["state"], ["ls"]]})
    assert out[0][:2] == ["OSError", errno.ENOSPC]
    assert out[0][2] == "outbox: the mail was not stored: [Errno 28] ENOSPC: no space left on device"
    assert out[1] == ["state", 0, 0] and out[2][1][""] == ["failed"]  # nothing stored, no .tmp- left
    out = run_job({"dir": str(tmp_path / "no" / "such"), "port": free_port(), "actions": []})
    assert out == [["OSError", errno.ENOENT, "outbox: cannot open %s: [Errno 2] ENOENT: no such file or "
                    "directory" % (tmp_path / "no" / "such")]]


def test_a_head_too_long_to_read_back_is_refused_before_storing(run_job, tmp_path):
    # flush() reads a head through a bounded buffer, so put() stores none it could not read.
    box = tmp_path / "outbox"
    srv = FakeServer()

    def with_bcc(n):
        return ["put", {"recipient_address": "ok@example.org", "subject": "t%d" % n,
                        "mail_body": {"str": "x"}, "bcc": ["r%03d@example.org" % i for i in range(n)]}]

    try:
        out = run_job({"dir": str(box), "port": srv.port, "actions": [
            with_bcc(110), with_bcc(80), ["state"], ["flush"], ["state"]]},
            heap="256k")  # the client itself needs more for 110 addresses
    finally:
        srv.stop()
    assert out[0][0] == "ValueError" and "at most 2048" in out[0][1], out[0]
    assert out[1][0] == "id" and out[2:] == [["state", 1, 0], ["sent", 1, False], ["state", 0, 0]]
    assert subjects(srv.messages) == ["t80"]
    assert sum(1 for c in srv.commands if c.startswith(b"RCPT TO:")) == 81
