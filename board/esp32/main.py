# Sensor alert mailer for ESP32 boards, built on smtp_duo (setup: board/README.md). On the board:
# /main.py (this file), /config.py (from board/config_example.py), /lib/smtp_duo.mpy and, for
# a mail provider, the CA file named by SMTP_CA_FILE (ca.der).

import sys
import time

import machine
import network
import ntptime

import smtp_duo

NoneType = type(None)


def stop(problem):
    # A mistake in config.py: one line, not a traceback, repeated for whoever connects with
    # mpremote later (it shows only what comes after it connects). The app waits rather than
    # ends: sys.exit() in main.py soft-resets the board, which runs main.py again. Ctrl-C gets
    # the REPL: fix config.py and reset the board.
    while True:
        print("config:", problem)
        time.sleep(30)


def make_client():
    """Load and check config.py, then make the client (once: its buffers and the CA stay
    allocated, so RAM does not fragment between mails). A problem goes to stop()."""
    global config
    try:
        import config
    except Exception as e:
        if "'config'" in str(e):  # ImportError: no module named 'config'
            stop("no config.py on the board: copy board/config_example.py to the board as config.py")
        stop("config.py has an error: %r; `mpremote exec \"import config\"` shows where" % (e,))
    for names, types, what in (
        ("WIFI_SSID WIFI_PASSWORD NTP_HOST SMTP_SERVER MAIL_FROM SENSOR_NAME", (str,), "a string"),
        ("MAIL_TO", (str, list, tuple), "a string or a list"),
        ("WIFI_TIMEOUT_S WIFI_ATTEMPTS ADC_PIN", (int,), "a whole number"),
        ("SMTP_TIMEOUT_S ALERT_ABOVE HYSTERESIS READ_INTERVAL_S MIN_MAIL_INTERVAL_S RETRY_INTERVAL_S "
         "ADC_SCALE ADC_OFFSET", (int, float), "a number"),
        # Optional, None if left out: a relay needs no TLS, CA file or login.
        ("SMTP_TLS SMTP_CA_FILE SMTP_SERVER_NAME SMTP_USERNAME SMTP_PASSWORD", (str, NoneType),
         "None or a string"),
        ("SMTP_PORT", (int, NoneType), "None or a whole number"),
        ("SMTP_ALLOW_INSECURE_AUTH ESP32_LIGHT_SLEEP", (bool, NoneType), "True or False"),
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
        # smtp_duo gives a password only to a server whose certificate it has verified.
        stop('a login needs TLS and a CA file: set SMTP_TLS = "starttls" (or "implicit") and SMTP_CA_FILE, '
             "or SMTP_USERNAME = SMTP_PASSWORD = None for a relay")
    cadata = None
    if tls and config.SMTP_CA_FILE:  # without TLS it is not used, so not read
        try:
            with open(config.SMTP_CA_FILE, "rb") as f:
                cadata = f.read()
        except OSError:
            name = config.SMTP_SERVER_NAME
            stop("cannot read the CA file %r (SMTP_CA_FILE): make it on a PC with `python3 tools/fetch_ca.py "
                 "%s:%d%s --out ca.der`, then `mpremote cp ca.der :%s`" % (
                     config.SMTP_CA_FILE, config.SMTP_SERVER, config.SMTP_PORT or (25, 587, 465)[tls],
                     " --server-name " + name if name else "", config.SMTP_CA_FILE))
    try:
        smtp_duo.address(config.MAIL_FROM, "MAIL_FROM")  # else a wrong address shows only in a mail
        smtp_duo.address_list(config.MAIL_TO, "MAIL_TO")
        return smtp_duo.SMTPClient(
            server_address=config.SMTP_SERVER,
            port=config.SMTP_PORT,
            username=config.SMTP_USERNAME,
            password=config.SMTP_PASSWORD,
            from_address=config.MAIL_FROM,
            timeout=config.SMTP_TIMEOUT_S,
            tls=tls,
            cadata=cadata,
            server_hostname=config.SMTP_SERVER_NAME,
            allow_insecure_auth=config.SMTP_ALLOW_INSECURE_AUTH,
        )
    except ValueError as e:  # what smtp_duo checks itself: addresses, host names, the CA's format
        stop("the mail settings in config.py: %s" % str(e).replace("server_hostname", "SMTP_SERVER_NAME"))


print("alert mailer, smtp_duo", smtp_duo.__version__)
client = make_client()  # checks config.py first: a problem is one line, and the app waits
_adc = machine.ADC(machine.Pin(config.ADC_PIN), atten=machine.ADC.ATTN_11DB)


def read_sensor():
    # Swap in your own sensor here; the rest of the file only needs a number back.
    # read_uv() is calibrated by the chip's eFuse data; 16 samples even out the ADC's noise.
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
                break  # waiting longer will not help
            time.sleep_ms(250)
        print("wifi: failed, status", wlan.status())
        wlan.disconnect()  # else connect() raises OSError while this attempt still runs
        time.sleep(2)
    return False


def set_clock():
    """Set the RTC to UTC from NTP. True on success."""
    ntptime.host = config.NTP_HOST
    for _ in range(3):
        try:
            ntptime.settime()
            print("clock: set, UTC %04d-%02d-%02d %02d:%02d:%02d" % time.gmtime()[:6])
            return True
        except Exception as e:  # timeouts, DNS, odd replies: the clock is optional
            print("clock: NTP failed:", repr(e))
            time.sleep(1)
    return False


def message(state, value, peak):
    subject = "[%s] %s: %.1f" % (config.SENSOR_NAME, state, value)
    body = "%s reads %.1f (alert at %.1f, all-clear below %.1f, peak %.1f).\n" % (
        config.SENSOR_NAME, value, config.ALERT_ABOVE, config.ALERT_ABOVE - config.HYSTERESIS, peak
    )
    return subject, body


def send(client, subject, body):
    """Try once. True when this mail is finished with (sent, or refused for good)."""
    try:
        reply = client.mail_send(config.MAIL_TO, smtp_duo.PRIORITY_HIGH, subject, body)
    except smtp_duo.SMTPError as e:
        if e.temporary:  # server busy, greylisting, network down: the next round retries
            print("mail: temporary failure, will retry:", e)
            return False
        print("mail: refused for good, dropped:", e)  # retrying would get the same answer
        return True
    print("mail: sent:", reply)
    if reply.refused:
        print("mail: these recipients were refused:", reply.refused)
    return True


def sleep(seconds):
    if config.ESP32_LIGHT_SLEEP:
        # The ESP-IDF keeps no Wi-Fi connection through light sleep: switch it off cleanly and
        # let wifi_up() bring it back when a mail is due. The REPL answers only between sleeps.
        wlan.active(False)
        machine.lightsleep(int(seconds * 1000))  # the port takes an int only
    else:
        time.sleep(seconds)  # stays connected; Wi-Fi is serviced in the background


def main(client):
    clock_ok = wifi_up() and set_clock()
    alarm, peak = False, 0.0
    pending = None  # (subject, body) not yet sent; a newer event replaces it
    not_before = 0  # no mail before this time.time(): rate limit and retry wait
    while True:
        try:
            value = read_sensor()
            print("sensor: %.2f" % value)
            if not alarm and value >= config.ALERT_ABOVE:
                alarm, peak = True, value
                pending = message("ALERT", value, peak)
            elif alarm:
                peak = max(peak, value)
                if value < config.ALERT_ABOVE - config.HYSTERESIS:  # hysteresis: no flapping
                    alarm = False
                    pending = message("back to normal", value, peak)
            if pending and time.time() >= not_before:
                done = False
                if wifi_up():
                    clock_ok = clock_ok or set_clock()  # Date header only with a set clock
                    done = send(client, *pending)
                if done:
                    pending = None
                wait = config.MIN_MAIL_INTERVAL_S if done else config.RETRY_INTERVAL_S
                not_before = time.time() + wait
        except Exception as e:  # log and keep watching
            sys.print_exception(e)
        sleep(config.READ_INTERVAL_S)


main(client)
