"""Stand-in `ntptime` for README examples on the unix port: the host's clock is already right,
so settime() only says it was called (the examples call it before TLS, as a board must)."""

host = "pool.ntp.org"
timeout = 1


def settime():
    print("@@readme-ntp settime")
