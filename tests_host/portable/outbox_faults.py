# Damaged items and a failing disk, for the outbox (lib/smtp_duo_outbox.py). Portable: CPython
# (tests_host/test_outbox_faults.py imports it) and the MicroPython unix port (run as a script).
# The disk's faults come from outbox_disk.py. The cases check what was delivered (by an
# in-memory server: memserver.py) and what the directory holds; each returns a list of
# problems, empty when the case passed.
#
# Script: outbox_faults.py DIR SEED  ->  one JSON line {"corruptions": n, ..., "problems": [...]}

import binascii
import os
import sys

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json

from memserver import MemClient, MemServer
from outbox_disk import ENOSPC, REAL_OPEN, Disk, PowerCut, install, uninstall
from smtp_duo_outbox import Outbox

OK = "ok@example.org"
GONE = "gone@example.org"  # the server refuses it for good (550)


class Server(MemServer):
    """The in-memory server; it refuses RCPT TO:<gone@...> for good."""

    def _next(self, verb):
        if verb == "RCPT" and b"gone@" in self.commands[-1]:
            return b"550 5.1.1 no such user\r\n"
        return MemServer._next(self, verb)

    def delivered(self):
        # (subject, body) of each mail, in the order the server took them.
        out = []
        for m in self.messages:
            i = m.find(b"\r\nSubject: ") + 11
            body = m.partition(b"\r\n\r\n")[2]
            out.append((str(m[i : m.find(b"\r\n", i)], "utf-8"), body))
        return out

    def rcpt(self, address):
        return len([c for c in self.commands if c.startswith(b"RCPT TO:<" + address.encode())])


# -- the file system --------------------------------------------------------------------------


def _isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def wipe(path):
    if _isdir(path):
        for name in os.listdir(path):
            wipe(path + "/" + name)
        os.rmdir(path)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def fresh(d):
    wipe(d)
    os.mkdir(d)


def listing(d):
    # {"": names in d, "failed": names in d/failed}
    out = {"": sorted(os.listdir(d))}
    out["failed"] = sorted(os.listdir(d + "/failed")) if _isdir(d + "/failed") else []
    return out


def read(path):
    with REAL_OPEN(path, "rb") as f:
        return f.read()


def write(path, data):
    with REAL_OPEN(path, "wb") as f:
        for i in range(0, len(data), 1024):
            f.write(data[i : i + 1024])


def body_for(name):
    return ("line 1 of %s\nline 2, the sensor said %s\n" % (name, name * 3)).encode()


def check_notes(d, problems):
    # No note is ever empty or cut short: each ends with its line end.
    for name in listing(d)["failed"]:
        if name.endswith(".reply") and not name.startswith(".tmp-"):
            text = read(d + "/failed/" + name)
            if not text.endswith(b"\n"):
                problems.append("note %s is empty or partial: %r" % (name, text))


# -- a full disk at each point of put() and flush() ---------------------------------------------

MAILS = (("A", OK), ("B", GONE), ("C", OK), ("D", OK))


def injection_case(d, mode, at):
    """Puts A, B (refused for good), C, D and flushes twice with the disk failing as `mode`
    from operation `at` on; then the disk is freed, flushed twice more, and the outbox opened
    again (a restart) and flushed. Returns (operations counted, problems)."""
    fresh(d)
    srv = Server()
    problems = []
    box = Outbox(MemClient(srv), d, retry_base=0, retry_cap=0)
    disk = Disk(mode, at)
    install(disk)
    stored = {}
    try:
        for name, to in MAILS:
            try:
                stored[name] = box.put(to, "mail-" + name, body_for(name))
            except OSError as e:
                text = str(e)
                if not (type(e).__name__ == "OutboxError" and e.errno == ENOSPC
                        and "ENOSPC" in text and "no space left on device" in text):
                    problems.append("put %s raised %r: %s" % (name, e, text))
        for _ in range(2):
            try:
                box.flush()
            except Exception as e:  # noqa: BLE001 -- nothing may come out of flush()
                problems.append("flush raised %r" % e)
            check_notes(d, problems)
            if srv.rcpt(GONE) > 1:
                problems.append("the refused mail was sent again")
        disk.free()
        for _ in range(2):
            box.flush()
            check_notes(d, problems)
    finally:
        uninstall()
    box = Outbox(MemClient(srv), d)
    box.flush()
    check_final(d, srv, stored, box, problems)
    return disk.n, problems


