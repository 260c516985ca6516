"""Multipart mail end to end: attachments streamed from files, an HTML alternative, extra
headers and text in six scripts, delivered by Postfix (or kept by aiosmtpd) and read back with
CPython's email package. Every test runs the client on CPython and on the MicroPython unix
port, blocking and asyncio (the runner fixture)."""

import base64
import binascii
import email
import email.policy
import random
import re
import subprocess
import sys

from conftest import client_config, delivered
from hostkit.postfix import strip_received

import smtp_duo


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def ok(result):
    assert "ok" in result, result
    return result["ok"]


def attachments_of(msg):
    return [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
            for p in msg.iter_attachments()]


POLISH = "Zażółć gęślą jaźń: szklarnia przegrzana"
TURKISH = "Çalışma sıcaklığı yüksek: ığüşöç İĞÜŞÖÇ"
RUSSIAN = "Температура в теплице превысила порог"
SWEDISH = "Växthuset i Göteborg: fönstret är öppet, åtgärd krävs"
CHINESE = "温室温度过高，请立即检查通风系统"
EMOJI = "🌡️🔥🚨 alert 👩‍🌾"
ALL = [POLISH, TURKISH, RUSSIAN, SWEDISH, CHINESE, EMOJI]


def test_a_binary_file_and_a_csv_arrive_byte_for_byte(runner, postfix, tmp_path):
    rnd = random.Random(300)
    blob = bytes(rnd.getrandbits(8) for _ in range(300 * 1024))  # every octet value, no pattern
    jpg = tmp_path / "snapshot.jpg"
    jpg.write_bytes(blob)
    csv = b"".join(b"2026-11-21T12:%02d:00Z,greenhouse-%d,%.1f\n" % (i % 60, i % 4, 20 + i / 10)
                   for i in range(64))[:2048]
    text = "Snapshot and log attached.\n"
    r = ok(runner.send(client_config(postfix.relay_port), recipient_address="bob@example.org",
                       subject="camera", mail_body={"str": text},
                       attachments=[["snapshot.jpg", {"file": str(jpg)}, "image/jpeg"],
                                    ["log.csv", {"hex": csv.hex()}, "text/csv"]]))
    msg = parse(strip_received(delivered(postfix, r["text"])["data"]))
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "text/plain", "image/jpeg", "text/csv"]
    assert msg.get_body(("plain",)).get_content() == text
    assert attachments_of(msg) == [("snapshot.jpg", "image/jpeg", blob), ("log.csv", "text/csv", csv)]
    raw = strip_received(delivered(postfix, r["text"])["data"])
    b64 = [ln for ln in raw.split(b"\n") if re.fullmatch(rb"[A-Za-z0-9+/=]+", ln)]
    assert len(b64) > 4000 and max(len(ln) for ln in b64) == 76  # RFC 2045: 76-character lines


def test_text_and_html_alternative_from_streams(runner, smtpd, tmp_path):
    # Both bodies one-shot streams: sent quoted-printable with DATA (no size known beforehand).
    html_path = tmp_path / "alert.html"
    html = "<html><body><h1>Alarm</h1><p>%s</p></body></html>\n" % SWEDISH
    html_path.write_bytes(html.encode())
    text = "Alarm\n" + SWEDISH + "\n"
    ctl = smtpd()
    ok(runner.send(client_config(ctl.port), recipient_address="bob@example.org", subject="alarm",
                   mail_body={"generator": [{"str": text[:10]}, {"str": text[10:]}]},
                   html={"file": str(html_path)}))
    msg = parse(ctl.handler.messages[0].content)
    assert msg.get_content_type() == "multipart/alternative"
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n") == html


def _encoded_words(raw_head):
    return re.findall(rb"=\?[^?]+\?[BbQq]\?[^?]*\?=", raw_head)


