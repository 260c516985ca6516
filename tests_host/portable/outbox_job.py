# Runs outbox actions from a JSON job and prints one JSON line of results; the same file runs
# on CPython and MicroPython (tests_host/test_outbox.py). Job: {"dir", "port", "outbox": {...},
# "actions": [["put", {put keywords}], ["flush"], ["state"], ["ls"], ["disk", "full"|"ok"],
# ...]}. "disk" fills or frees the disk under the outbox (outbox_disk.py); "ls" lists the
# directory and failed/ with the notes there.

import os
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


def ls(d):
    out = {"": sorted(os.listdir(d)), "failed": [], "notes": {}}
    try:
        out["failed"] = sorted(os.listdir(d + "/failed"))
    except OSError:
        pass
    for name in out["failed"]:
        if name.endswith(".reply"):
            with open(d + "/failed/" + name) as f:
                out["notes"][name] = f.read()
    return out


def main(path):
    with open(path) as f:
        job = json.load(f)
    client = smtp_duo.SMTPClient("127.0.0.1", job["port"], from_address="sensor@example.com", timeout=2)
    try:
        box = Outbox(client, job["dir"], **job.get("outbox", {}))
    except OSError as e:
        print(json.dumps([["OSError", e.args[0], str(e)]]))
        return
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
            elif verb == "ls":
                out.append(["ls", ls(job["dir"])])
            elif verb == "disk":
                import outbox_disk

                if action[1] == "full":
                    outbox_disk.install(outbox_disk.Disk("full", 1))
                else:
                    outbox_disk.uninstall()
        except OutboxFull as e:
            out.append(["full", str(e)])
        except ValueError as e:
            out.append(["ValueError", str(e)])
        except smtp_duo.SMTPError as e:
            out.append([type(e).__name__, e.code, e.temporary])
        except OSError as e:
            out.append(["OSError", e.args[0], str(e)])
    print(json.dumps(out))


main(sys.argv[-1])
