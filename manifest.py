# Freezing manifest for smtp_duo (MicroPython's tools/manifestfile.py reads this file).
#
# A board manifest, the file passed to the firmware build as FROZEN_MANIFEST, pulls it in with
#     include("<checkout>/manifest.py")            # smtp_duo only
#     include("<checkout>/manifest.py", md5=True)  # smtp_duo plus smtp_duo_md5
#     include("<checkout>/manifest.py", aio=True)  # smtp_duo plus smtp_duo_async
#     include("<checkout>/manifest.py", mime=True) # smtp_duo plus smtp_duo_mime
# (options combine: aio=True, mime=True freezes both), where <checkout> is the absolute path of
# this repository (or one relative to the board manifest). board/README.md shows complete board
# manifests for ESP32_GENERIC and RPI_PICO_W.
#
# md5=True also freezes smtp_duo_md5, a pure-Python MD5. smtp_duo imports it only for
# AUTH CRAM-MD5, and only when hashlib has no md5 (Pico W firmware before 1.27), so most
# builds leave it out and save the flash.

metadata(
    description="SMTP client for MicroPython (NetX Duo SMTP client API) to send alert e-mails",
    version="0.2.0",
    license="MIT",
)

options.defaults(md5=False, aio=False, mime=False)

# base_path="lib" makes the frozen name "smtp_duo", so `import smtp_duo` finds it.
module("smtp_duo.py", base_path="lib")

if options.md5:
    module("smtp_duo_md5.py", base_path="lib")

# aio=True also freezes smtp_duo_async, the asyncio client (it needs the firmware's asyncio).
if options.aio:
    module("smtp_duo_async.py", base_path="lib")

# mime=True also freezes smtp_duo_mime: attachments, an HTML part and extra headers (mail_send's
# attachments=, html= and headers=). smtp_duo imports it only for a mail that uses them.
if options.mime:
    module("smtp_duo_mime.py", base_path="lib")
