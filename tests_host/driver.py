# Runs one client job and reports what happened, on CPython (imported by the tests) and on
# MicroPython (run as `micropython driver.py job.json`, result printed as one JSON line).
# A job: {"client": {SMTPClient keywords}, "mails": [{mail_send keywords}], "session": bool}.
# Bodies are described so JSON can carry them: {"str": s}, {"hex": h}, {"bytearray": h},
# {"memoryview": h}, {"file": path}, {"text_file": path}, {"chunks": [body, ...]},
# {"generator": [body, ...]}, {"fail_after": [body, ...]} (an iterator that raises after them).
# html= takes a body spec too; attachments= a list of [filename, body spec, content_type].

import gc
import sys

try:
    import json
except ImportError:
    import ujson as json

import binascii

import smtp_duo


class SourceFailure(Exception):
    pass


def _body(spec):
    if "str" in spec:
        return spec["str"]
    if "hex" in spec:
        return binascii.unhexlify(spec["hex"])
    if "bytearray" in spec:
        return bytearray(binascii.unhexlify(spec["bytearray"]))
    if "memoryview" in spec:
        return memoryview(binascii.unhexlify(spec["memoryview"]))
    if "file" in spec:
        return open(spec["file"], "rb")
    if "text_file" in spec:
        return open(spec["text_file"], "r")
    if "chunks" in spec:
        return [_body(c) for c in spec["chunks"]]
    if "generator" in spec:
        return (_body(c) for c in spec["generator"])
    if "fail_after" in spec:
        return _failing(spec["fail_after"])
    raise ValueError("unknown body spec")


def _failing(parts):
    for p in parts:
        yield _body(p)
    raise SourceFailure("body source failed")


def _reply(r):
    refused = {}
    for addr, rr in r.refused.items():
        refused[addr] = [rr.code, rr.text]
    return {"code": r.code, "text": r.text, "enhanced": r.enhanced, "refused": refused}


def _error(e):
    d = {"type": type(e).__name__, "message": str(e)}
    if isinstance(e, smtp_duo.SMTPError):
        d["status"] = e.status
        d["code"] = e.code
        d["enhanced"] = e.enhanced
        d["text"] = e.text
        d["command"] = e.command
        d["temporary"] = e.temporary
        if isinstance(e, smtp_duo.SMTPRecipientsRefused):
            rec = {}
            for addr, rr in e.recipients.items():
                rec[addr] = [rr.code, rr.text]
            d["recipients"] = rec
    return d


def _constants(d):
    # "AUTH_PLAIN" style names in the job refer to module constants; a password given as
    # {"token": t} becomes a token provider (a callable), as XOAUTH2 users pass one.
    out = {}
    for k, v in d.items():
        if isinstance(v, str) and k in ("authentication_type", "tls", "priority"):
            v = getattr(smtp_duo, v)
        elif k == "password" and isinstance(v, dict):
            v = _provider(v["token"])
        elif k == "cadata" and isinstance(v, dict):  # {"file": path}: the CA as the board reads it
            with open(v["file"], "rb") as f:
                v = f.read()
        elif k == "debug" and v is True:
            v = _TRANSCRIPT.record
        out[k] = v
    return out


class _Transcript:
    def __init__(self):
        self.lines = []

    def record(self, direction, line):
        self.lines.append(direction + " " + line)


_TRANSCRIPT = _Transcript()


def _provider(token):
    return lambda: token


def _prepare(mail):
    # The job's descriptions made real: constants, bodies, attachments; and what to close.
    mail = _constants(mail)
    if "mail_body" in mail:
        mail["mail_body"] = _body(mail["mail_body"])
    if "html" in mail and isinstance(mail["html"], dict):
        mail["html"] = _body(mail["html"])
    if "attachments" in mail:  # [[filename, body spec, content_type], ...]
        mail["attachments"] = [(a[0], _body(a[1])) + tuple(a[2:]) for a in mail["attachments"]]
    opened = [mail.get("mail_body"), mail.get("html")] + [a[1] for a in mail.get("attachments", ())]
    return mail, opened


def _close(opened):
    for body in opened:
        if hasattr(body, "close"):
            body.close()


def _send(target, mail):
    mail, opened = _prepare(mail)
    try:
        return {"ok": _reply(target.mail_send(**mail))}
    except Exception as e:
        return {"error": _error(e)}
    finally:
        _close(opened)


def run_job(job):
    """Returns {"results": [...], "heap": {...}} or {"error": ...} if the client failed to build
    or the session failed to open. With "async": true the job runs on smtp_duo_async."""
    gc.collect()
    heap0 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    results = []
    _TRANSCRIPT.lines = []
    make = smtp_duo.SMTPClient
    if job.get("async"):
        import smtp_duo_async

        make = smtp_duo_async.AsyncSMTPClient
    try:
        client = make(**_constants(job["client"]))
    except Exception as e:
        return {"error": _error(e), "results": results, "transcript": _TRANSCRIPT.lines}
    try:
        if job.get("async"):
            import asyncio

            asyncio.run(_mails_async(client, job, results))
        elif job.get("session"):
            with client.session() as s:
                for mail in job["mails"]:
                    results.append(_send(s, mail))
        else:
            for mail in job["mails"]:
                results.append(_send(client, mail))
    except Exception as e:
        return {"error": _error(e), "results": results, "transcript": _TRANSCRIPT.lines}
    verified = client.tls_verified
    client = None
    gc.collect()
    heap1 = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    return {"results": results, "heap": {"before": heap0, "after": heap1}, "tls_verified": verified,
            "transcript": _TRANSCRIPT.lines}


async def _mails_async(client, job, results):
    if job.get("session"):
        async with client.session() as s:
            for mail in job["mails"]:
                results.append(await _send_async(s, mail))
    else:
        for mail in job["mails"]:
            results.append(await _send_async(client, mail))


async def _send_async(target, mail):
    mail, opened = _prepare(mail)
    try:
        return {"ok": _reply(await target.mail_send(**mail))}
    except Exception as e:
        return {"error": _error(e)}
    finally:
        _close(opened)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    print(json.dumps(run_job(job)))


if __name__ == "__main__" and sys.implementation.name == "micropython":
    main()
