"""The persistent outbox (lib/smtp_duo_outbox.py): mails put while the server is away are kept
on disk and delivered later, with the same Message-ID; permanent refusals go to failed/ with
the server's reply; a full outbox refuses new mails; backoff is respected. Each scenario runs
the same job script (portable/outbox_job.py) on CPython and on the MicroPython unix port."""

import json
import os
import subprocess
import sys

import pytest
from conftest import HERE, ROOT, compile_mpy, free_port, run_micropython
from fakeserver import FakeServer

JOB = HERE / "portable" / "outbox_job.py"


@pytest.fixture(params=["cpython", "micropython"])
def run_job(request, tmp_path):
    if request.param == "micropython":
        mp = request.getfixturevalue("micropython")
        mpy = compile_mpy([JOB], request.getfixturevalue("mpy_dir"))

    def run(job):
        path = tmp_path / ("job%d.json" % len(list(tmp_path.glob("job*.json"))))
        path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        if request.param == "cpython":
            env = dict(os.environ, PYTHONPATH="%s%s%s" % (ROOT / "lib", os.pathsep, HERE / "portable"))
            p = subprocess.run([sys.executable, str(JOB), str(path)], capture_output=True, text=True,
                               env=env, timeout=60)
        else:
            p = run_micropython(mp, mpy, ["-m", "outbox_job", str(path)], heap="128k", timeout=60)
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
