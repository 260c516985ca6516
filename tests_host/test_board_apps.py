"""The board applications (board/esp32/main.py, board/rp2_pico_w/main.py) run unchanged on the
MicroPython unix port against aiosmtpd.

Stand-ins for the board modules (time, machine, network, ntptime) in tests_host/boardshim/ come
first on MICROPYPATH, then a config.py made for the test from board/config_example.py, then the
library as .mpy. `time` is an extensible built-in on the unix port, so boardshim/time.py shadows
it (for the app and for smtp_duo alike): sleeps return at once and move a shared clock on. The
sensor readings, the Wi-Fi connection attempts and the NTP answers are scripted per test; when
the readings run out the stand-in ADC raises ScenarioEnd, which ends the app's endless loop.
The stand-ins log what the board would do as `@@ {json}` lines among the app's own output.
A mistake in config.py makes an app print one line and wait, repeating it: the scenario's
until_s then ends the run when the stand-in clock passes it.
"""

import ast
import email
import email.policy
import email.utils
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DEFAULT_HEAP, ROOT

HERE = Path(__file__).resolve().parent
BOARDSHIM = HERE / "boardshim"
APPS = {board: ROOT / "board" / board / "main.py" for board in ("esp32", "rp2_pico_w")}
NTP_EPOCH = 1748779200  # 2025-06-01 12:00:00 UTC: what the stand-in NTP server says
BOOT_EPOCH = 946684800  # 2000-01-01: a board's RTC before NTP

# Short, odd intervals: the clock includes a little real time, and MIN_MAIL_INTERVAL_S and
# RETRY_INTERVAL_S fall half-way between readings, so no comparison is ever a near thing.
READ_S, MIN_MAIL_S, RETRY_S = 60, 330, 150
ALERT, HYST = 30.0, 2.0


# -- the config ---------------------------------------------------------------------------------


def example_config():
    """board/config_example.py's settings in their order, as {name: value}."""
    tree = ast.parse((ROOT / "board" / "config_example.py").read_text())
    names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    values = {}
    exec(compile(tree, "config_example.py", "exec"), {}, values)
    return {name: values[name] for name in names}


def write_config(folder, port, **overrides):
    cfg = example_config()
    test_values = dict(
        WIFI_SSID="test-net", WIFI_PASSWORD="test-pass", WIFI_TIMEOUT_S=5, WIFI_ATTEMPTS=3,
        NTP_HOST="ntp.test", SMTP_SERVER="127.0.0.1", SMTP_PORT=port, SMTP_TLS="none",
        SMTP_CA_FILE=None, SMTP_SERVER_NAME=None, MAIL_FROM="sensor@example.com",
        MAIL_TO="ops@example.com", SMTP_TIMEOUT_S=10, SMTP_USERNAME=None, SMTP_PASSWORD=None,
        SENSOR_NAME="greenhouse", ALERT_ABOVE=ALERT, HYSTERESIS=HYST, READ_INTERVAL_S=READ_S,
        MIN_MAIL_INTERVAL_S=MIN_MAIL_S, RETRY_INTERVAL_S=RETRY_S, ESP32_LIGHT_SLEEP=False,
    )
    test_values.update(overrides)
    unknown = set(test_values) - set(cfg)
    assert not unknown, "not settings of config_example.py: %s" % sorted(unknown)
    cfg.update(test_values)
    (folder / "config.py").write_text("".join("%s = %r\n" % item for item in cfg.items()))
    return cfg


# -- the sensors: readings in degrees <-> the raw ADC values the apps convert -------------------


def raw_for(board, cfg, degrees):
    if board == "esp32":  # read_uv(): microvolts; reading = volts * ADC_SCALE + ADC_OFFSET
        return round((degrees - cfg["ADC_OFFSET"]) / cfg["ADC_SCALE"] * 1000000)
    volts = 0.706 - (degrees - 27) * 0.001721  # read_u16() of the RP2040's temperature sensor
    return round(volts * 65535 / 3.3)


def value_of(board, cfg, raw):
    """What read_sensor() makes of 16 equal samples: the apps' own arithmetic, step by step."""
    total = raw * 16
    if board == "esp32":
        return total / 16 / 1000000 * cfg["ADC_SCALE"] + cfg["ADC_OFFSET"]
    volts = total / 16 * 3.3 / 65535
    return 27 - (volts - 0.706) / 0.001721


def script(board, cfg, degrees):
    """Raw values for these readings, and the readings as the app will compute them. Each
    must be clear of a rounding edge of "%.1f" (MicroPython formats floats its own way)."""
    raws = [raw_for(board, cfg, d) for d in degrees]
    values = [value_of(board, cfg, r) for r in raws]
    for d, v in zip(degrees, values):
        assert abs(v - d) < 0.03 and abs(v * 10 - round(v * 10)) < 0.4, (d, v)
    return raws, values


def expected_mail(state, value, peak):
    """The apps' message(), formatted here by CPython."""
    subject = "[greenhouse] %s: %.1f" % (state, value)
    body = "greenhouse reads %.1f (alert at %.1f, all-clear below %.1f, peak %.1f).\n" % (
        value, ALERT, ALERT - HYST, peak)
    return subject, body