def check_final(d, srv, stored, box, problems):
    got = [s for s, _ in srv.delivered()]
    want = ["mail-" + n for n, to in MAILS if n in stored and to == OK]
    if got != want:
        problems.append("delivered %s, want %s (each once, in order)" % (got, want))
    files = listing(d)
    want_failed = []
    if "B" in stored:
        want_failed = sorted([stored["B"] + ".mail", stored["B"] + ".reply"])
        if srv.rcpt(GONE) != 1:
            problems.append("the refused mail was tried %d times" % srv.rcpt(GONE))
        if want_failed == files["failed"]:
            note = read(d + "/failed/" + stored["B"] + ".reply")
            if b"550" not in note:
                problems.append("note %r" % note)
    if files != {"": ["failed"], "failed": want_failed}:
        problems.append("left %s" % files)
    if (box.pending(), box.failed()) != (0, len(want_failed) // 2):
        problems.append("pending %d failed %d" % (box.pending(), box.failed()))


def injection_points(d):
    # How many operations a run without faults counts: each is a point to fail at.
    return injection_case(d, None, 0)[0]


def power_cut_case(d, at):
    """Puts A, B (refused for good), C, D and flushes, the power cut before operation `at`;
    then the outbox is opened again and flushed. Every mail whose put() returned is delivered,
    in order (the one whose record of the 250 the cut prevented, twice), or, B, in failed/ with
    a note; a put() the cut stopped stored nothing."""
    fresh(d)
    srv = Server()
    problems = []
    box = Outbox(MemClient(srv), d, retry_base=0, retry_cap=0)
    disk = Disk("cut", at)
    install(disk)
    stored = {}
    try:
        for name, to in MAILS:
            stored[name] = box.put(to, "mail-" + name, body_for(name))
        box.flush()
    except PowerCut:
        pass
    finally:
        uninstall()
    box = Outbox(MemClient(srv), d)
    box.flush()
    box.flush()
    got = [s for s, _ in srv.delivered()]
    once = []
    for s in got:
        if s not in once:
            once.append(s)
    want = ["mail-" + n for n, to in MAILS if n in stored and to == OK]
    if once != want or len(got) > len(once) + 1:
        problems.append("delivered %s, want %s (one may come twice)" % (got, want))
    files = listing(d)
    want_failed = []
    if "B" in stored:
        want_failed = sorted([stored["B"] + ".mail", stored["B"] + ".reply"])
        if srv.rcpt(GONE) not in (1, 2):
            problems.append("the refused mail was tried %d times" % srv.rcpt(GONE))
    check_notes(d, problems)
    if files != {"": ["failed"], "failed": want_failed}:
        problems.append("left %s" % files)
    if (box.pending(), box.failed()) != (0, len(want_failed) // 2):
        problems.append("pending %d failed %d" % (box.pending(), box.failed()))
    return problems


# -- damaged items ------------------------------------------------------------------------------


def templates(d):
    """Items A, B, C as put() stores them: [(name, file bytes)]."""
    fresh(d)
    box = Outbox(MemClient(Server()), d)
    out = []
    for n in "ABC":
        ident = box.put(OK, "mail-" + n, body_for(n))
        out.append((ident + ".mail", read(d + "/" + ident + ".mail")))
    return out


def item(fields, body, fmt, raw=None):
    """An item's bytes. fmt "old": the head without size and crc (as stored before they were);
    "crc": with the size and a CRC-32 that match, as put() writes them; raw replaces the head's
    JSON (without its closing brace for "crc")."""
    text = raw if raw is not None else json.dumps(fields).encode()
    if fmt == "old":
        return text + b"\n" + body
    start = text[:-1] if raw is None else text
    crc = binascii.crc32(body, binascii.crc32(start))
    return start + (', "size": %-10d, "crc32": %-10d}\n' % (len(body), crc)).encode() + body


WRONG = {
    "to": ["null", '"%s"' % OK, "1", "{}", "[1]", "[null]", "[[]]", '["not an address"]', "[]"],
    "cc": ["null", "1", '{"a": 1}', "[true]", '["x\\r\\ny@z"]'],
    "bcc": ["null", "2.5", "[[1, 2]]", '["@"]'],
    "subject": ["null", "1", "[]", "{}", "true", '"a\\r\\nBcc: x@y.z"'],
    "priority": ["null", '"2"', "2.0", "true", "[]", "3", "0", "-1"],
    "message_id": ["null", "1", "[]", '"no-brackets"', '""', '"<a b@c>"'],
    "date": ["1", "[]", "true", '"x\\r\\ny"', '"' + "D" * 100 + '"', "{}"],
    "size": ["null", '"1"', "1.5", "-1", "true", "99999"],
    "crc32": ["null", '"1"', "[]", "0"],
}


def damage(path, case, template):
    """Writes the damaged item at path: case is a tuple, its first element the kind."""
    kind = case[0]
    head, _, body = template.partition(b"\n")
    if kind == "dir":
        os.mkdir(path)
        return
    if kind == "symlink":
        os.symlink(path + ".nowhere", path)
        return
    if kind == "truncate":
        data = template[: case[1]]
    elif kind == "flip":
        data = bytearray(template)
        data[case[1]] ^= 1 << case[2]
    elif kind == "overwrite":  # bytes at a position replaced by others
        data = template[: case[1]] + case[2] + template[case[1] + len(case[2]) :]
    elif kind in ("field", "missing", "extra", "utf8"):
        fields = json.loads(str(head, "utf-8"))
        fields.pop("size", None)
        fields.pop("crc32", None)
        fmt = case[-1]
        raw = None
        if kind == "field" and case[1] in ("size", "crc32"):  # the tail itself wrong
            start = json.dumps(fields).encode()[:-1]
            tail = {"size": str(len(body)), "crc32": str(binascii.crc32(body, binascii.crc32(start)))}
            tail[case[1]] = case[2]
            raw = start + (', "size": %s, "crc32": %s}' % (tail["size"], tail["crc32"])).encode()
            fmt = "old"  # written as it is
        elif kind == "field":
            fields[case[1]] = "@@"
            raw = json.dumps(fields).encode().replace(b'"@@"', case[2].encode())
        elif kind == "missing":
            del fields[case[1]]
        elif kind == "extra":
            fields["colour"] = "red"
        elif kind == "utf8":
            fields["subject"] = "mail-@@"
            raw = json.dumps(fields).encode().replace(b"@@", b"\xff\xfe")
        if raw is not None and fmt == "crc":
            raw = raw[:-1]
        data = item(fields, body, fmt, raw)
    elif kind == "json":  # a line that is JSON, not an object
        data = case[1].encode() + b"\n" + body
    elif kind == "huge":  # a head of n bytes, with or without its line end after it
        with REAL_OPEN(path, "wb") as f:
            f.write(b'{"to": ["')
            a = b"a" * 1000
            for i in range(0, case[1], 1000):
                f.write(a[: case[1] - i])
            f.write(b'"]}\n' + body if case[2] else b"")
        return
    elif kind == "deep":
        data = b"[" * case[1] + b"\n" + body
    elif kind == "keys":
        data = ("{" + ", ".join(['"k%d": 0' % i for i in range(case[1])]) + "}\n").encode() + body
    elif kind == "empty":
        data = b""
    else:
        raise ValueError(kind)
    write(path, data)


# Kinds of damage after which B must not be delivered (a flip or an overwrite may leave the
# item intact, and a rewritten field may be valid).
DAMAGED = ("truncate", "missing", "extra", "utf8", "json", "huge", "deep", "keys", "empty", "dir",
           "symlink")


def corruption_case(d, tpl, case, full_at=None):
    """A, B, C stored, B damaged as `case`: A and C are delivered once each, in order; B is
    delivered once exactly as stored, or set aside in failed/ with a note; nothing is left.
    full_at: the disk is full from that operation of the first two flushes on, then freed."""
    fresh(d)
    for name, data in (tpl[0], tpl[2]):
        write(d + "/" + name, data)
    damage(d + "/" + tpl[1][0], case, tpl[1][1])
    srv = Server()
    problems = []
    box = Outbox(MemClient(srv), d)
    if full_at is not None:
        install(Disk("full", full_at))
    try:
        for i in range(4 if full_at else 2):
            if i == 2:
                uninstall()
            try:
                box.flush()
            except Exception as e:  # noqa: BLE001 -- nothing may come out of flush()
                problems.append("flush raised %s: %s" % (type(e).__name__, e))
            check_notes(d, problems)
    finally:
        uninstall()
    got = srv.delivered()
    subjects = [s for s, _ in got]
    b = tpl[1][0]
    files = listing(d)
    if len(got) == 3:  # B delivered: then exactly as stored (its head may have been rewritten valid)
        want = ["mail-A", "mail-B" if case[:2] != ("field", "subject") else subjects[1], "mail-C"]
        if got[1][1] != body_for("B").replace(b"\n", b"\r\n"):
            problems.append("B delivered altered: %r" % (got,))
        if case[0] in DAMAGED or case[0] == "field" and case[2] in WRONG[case[1]]:
            problems.append("B delivered although damaged")
        want_failed = []
    else:
        want = ["mail-A", "mail-C"]
        want_failed = [b, b[:-5] + ".reply"]
        if files["failed"] == want_failed:
            note = read(d + "/failed/" + want_failed[1])
            if not (note.startswith(b"damaged item: ") or note.startswith(b"unreadable item: ")):
                problems.append("note %r" % note)
    if subjects != want:
        problems.append("delivered %s, want %s" % (subjects, want))
    if files != {"": ["failed"], "failed": want_failed}:
        problems.append("left %s" % files)
    if (box.pending(), box.failed()) != (0, len(want_failed) // 2):
        problems.append("pending %d failed %d" % (box.pending(), box.failed()))
    return problems


def systematic(tpl, rng):
    """Every truncation, a flip in every byte (and as many more at random), bytes overwritten at
    random, every wrong type of every field (with and without a matching CRC), every missing
    key, and the odd shapes. A generator: the cases are made one at a time."""
    n = len(tpl[1][1])
    for k in range(n):
        yield ("truncate", k)
    for i in range(n):
        yield ("flip", i, rng(8))
    for _ in range(n):
        yield ("flip", rng(n), rng(8))
    for _ in range(n // 2):
        yield ("overwrite", rng(n), bytes([rng(256) for _ in range(1 + rng(4))]))
    for key in sorted(WRONG):
        for value in WRONG[key]:
            for fmt in ("old", "crc") if key not in ("size", "crc32") else ("crc",):
                yield ("field", key, value, fmt)
    for key in ("to", "cc", "bcc", "subject", "priority", "message_id", "date"):
        yield ("missing", key, "old")
        yield ("missing", key, "crc")
    for case in (("extra", "old"), ("extra", "crc"), ("utf8", "old"), ("utf8", "crc"),
                 ("huge", 60000, False), ("huge", 60000, True), ("huge", 2100, True),
                 ("huge", 1500, False), ("deep", 1500), ("deep", 5), ("keys", 150), ("keys", 12),
                 ("empty",), ("dir",)):
        yield case
    for t in ("null", "[1, 2]", '"to"', "1", "true", "{}"):
        yield ("json", t)


SHAPES = (("json", "null"), ("dir",), ("empty",), ("huge", 60000, False), ("truncate", 100),
          ("field", "subject", "1", "crc"), ("field", "to", '["not an address"]', "crc"))


def _lcg(seed):
    state = [seed & 0x7FFFFFFF]

    def rng(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (state[0] >> 8) % n

    return rng


def main(argv):
    d, seed = argv[1], int(argv[2])
    problems = []
    failed = [0]  # cases with problems; the first few problems are kept (bounded RAM)

    def report(what, found):
        if found:
            failed[0] += 1
            if len(problems) < 30:
                problems.append("%s: %s" % (what, "; ".join(found)[:300]))

    tpl = templates(d)
    cases = 0
    for case in systematic(tpl, _lcg(seed)):
        cases += 1
        report(repr(case), corruption_case(d, tpl, case))
    for case in SHAPES:  # damaged, and the disk full from each of the first operations on
        for at in range(1, 7):
            cases += 1
            report("%r full at %d" % (case, at), corruption_case(d, tpl, case, at))
    points = injection_points(d)
    runs = 0
    for mode in ("once", "full", "all"):
        for at in range(1, points + 2):
            runs += 1
            report("%s at %d" % (mode, at), injection_case(d, mode, at)[1])
    for at in range(1, points + 2):
        runs += 1
        report("power cut at %d" % at, power_cut_case(d, at))
    wipe(d)
    print(json.dumps({"corruptions": cases, "points": points, "injections": runs,
                      "problems": problems, "failed": failed[0]}))


if __name__ == "__main__":
    main(sys.argv)
