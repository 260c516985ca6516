"""Emulates the hashlib of a Raspberry Pi Pico W firmware before MicroPython 1.27: sha1 and
sha256, no md5. Only for the MicroPython unix port in tests (test_md5.py): hashlib is an
extensible built-in there, so this file, put first on sys.path, shadows it, and the
u-prefixed name still reaches the built-in one.
"""

from uhashlib import sha1, sha256  # noqa: F401
