# Freezing manifest for smtp_duo (MicroPython's tools/manifestfile.py reads this file).
#
# A board manifest, the file passed to the firmware build as FROZEN_MANIFEST, pulls it in with
#     include("<checkout>/manifest.py")                      # the core: a plain or TLS alert
#     include("<checkout>/manifest.py", mime=True, qp=True)  # options add extensions
# where <checkout> is the absolute path of this repository (or one relative to the board
# manifest). board/README.md shows complete board manifests for ESP32_GENERIC and RPI_PICO_W.
#
# The core (smtp_duo) holds what an alert needs. Each option freezes one sibling module, which
# smtp_duo imports only when a mail or a server needs it (README section 3, Extensions):
#   qp        smtp_duo_qp: quoted-printable text (8-bit text to a server without 8BITMIME,
#             lines over 998 octets, a one-shot stream)
#   mime      smtp_duo_mime: attachments, an HTML part, extra headers
#   auth      smtp_duo_auth: AUTH CRAM-MD5 and XOAUTH2 (the core has PLAIN and LOGIN)
#   md5       smtp_duo_md5: a pure-Python MD5 for CRAM-MD5 where hashlib has none (Pico W < 1.27)
#   chunking  smtp_duo_chunking: SIZE= and the message as one BDAT chunk (CHUNKING)
#   utf8      smtp_duo_utf8: non-ASCII addresses (SMTPUTF8)
#   explain   smtp_duo_explain: what to do about a TLS or connection failure, in the message
#   aio       smtp_duo_async: the asyncio client (needs the firmware's asyncio)
#   outbox    smtp_duo_outbox: the persistent outbox
#   fast      smtp_duo_fast: the body's hot path in native code (the port's -march), 3 to 5
#             times faster for large bodies and attachments
#   all       every one of them

metadata(
    description="SMTP client for MicroPython (NetX Duo SMTP client API) to send alert e-mails",
    version="0.3.0",
    license="MIT",
)

options.defaults(qp=False, mime=False, auth=False, md5=False, chunking=False, utf8=False,
                 explain=False, aio=False, outbox=False, fast=False, all=False)

# base_path="lib" makes the frozen name "smtp_duo", so `import smtp_duo` finds it.
module("smtp_duo.py", base_path="lib")

for option, name in (("qp", "qp"), ("mime", "mime"), ("auth", "auth"), ("md5", "md5"),
                     ("chunking", "chunking"), ("utf8", "utf8"), ("explain", "explain"),
                     ("aio", "async"), ("outbox", "outbox"), ("fast", "fast")):
    if getattr(options, option) or options.all:
        module("smtp_duo_%s.py" % name, base_path="lib")
