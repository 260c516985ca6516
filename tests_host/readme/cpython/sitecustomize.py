"""Loaded by CPython at start-up when this folder is on PYTHONPATH (tests_host/test_readme.py):
socket.getaddrinfo maps the names README examples use (smtp.gmail.com:587, ...) to local test
servers, by the JSON map in SMTP_DUO_README_HOSTS ({"host:port": ["127.0.0.1", port]}); other
names but loopback fail as unresolvable, so an example can never reach the network."""

import json
import os
import socket

_MAP = json.loads(os.environ.get("SMTP_DUO_README_HOSTS") or "{}")
_real = socket.getaddrinfo
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "", None)


def _getaddrinfo(host, port, *args, **kw):
    key = "%s:%s" % (host, port)
    if key in _MAP:
        host, port = _MAP[key]
    elif host not in _LOOPBACK:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (README test: %s)" % key)
    return _real(host, port, *args, **kw)


if _MAP:
    socket.getaddrinfo = _getaddrinfo
