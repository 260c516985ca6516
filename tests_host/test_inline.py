"""Inline images (issue 16): an image shown inside the HTML part, given in attachments= as
(filename, source, content_type, content_id) or smtp_duo_mime.Inline(...), sent as
multipart/related inside the alternative, with multipart/mixed around it for attachments.
Delivered by Postfix (or kept by aiosmtpd) and read back with CPython's email package, the
client on both runtimes, blocking and asyncio (the runner fixture)."""

import email
import email.policy
import random
import re

from conftest import client_config, delivered, run_micropython
from hostkit.ports import free_port
from hostkit.postfix import strip_received

import smtp_duo
import smtp_duo_mime


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def shape(part):
    """The MIME tree as nested (content type, [children]) / content type."""
    if part.is_multipart():
        return (part.get_content_type(), [shape(p) for p in part.iter_parts()])
    return part.get_content_type()


def jpeg_like(size, seed):
    # A JPEG's start and end markers around random octets: every octet value, no pattern.
    body = random.Random(seed).randbytes(size - 4)
    return b"\xff\xd8" + body + b"\xff\xd9"


def cids_resolve(msg):
    """Every cid: in the HTML names exactly one part with that Content-ID; returns {cid: part}."""
    html = msg.get_body(("html",)).get_content()
    refs = re.findall(r'src="cid:([^"]+)"', html)
    assert refs, html
    by_id = {}
    for p in msg.walk():
        if p["Content-ID"] is not None:
            by_id.setdefault(str(p["Content-ID"]).strip(), []).append(p)
    out = {}
    for ref in refs:
        hits = by_id.get("<%s>" % ref, [])
        assert len(hits) == 1, (ref, sorted(by_id))
        out[ref] = hits[0]
    return out


CSV = b"".join(b"2026-11-21T12:%02d:00Z,porch,%d\n" % (i % 60, i % 7) for i in range(80))


def test_inline_jpeg_and_csv_attachment_through_postfix(runner, postfix, tmp_path):
    jpg = jpeg_like(200 * 1024, 16)
    path = tmp_path / "cam.jpg"
    path.write_bytes(jpg)
    text = "Motion at the porch: 1 event.\n"
    html = '<p>Motion at the porch</p><img src="cid:snap-1@porch.example" alt="snapshot">\n'
    r = runner.send(client_config(postfix.relay_port), recipient_address="bob@example.org",
                    subject="camera", mail_body={"str": text}, html={"str": html},
                    attachments=[["cam.jpg", {"file": str(path)}, "image/jpeg", "snap-1@porch.example"],
                                 ["motion.csv", {"hex": CSV.hex()}, "text/csv"]])
    assert "ok" in r, r
    raw = strip_received(delivered(postfix, r["ok"]["text"])["data"])
    msg = parse(raw)
    assert shape(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/jpeg"])]),
        "text/csv"])
    related = msg.get_payload()[0].get_payload()[1]
    assert related.get_param("type") == "text/html"  # RFC 2387: the root's type
    assert msg.get_body(("plain",)).get_content() == text
    assert msg.get_body(("html",)).get_content() == html
    [image] = cids_resolve(msg).values()
    assert image.get_payload(decode=True) == jpg
    assert image.get_content_disposition() == "inline" and image.get_filename() == "cam.jpg"
    assert [(a.get_filename(), a.get_payload(decode=True)) for a in msg.iter_attachments()] == [
        ("motion.csv", CSV)]
    b64 = [ln for ln in raw.split(b"\n") if re.fullmatch(rb"[A-Za-z0-9+/=]+", ln)]
    assert max(len(ln) for ln in b64) == 76


def test_two_images_html_from_a_file_no_attachments(runner, smtpd, tmp_path):
    # No attachments: the alternative is the top; the HTML streamed from a file; images in RAM.
    a, b = jpeg_like(3000, 1), jpeg_like(5000, 2)
    html = '<img src="cid:a"><br><img src="cid:b.2@x">\n'
    (tmp_path / "m.html").write_text(html)
    ctl = smtpd()
    r = runner.send(client_config(ctl.port), recipient_address="bob@example.org", subject="two",
                    mail_body={"str": "two pictures\n"}, html={"file": str(tmp_path / "m.html")},
                    attachments=[["a.jpg", {"bytearray": a.hex()}, "image/jpeg", "a"],
                                 ["b.jpg", {"memoryview": b.hex()}, "image/jpeg", "b.2@x"]])
    assert "ok" in r, r
    msg = parse(ctl.handler.messages[0].content)
    assert shape(msg) == ("multipart/alternative", [
        "text/plain", ("multipart/related", ["text/html", "image/jpeg", "image/jpeg"])])
    got = cids_resolve(msg)
    assert got["a"].get_payload(decode=True) == a and got["b.2@x"].get_payload(decode=True) == b


