"""Stand-in `socket` for README examples on the MicroPython unix port (tests_host/test_readme.py).

`socket` is an extensible built-in there, so this file, first on MICROPYPATH, shadows it and
`usocket` still reaches the built-in. Only getaddrinfo() differs: a name the README uses
(192.168.1.10, smtp.gmail.com, ...) is mapped to a local test server by the JSON map in
SMTP_DUO_README_HOSTS ({"host:port": ["127.0.0.1", port]}); anything else that is not loopback
fails as an unresolvable name, so an example can never reach the network.
"""

import json
import os

import usocket
from usocket import *  # noqa: F401,F403

_MAP = json.loads(os.getenv("SMTP_DUO_README_HOSTS") or "{}")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def getaddrinfo(host, port, *args):
    key = "%s:%s" % (host, port)
    if key in _MAP:
        host, port = _MAP[key]
        print("@@readme-map %s -> %s:%d" % (key, host, port))
    elif host not in _LOOPBACK:
        raise OSError(-2)  # as a board's lookup of an unknown name
    return usocket.getaddrinfo(host, port, *args)
