"""Stand-in for `ntptime`: settime() sets the shared clock or times out, as the scenario
says. See _boardsim.py."""

import errno

import _boardsim as _sim

host = "pool.ntp.org"
timeout = 1


def time():
    if not _sim.wifi["connected"]:
        raise OSError(-2)  # no route: getaddrinfo fails
    if not _sim.next_ntp_outcome():
        _sim.advance_ms(timeout * 1000)  # the UDP socket's timeout
        raise OSError(errno.ETIMEDOUT)
    return _sim.scenario["ntp_epoch"]


def settime():
    try:
        t = time()
    except OSError as e:
        _sim.log("ntp", host=host, ok=False, error=e.args[0])
        raise
    _sim.set_wall(t)
    _sim.log("ntp", host=host, ok=True)
