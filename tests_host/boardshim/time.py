"""Stand-in for the built-in `time` (an extensible built-in on the unix port, so this file,
first on the path, shadows it; `utime` still reaches the built-in). Board API with a clock
that sleeps move on at once: see _boardsim.py."""

import utime

import _boardsim as _sim

ticks_add = utime.ticks_add
ticks_diff = utime.ticks_diff
_MASK = _sim.TICKS_PERIOD - 1


def ticks_ms():
    return (utime.ticks_ms() + _sim.skipped_ms) & _MASK


def ticks_us():
    return (utime.ticks_us() + _sim.skipped_ms * 1000) & _MASK


ticks_cpu = ticks_us


def time():
    return _sim.wall_ms() // 1000  # an int, as on the boards


def time_ns():
    return _sim.wall_ms() * 1000000


def gmtime(secs=None):
    return utime.gmtime(time() if secs is None else secs)


localtime = gmtime  # the boards' RTC is set to UTC


def mktime(t):
    return utime.mktime(t)


def sleep(seconds):
    _sim.log("sleep", s=seconds)
    _sim.advance_ms(int(seconds * 1000))


def sleep_ms(ms):
    _sim.advance_ms(_sim.require_int(ms))


def sleep_us(us):
    _sim.advance_ms(_sim.require_int(us) // 1000)
