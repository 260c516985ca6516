# Camera alert mailer for ESP32 camera boards (ESP32-CAM and the like), built on smtp_duo (setup:
# board/README.md). When the sensor's reading reaches ALERT_ABOVE it mails the reading with a
# snapshot shown inside the HTML part. On the board: /main.py (this file), /config.py (from
# board/config_example.py), /lib/smtp_duo.mpy and /lib/smtp_duo_mime.mpy (tools/deploy.py
# --ext mime), /snapshot.jpg (the picture sent when there is no camera driver), and with
# OUTBOX_DIR set /lib/smtp_duo_outbox.mpy; for a mail provider the CA file (ca.der).

import sys
import time

import machine
import network
import ntptime

import smtp_duo

NoneType = type(None)


def capture():
    """Your camera driver goes here: return one JPEG frame as bytes, or None. Stock MicroPython
    has no camera driver; firmware with one (e.g. the esp32-camera based `camera` module) is
    used like:
        import camera
        camera.init(0, format=camera.JPEG, framesize=camera.FRAME_VGA)  # once, at start
        return camera.capture()
    None, or an exception, sends SNAPSHOT_FILE from flash instead."""
    return None


def stop(problem):
    # A mistake in config.py: one line, not a traceback, repeated for whoever connects later.
    # The app waits rather than ends: sys.exit() in main.py soft-resets the board.
    while True:
        print("config:", problem)
        time.sleep(30)


def make_client():
    """Load and check config.py, then make the client (once: its buffers stay allocated)."""
    global config
    try:
        import config
    except Exception as e:
        if "'config'" in str(e):
            stop("no config.py on the board: copy board/config_example.py to the board as config.py")
        stop("config.py has an error: %r; `mpremote exec \"import config\"` shows where" % (e,))
    for names, types, what in (
        ("WIFI_SSID WIFI_PASSWORD NTP_HOST SMTP_SERVER MAIL_FROM SENSOR_NAME", (str,), "a string"),
        ("MAIL_TO", (str, list, tuple), "a string or a list"),
        ("WIFI_TIMEOUT_S WIFI_ATTEMPTS ADC_PIN", (int,), "a whole number"),
        ("SMTP_TIMEOUT_S ALERT_ABOVE HYSTERESIS READ_INTERVAL_S MIN_MAIL_INTERVAL_S RETRY_INTERVAL_S "
         "ADC_SCALE ADC_OFFSET", (int, float), "a number"),
        ("SMTP_TLS SMTP_CA_FILE SMTP_SERVER_NAME SMTP_USERNAME SMTP_PASSWORD OUTBOX_DIR SNAPSHOT_FILE",
         (str, NoneType), "None or a string"),
        ("SMTP_PORT", (int, NoneType), "None or a whole number"),
        ("SMTP_ALLOW_INSECURE_AUTH", (bool, NoneType), "True or False"),
    ):
        for name in names.split():
            if not hasattr(config, name):
                if NoneType not in types:
                    stop(name + " is missing from config.py")
                setattr(config, name, None)
            value = getattr(config, name)
            if not isinstance(value, types):  # not the value: it may be a password
                stop("%s in config.py must be %s, not %s" % (name, what, type(value).__name__))
    tls = {"none": smtp_duo.TLS_NONE, "starttls": smtp_duo.TLS_STARTTLS,
           "implicit": smtp_duo.TLS_IMPLICIT}.get(config.SMTP_TLS or "none")
    if tls is None:
        stop('SMTP_TLS in config.py must be "none", "starttls" or "implicit", not %r' % config.SMTP_TLS)
    if config.SMTP_USERNAME is not None and not (tls and config.SMTP_CA_FILE or
                                                 config.SMTP_ALLOW_INSECURE_AUTH):
        stop('a login needs TLS and a CA file: set SMTP_TLS = "starttls" (or "implicit") and SMTP_CA_FILE, '
             "or SMTP_USERNAME = SMTP_PASSWORD = None for a relay")
    cadata = None
    if tls and config.SMTP_CA_FILE:
        try:
            with open(config.SMTP_CA_FILE, "rb") as f:
                cadata = f.read()
        except OSError:
            stop("cannot read the CA file %r (SMTP_CA_FILE): see board/README.md" % config.SMTP_CA_FILE)
    try:
        smtp_duo.address(config.MAIL_FROM, "MAIL_FROM")
        smtp_duo.address_list(config.MAIL_TO, "MAIL_TO")
        return smtp_duo.SMTPClient(
            server_address=config.SMTP_SERVER, port=config.SMTP_PORT, username=config.SMTP_USERNAME,
            password=config.SMTP_PASSWORD, from_address=config.MAIL_FROM, timeout=config.SMTP_TIMEOUT_S,
            tls=tls, cadata=cadata, server_hostname=config.SMTP_SERVER_NAME,
            allow_insecure_auth=config.SMTP_ALLOW_INSECURE_AUTH,
        )
    except ValueError as e:
        stop("the mail settings in config.py: %s" % str(e).replace("server_hostname", "SMTP_SERVER_NAME"))


print("camera alert mailer, smtp_duo", smtp_duo.__version__)
client = make_client()
# A board path without the leading "/": main.py runs in "/", and so does a test on a PC.
SNAPSHOT = config.SNAPSHOT_FILE or "snapshot.jpg"
_adc = machine.ADC(machine.Pin(config.ADC_PIN), atten=machine.ADC.ATTN_11DB)