BAD = [
    # (attachments, html): each must raise ValueError before the client connects
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "a b"]], "<img src='cid:a b'>"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "<a@b>"]], "<img src='cid:a@b'>"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "a\r\nX-Evil: 1"]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "a\nb"]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", ""]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "kamera-ü"]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "a%41"]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "x" * 201]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", 7]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "snap"], ["d.jpg", {"hex": "ff"}, "image/jpeg", "SNAP"]], "x"),
    ([["c.jpg", {"hex": "ff"}, "image/jpeg", "snap"]], None),  # an inline image needs html=
    ([["dir/c.jpg", {"hex": "ff"}, "image/jpeg", "snap"]], "x"),  # checked as an attachment too
    ([["c.jpg", {"hex": "ff"}, "image/jpeg\r\nX: 1", "snap"]], "x"),
]


def test_bad_content_ids_raise_before_connecting(runner):
    port = free_port()  # nothing listens: a check after connecting would be a connection error
    mails = []
    for attachments, html in BAD:
        mail = {"recipient_address": "bob@example.org", "mail_body": {"str": "x\n"},
                "attachments": attachments}
        if html is not None:
            mail["html"] = {"str": html}
        mails.append(mail)
    report = runner.run(client_config(port), mails)
    assert len(report["results"]) == len(BAD), report
    for (attachments, _), res in zip(BAD, report["results"]):
        assert res.get("error", {}).get("type") == "ValueError", (attachments, res)
    assert "used twice" in report["results"][9]["error"]["message"]
    assert "need html=" in report["results"][10]["error"]["message"]


GENERATED = """
import smtp_duo, smtp_duo_mime
c = smtp_duo.SMTPClient("127.0.0.1", %d, from_address="cam@example.com", timeout=10)
img = smtp_duo_mime.Inline("porch.jpg", bytes(range(256)) * 8)
other = smtp_duo_mime.Inline("yard.jpg", b"\\xff\\xd8yard\\xff\\xd9", "image/jpeg")
html = '<img src="cid:%%s"><img src="cid:%%s">' %% (img.cid, other.cid)
r = c.mail_send("bob@example.org", subject="generated", mail_body="see the HTML\\n", html=html,
                attachments=[img, other, ("n.txt", b"note")])
print(r.code, img.cid, other.cid)
"""


def check_generated(msg, cids):
    assert shape(msg) == ("multipart/mixed", [
        ("multipart/alternative",
         ["text/plain", ("multipart/related", ["text/html", "image/jpeg", "image/jpeg"])]),
        "application/octet-stream"])
    assert len(set(cids)) == 2
    for cid in cids:  # 24 hex digits, then the fixed right-hand side
        assert re.fullmatch(r"[0-9a-f]{24}@smtp-duo", cid), cid
    got = cids_resolve(msg)
    assert got[cids[0]].get_payload(decode=True) == bytes(range(256)) * 8
    assert got[cids[1]].get_payload(decode=True) == b"\xff\xd8yard\xff\xd9"


def test_generated_content_ids_on_both_runtimes(micropython, mpy_dir, smtpd):
    ctl = smtpd()
    ns = {}
    exec(GENERATED % ctl.port, ns)  # CPython, in this process
    check_generated(parse(ctl.handler.messages[0].content), [ns["img"].cid, ns["other"].cid])
    p = run_micropython(micropython, mpy_dir, ["-c", GENERATED % ctl.port])
    assert p.returncode == 0, p.stdout + p.stderr
    code, *cids = p.stdout.split()
    assert code == "250"
    check_generated(parse(ctl.handler.messages[1].content), cids)


def test_inline_object_checks_at_once():
    # Made before the mail: a bad id is refused where the Inline is written, not at send time.
    for cid in ("a b", "<x>", "a\r\n", "", "ü"):
        try:
            smtp_duo_mime.Inline("c.jpg", b"x", "image/jpeg", cid)
        except ValueError as e:
            assert "content_id" in str(e)
        else:
            raise AssertionError("accepted %r" % cid)
    img = smtp_duo_mime.Inline("c.jpg", b"x", "image/jpeg", "cam.1@site")
    assert img.cid == "cam.1@site"
    c = smtp_duo.SMTPClient("127.0.0.1", free_port(), from_address="a@example.com")
    try:  # the same object twice in one mail: one id twice
        c.mail_send("b@example.org", html="<img src='cid:cam.1@site'>", attachments=[img, img])
    except ValueError as e:
        assert "used twice" in str(e)
    else:
        raise AssertionError("the same Content-ID twice was accepted")