# -- running an app -----------------------------------------------------------------------------


class Run:
    def __init__(self, proc):
        self.proc = proc
        self.stdout = proc.stdout
        # timeline: ("ev", {...}) from the stand-ins, ("app", line) from the app, in order
        self.timeline = []
        for line in proc.stdout.splitlines():
            if line.startswith("@@ "):
                self.timeline.append(("ev", json.loads(line[3:])))
            else:
                self.timeline.append(("app", line))

    def events(self, name=None):
        return [e for kind, e in self.timeline if kind == "ev" and (name is None or e["ev"] == name)]

    def app_lines(self, prefix):
        return [x for kind, x in self.timeline if kind == "app" and x.startswith(prefix)]

    def rounds(self):
        """The timeline split at each sensor reading: {reading index (-1: start-up): [items]}."""
        out, i = {-1: []}, -1
        for kind, x in self.timeline:
            if kind == "ev" and x["ev"] == "read":
                i = x["i"]
                out[i] = []
            out[i].append((kind, x))
        return out

    def rounds_with(self, pred):
        return sorted(i for i, items in self.rounds().items() if any(pred(kind, x) for kind, x in items))

    def read_time(self, i):
        return next(e["t"] for e in self.events("read") if e["i"] == i)


def ev_is(name):
    return lambda kind, x: kind == "ev" and x["ev"] == name


def app_says(prefix):
    return lambda kind, x: kind == "app" and x.startswith(prefix)


