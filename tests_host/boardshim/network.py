"""Stand-in for `network` on the ESP32 and the Pico W: one station interface whose
connection attempts follow the scenario. See _boardsim.py."""

import _boardsim as _sim

STA_IF = 0
AP_IF = 1

if _sim.BOARD == "esp32":
    STAT_IDLE = 1000
    STAT_CONNECTING = 1001
    STAT_GOT_IP = 1010
    STAT_NO_AP_FOUND = 201
    STAT_WRONG_PASSWORD = 202
    STAT_CONNECT_FAIL = 203
else:  # cyw43 on the Pico W
    STAT_IDLE = 0
    STAT_CONNECTING = 1
    STAT_GOT_IP = 3
    STAT_NO_AP_FOUND = -2
    STAT_WRONG_PASSWORD = -3
    STAT_CONNECT_FAIL = -1

_STATUS = {"idle": STAT_IDLE, "connecting": STAT_CONNECTING, "got_ip": STAT_GOT_IP,
           "wrong_password": STAT_WRONG_PASSWORD}
_country = "XX"


def country(code=None):
    global _country
    if code is None:
        return _country
    _sim.log("country", code=code, radio_on=_sim.wifi["active"])
    _country = code


class _WLAN:
    def __init__(self, interface):
        self.interface = interface

    def active(self, on=None):
        w = _sim.wifi
        if on is None:
            return w["active"]
        _sim.log("active", on=bool(on))
        w["active"] = bool(on)
        if not on:
            w.update(connected=False, status="idle")

    def connect(self, ssid=None, key=None, *, bssid=None):
        w = _sim.wifi
        if not w["active"]:
            raise OSError("Wifi Not Started")
        if _sim.BOARD == "esp32" and w["status"] == "connecting":
            raise OSError("Wifi Internal Error")  # the ESP-IDF is still busy with an attempt
        outcome = _sim.next_wifi_outcome()
        _sim.log("connect", ssid=ssid, key=key, outcome=outcome)
        w["connected"] = False
        if outcome == "wrong_password":
            w["status"] = "wrong_password"
        else:
            w["status"] = "connecting"
            w["polls_left"] = -1 if outcome == "never" else outcome

    def disconnect(self):
        _sim.log("disconnect")
        _sim.wifi.update(connected=False, status="idle")

    def isconnected(self):
        w = _sim.wifi
        if w["status"] == "connecting" and w["polls_left"] >= 0:
            if w["polls_left"] == 0:
                w.update(connected=True, status="got_ip")
                _sim.log("connected")
            else:
                w["polls_left"] -= 1
        return w["active"] and w["connected"]

    def status(self, param=None):
        if param is not None:
            return {"rssi": -60}.get(param, 0)
        return _STATUS[_sim.wifi["status"]]

    def ifconfig(self, config=None):
        if _sim.wifi["connected"]:
            return ("192.168.4.23", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kwargs):
        if kwargs:
            _sim.log("config", **kwargs)
            return None
        return {"mac": b"\x02\x00\x00\x00\x00\x01", "ssid": "", "pm": 0}.get(args[0]) if args else None

    def scan(self):
        return []


_interfaces = {}


def WLAN(interface=STA_IF):
    # The boards hand out one object per interface.
    if interface not in _interfaces:
        _interfaces[interface] = _WLAN(interface)
    return _interfaces[interface]
