# Settings for board/esp32/main.py and board/rp2_pico_w/main.py.
# Copy this file to the board as config.py, next to main.py, and edit it there. Keep your real
# config.py out of version control: it holds your Wi-Fi password.

# --- Wi-Fi ---------------------------------------------------------------------------------------
WIFI_SSID = "my-network"
WIFI_PASSWORD = "my-wifi-password"
WIFI_COUNTRY = None  # Pico W: two-letter code such as "DE" or "US" for the radio's channel rules
WIFI_TIMEOUT_S = 20  # per connection attempt
WIFI_ATTEMPTS = 3  # per round; the next round tries again

# --- Clock ---------------------------------------------------------------------------------------
# Only used for the mail's Date header. If NTP fails the mail goes out without one (and the
# relay usually adds it).
NTP_HOST = "pool.ntp.org"  # or your router's address

# --- Mail ----------------------------------------------------------------------------------------
# As it stands this is for a relay on your own network that takes mail on port 25 without TLS or
# a login (Postfix with the board's subnet in mynetworks, a NAS's mail relay): set SMTP_SERVER to
# its address and that is all. An IP address is best: a DNS lookup on a board can block for long.
SMTP_SERVER = "192.168.1.10"
SMTP_PORT = None  # None: 25 without TLS, 587 with "starttls", 465 with "implicit"
SMTP_TLS = "none"  # "none", "starttls" or "implicit"
SMTP_CA_FILE = None  # with TLS: the server's CA certificate (DER), which a login needs
SMTP_SERVER_NAME = None  # with TLS: the name in the certificate, if SMTP_SERVER is an IP address
SMTP_USERNAME = None  # a login (with SMTP_PASSWORD) needs TLS and SMTP_CA_FILE
SMTP_PASSWORD = None
MAIL_FROM = "sensor@example.com"
MAIL_TO = "you@example.com"  # one address, or a list of them
SMTP_TIMEOUT_S = 20
# True only for a lab server: lets the password go without verified TLS, readable on the way.
SMTP_ALLOW_INSECURE_AUTH = False

# A mail provider needs TLS, its CA certificate and a login. Uncomment these lines (they replace
# the ones above) and fill in the account. Gmail, as here: SMTP_PASSWORD is an app password
# (myaccount.google.com/apppasswords, with 2-Step Verification on), not the account's password;
# port 465 works too, with SMTP_TLS = "implicit". Outlook / Microsoft 365: "smtp.office365.com"
# with "starttls" (port 587), if the account allows SMTP login. Make the CA file on a PC, in this
# checkout, for the server and port you set, and copy it next to main.py:
#     python3 tools/fetch_ca.py smtp.gmail.com:587 --out ca.der
#     mpremote cp ca.der :
# SMTP_SERVER = "smtp.gmail.com"
# SMTP_TLS = "starttls"
# SMTP_CA_FILE = "ca.der"
# SMTP_USERNAME = "greenhouse@gmail.com"
# SMTP_PASSWORD = "app-password"
# MAIL_FROM = "greenhouse@gmail.com"  # the account's own (Gmail rewrites others, Outlook refuses)

# Pico W: a folder for the persistent outbox (smtp_duo_outbox.py on the board too), e.g.
# "/outbox": every alert is stored in flash first and sent when Wi-Fi is up, so alerts survive
# Wi-Fi outages and power cuts. None: one alert waits in RAM, the newest replaces it.
OUTBOX_DIR = None

# --- Sensor and alert ----------------------------------------------------------------------------
SENSOR_NAME = "greenhouse"  # goes into the subject
ALERT_ABOVE = 30.0  # alert when the reading reaches this value...
HYSTERESIS = 2.0  # ...and give the all-clear only below ALERT_ABOVE - HYSTERESIS
READ_INTERVAL_S = 60  # time between readings
MIN_MAIL_INTERVAL_S = 15 * 60  # at most one mail per 15 minutes, however the reading moves
RETRY_INTERVAL_S = 5 * 60  # wait after a temporary failure (server busy, network down)

# --- ESP32 only ----------------------------------------------------------------------------------
# An analog sensor on an ADC1 pin (GPIO 32-39 on the original ESP32; check your chip's pinout).
# ADC2 pins cannot be read while Wi-Fi is on. reading = volts * ADC_SCALE + ADC_OFFSET;
# the values below suit a TMP36 (0.5 V at 0 degrees C, 10 mV per degree).
ADC_PIN = 34
ADC_SCALE = 100.0
ADC_OFFSET = -50.0
# True: switch Wi-Fi off and use machine.lightsleep() between readings (less power; Wi-Fi is
# brought back only to send a mail). False: stay connected and use time.sleep().
ESP32_LIGHT_SLEEP = False

# The Pico W example reads the RP2040's internal temperature sensor and needs no settings here.