def run_app(micropython, mpy_dir, tmp_path, board, raws, wifi=(), ntp=(), ntp_default=True):
    scenario = {"board": board, "readings": raws, "wifi": list(wifi), "ntp": list(ntp),
                "ntp_default": ntp_default, "boot_epoch": BOOT_EPOCH, "ntp_epoch": NTP_EPOCH}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    path = [str(BOARDSHIM), str(tmp_path), str(mpy_dir), ".frozen"]  # the stand-ins first
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path),
               BOARDSIM_SCENARIO=str(tmp_path / "scenario.json"))
    proc = subprocess.run([str(micropython), "-X", "heapsize=" + DEFAULT_HEAP, str(APPS[board])],
                          capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    run = Run(proc)
    info = "rc %d\n--- stdout\n%s\n--- stderr\n%s" % (proc.returncode, proc.stdout, proc.stderr)
    # The app ran until the scripted readings were done, and nothing went wrong on the way
    # (its loop prints any exception and carries on: there must be none).
    assert proc.returncode == 1 and "ScenarioEnd: %d scripted readings done" % len(raws) in proc.stderr, info
    assert [e["i"] for e in run.events("read")] == list(range(len(raws))), info
    assert "Traceback" not in proc.stdout, info
    assert run.app_lines("alert mailer, smtp_duo"), info
    return run


def mails(ctl):
    msgs = [email.message_from_bytes(e.content, policy=email.policy.default) for e in ctl.handler.messages]
    for env in ctl.handler.messages:
        assert env.mail_from == "sensor@example.com" and env.rcpt_tos == ["ops@example.com"]
    return msgs


def subject_body(msg):
    return str(msg["subject"]), msg.get_content().replace("\r\n", "\n")


def fail_first_data(ctl, reply="451 4.3.0 try later"):
    """Make the server answer the first DATA with a temporary error. Returns the list of
    attempted messages (one per DATA, failed or not)."""
    handler = ctl.handler
    accept = handler.handle_DATA
    attempts = []

    async def handle_DATA(server, session, envelope):
        attempts.append(envelope.content)
        if len(attempts) == 1:
            return reply
        return await accept(server, session, envelope)

    handler.handle_DATA = handle_DATA  # read by each new connection's SMTP session
    return attempts


def check_startup(run, cfg, board):
    if board == "esp32":
        assert run.events("adc")[0]["source"] == cfg["ADC_PIN"]
        assert run.events("adc")[0]["atten"] == 3  # ADC.ATTN_11DB
    else:
        assert run.events("adc")[0]["source"] == 4  # the internal temperature sensor
        if cfg["WIFI_COUNTRY"]:  # set before the radio powers up
            countries = [(e["code"], e["radio_on"]) for e in run.events("country")]
            assert countries == [(cfg["WIFI_COUNTRY"], False)]
            names = [e["ev"] for e in run.events()]
            assert names.index("country") < names.index("active")
        assert [e.get("pm") for e in run.events("config")] == [0xA11140]  # power saving off
    for e in run.events("connect"):
        assert (e["ssid"], e["key"]) == (cfg["WIFI_SSID"], cfg["WIFI_PASSWORD"])
    for e in run.events("ntp"):
        assert e["host"] == cfg["NTP_HOST"]


def date_of(msg):
    return email.utils.parsedate_to_datetime(str(msg["date"])).timestamp()


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
def test_alert_rate_limit_and_hysteresis(board, micropython, mpy_dir, smtpd, tmp_path):
    ctl = smtpd()
    cfg = write_config(tmp_path, ctl.port, WIFI_COUNTRY="DE" if board == "rp2_pico_w" else None)
    degrees = [25.0,  # 0
               31.2,  # 1 crosses ALERT_ABOVE: alert mail
               29.0,  # 2 within the hysteresis band: still in alarm
               32.4,  # 3 above again: no second alert, peak 32.4
               28.6,  # 4 within the band
               27.3,  # 5 below ALERT_ABOVE - HYSTERESIS: all-clear, but held back by the rate limit
               27.0,  # 6 still held back: 300 s after the alert < MIN_MAIL_INTERVAL_S
               26.5,  # 7 360 s: the all-clear of reading 5 goes out (with the peak of the alarm)
               29.9,  # 8 below ALERT_ABOVE: no alert (hysteresis needs the full threshold)
               30.4,  # 9 alert again, held back by the rate limit
               31.0, 30.8, 30.9,  # 10-12 held back
               30.6]  # 13 the alert of reading 9 goes out
    raws, v = script(board, cfg, degrees)
    # Wi-Fi: the first attempt never connects (it times out), the second connects after 2 polls.
    run = run_app(micropython, mpy_dir, tmp_path, board, raws, wifi=["never", 2])
    check_startup(run, cfg, board)

    # (1) Wi-Fi: two attempts at start-up, the failed one given up after WIFI_TIMEOUT_S, then
    # the connection is kept: no more attempts.
    connects = run.events("connect")
    assert [e["outcome"] for e in connects] == ["never", 2]
    first_end = next(e for e in run.events("disconnect") if e["t"] > connects[0]["t"])
    assert cfg["WIFI_TIMEOUT_S"] - 0.5 <= first_end["t"] - connects[0]["t"] <= cfg["WIFI_TIMEOUT_S"] + 1
    assert first_end["t"] < connects[1]["t"]
    assert run.app_lines("wifi: connecting to 'test-net' (attempt ")[:2] == [
        "wifi: connecting to 'test-net' (attempt 1)", "wifi: connecting to 'test-net' (attempt 2)"]
    assert run.app_lines("wifi: connected, address 192.168.4.23")
    assert run.rounds_with(ev_is("connect")) == [-1]

    # (2) the clock: set once, after Wi-Fi is up, before the first reading.
    assert [e["ok"] for e in run.events("ntp")] == [True]
    assert run.events("connected")[0]["t"] <= run.events("ntp")[0]["t"]
    assert run.rounds_with(ev_is("ntp")) == [-1]
    assert run.app_lines("clock: set, UTC 2025-06-01 12:00:")

    # (3) exactly these mails, at these readings.
    assert run.rounds_with(app_says("mail: sent:")) == [1, 7, 13]
    got = mails(ctl)
    assert [subject_body(m) for m in got] == [
        expected_mail("ALERT", v[1], v[1]),
        expected_mail("back to normal", v[5], max(v[1:6])),
        expected_mail("ALERT", v[9], v[9]),
    ]
    for m in got:
        assert m["x-priority"].startswith("1")  # PRIORITY_HIGH
    # The rate limit: mails at least MIN_MAIL_INTERVAL_S apart, and each went out at the
    # first reading the limit allowed.
    times = [run.read_time(i) for i in (1, 7, 13)]
    assert times[1] - times[0] >= MIN_MAIL_S > run.read_time(6) - times[0]
    assert times[2] - times[1] >= MIN_MAIL_S > run.read_time(12) - times[1]
    # Each Date header is the NTP time plus the time since (within a second or two).
    ntp_t = run.events("ntp")[0]["t"]
    for m, t in zip(got, times):
        assert abs(date_of(m) - (NTP_EPOCH + t - ntp_t)) <= 2

    # The loop paces itself with time.sleep(READ_INTERVAL_S), once per reading.
    assert [e["s"] for e in run.events("sleep") if e["s"] == READ_S] == [READ_S] * len(raws)
    assert not run.events("lightsleep")


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
def test_ntp_down_and_server_busy(board, micropython, mpy_dir, smtpd, tmp_path):
    ctl = smtpd()
    attempts = fail_first_data(ctl)
    cfg = write_config(tmp_path, ctl.port)
    degrees = [25.0,  # 0
               31.0,  # 1 alert: the server answers 451, the mail is kept
               30.5,  # 2 60 s later: too early to retry
               30.2,  # 3 120 s: still too early
               30.8,  # 4 180 s >= RETRY_INTERVAL_S: retried and delivered
               29.0]  # 5 nothing more
    raws, v = script(board, cfg, degrees)
    run = run_app(micropython, mpy_dir, tmp_path, board, raws, ntp_default=False)
    check_startup(run, cfg, board)
    assert [e["outcome"] for e in run.events("connect")] == [1]

    # (2) NTP never answers: three tries at start-up, three more before each mail (the app
    # keeps trying to set the clock), and the app carries on regardless.
    assert [e["ok"] for e in run.events("ntp")] == [False] * 9
    assert len(run.app_lines("clock: NTP failed: OSError(110")) == 9
    assert run.rounds_with(ev_is("ntp")) == [-1, 1, 4]

    # (4) the 451 is a temporary failure: the mail is retried after RETRY_INTERVAL_S, not before.
    assert run.rounds_with(app_says("mail: temporary failure, will retry:")) == [1]
    assert "451" in run.app_lines("mail: temporary failure")[0]
    assert run.rounds_with(app_says("mail: sent:")) == [4]
    assert run.read_time(3) - run.read_time(1) < RETRY_S <= run.read_time(4) - run.read_time(1)
    assert len(attempts) == 2

    # (3) one mail, the alert of reading 1, without a Date header (the clock was never set).
    got = mails(ctl)
    assert [subject_body(m) for m in got] == [expected_mail("ALERT", v[1], v[1])]
    assert got[0]["date"] is None
    assert b"\r\nDate:" not in attempts[0] and not attempts[0].startswith(b"Date:")


def test_esp32_light_sleep(micropython, mpy_dir, smtpd, tmp_path):
    ctl = smtpd()
    cfg = write_config(tmp_path, ctl.port, ESP32_LIGHT_SLEEP=True)
    degrees = [25.0,  # 0
               31.0,  # 1 alert: Wi-Fi comes back for it, but all three attempts fail
               31.5,  # 2 waiting RETRY_INTERVAL_S: Wi-Fi stays off
               30.1,  # 3 still waiting
               29.0,  # 4 retry: Wi-Fi connects, NTP works now, the alert goes out
               26.0,  # 5 all-clear, held back by the rate limit
               25.5, 25.0, 25.2, 25.1,  # 6-9 held back: Wi-Fi stays off
               25.3,  # 10 the all-clear goes out
               25.0]  # 11 nothing
    raws, v = script("esp32", cfg, degrees)
    # Wi-Fi: up at start-up; the three attempts of reading 1 never connect; then fine.
    # NTP: fails at start-up (three tries), works before the mail of reading 4.
    run = run_app(micropython, mpy_dir, tmp_path, "esp32", raws, wifi=[1, "never", "never", "never"],
                  ntp=[False, False, False])
    check_startup(run, cfg, "esp32")

    # (5) machine.lightsleep(READ_INTERVAL_S * 1000) between readings, with Wi-Fi switched off
    # first; time.sleep only for the short waits between Wi-Fi and NTP attempts.
    sleeps = run.events("lightsleep")
    assert [e["ms"] for e in sleeps] == [READ_S * 1000] * len(raws)
    assert not any(e["wifi_active"] for e in sleeps)
    assert all(e["s"] < READ_S for e in run.events("sleep"))
    assert run.rounds_with(ev_is("lightsleep")) == list(range(len(raws)))
    # Wi-Fi is powered up and connected only when a mail is due: at start-up, for the failed
    # round of reading 1 (three attempts), the retry at 4 and the all-clear at 10.
    assert run.rounds_with(ev_is("connect")) == [-1, 1, 4, 10]
    assert [e["outcome"] for e in run.events("connect")] == [1, "never", "never", "never", 1, 1]
    assert run.rounds_with(lambda kind, x: kind == "ev" and x["ev"] == "active" and x["on"]) == [-1, 1, 4, 10]

    # (2) the clock: NTP failed at start-up, so it is tried again before the next mail that
    # gets Wi-Fi (reading 4; reading 1 had none), and then left alone.
    assert [e["ok"] for e in run.events("ntp")] == [False, False, False, True]
    assert run.rounds_with(ev_is("ntp")) == [-1, 4]

    # (3) and (4): the mails, the retry after RETRY_INTERVAL_S without Wi-Fi, the rate limit.
    assert run.rounds_with(app_says("mail: sent:")) == [4, 10]
    assert run.read_time(3) - run.read_time(1) < RETRY_S <= run.read_time(4) - run.read_time(1)
    assert run.read_time(9) - run.read_time(4) < MIN_MAIL_S <= run.read_time(10) - run.read_time(4)
    got = mails(ctl)
    assert [subject_body(m) for m in got] == [
        expected_mail("ALERT", v[1], v[1]),
        expected_mail("back to normal", v[5], max(v[1:6])),
    ]
    ntp_t = run.events("ntp")[-1]["t"]
    assert abs(date_of(got[0]) - (NTP_EPOCH + run.read_time(4) - ntp_t)) <= 2
    assert abs(date_of(got[1]) - (NTP_EPOCH + run.read_time(10) - ntp_t)) <= 2


def test_pico_w_outbox_keeps_alerts_through_a_wifi_outage_and_a_power_cut(micropython, mpy_dir, smtpd,
                                                                         tmp_path):
    # Boot 1: Wi-Fi never comes up. The alert is stored in the outbox in flash; then the power
    # goes (the run ends). Boot 2: Wi-Fi works, nothing new happens; the stored alert goes out,
    # with the Message-ID and Date it got when it was stored.
    ctl = smtpd()
    box = tmp_path / "outbox"
    cfg = write_config(tmp_path, ctl.port, OUTBOX_DIR=str(box))
    raws, values = script("rp2_pico_w", cfg, [25.0, 31.0, 31.2])
    run_app(micropython, mpy_dir, tmp_path, "rp2_pico_w", raws, wifi=["never"] * 40)
    stored = [n for n in os.listdir(box) if n.endswith(".mail")]
    assert len(stored) == 1 and mails(ctl) == []
    with open(box / stored[0], "rb") as f:
        head = json.loads(f.readline())
    assert head["subject"] == expected_mail("ALERT", values[1], values[1])[0]

    raws2, _ = script("rp2_pico_w", cfg, [25.0, 25.1])
    run = run_app(micropython, mpy_dir, tmp_path, "rp2_pico_w", raws2)
    got = mails(ctl)
    assert [subject_body(m) for m in got] == [expected_mail("ALERT", values[1], values[1])]
    assert got[0]["Message-ID"] == head["message_id"]
    assert os.listdir(box) == ["failed"]  # delivered, so removed; nothing refused
    assert run.app_lines("outbox: sent 1, 0 waiting, 0 refused")


# -- configuring the apps: a relay in one edit, a provider in one block, one line per mistake ----

EXAMPLE = (ROOT / "board" / "config_example.py").read_text()
CONFIG_WAIT_S = 30  # the apps repeat a config.py problem this often, and wait
UNTIL_S = 100  # how long the stand-in clock runs for a config.py problem: 4 repeats


def edit_example(text, **settings):
    """config_example.py's text with the last NAME = ... line (not a comment: the one that
    counts) of each NAME set to a new value; a NAME without such a line is appended."""
    lines = text.splitlines()
    for name, value in settings.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(name + " = ")]
        if hits:
            lines[hits[-1]] = "%s = %r" % (name, value)
        else:
            lines.append("%s = %r" % (name, value))
    return "\n".join(lines) + "\n"


