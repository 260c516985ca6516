"""Shared state of the stand-in board modules (time, machine, network, ntptime) that let
board/*/main.py run unchanged on the MicroPython unix port (tests_host/test_board_apps.py).

The scenario is a JSON file named by the BOARDSIM_SCENARIO environment variable:

    board        "esp32" or "rp2_pico_w": picks the board's network constants and ADC API
    readings     raw ADC values, one per reading of the sensor (read_uv() on the ESP32,
                 read_u16() on the Pico W); when they run out the next sample raises ScenarioEnd
    wifi         one outcome per WLAN.connect(): n >= 0 connects after n isconnected() polls
                 that say False, "never" keeps connecting until the app gives up,
                 "wrong_password" fails at once; after the list: connect after one poll
    ntp          one outcome per ntptime.settime(): true sets the clock, false times out;
                 after the list: ntp_default (true unless given)
    boot_epoch   the clock at start, Unix seconds (default 2000-01-01: a board's RTC at boot)
    ntp_epoch    what a successful settime() sets the clock to, Unix seconds
    until_s      if given: a sleep that takes the clock past this many seconds raises
                 ScenarioEnd (ends an app that waits without reading the sensor)

The clock is the real one plus the time the app slept: sleeps return at once and move it on,
so an hour of the app's life takes a second, while socket deadlines in smtp_duo still work.
Everything the board would do is logged as a line `@@ {json}` on stdout, with "t": the seconds
since start on that clock.
"""

import json
import os

import utime


class ScenarioEnd(BaseException):
    """The scripted readings ran out: ends the app's endless loop. A BaseException, so the
    app's `except Exception` around each round does not catch it."""


def _load():
    path = os.getenv("BOARDSIM_SCENARIO")
    if not path:
        raise ImportError("BOARDSIM_SCENARIO is not set: these modules only stand in for a board in tests")
    with open(path) as f:
        return json.load(f)


scenario = _load()
BOARD = scenario["board"]

# -- the clock ----------------------------------------------------------------------------------

TICKS_PERIOD = utime.ticks_add(0, -1) + 1
_real0 = utime.ticks_ms()
skipped_ms = 0  # time slept so far: added to the real clock
advances = 0  # how often the clock was moved on (a new sensor reading starts after one)
_wall0_ms = scenario.get("boot_epoch", 946684800) * 1000  # the RTC at start


def elapsed_ms():
    return utime.ticks_diff(utime.ticks_ms(), _real0) + skipped_ms


def advance_ms(ms):
    global skipped_ms, advances
    if ms > 0:
        skipped_ms += ms
        advances += 1
        until = scenario.get("until_s")
        if until is not None and elapsed_ms() > until * 1000:
            log("end", until_s=until)
            raise ScenarioEnd("the clock ran %d s" % until)


def wall_ms():
    return _wall0_ms + elapsed_ms()


def set_wall(seconds):
    """Set the RTC (what ntptime.settime() does on a board)."""
    global _wall0_ms
    _wall0_ms = seconds * 1000 - elapsed_ms()


def require_int(value):
    # Board functions taking milliseconds use mp_obj_get_int(): a float is a TypeError there.
    if not isinstance(value, int):
        raise TypeError("can't convert %s to int" % type(value).__name__)
    return value


# -- the log ------------------------------------------------------------------------------------


def log(event, **data):
    data["ev"] = event
    data["t"] = elapsed_ms() / 1000
    print("@@", json.dumps(data))


# -- the radio, shared by network (which drives it) and machine (lightsleep drops it) ------------

wifi = {"active": False, "connected": False, "status": "idle", "polls_left": 0}
_wifi_plan = list(scenario.get("wifi", []))
_ntp_plan = list(scenario.get("ntp", []))


def next_wifi_outcome():
    return _wifi_plan.pop(0) if _wifi_plan else 1


def next_ntp_outcome():
    return _ntp_plan.pop(0) if _ntp_plan else scenario.get("ntp_default", True)


# -- the sensor ---------------------------------------------------------------------------------

_readings = list(scenario["readings"])
_reading = -1
_seen_advances = -1


def sample(method):
    """One ADC sample. A sample after the clock moved on (the app slept) starts the next
    scripted reading; all samples of one reading return the same raw value."""
    global _reading, _seen_advances
    if advances != _seen_advances:
        _seen_advances = advances
        _reading += 1
        if _reading >= len(_readings):
            log("end", readings=len(_readings))
            raise ScenarioEnd("%d scripted readings done" % len(_readings))
        log("read", i=_reading, method=method, raw=_readings[_reading])
    return _readings[_reading]
