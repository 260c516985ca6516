# The process that tests_host/test_power_loss.py kills with SIGKILL, over and over: it puts mails
# into an Outbox and flushes it to a real server, forever, saying on stdout what it is about to
# do and what it has done. Portable: CPython and the MicroPython unix port.
#
# Run: power_loss_worker.py DIR PORT RUN SEED [final]
#   DIR   the outbox directory (shared by every run)
#   PORT  the SMTP server on 127.0.0.1
#   RUN   this run's number: subjects are "r<RUN>-<k>" and the EHLO name is "run<RUN>.example",
#         so the server can tell which run delivered what
#   SEED  for the choices this run makes (how many puts between flushes, body kind)
#   final flush until the outbox is empty, then exit (no puts)
#
# Lines (each one written out before the next step starts):
#   READY <pending> <failed> <tmp_left> <bad>  the Outbox was opened; tmp_left: ".tmp-" names
#                                              still there; bad: items whose head or body is
#                                              not what put() stored
#   put <subject>                              put() is about to be called
#   PUT <id> <subject>                         put() returned this id
#   FULL <subject>                             put() raised OutboxFull
#   FLUSH                                      flush() is about to be called
#   SENT <n>                                   flush() returned n
#   ERR <what>                                 flush() raised (not expected)
#   DONE <pending> <failed>                    final: the outbox is empty (or gave up)

import sys

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json


def body_for(subject):
    """The body a subject stands for (the test checks every delivery against it). Lengths from
    a few bytes to ~10 KB, dot lines (dot-stuffing), and now and then a non-ASCII line."""
    h = 0
    for c in subject.encode():
        h = (h * 31 + c) & 0xFFFFFF
    n = 60 + h % 140 if h % 5 == 0 else h % 25
    lines = []
    for i in range(n):
        if i % 9 == 4:
            lines.append("." if i % 2 else "..dot line")
        elif i % 13 == 7 and h % 3 == 0:
            lines.append("Gr\u00fc\u00dfe aus dem Keller \u2713 %s" % subject)
        else:
            lines.append("%s line %d %s" % (subject, i, "x" * ((h + i * 7) % 50)))
    return "\n".join(lines) + "\n"


def chunks(text, seed):
    # The same body as a list of pieces of uneven sizes (put() copies them one by one).
    out = []
    i = 0
    step = 1 + seed % 700
    while i < len(text):
        out.append(text[i : i + step])
        i += step
        step = 1 + (step * 7 + 13) % 900
    return out


def say(line):
    sys.stdout.write(line + "\n")
    flush = getattr(sys.stdout, "flush", None)
    if flush:
        flush()


def check_items(box):
    # Every item the outbox shows must be readable: a JSON head and the body put() was given.
    import os

    bad = 0
    tmp = 0
    for name in os.listdir(box.directory):
        if name.startswith(".tmp-"):
            tmp += 1
        if not name.endswith(".mail"):
            continue
        try:
            with open(box.directory + "/" + name, "rb") as f:
                head = json.loads(f.readline())
                rest = f.read()
            if rest.decode() != body_for(head["subject"]) or not head["message_id"]:
                bad += 1
        except Exception:  # noqa: BLE001 -- anything unreadable counts
            bad += 1
    return tmp, bad


def main(argv):
    import time

    import smtp_duo
    from smtp_duo_outbox import Outbox, OutboxFull

    directory, port, run, seed = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    final = len(argv) > 5 and argv[5] == "final"
    client = smtp_duo.SMTPClient("127.0.0.1", port, from_address="sensor@example.com",
                                 client_domain="run%d.example" % run, timeout=5)
    box = Outbox(client, directory, max_bytes=1 << 24, max_items=10000, retry_base=0.01,
                 retry_cap=0.05)
    tmp, bad = check_items(box)
    say("READY %d %d %d %d" % (box.pending(), box.failed(), tmp, bad))
    if final:
        for _ in range(200):
            if not box.pending():
                break
            say("FLUSH")
            say("SENT %d" % box.flush())
            time.sleep(box.retry_in())
        say("DONE %d %d" % (box.pending(), box.failed()))
        return
    x = seed & 0x7FFFFFFF
    k = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        # 1-6 puts, then a flush; none while 10 wait (kills keep flushes short: bound the backlog
        # so that kills land in put() as well as in flush())
        for _ in range(1 + (x >> 8) % 6 if box.pending() < 10 else 0):
            subject = "r%d-%d" % (run, k)
            k += 1
            text = body_for(subject)
            mail_body = chunks(text, x) if (x >> 12) % 2 else text
            say("put " + subject)
            try:
                ident = box.put("ops@example.org", subject, mail_body)
            except OutboxFull:
                say("FULL " + subject)
                continue
            say("PUT %s %s" % (ident, subject))
        say("FLUSH")
        try:
            n = box.flush(max_seconds=None if (x >> 16) % 4 else 0.02)
        except Exception as e:  # noqa: BLE001 -- reported, the test fails on it
            say("ERR %s %s" % (type(e).__name__, e))
            continue
        say("SENT %d" % n)


if __name__ == "__main__":
    main(sys.argv)
