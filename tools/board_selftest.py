# smtp_duo self-test, run ON the board (MicroPython): sends one mail with the settings given,
# then prints what happened and the free heap. tools/deploy.py --selftest runs it for you:
# it puts `SETTINGS = {...}` in front of this file and runs the whole with `mpremote run`, so the
# settings (and the password) stay in the board's RAM and are never written to its flash.
#
# By hand: put SETTINGS in a module selftest_settings.py on the board, then
#     mpremote run tools/board_selftest.py
#
# SETTINGS keys: server, to, from (required); port, tls ("none", "starttls", "implicit"),
# cadata_file (a CA certificate on the board, DER or PEM), server_name, username, password,
# allow_insecure_auth, timeout (s), wifi_ssid, wifi_password, utc (time.gmtime() of the PC, to
# set an unset clock: mbedTLS checks certificate dates against it).
#
# The last line printed is "SELFTEST " + JSON: {"ok": true, "reply": ..., "code": ...} or
# {"ok": false, "error": <exception class>, "message", "status", "status_name", "code",
# "enhanced", "text", "temporary", "command"}; both carry "mem_free" and "mem_alloc".

import gc
import json
import sys


def _settings():
    g = globals()
    if "SETTINGS" in g:
        return g["SETTINGS"]
    import selftest_settings

    return selftest_settings.SETTINGS


def _sleep_ms(ms):
    try:
        import time

        time.sleep_ms(ms)
    except (ImportError, AttributeError):
        pass


def _wifi(s):
    # Brings Wi-Fi up if a network is named; otherwise only reports its state.
    try:
        import network
    except ImportError:
        return "no network module"
    if not hasattr(network, "WLAN"):
        return "no WLAN"
    wlan = network.WLAN(network.STA_IF)
    if wlan.active() and wlan.isconnected():
        return "connected " + wlan.ifconfig()[0]
    ssid = s.get("wifi_ssid")
    if not ssid:
        return "NOT connected (pass --wifi-ssid, or connect in boot.py)"
    wlan.active(True)
    wlan.connect(ssid, s.get("wifi_password") or "")
    for _ in range(200):  # 20 s
        if wlan.isconnected():
            return "connected " + wlan.ifconfig()[0]
        _sleep_ms(100)
    return "connecting to %r failed (status %r)" % (ssid, wlan.status())


def _clock(s):
    # Sets the clock from the PC's time when it looks unset (certificate dates need it).
    try:
        import time
    except ImportError:
        return "no time module"
    utc = s.get("utc")
    if time.gmtime()[0] >= 2024 or not utc:
        return "%04d-%02d-%02d %02d:%02d:%02d" % tuple(time.gmtime()[:6])
    try:
        import machine

        y, mo, d, h, mi, sec, wd = utc[0], utc[1], utc[2], utc[3], utc[4], utc[5], utc[6]
        machine.RTC().datetime((y, mo, d, wd, h, mi, sec, 0))
        return "was unset, set from the PC: %04d-%02d-%02d %02d:%02d:%02d" % tuple(time.gmtime()[:6])
    except Exception as e:
        return "unset and could not be set: %r" % (e,)


def _status_name(mod, status):
    if status is None:
        return None
    # The status constants: upper-case names, less the AUTH_*, PRIORITY_* and TLS_* settings.
    for name in dir(mod):
        if name[:1] == "_" or name != name.upper() or name.startswith("PRIORITY_"):
            continue
        if name.startswith("AUTH_") and not name.endswith("_ERROR"):
            continue
        if name in ("TLS_NONE", "TLS_STARTTLS", "TLS_IMPLICIT"):
            continue
        if getattr(mod, name) == status:
            return name
    return None


def _heap(result):
    gc.collect()
    result["mem_free"] = gc.mem_free()
    result["mem_alloc"] = gc.mem_alloc()
    return result


def selftest(s):
    impl = sys.implementation
    print("board:", getattr(impl, "_machine", sys.platform), "MicroPython %d.%d.%d" % impl.version[:3])
    print("wifi:", _wifi(s))
    print("clock:", _clock(s))
    try:
        import smtp_duo
    except Exception as e:
        return _heap({"ok": False, "error": type(e).__name__, "message": "cannot import smtp_duo: %s" % e})
    print("smtp_duo", smtp_duo.__version__, "from", getattr(smtp_duo, "__file__", "?"))
    client = None
    try:
        cadata = None
        if s.get("cadata_file"):
            with open(s["cadata_file"], "rb") as f:
                cadata = f.read()
        tls = {"none": smtp_duo.TLS_NONE, "starttls": smtp_duo.TLS_STARTTLS,
               "implicit": smtp_duo.TLS_IMPLICIT}[s.get("tls") or "none"]
        client = smtp_duo.SMTPClient(
            server_address=s["server"],
            port=s.get("port"),
            username=s.get("username"),
            password=s.get("password"),
            from_address=s["from"],
            timeout=s.get("timeout") or 20,
            tls=tls,
            allow_insecure_auth=bool(s.get("allow_insecure_auth")),
            cadata=cadata,
            server_hostname=s.get("server_name"),
        )
        cadata = None
        gc.collect()
        print("sending to %s via %s port %d (TLS %s, certificate %s) ..." % (
            s["to"], client.server_address, client.port, s.get("tls") or "none",
            "verified" if client.tls_verified else "NOT verified" if client.tls_verified is False else "-"))
        body = "smtp_duo %s self-test from %s.\nFree heap before sending: %d bytes.\n" % (
            smtp_duo.__version__, getattr(impl, "_machine", sys.platform), gc.mem_free())
        reply = client.mail_send(s["to"], smtp_duo.PRIORITY_NORMAL, "smtp_duo self-test", body)
        refused = {}
        for addr in reply.refused:
            refused[addr] = str(reply.refused[addr])
        return _heap({"ok": True, "reply": str(reply), "code": reply.code, "text": reply.text,
                      "refused": refused})
    except smtp_duo.SMTPError as e:
        return _heap({"ok": False, "error": type(e).__name__, "message": e.message, "status": e.status,
                      "status_name": _status_name(smtp_duo, e.status), "code": e.code,
                      "enhanced": e.enhanced, "text": e.text, "temporary": e.temporary,
                      "command": e.command})
    except Exception as e:  # ValueError (settings), OSError, ImportError (no network stack) ...
        return _heap({"ok": False, "error": type(e).__name__, "message": str(e) or repr(e)})


def main():
    result = selftest(_settings())
    if result["ok"]:
        print("sent:", result["reply"])
    else:
        print("FAILED: %s: %s" % (result["error"], result["message"]))
    print("heap: %d bytes free, %d allocated" % (result["mem_free"], result["mem_alloc"]))
    print("SELFTEST " + json.dumps(result))


main()
