# smtp_duo_auth: AUTH CRAM-MD5 (RFC 2195) and XOAUTH2 (Google, Microsoft) for smtp_duo, whose
# core has PLAIN and LOGIN. Importing it puts both in smtp_duo.MECHANISMS, strongest first;
# smtp_duo imports it when the configuration or the server calls for them. MIT licence.

import binascii

import smtp_duo


def _md5():
    try:
        import hashlib

        md5 = getattr(hashlib, "md5", None)  # absent on Pico W firmware before 1.27
        if md5:
            return md5
    except ImportError:
        pass
    from smtp_duo_md5 import md5  # a pure-Python MD5 (package smtp-duo-md5)

    return md5


def cram_md5_response(username, secret, challenge):
    """RFC 2195: b'username hex(HMAC-MD5(secret, challenge))' (before base64)."""
    md5 = _md5()
    key = secret
    if len(key) > 64:
        h = md5()
        h.update(key)
        key = h.digest()
    key = key + bytes(64 - len(key))
    inner = md5()
    inner.update(bytes([b ^ 0x36 for b in key]))
    inner.update(challenge)
    outer = md5()
    outer.update(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return username + b" " + binascii.hexlify(outer.digest())


def xoauth2_string(username, token):
    """The XOAUTH2 initial response, before base64."""
    return b"user=" + username + b"\x01auth=Bearer " + token + b"\x01\x01"


def _cram_md5(user, secret, step, challenge):
    return cram_md5_response(user, secret, challenge) if step == 1 else None


def _xoauth2(user, secret, step, challenge):
    # A refusal comes as a challenge carrying the error as JSON: answered with an empty line.
    return xoauth2_string(user, secret) if step == 0 else b"" if step == 1 else None


if smtp_duo.MECHANISMS[0][0] != smtp_duo.AUTH_XOAUTH2:
    smtp_duo.MECHANISMS[:0] = [(smtp_duo.AUTH_XOAUTH2, b"XOAUTH2", _xoauth2),
                               (smtp_duo.AUTH_CRAM_MD5, b"CRAM-MD5", _cram_md5)]
