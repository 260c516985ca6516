# smtp_duo_explain: what to do about a TLS or connection failure, or a server's refusal, in the
# error message itself, for a board with no README at hand. smtp_duo adds these explanations
# when this module is installed; without it the message is short and README sections 4 and 6
# explain by status.
# MIT licence.

# mbedTLS error numbers seen on the boards (MicroPython raises OSError(code, name)).
_INVALID_RECORD = -0x7200
_CONN_EOF = -0x7280
_FATAL_ALERT = -0x7780
_ALLOC_FAILED = -0x7F00
_RSA_MPI_ALLOC = -0x4290
_NO_CA_CHAIN = -0x7680


def tls(message, e, port):
    """`message` (smtp_duo's short one for a failed handshake) with what to do."""
    text = str(e) or type(e).__name__  # asyncio: a bare ConnectionResetError
    low = text.lower()
    code = e.args[0] if e.args and type(e.args[0]) is int else None
    if "timed out" in message or "timeout" in low:
        tip = "TLS_IMPLICIT is usually port 465, TLS_STARTTLS 587"
    elif "expired" in low or "future" in low or "not yet valid" in low:
        tip = ("the certificate is outside its validity dates as the board's clock reads them: "
               "is the clock set? ntptime.settime() after Wi-Fi is up, before sending")
    elif "hostname" in low or "(cn)" in low or " cn " in low or "match" in low:
        tip = ("the certificate is for another name: set server_hostname to the name in the "
               "server's certificate (the one you connect to, not its IP address)")
    elif "certificate" in low or "verify" in low or "signed" in low or "issuer" in low:
        tip = ("give the CA that signed this server's certificate as cadata (tools/fetch_ca.py "
               "finds it): the one given did not sign it")
    elif code == _INVALID_RECORD or "wrong_version" in low or "wrong version" in low or \
            "record layer" in low or "packet length" in low:
        tip = ("the server on port %d did not answer in TLS: it is a plaintext or STARTTLS "
               "port; use tls=TLS_STARTTLS (usually 587) or the implicit-TLS port (465)" % port)
    elif code in (12, _ALLOC_FAILED, _RSA_MPI_ALLOC) or "alloc" in low:
        tip = ("out of memory: a TLS handshake needs about 40 KiB of free RAM in one piece; free "
               "RAM (gc.collect() before sending), make the client first, at start-up, and "
               "freeze the library into the firmware")
    elif code == _CONN_EOF or "eof" in low or "reset" in low:
        tip = "the server closed the connection during the TLS handshake (also seen when RAM ran out)"
    elif code == _FATAL_ALERT or "alert" in low:
        tip = ("the server refused the TLS handshake: it may not support this TLS version or cipher, "
               "or want another server_hostname (SNI)")
    elif code == _NO_CA_CHAIN:
        tip = "no CA loaded for a verified connection: pass cadata"
    else:
        return message
    return message + ": " + tip


def connect(message, e, host, port):
    """`message` (a failed connect or name lookup) with what to do."""
    low = str(e).lower()
    if "resolve" in message:
        tip = "is the network up and the name right? An IP address avoids the lookup"
    elif "ECONNREFUSED" in message or "refused" in low:
        tip = "nothing listens on %s port %d: check the host and port" % (host, port)
    elif "timed out" in message:
        tip = "no answer from %s: a firewall, a wrong address, or weak Wi-Fi" % host
    else:
        return message
    return message + ": " + tip


def reply(message, r):
    """`message` (smtp_duo's for a refusal by the server, Reply `r`) with what to do."""
    code = r.code
    low = r.text.lower()
    if code == 530 or r.enhanced == "5.7.0" and "auth" in low:
        tip = ("the server wants you to log in first: give username and password (over "
               "tls=TLS_STARTTLS or TLS_IMPLICIT, with cadata)")
    elif code == 535:
        tip = ("with 2-step verification Gmail and Outlook refuse the account's own password: "
               "make an app password, or use XOAUTH2 (a token as password); check the user "
               "name is the whole address")
    elif "relay" in low:
        tip = ("the server does not relay for you (to other domains): log in (username and "
               "password), or use your provider's server")
    elif code in (552, 523) or "size" in low or "too big" in low or "too large" in low:
        tip = "the message is larger than the server takes: send less (a smaller attachment)"
    elif code == 421:
        tip = "the server is busy or closing: retry later"
    else:
        return message
    return message + ": " + tip