def uncomment_provider_block(text):
    """config_example.py with its commented provider block (# SMTP_SERVER = ... to # MAIL_FROM = ...)
    uncommented, as a user would."""
    lines = text.splitlines()
    start = lines.index('# SMTP_SERVER = "smtp.gmail.com"')
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("# MAIL_FROM = "))
    for i in range(start, end + 1):
        assert lines[i].startswith("# "), lines[i]
        lines[i] = lines[i][2:]
    return "\n".join(lines) + "\n"


def test_example_config_is_the_relay_case():
    # The defaults: port 25, no TLS, no CA file, no login. The provider block is all comments.
    cfg = example_config()
    assert (cfg["SMTP_PORT"], cfg["SMTP_TLS"], cfg["SMTP_CA_FILE"], cfg["SMTP_USERNAME"],
            cfg["SMTP_PASSWORD"], cfg["SMTP_ALLOW_INSECURE_AUTH"]) == (None, "none", None, None, None, False)
    values = {}
    exec(uncomment_provider_block(EXAMPLE), {}, values)
    assert {k: values[k] for k in ("SMTP_SERVER", "SMTP_PORT", "SMTP_TLS", "SMTP_CA_FILE")} == {
        "SMTP_SERVER": "smtp.gmail.com", "SMTP_PORT": None, "SMTP_TLS": "starttls", "SMTP_CA_FILE": "ca.der"}
    assert values["SMTP_USERNAME"] == values["MAIL_FROM"] == "greenhouse@gmail.com"
    assert isinstance(values["SMTP_PASSWORD"], str)
    for text in ("smtp.office365.com", "app password", "mpremote cp ca.der :",
                 "python3 tools/fetch_ca.py smtp.gmail.com:587 --out ca.der"):
        assert text in EXAMPLE, text