def test_six_scripts_round_trip_through_postfix(runner, postfix, tmp_path):
    subject = " / ".join(ALL)
    long_line = (" ".join(ALL) + " ") * 12 + "\n"  # > 998 octets: this part goes quoted-printable
    body = "\n".join(ALL) + "\n" + long_line
    html = "<p>" + "</p><p>".join(ALL) + "</p>\n"
    names = ["pomiary-żółć.csv", "sıcaklık-günlüğü.txt", "данные-теплицы.json", "växthus.log",
             "温室数据.bin", "🌡️-readings.dat"]
    files = []
    for i, n in enumerate(names):
        p = tmp_path / ("a%d" % i)
        p.write_bytes(("%s\n" % ALL[i]).encode() * (i + 1))
        files.append([n, {"file": str(p)}, "application/octet-stream"])
    cfg = client_config(postfix.relay_port, from_address="Łukasz Żółw <sensor@example.com>")
    r = ok(runner.send(cfg, recipient_address=["Gülşen Ünal <bob@example.org>"],
                       cc=["Ярослав Петров <c@three.example>"], subject=subject,
                       mail_body={"str": body}, html={"str": html}, attachments=files,
                       headers={"Reply-To": "Åsa Öberg <asa@example.se>", "X-Site": "温室 " + EMOJI}))
    raw = strip_received(delivered(postfix, r["text"])["data"])
    head = raw.split(b"\n\n", 1)[0]
    msg = parse(raw)
    assert msg["subject"] == subject
    assert msg["from"].addresses[0].display_name == "Łukasz Żółw"
    assert msg["to"].addresses[0].display_name == "Gülşen Ünal"
    assert msg["cc"].addresses[0].display_name == "Ярослав Петров"
    assert msg["reply-to"].addresses[0].display_name == "Åsa Öberg"
    assert msg["x-site"] == "温室 " + EMOJI
    plain = msg.get_body(("plain",))
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"  # the long line
    assert plain.get_content() == body
    assert msg.get_body(("html",))["Content-Transfer-Encoding"] == "8bit"  # Postfix has 8BITMIME
    assert msg.get_body(("html",)).get_content() == html
    got = attachments_of(msg)
    assert [g[0] for g in got] == names
    assert [g[2] for g in got] == [(("%s\n" % ALL[i]).encode() * (i + 1)) for i in range(6)]
    words = _encoded_words(head)
    assert len(words) > 10
    for w in words:
        assert len(w) <= 75, w
        charset, enc, text = w[2:-2].split(b"?")
        data = base64.b64decode(text) if enc in b"Bb" else binascii.a2b_qp(text, header=True)
        data.decode(charset.decode())  # a whole character in every word: decodes on its own
    assert max(len(ln) for ln in head.split(b"\n")) <= 78


def test_size_limit_refused_before_anything_is_sent(runner, smtpd, tmp_path):
    ctl = smtpd(data_size_limit=100_000)
    cfg = client_config(ctl.port, debug=True)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 300)  # 76.8 KB, 104 KB in base64
    e = runner.send(cfg, recipient_address="bob@example.org", mail_body={"str": "x\n"},
                    attachments=[["big.bin", {"file": str(big)}, "application/octet-stream"]])
    err = e["error"]
    assert err["type"] == "SMTPError" and err["status"] == smtp_duo.OVERSIZE_MAIL_DATA, err
    assert "100000" in err["message"]
    sent = [ln for ln in e["report"]["transcript"] if ln.startswith(">")]
    assert not [ln for ln in sent if "MAIL" in ln or "DATA" in ln or "BDAT" in ln], sent
    assert ctl.handler.messages == []


def test_bad_attachments_and_headers_raise_before_connecting(runner, smtpd):
    ctl = smtpd()
    cases = [
        {"attachments": [["a\r\nb.txt", {"str": "x"}, "text/plain"]]},
        {"attachments": [["dir/a.txt", {"str": "x"}, "text/plain"]]},
        {"attachments": [["a.txt", {"str": "x"}, "text/plain\r\nX-Evil: 1"]]},
        {"attachments": [["a.txt", {"str": "x"}, "textplain"]]},
        {"headers": {"X-Note": "a\r\nBcc: evil@example.com"}},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"Subject": "twice"}},
        {"headers": {"Bcc": "leak@example.com"}},
    ]
    for extra in cases:
        e = runner.send(client_config(ctl.port), recipient_address="bob@example.org", **extra)
        assert e["error"]["type"] == "ValueError", (extra, e)
    assert ctl.handler.messages == []


def test_without_the_mime_module_a_clear_import_error(tmp_path):
    # A board that froze only smtp_duo: html=, attachments= and headers= say what is missing.
    code = ("import sys; sys.modules['smtp_duo_mime'] = None; import smtp_duo\n"
            "c = smtp_duo.SMTPClient('127.0.0.1', from_address='a@example.com')\n"
            "try:\n    c.check_mail('b@example.com', headers={'X-A': 'b'})\n"
            "except ImportError as e:\n    print('ImportError', e)\n")
    lib = str(__import__("pathlib").Path(smtp_duo.__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": lib}).stdout
    assert out.startswith("ImportError") and "smtp_duo_mime" in out, out
