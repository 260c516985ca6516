# Sensor alert mailer for ESP32 boards, built on smtp_duo (setup: board/README.md). On the board:
# /main.py (this file), /config.py (from board/config_example.py) and /lib/smtp_duo.py.

import sys
import time

import machine
import network
import ntptime

import config
import smtp_duo

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


def make_client():
    # A ValueError here means a mistake in config.py. The client is made once: its buffers and
    # the CA stay allocated, so RAM does not fragment between mails.
    cadata = None
    if config.SMTP_CA_FILE:
        with open(config.SMTP_CA_FILE, "rb") as f:
            cadata = f.read()
    return smtp_duo.SMTPClient(
        server_address=config.SMTP_SERVER,
        port=config.SMTP_PORT,
        username=config.SMTP_USERNAME,
        password=config.SMTP_PASSWORD,
        from_address=config.MAIL_FROM,
        timeout=config.SMTP_TIMEOUT_S,
        tls={"none": smtp_duo.TLS_NONE, "starttls": smtp_duo.TLS_STARTTLS,
             "implicit": smtp_duo.TLS_IMPLICIT}[config.SMTP_TLS],
        cadata=cadata,
        server_hostname=config.SMTP_SERVER_NAME,
        allow_insecure_auth=config.SMTP_ALLOW_INSECURE_AUTH,
    )


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


def main():
    print("alert mailer, smtp_duo", smtp_duo.__version__)
    client = make_client()
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


main()