def run_boot(micropython, mpy_dir, tmp_path, board, config_text, raws=(), until_s=None, **kw):
    """Run an app with this config.py text (None: no config.py). With until_s the stand-in clock
    ends the run after that long; else the scripted readings do."""
    if config_text is not None:
        (tmp_path / "config.py").write_text(config_text)
    scenario = {"board": board, "readings": list(raws), "wifi": [], "ntp": [], "ntp_default": True,
                "boot_epoch": BOOT_EPOCH, "ntp_epoch": NTP_EPOCH, **kw}
    if until_s is not None:
        scenario["until_s"] = until_s
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    path = [str(BOARDSHIM), str(tmp_path), str(mpy_dir), ".frozen"]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path),
               BOARDSIM_SCENARIO=str(tmp_path / "scenario.json"))
    proc = subprocess.run([str(micropython), "-X", "heapsize=" + DEFAULT_HEAP, str(APPS[board])],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    return Run(proc)


def info_of(run):
    p = run.proc
    return "rc %d\n--- stdout\n%s\n--- stderr\n%s" % (p.returncode, p.stdout, p.stderr)


def check_config_problem(run, message):
    """The app said `config: <message>`, that line only, once every CONFIG_WAIT_S while it waits,
    with no traceback, and touched neither the sensor nor Wi-Fi. (The one traceback on stderr
    is the stand-in clock's ScenarioEnd, which ends the test's run of the waiting app.)"""
    info = info_of(run)
    p = run.proc
    assert p.returncode == 1, info
    assert p.stderr.count("Traceback") == 1, info
    assert p.stderr.rstrip().splitlines()[-1] == "ScenarioEnd: the clock ran %d s" % UNTIL_S, info
    assert "Traceback" not in p.stdout and "Error" not in p.stdout.replace(message, ""), info
    said = [x for kind, x in run.timeline if kind == "app"]
    assert said[0].startswith("alert mailer, smtp_duo "), info
    assert said[1:] == ["config: " + message] * (UNTIL_S // CONFIG_WAIT_S + 1), info
    assert [e["s"] for e in run.events("sleep")] == [CONFIG_WAIT_S] * len(said[1:]), info
    assert not run.events("adc") and not run.events("active") and not run.events("connect"), info


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
@pytest.mark.parametrize("how", ["one_edit", "settings_left_out", "ca_file_without_tls"])
def test_relay_with_one_edit(board, how, micropython, mpy_dir, smtpd, tmp_path):
    # config_example.py as it is, with SMTP_SERVER set (and SMTP_PORT, only because the test
    # server cannot have port 25): the alert goes out, without TLS or a login. A shorter
    # config.py that leaves out the optional settings works the same, and so does one that
    # names a CA file without TLS (the file is not opened: there is none).
    ctl = smtpd(auth_required=False)
    text = edit_example(EXAMPLE, SMTP_SERVER="127.0.0.1", SMTP_PORT=ctl.port)
    changed = [(a, b) for a, b in zip(EXAMPLE.splitlines(), text.splitlines()) if a != b]
    assert [b for a, b in changed] == ["SMTP_SERVER = '127.0.0.1'", "SMTP_PORT = %d" % ctl.port]
    if how == "settings_left_out":
        optional = ("SMTP_TLS", "SMTP_CA_FILE", "SMTP_SERVER_NAME", "SMTP_USERNAME", "SMTP_PASSWORD",
                    "SMTP_ALLOW_INSECURE_AUTH", "WIFI_COUNTRY", "OUTBOX_DIR", "ESP32_LIGHT_SLEEP")
        text = "".join(line + "\n" for line in text.splitlines() if not line.startswith(optional))
    if how == "ca_file_without_tls":  # no TLS: the CA file is not used, so not opened (there is none)
        text = edit_example(text, SMTP_CA_FILE="ca.der")
    cfg = example_config()
    raws, v = script(board, cfg, [25.0, 31.0])
    run = run_boot(micropython, mpy_dir, tmp_path, board, text, raws)
    info = info_of(run)
    assert run.proc.returncode == 1 and "ScenarioEnd: 2 scripted readings done" in run.proc.stderr, info
    assert "Traceback" not in run.proc.stdout and not run.app_lines("config:"), info
    assert run.rounds_with(app_says("mail: sent:")) == [1], info
    [env] = ctl.handler.messages
    assert (env.mail_from, env.rcpt_tos) == ("sensor@example.com", ["you@example.com"])
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert subject_body(msg) == expected_mail("ALERT", v[1], v[1])


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
def test_provider_block_with_its_ca_file(board, micropython, mpy_dir, smtpd, pki, tmp_path):
    # The provider block uncommented (here pointed at a local server with STARTTLS and a
    # certificate from the test CA, which needs a login over TLS): the app reads ca.der,
    # verifies the server, logs in and sends.
    ctl = smtpd(tls_context=pki.server_context(), require_starttls=True, auth_required=True,
                auth_require_tls=True)
    (tmp_path / "ca.der").write_bytes(pki.ca_der.read_bytes())
    text = edit_example(uncomment_provider_block(EXAMPLE), SMTP_SERVER="127.0.0.1",
                        SMTP_PORT=ctl.port, SMTP_SERVER_NAME="localhost", SMTP_USERNAME="alice",
                        SMTP_PASSWORD="correct horse")
    raws, v = script(board, example_config(), [25.0, 31.0])
    run = run_boot(micropython, mpy_dir, tmp_path, board, text, raws)
    info = info_of(run)
    assert "ScenarioEnd: 2 scripted readings done" in run.proc.stderr, info
    assert "Traceback" not in run.proc.stdout and not run.app_lines("config:"), info
    assert run.rounds_with(app_says("mail: sent:")) == [1], info
    [env] = ctl.handler.messages
    assert (env.mail_from, env.rcpt_tos) == ("greenhouse@gmail.com", ["you@example.com"])


CA_HINT = ("cannot read the CA file 'ca.der' (SMTP_CA_FILE): make it on a PC with `python3 tools/fetch_ca.py "
           "%s --out ca.der`, then `mpremote cp ca.der :ca.der`")
LOGIN_HINT = ('a login needs TLS and a CA file: set SMTP_TLS = "starttls" (or "implicit") and SMTP_CA_FILE, '
              "or SMTP_USERNAME = SMTP_PASSWORD = None for a relay")

CONFIG_PROBLEMS = {
    # name: (config.py's text, or None for none, the one line the app says after "config: "
    # [, a file put next to config.py])
    "no config.py": (None,
                     "no config.py on the board: copy board/config_example.py to the board as config.py"),
    "syntax error": (EXAMPLE + "SMTP_PORT = \n", "config.py has an error: SyntaxError('invalid syntax',); "
                     '`mpremote exec "import config"` shows where'),
    "provider block, no ca.der": (uncomment_provider_block(EXAMPLE), CA_HINT % "smtp.gmail.com:587"),
    "no ca.der, implicit TLS by IP": (
        edit_example(uncomment_provider_block(EXAMPLE), SMTP_SERVER="192.0.2.7", SMTP_TLS="implicit",
                     SMTP_SERVER_NAME="mail.example.com"),
        CA_HINT % "192.0.2.7:465 --server-name mail.example.com"),
    "login without TLS": (edit_example(EXAMPLE, SMTP_USERNAME="alice", SMTP_PASSWORD="correct horse"),
                          LOGIN_HINT),
    "login with TLS, no CA file": (
        edit_example(EXAMPLE, SMTP_TLS="starttls", SMTP_USERNAME="alice", SMTP_PASSWORD="correct horse"),
        LOGIN_HINT),
    "SMTP_SERVER missing": ("".join(line + "\n" for line in EXAMPLE.splitlines()
                                    if not line.startswith("SMTP_SERVER = ")),
                            "SMTP_SERVER is missing from config.py"),
    "SMTP_PORT a string": (edit_example(EXAMPLE, SMTP_PORT="587"),
                           "SMTP_PORT in config.py must be None or a whole number, not str"),
    "password without quotes": (edit_example(EXAMPLE, WIFI_PASSWORD=12345678),
                                "WIFI_PASSWORD in config.py must be a string, not int"),
    "MAIL_TO a number": (edit_example(EXAMPLE, MAIL_TO=5),
                         "MAIL_TO in config.py must be a string or a list, not int"),
    "MAIL_TO not an address": (
        edit_example(EXAMPLE, MAIL_TO=["ops@example.com", "ops"]),
        "the mail settings in config.py: MAIL_TO is not an address like name@example.com: 'ops'"),
    "TLS to an IP address, no SMTP_SERVER_NAME": (
        edit_example(EXAMPLE, SMTP_TLS="starttls", SMTP_CA_FILE="ca.der"),
        "the mail settings in config.py: verifying an IP address needs SMTP_SERVER_NAME", "ca.der"),
    "SMTP_TLS misspelt": (edit_example(EXAMPLE, SMTP_TLS="tls"),
                          "SMTP_TLS in config.py must be \"none\", \"starttls\" or \"implicit\", not 'tls'"),
    "MAIL_FROM not an address": (
        edit_example(EXAMPLE, MAIL_FROM="sensor"),
        "the mail settings in config.py: MAIL_FROM is not an address like name@example.com: 'sensor'"),
}


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
@pytest.mark.parametrize("problem", list(CONFIG_PROBLEMS))
def test_config_problem_is_one_line_at_boot(board, problem, micropython, mpy_dir, tmp_path):
    text, message, *files = CONFIG_PROBLEMS[problem]
    for name in files:
        (tmp_path / name).write_bytes(b"not a certificate")
    run = run_boot(micropython, mpy_dir, tmp_path, board, text, raws=[1000], until_s=UNTIL_S)
    check_config_problem(run, message)
    assert "12345678" not in run.proc.stdout and "correct horse" not in run.proc.stdout


@pytest.mark.parametrize("board", ["esp32", "rp2_pico_w"])
def test_esp32_only_and_pico_only_settings(board, micropython, mpy_dir, tmp_path):
    # Each app checks the settings it uses: the ESP32's ADC pin, the Pico W's outbox folder.
    if board == "esp32":
        text = edit_example(EXAMPLE, ADC_PIN="34")
        message = "ADC_PIN in config.py must be a whole number, not str"
    else:
        text = edit_example(EXAMPLE, OUTBOX_DIR=1)
        message = "OUTBOX_DIR in config.py must be None or a string, not int"
    run = run_boot(micropython, mpy_dir, tmp_path, board, text, raws=[1000], until_s=UNTIL_S)
    check_config_problem(run, message)


# -- the camera alert (board/esp32_cam/main.py, issue 16): a snapshot inline in the HTML ---------

CAM_APP = ROOT / "board" / "esp32_cam" / "main.py"
CAM_PLACEHOLDER = "def capture():"
FRAME = b"\xff\xd8" + bytes(range(256)) * 192 + b"\xff\xd9"  # what the edited capture() returns
# ESP32 camera boards carry PSRAM (MicroPython's heap is megabytes there): the app holds a frame.
CAM_HEAP = "512k"


def run_cam(micropython, mpy_dir, tmp_path, raws, capture=None, wifi=()):
    """The camera app under the ESP32 stand-ins; capture: the body of a capture() the user
    wrote (as a driver would be plugged in), None for the placeholder as shipped."""
    app = CAM_APP.read_text()
    assert app.count(CAM_PLACEHOLDER) == 1
    if capture is not None:  # the user's own capture() defined after the placeholder replaces it
        app = app.replace("\ndef stop(problem):",
                          "\ndef capture():\n    %s\n\n\ndef stop(problem):" % capture, 1)
    (tmp_path / "cam_main.py").write_text(app)
    scenario = {"board": "esp32", "readings": raws, "wifi": list(wifi), "ntp": [], "ntp_default": True,
                "boot_epoch": BOOT_EPOCH, "ntp_epoch": NTP_EPOCH}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    path = [str(BOARDSHIM), str(tmp_path), str(mpy_dir), ".frozen"]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path),
               BOARDSIM_SCENARIO=str(tmp_path / "scenario.json"))
    proc = subprocess.run([str(micropython), "-X", "heapsize=" + CAM_HEAP, "cam_main.py"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    run = Run(proc)
    info = info_of(run)
    assert proc.returncode == 1 and "ScenarioEnd: %d scripted readings done" % len(raws) in proc.stderr, info
    assert "Traceback" not in proc.stdout and run.app_lines("camera alert mailer, smtp_duo"), info
    return run


def inline_image(msg):
    """The picture the HTML shows: the structure alternative(text, related(html, image)), the
    one cid: in the HTML naming exactly one part."""
    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.iter_parts()
    assert plain.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    [cid] = re.findall(r'src="cid:([^"]+)"', html.get_content())
    hits = [p for p in msg.walk() if str(p.get("Content-ID", "")).strip() == "<%s>" % cid]
    assert hits == [image] and image.get_content_type() == "image/jpeg"
    assert image.get_content_disposition() == "inline"
    return image.get_payload(decode=True)


def test_camera_alert_mails_the_frame_inline(micropython, mpy_dir, smtpd, tmp_path):
    ctl = smtpd()
    cfg = write_config(tmp_path, ctl.port)
    # 1 alert: mailed; 2 still above: nothing; 3 re-armed; 4 alert again within
    # MIN_MAIL_INTERVAL_S: no second mail.
    raws, v = script("esp32", cfg, [25.0, 31.0, 31.5, 27.0, 31.2])
    run = run_cam(micropython, mpy_dir, tmp_path, raws,
                  capture="return b'\\xff\\xd8' + bytes(range(256)) * 192 + b'\\xff\\xd9'")
    assert run.rounds_with(app_says("mail: sent:")) == [1], info_of(run)
    assert run.app_lines("camera: %d bytes" % len(FRAME)), info_of(run)
    [msg] = mails(ctl)
    assert str(msg["subject"]) == "[greenhouse] motion: %.1f" % v[1]
    assert msg["x-priority"].startswith("1")
    assert inline_image(msg) == FRAME
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == \
        "greenhouse reads %.1f (alert at %.1f).\n" % (v[1], ALERT)


@pytest.mark.parametrize("capture", [None, "raise OSError('camera not found')"],
                         ids=["placeholder", "raises"])
def test_camera_alert_falls_back_to_the_snapshot_in_flash(capture, micropython, mpy_dir, smtpd, tmp_path):
    ctl = smtpd()
    cfg = write_config(tmp_path, ctl.port)
    stored = b"\xff\xd8" + os.urandom(40 * 1024) + b"\xff\xd9"
    (tmp_path / "snapshot.jpg").write_bytes(stored)
    raws, _ = script("esp32", cfg, [25.0, 31.0])
    run = run_cam(micropython, mpy_dir, tmp_path, raws, capture=capture)
    said = "camera: capture failed (OSError('camera not found',)" if capture else "camera: no frame"
    assert run.app_lines(said), info_of(run)
    [msg] = mails(ctl)
    assert inline_image(msg) == stored


def test_camera_alert_goes_through_the_outbox_when_wifi_is_down(micropython, mpy_dir, smtpd, tmp_path):
    # Wi-Fi fails at start-up and for the alert (three attempts each): the alert is stored in
    # the outbox as text; at the next reading Wi-Fi is back and the outbox sends it.
    ctl = smtpd()
    box = tmp_path / "outbox"
    cfg = write_config(tmp_path, ctl.port, OUTBOX_DIR=str(box))
    (tmp_path / "snapshot.jpg").write_bytes(FRAME)
    raws, v = script("esp32", cfg, [25.0, 31.0, 25.0])
    run = run_cam(micropython, mpy_dir, tmp_path, raws, wifi=["never"] * 6)
    assert run.rounds_with(app_says("outbox: stored, 1 waiting")) == [1], info_of(run)
    assert run.rounds_with(app_says("outbox: sent 1, 0 waiting")) == [2], info_of(run)
    assert [e["outcome"] for e in run.events("connect")] == ["never"] * 6 + [1]
    [msg] = mails(ctl)
    assert subject_body(msg) == ("[greenhouse] motion: %.1f" % v[1],
                                 "greenhouse reads %.1f (alert at %.1f).\n(The snapshot could not be "
                                 "sent: no Wi-Fi.)\n" % (v[1], ALERT))
    assert not msg.is_multipart()
    assert os.listdir(box) == ["failed"]
