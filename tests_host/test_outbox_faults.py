"""The outbox against damaged items, a full disk and power cuts: the cases of
portable/outbox_faults.py, run the same on CPython (in process) and on the MicroPython unix
port (one subprocess, from .mpy). The disk's faults come from portable/outbox_disk.py, which
stands in for `os` and `open()` inside smtp_duo_outbox; the server is the in-memory one.

- Damage: mails A, B, C stored, B damaged: every truncation; a bit flip in every byte and as
  many more at random; bytes overwritten at random; every wrong JSON type of every head field
  (to, cc, bcc, subject, priority, message_id, date, size, crc32), both in a head with a matching
  CRC and in the older head without one; missing and extra keys; invalid UTF-8; heads of 1.5 KB
  to 60 KB with and without a line end; deep nesting; many keys; JSON that is not an object; an
  empty file; a directory with the item's name (and on CPython a dangling symlink); values the
  client refuses. A and C are delivered once each, in order; B is delivered once exactly as
  stored or set aside in failed/ with a note; nothing is left pending. Some shapes again with
  the disk full from each of the first operations of the flush.
- A full disk: ENOSPC at each write, rename, remove, mkdir and open-for-writing of four put()
  calls (B is refused by the server, 550) and the flushes that follow, in turn, three ways
  ("once", "full", "all"): a put() that fails raises OutboxError naming ENOSPC and stored
  nothing; flush() never raises; the refused mail is tried once only; no note is ever empty;
  once the disk is freed everything else is delivered once, in order, and B is in failed/.
- A power cut before each of those operations, then a restart: nothing lost, at most the mail
  in flight delivered twice, the refused one tried at most twice.
- Hypothesis (CPython) draws further damages, alone or with a full disk.
"""

import json
import random

import outbox_faults as faults
import pytest
from conftest import HERE, run_micropython
from hostkit.mpy import compile_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODULES = ["outbox_faults.py", "outbox_disk.py", "memserver.py"]
HEAD = ["to", "cc", "bcc", "subject", "priority", "message_id", "date"]


@pytest.fixture
def box(tmp_path):
    return str(tmp_path / "outbox")


def test_every_damage_on_cpython(box):
    tpl = faults.templates(box)
    seed = random.randrange(1 << 30)  # for the flips and overwrites at random places
    problems = []
    for case in list(faults.systematic(tpl, faults._lcg(seed))) + [("symlink",)]:
        problems += ["%r: %s" % (case, p) for p in faults.corruption_case(box, tpl, case)]
    for case in faults.SHAPES + (("symlink",),):
        for at in range(1, 7):
            found = faults.corruption_case(box, tpl, case, at)
            problems += ["%r full at %d: %s" % (case, at, p) for p in found]
    assert not problems, "seed %d:\n%s" % (seed, "\n".join(problems[:30]))


def test_full_disk_and_power_cut_at_every_point_on_cpython(box):
    points = faults.injection_points(box)
    assert points >= 20  # 4 puts (open, write, write, rename) and the flush's records
    problems = []
    for mode in ("once", "full", "all"):
        for at in range(1, points + 2):
            problems += ["%s at %d: %s" % (mode, at, p) for p in faults.injection_case(box, mode, at)[1]]
    for at in range(1, points + 2):
        problems += ["power cut at %d: %s" % (at, p) for p in faults.power_cut_case(box, at)]
    assert not problems, "\n".join(problems[:30])


def damages(n):
    """Hypothesis: a damage to an item of n bytes."""
    fields = sorted(faults.WRONG)
    value = st.one_of(st.sampled_from(["null", "true", "1", "-7", "1.5", '""', '"x"', "[]", "{}", '[""]',
                                       "[1, [2]]", '{"a": [1]}', '"\\u0000"', '"\\ud800"', "1e999"]),
                      st.text(max_size=30).map(json.dumps))
    return st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, n - 1)),
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(0, 7)),
        st.tuples(st.just("overwrite"), st.integers(0, n - 1), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("field"), st.sampled_from(fields), value, st.sampled_from(["old", "crc"])),
        st.tuples(st.just("missing"), st.sampled_from(HEAD), st.sampled_from(["old", "crc"])),
        st.tuples(st.just("huge"), st.integers(1000, 70000), st.booleans()),
        st.tuples(st.just("deep"), st.integers(2, 3000)),
        st.tuples(st.just("keys"), st.integers(8, 300)),
        st.tuples(st.just("json"), st.sampled_from(["null", "[1, 2]", '"to"', "0", "false", "{}",
                                                     '{"to": []}'])),
        st.sampled_from([("empty",), ("dir",), ("symlink",), ("utf8", "old"), ("utf8", "crc"),
                         ("extra", "crc")]),
    )


def test_drawn_damages_on_cpython(tmp_path):
    box = str(tmp_path / "outbox")
    tpl = faults.templates(box)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=damages(len(tpl[1][1])), full_at=st.one_of(st.none(), st.integers(1, 8)))
    def check(case, full_at):
        assert faults.corruption_case(box, tpl, case, full_at) == []

    check()


def test_on_micropython(micropython, mpy_dir, tmp_path):
    compile_all([HERE / "portable" / m for m in MODULES], mpy_dir)
    seed = random.randrange(1 << 30)
    # 256k: the test module and its cases; the library's own RAM bound is test_outbox.py's (128k)
    p = run_micropython(micropython, mpy_dir, ["-m", "outbox_faults", str(tmp_path / "outbox"), str(seed)],
                        heap="256k", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["failed"] == 0, "seed %d:\n%s" % (seed, "\n".join(out["problems"]))
    assert out["corruptions"] > 1000 and out["points"] >= 20 and out["injections"] == 4 * (out["points"] + 1)
