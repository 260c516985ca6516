# Sends one sensor alert with smtp_duo. Runs on MicroPython (what tools/demo.py runs) and on
# CPython. Usage: send_alert.py settings.json, with the keys: server, port, from, to, username,
# password, tls ("none" | "starttls" | "implicit"), cadata (path of the CA certificate, DER or
# PEM), server_hostname, allow_insecure_auth, debug, reading, threshold.

import gc
import sys

try:
    import json
except ImportError:
    import ujson as json

import smtp_duo

TLS = {"none": smtp_duo.TLS_NONE, "starttls": smtp_duo.TLS_STARTTLS, "implicit": smtp_duo.TLS_IMPLICIT}


def _show(direction, line):
    print("  %s %s" % (direction, line))


def main(path):
    with open(path) as f:
        s = json.load(f)
    reading, threshold = s["reading"], s["threshold"]
    cadata = None
    if s.get("cadata"):
        with open(s["cadata"], "rb") as f:
            cadata = f.read()
    client = smtp_duo.SMTPClient(
        server_address=s["server"], port=s["port"], username=s.get("username"),
        password=s.get("password"), from_address=s["from"], tls=TLS[s.get("tls", "none")],
        allow_insecure_auth=s.get("allow_insecure_auth", False), timeout=15, cadata=cadata,
        server_hostname=s.get("server_hostname"), debug=_show if s.get("debug") else None)
    body = [
        "Sensor: greenhouse-7\n",
        "Reading: %.1f C (threshold %.1f C)\n" % (reading, threshold),
        "\nLast readings (C):\n",
    ]
    for i in range(5):
        body.append("  t-%d min: %.1f\n" % (5 - i, reading - 2.5 + i * 0.5))
    gc.collect()
    before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    try:
        reply = client.mail_send(s["to"], smtp_duo.PRIORITY_HIGH,
                                 "Alert: greenhouse-7 at %.1f C" % reading, body)
    except smtp_duo.SMTPError as e:
        print("FAILED:", e)
        print("  status 0x%02X, reply %s %s, temporary %s" % (e.status, e.code, e.text, e.temporary))
        return 1
    gc.collect()
    after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    print("sent: %d %s" % (reply.code, reply.text))
    if client.tls_verified is not None:
        print("TLS: %s" % ("server certificate verified" if client.tls_verified else
                           "encrypted, but the server was NOT authenticated (no cadata)"))
    if reply.refused:
        print("refused recipients:", reply.refused)
    print("heap held after the send: %d bytes" % (after - before))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[-1]))
