"""Free TCP ports on 127.0.0.1 for the local servers the tools and the tests start."""

import socket


def free_ports(n):
    """n distinct ports that were free a moment ago (bound all at once, then released): a server
    may still lose one to another process before it binds it, so starters retry."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]