def read_sensor():
    # A PIR motion sensor's output on an ADC1 pin works as it is (ADC_SCALE = 1, ADC_OFFSET = 0,
    # ALERT_ABOVE = 1.5: about 3.3 on motion); so does a TMP36, as in board/esp32/main.py.
    total = 0
    for _ in range(16):
        total += _adc.read_uv()
    return total / 16 / 1000000 * config.ADC_SCALE + config.ADC_OFFSET


wlan = network.WLAN(network.STA_IF)


def wifi_up():
    """Connect if not connected. True when connected."""
    if not wlan.active():
        wlan.active(True)
    if wlan.isconnected():
        return True
    for attempt in range(1, config.WIFI_ATTEMPTS + 1):
        print("wifi: connecting to %r (attempt %d)" % (config.WIFI_SSID, attempt))
        wlan.connect(config.WIFI_SSID, config.WIFI_PASSWORD)
        deadline = time.ticks_add(time.ticks_ms(), config.WIFI_TIMEOUT_S * 1000)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            if wlan.isconnected():
                print("wifi: connected, address", wlan.ifconfig()[0])
                return True
            if wlan.status() == network.STAT_WRONG_PASSWORD:
                break
            time.sleep_ms(250)
        print("wifi: failed, status", wlan.status())
        wlan.disconnect()  # else connect() raises OSError while this attempt still runs
        time.sleep(2)
    return False


def set_clock():
    ntptime.host = config.NTP_HOST
    for _ in range(3):
        try:
            ntptime.settime()
            return True
        except Exception as e:  # the clock is optional: only the Date header needs it
            print("clock: NTP failed:", repr(e))
            time.sleep(1)
    return False


def snapshot():
    """The picture for this alert: the camera's frame (bytes), else the file in flash (its
    name: opened at send time and streamed), else None."""
    try:
        frame = capture()
        if frame:
            print("camera: %d bytes" % len(frame))
            return frame
        print("camera: no frame, sending", SNAPSHOT)
    except Exception as e:  # a driver that failed must not cost the alert
        print("camera: capture failed (%r), sending %s" % (e, SNAPSHOT))
    try:
        open(SNAPSHOT, "rb").close()
        return SNAPSHOT
    except OSError:
        print("camera: no", SNAPSHOT, "in flash: the mail goes without a picture")
        return None


def alert(value):
    subject = "[%s] motion: %.1f" % (config.SENSOR_NAME, value)
    text = "%s reads %.1f (alert at %.1f).\n" % (config.SENSOR_NAME, value, config.ALERT_ABOVE)
    return subject, text, snapshot()


def send(subject, text, image):
    """Try once, the picture inline. True when finished with (sent, or refused for good)."""
    f = None
    try:
        html = attachments = None
        if image is not None:
            f = open(image, "rb") if isinstance(image, str) else None
            # The 4th item makes it inline: the HTML shows it as cid:snapshot.
            attachments = [("snapshot.jpg", f or image, "image/jpeg", "snapshot")]
            html = '<p>%s</p><img src="cid:snapshot" alt="snapshot">' % text.strip()
        reply = client.mail_send(config.MAIL_TO, smtp_duo.PRIORITY_HIGH, subject, text, html=html,
                                 attachments=attachments or ())
    except smtp_duo.SMTPError as e:
        if e.temporary:
            print("mail: temporary failure:", e)
            return False
        print("mail: refused for good, dropped:", e)
        return True
    finally:
        if f:
            f.close()
    print("mail: sent:", reply)
    return True


def open_outbox():
    # With OUTBOX_DIR set, an alert that cannot go now is kept in flash as text (the outbox
    # holds text mails; a picture per alert would fill the flash) and sent when Wi-Fi is back.
    if not config.OUTBOX_DIR:
        return None
    from smtp_duo_outbox import Outbox

    return Outbox(client, config.OUTBOX_DIR, retry_base=config.RETRY_INTERVAL_S)


def main():
    outbox = open_outbox()
    clock_ok = wifi_up() and set_clock()
    armed = True  # re-armed once the reading drops below ALERT_ABOVE - HYSTERESIS
    pending = None  # (subject, text, image) not yet sent; a newer alert replaces it
    not_before = 0
    while True:
        try:
            value = read_sensor()
            print("sensor: %.2f" % value)
            if armed and value >= config.ALERT_ABOVE:
                armed = False
                if time.time() >= not_before:  # else within MIN_MAIL_INTERVAL_S: no new mail
                    pending = alert(value)
            elif value < config.ALERT_ABOVE - config.HYSTERESIS:
                armed = True
            online = None  # Wi-Fi not tried this round
            if pending and time.time() >= not_before:
                online = wifi_up()
                if online:
                    clock_ok = clock_ok or set_clock()
                done = online and send(*pending)
                if not done and outbox is not None:
                    outbox.put(config.MAIL_TO, pending[0], pending[1] + "(The snapshot could not be "
                               "sent: %s.)\n" % ("no Wi-Fi" if not online else "server busy"),
                               smtp_duo.PRIORITY_HIGH)
                    print("outbox: stored, %d waiting" % outbox.pending())
                    done = True
                if done:
                    pending = None
                not_before = time.time() + (config.MIN_MAIL_INTERVAL_S if done else config.RETRY_INTERVAL_S)
            if outbox is not None and outbox.pending() and outbox.retry_in() == 0 and (
                    wifi_up() if online is None else online):  # not twice in a round
                try:
                    sent = outbox.flush(max_seconds=config.SMTP_TIMEOUT_S)
                    print("outbox: sent %d, %d waiting" % (sent, outbox.pending()))
                except smtp_duo.SMTPError as e:
                    print("outbox: cannot send:", e)
        except Exception as e:  # log and keep watching
            sys.print_exception(e)
        time.sleep(config.READ_INTERVAL_S)


main()
