# The driver of test_core_only.py's jobs, on CPython and on MicroPython: runs one driver.py job
# (see driver.py for the job format) in a process whose import path holds the folder it was
# given, and prints driver.run_job's report as one JSON line with two more keys:
#   "loaded":    the extension modules in sys.modules once the job is done (what the client
#                imported on its own: this module and driver.py import none of them)
#   "reachable": with "probe": true in the job, the extension modules that can be imported at
#                all (after "loaded" was taken): [] proves a core-only folder is core only.
# CPython:     python -I -S -B -c "import sys; sys.path.insert(0, FOLDER); import coreonly;
#              coreonly.main()" job.json
# MicroPython: MICROPYPATH=FOLDER micropython -m coreonly job.json (cwd FOLDER)

import sys

try:
    import json
except ImportError:
    import ujson as json

import driver

EXTENSIONS = ("smtp_duo_qp", "smtp_duo_mime", "smtp_duo_auth", "smtp_duo_md5", "smtp_duo_chunking",
              "smtp_duo_utf8", "smtp_duo_explain", "smtp_duo_async", "smtp_duo_outbox", "smtp_duo_fast")


def loaded():
    # (smtp_duo_fast is speed only, loaded from a body's second window on: not a feature's)
    return sorted([m for m in EXTENSIONS if m in sys.modules and m != "smtp_duo_fast"])


def reachable():
    found = []
    for m in EXTENSIONS:
        try:
            __import__(m)
            found.append(m)
        except ImportError:
            pass
    return found


def main():
    with open(sys.argv[-1]) as f:
        job = json.load(f)
    report = driver.run_job(job)
    report["loaded"] = loaded()
    if job.get("probe"):
        report["reachable"] = reachable()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
