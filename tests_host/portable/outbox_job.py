# Runs outbox actions from a JSON job and prints one JSON line of results; the same file runs
# on CPython and MicroPython (tests_host/test_outbox.py). Job: {"dir", "port", "outbox": {...},
# "actions": [["put", {put keywords}], ["flush"], ["state"], ...]}.

import sys

try:
    import json
except ImportError:
    import ujson as json

import smtp_duo
from smtp_duo_outbox import Outbox, OutboxFull


def body(spec):
    if "file" in spec:
        return open(spec["file"], "rb")
    if "chunks" in spec:
        return iter(spec["chunks"])
    return spec["str"]


def main(path):
    with open(path) as f:
        job = json.load(f)
    client = smtp_duo.SMTPClient("127.0.0.1", job["port"], from_address="sensor@example.com", timeout=2)
    box = Outbox(client, job["dir"], **job.get("outbox", {}))
    out = []
    for action in job["actions"]:
        verb = action[0]
        try:
            if verb == "put":
                kw = dict(action[1])
                kw["mail_body"] = body(kw["mail_body"])
                out.append(["id", box.put(**kw)])
            elif verb == "flush":
                out.append(["sent", box.flush(), box.retry_in() > 0])
            elif verb == "state":
                out.append(["state", box.pending(), box.failed()])
        except OutboxFull as e:
            out.append(["full", str(e)])
        except ValueError as e:
            out.append(["ValueError", str(e)])
        except smtp_duo.SMTPError as e:
            out.append([type(e).__name__, e.code, e.temporary])
    print(json.dumps(out))


main(sys.argv[-1])
