# Socket-free tests that run unchanged on CPython, on the MicroPython unix port and on boards
# without a network: AUTH encodings, base64, line-end normalisation and dot-stuffing at every
# chunk split, quoted-printable, encoded-words, reply parsing, a whole session in memory.
# Run directly: `micropython test_portable.py` prints one line per test and "N passed, N failed".

import binascii
import errno
import gc
import sys

import smtp_duo
from memserver import Collect, MemClient, MemServer, rng
from smtp_duo_qp import QP


def check(cond, what=""):
    if not cond:
        raise AssertionError(what)


def normalise(m):
    m = m.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if m and m[-2:] != b"\r\n":
        m += b"\r\n"
    return m


def stuffed(m):
    out = []
    for line in m.split(b"\r\n"):
        out.append(b"." + line if line[:1] == b"." else line)
    return b"\r\n".join(out)


def wire(chunks, sink_class=None):
    # A text part streamed (normalised, stuffed) into memory, windows of 255 octets.
    out = Collect()
    text = smtp_duo.Text(chunks, b"plain", bytearray(16))
    for _ in text.feed((sink_class or smtp_duo._Plain)(out), 255, out):
        pass
    return out.value()


def b64(data):
    return binascii.b2a_base64(data)[:-1]


def rand_bytes(rnd, n, alphabet=None):
    if alphabet:
        return bytes([alphabet[rnd.getrandbits(8) % len(alphabet)] for _ in range(n)])
    return bytes([rnd.getrandbits(8) for _ in range(n)])


# -- AUTH encodings -------------------------------------------------------------------------------


def test_plain_vector_rfc4954():
    check(b64(b"test\0test\x001234") == b"dGVzdAB0ZXN0ADEyMzQ=")
    check(b64(b"\0user\0pass") == b"AHVzZXIAcGFzcw==")


def test_cram_md5_vector_rfc2195():
    r = smtp_duo.cram_md5_response(b"tim", b"tanstaaftanstaaf", b"<1896.697170952@postoffice.reston.mci.net>")
    check(r == b"tim b913a602c7eda7a495b4e6e7334d3890", r)
    check(b64(r) == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")


def test_cram_md5_long_secret_is_hashed_first():
    # RFC 2104: keys longer than the 64-byte block are replaced by their MD5.
    r = smtp_duo.cram_md5_response(b"u", b"k" * 100, b"<c>")
    check(r == b"u ae6acb86528de3d1aab34cd8ed6037f5", r)


def test_xoauth2_vector():
    s = smtp_duo.xoauth2_string(b"someuser@example.com", b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    check(b64(s) == (b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52"
                                b"YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="))


def test_b64encode_into_matches_binascii():
    rnd = rng(1)
    for n in range(0, 160):
        src = rand_bytes(rnd, n)
        dst = bytearray(300)
        end = smtp_duo.b64encode_into(src, dst, 7)
        check(bytes(dst[7:end]) == binascii.b2a_base64(src)[:-1], n)
    try:
        smtp_duo.b64encode_into(b"abcd", bytearray(7))
        check(False, "buffer too small accepted")
    except ValueError:
        pass


# -- line ends and dot-stuffing at every split ---------------------------------------------------

VECTORS = [b"A\n.\nMAIL FROM:<evil@x>\n", b"A\n.\r\nX", b"A\r.\r\nX", b"A\r\n.\rX", b"A\r\r\n.\r\nX",
           b"A\r\n.\nX", b".\r\n", b"..\r\n.\r\n", b"\r\n.\r\n", b"x\r\n", b"x", b"", b"\r", b"\n", b"\r\r",
           b"\n\r", b".", b"a\rb\nc\r\nd", b"end with CR\r"]


def test_normalise_and_stuff_at_every_split_position():
    for m in VECTORS:
        want = stuffed(normalise(m))
        check(wire([m]) == want, m)
        for i in range(len(m) + 1):
            check(wire([m[:i], m[i:]]) == want, (m, i))
        check(wire([m[k : k + 1] for k in range(len(m))]) == want, m)


def test_normalise_random_property():
    rnd = rng(2)
    for _ in range(300):
        m = rand_bytes(rnd, rnd.getrandbits(6), b"\r\n.ab")
        cut = rnd.getrandbits(6) % (len(m) + 1)
        w = wire([m[:cut], m[cut:]])
        check(w == stuffed(normalise(m)), m)
        check((b"\r\n" + w).find(b"\r\n.\r\n") < 0, m)  # no end of data inside the body


def test_scan_finds_long_wire_lines_and_eight_bit():
    st = smtp_duo.Text([b"ab\r", b"\nc" + b"d" * 997, b"\n.", b"x" * 997], b"plain", bytearray(16))
    check(st.long, "a stuffed dot counts: .xxx is 999 on the wire")
    check(not st.eight)
    check(st.size == len(normalise(b"ab\r\nc" + b"d" * 997 + b"\n." + b"x" * 997)))
    st = smtp_duo.Text([b"ab\r", b"\nc" + b"d" * 997, b"\n", b"x" * 998], b"plain", bytearray(16))
    check(not st.long, "998 octets is the limit")
    st = smtp_duo.Text(["\u00e9\x00"], b"plain", bytearray(16))
    check(st.eight and st.long, "a NUL goes quoted-printable, as a long line does")


def wire_lines(m):
    # The longest line of m on the wire (every line end CRLF as normalise() makes it, a stuffed
    # dot counted) and the size of normalise(m), from m itself: no copy of m (a 112 KB board's
    # heap, fragmented by the modules it loaded, may hold no second block that large).
    longest = size = i = 0
    while i < len(m):
        e = m.find(b"\n", i)
        r = m.find(b"\r", i, e if e >= 0 else len(m))
        e = r if r >= 0 else (e if e >= 0 else len(m))
        longest = max(longest, e - i + (e > i and m[i] == 46))
        size += e - i + 2
        i = e + 1
        if e < len(m) and m[e] == 13 and i < len(m) and m[i] == 10:
            i += 1
    return longest, size


def test_stats_match_the_normalised_body_at_every_split():
    # The scan reckons from raw windows what the normaliser will send: random line ends (CR,
    # LF, CRLF, split between windows), dots, runs around the 998-octet limit, 8-bit and NUL.
    rnd = rng(7)
    for case in range(200):
        parts = []
        gc.collect()  # a board's heap: room for the next body and its normalised copy
        for _ in range(rnd.getrandbits(2) + 1):
            k = rnd.getrandbits(2)
            n = (rnd.getrandbits(3), 990 + rnd.getrandbits(6), 1100 + rnd.getrandbits(8), 60)[k]
            parts.append(b"." * (rnd.getrandbits(2) == 0) + b"x" * n)
            parts.append(rand_bytes(rnd, 1 + rnd.getrandbits(1), b"\r\n"))
        m = b"".join(parts)
        parts = None
        if case % 5 == 0:
            m += rand_bytes(rnd, 3, b"\x80\x00a")
        longest, size = wire_lines(m)
        gc.collect()
        cuts = [rnd.getrandbits(12) % (len(m) + 1) for _ in range(rnd.getrandbits(2))]
        cuts = sorted(cuts)
        chunks = [m[a:b] for a, b in zip([0] + cuts, cuts + [len(m)])]
        st = smtp_duo.Text(chunks, b"plain", bytearray(8 + rnd.getrandbits((4, 8, 12)[rnd.getrandbits(2) % 3])))
        check(st.size == size, (case, st.size, size))
        check(st.long == (longest > 998 or m.find(b"\0") >= 0), (case, st.long, longest))
        check(st.eight == any(c >= 0x80 for c in m), case)
    for pad in range(0, 520, 3):  # a 998-octet line between two others, at every offset
        m = b"a\n" + b"y" * pad + b"\n" + b"x" * 998 + b"\nb\n"
        check(not smtp_duo.Text(m, b"plain", bytearray(4096)).long, pad)
        check(smtp_duo.Text(m + b"." + m, b"plain", bytearray(4096)).long is False, pad)
        check(smtp_duo.Text(m.replace(b"\nx", b"\n.x"), b"plain", bytearray(4096)).long, pad)


# -- quoted-printable -----------------------------------------------------------------------------


def unstuff(w):
    return b"\r\n".join([line[1:] if line[:1] == b"." else line for line in w.split(b"\r\n")])


def qp_decode(data):
    out = []
    for line in data.split(b"\r\n"):
        soft = line[-1:] == b"="
        if soft:
            line = line[:-1]
        i = 0
        piece = bytearray()
        while i < len(line):
            if line[i] == 0x3D:
                piece.append(int(line[i + 1 : i + 3], 16))
                i += 3
            else:
                piece.append(line[i])
                i += 1
        out.append(bytes(piece))
        if not soft:
            out.append(b"\r\n")
    return b"".join(out)[:-2]


def test_quoted_printable_round_trip_and_line_limits():
    rnd = rng(3)
    alphabet = b"ab =\t.\r\n" + bytes([0, 0x7F, 0x80, 0xC3, 0xFF])
    for _ in range(120):
        m = rand_bytes(rnd, rnd.getrandbits(9), alphabet)
        cut = rnd.getrandbits(9) % (len(m) + 1)
        w = wire([m[:cut], m[cut:]], QP)
        for line in w.split(b"\r\n"):
            check(len(line) <= 76 + (1 if line[:2] == b".." else 0), line)
            check(line[-1:] not in (b" ", b"\t"), line)
            for c in line:
                check(c == 0x09 or 0x20 <= c <= 0x7E, line)
        check(qp_decode(unstuff(w)) == normalise(m), m)


# -- headers --------------------------------------------------------------------------------------


def b64decode_words(words):
    out = b""
    for w in words:
        check(len(w) <= 75, w)
        check(w[:10] == b"=?utf-8?B?" and w[-2:] == b"?=", w)
        piece = binascii.a2b_base64(w[10:-2])
        str(piece, "utf-8")  # whole characters in every word, or this raises
        out += piece
    return out


def test_encoded_words_never_split_characters():
    chars = "aé€漢🌡 "
    rnd = rng(4)
    for _ in range(200):
        text = "".join([chars[rnd.getrandbits(8) % len(chars)] for _ in range(rnd.getrandbits(7))])
        words = smtp_duo.phrase(text, True)
        check(b64decode_words(words) == text.encode(), text)


def test_header_folding_keeps_lines_short_and_content_exact():
    out = Collect()
    boxes = [(None, "user%d@example.com" % i) for i in range(12)] + [("Zoë Ångström", "z@example.org")]
    tokens = []
    for n, a in boxes:
        tokens += smtp_duo.mailbox(n, a)
        tokens[-1] += b","
    tokens[-1] = tokens[-1][:-1]
    for _ in smtp_duo.header(out, b"To", tokens):
        pass
    head = out.value()
    for line in head.split(b"\r\n")[:-1]:
        check(len(line) <= 76, line)
    unfolded = head.replace(b"\r\n ", b" ")
    check(unfolded.startswith(b"To: user0@example.com, user1@example.com,"), unfolded)
    check(unfolded.endswith(b" <z@example.org>\r\n"), unfolded)


def test_date_header_and_unset_clock():
    check(smtp_duo.date_header((2026, 11, 21, 23, 5, 9, 5, 325)) == "Sat, 21 Nov 2026 23:05:09 +0000")
    check(smtp_duo.date_header((2000, 1, 1, 0, 0, 0, 5, 1)) is None)  # board booted without NTP


def test_buffer_size_follows_the_heap_unless_given():
    c = smtp_duo.SMTPClient("h.example", from_address="a@b.example")
    try:
        big = gc.mem_free() + gc.mem_alloc() >= 384 * 1024
    except AttributeError:  # CPython: no fixed heap
        big = True
    check(len(c._obuf) == (8192 if big else 1024), len(c._obuf))
    check(len(c._cbuf) == len(c._obuf) // 2)
    c = smtp_duo.SMTPClient("h.example", from_address="a@b.example", buffer_size=3000)
    check((len(c._obuf), len(c._cbuf)) == (3000, 1500))
    for bad in (1023, 65537, "4096", 4096.0, True):
        try:
            smtp_duo.SMTPClient("h.example", from_address="a@b.example", buffer_size=bad)
            check(False, bad)
        except ValueError:
            pass


def test_addresses_accepted_and_refused():
    pa = smtp_duo.address
    check(pa("a@b.example", "x") == (None, "a@b.example"))
    check(pa("<a@b.example>", "x") == (None, "a@b.example"))
    check(pa("Bob Smith <bob@example.com>", "x") == ("Bob Smith", "bob@example.com"))
    check(pa('"Smith, Bob" <bob@example.com>', "x") == ("Smith, Bob", "bob@example.com"))
    check(pa("x@[192.0.2.1]", "x") == (None, "x@[192.0.2.1]"))
    for bad in ["a@b\r\nRCPT TO:<c@d>", "a@b>x", "a b@c", "@b", "a@", "a@@b", "a@b..c", ".a@b", "a@-b",
                "a" * 65 + "@b", "a@" + "b" * 256, "a@b SIZE=1", "a@b\x00", "a@b\x7f", "<a@b"]:
        try:
            pa(bad, "x")
            check(False, bad)
        except ValueError:
            pass


# -- a whole session in memory ---------------------------------------------------------------------


def test_session_with_replies_in_one_byte_segments():
    srv = MemServer({"EHLO": b"250-mem.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"}, segment=1)
    c = MemClient(srv, username="u", password="p", allow_insecure_auth=True)
    r = c.mail_send(["a@x.org", "Bo <b@x.org>"], smtp_duo.PRIORITY_HIGH, "Température", "ligne 1\n.ligne 2")
    check(r.code == 250 and r.text == "2.0.0 queued as MEM1", r)
    got = srv.received()
    check(got.startswith(b"EHLO [127.0.0.1]\r\nAUTH PLAIN AHUAcA==\r\nMAIL FROM:<sensor@example.com>\r\n"
                         b"RCPT TO:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"), got)  # no SIZE offered
    check(got.endswith(b"\r\n\r\nligne 1\r\n..ligne 2\r\n.\r\nQUIT\r\n"), got)
    check(b"Subject: =?utf-8?B?VGVtcMOpcmF0dXJl?=\r\n" in got, got)
    check(srv.closed)


def test_malformed_and_well_formed_replies():
    for reply in [b"250\r\n", b"250 \r\n", b"250-a\r\n250 b\r\n", b"299 x\r\n", b"250 ok\n"]:
        srv = MemServer({"MAIL": reply})
        check(MemClient(srv).mail_send("a@x.org", 2, "s", "b").code == 250, reply)
    for reply in [b"hello 250 ok\r\n", b"2500 ok\r\n", b"199 x\r\n", b"650 x\r\n", b"25x\r\n", b"250-a\r\n251 b\r\n"]:
        srv = MemServer({"MAIL": reply})
        try:
            MemClient(srv).mail_send("a@x.org", 2, "s", "b")
            check(False, reply)
        except smtp_duo.SMTPProtocolError as e:
            check(e.temporary and srv.closed, reply)


def test_errors_carry_the_reply():
    srv = MemServer({"EHLO": b"250-m\r\n250 ENHANCEDSTATUSCODES\r\n", "RCPT": b"550 5.1.1 User unknown\r\n"})
    try:
        MemClient(srv).mail_send("a@x.org", 2, "s", "b")
        check(False)
    except smtp_duo.SMTPRecipientsRefused as e:
        check(e.status == smtp_duo.RCPT_REPLY_ERROR and e.code == 550 and e.enhanced == "5.1.1", e)
        check(e.text == "User unknown" and not e.temporary and e.recipients["a@x.org"].code == 550)
    srv = MemServer({"MAIL": b""})  # silence
    try:
        MemClient(srv).mail_send("a@x.org", 2, "s", "b")
        check(False)
    except smtp_duo.SMTPTimeoutError as e:
        check(e.temporary and e.status == smtp_duo.NO_PACKET and e.command == "MAIL", e)


def test_session_rset_after_failure_and_reopen_after_drop():
    srv = MemServer({"RCPT": [b"250 ok\r\n", b"550 no\r\n", b"250 ok\r\n"], "DOT": [b"250 a\r\n", b"421 bye\r\n",
                                                                                   b"250 c\r\n"]})
    c = MemClient(srv)
    results = []
    with c.session() as s:
        for _ in range(4):
            try:
                results.append(s.mail_send("a@x.org", 2, "s", "b").code)
            except smtp_duo.SMTPError as e:
                results.append(e.code)
    check(results == [250, 550, 421, 250], results)
    verbs = [x.split(b" ")[0].split(b":")[0].strip() for x in srv.commands]
    check(verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"MAIL", b"RCPT", b"RSET", b"MAIL", b"RCPT", b"DATA",
                    b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"], verbs)
    check(srv.connections == 2)


def test_body_source_failure_never_sends_the_end_of_data():
    def source():
        yield "first part\n"
        raise KeyError("sensor unplugged")

    srv = MemServer()
    try:
        MemClient(srv).mail_send("a@x.org", 2, "s", source())
        check(False)
    except KeyError:
        pass
    check(srv.closed and srv.messages == [] and b"\r\n.\r\n" not in srv.received())


# -- TLS failures as the boards raise them -----------------------------------------------------------


def test_tls_failures_say_what_to_do():
    cases = [
        # (exception as MicroPython/mbedTLS raises it, words the message must have, temporary)
        (OSError(-17040, "MBEDTLS_ERR_RSA_PUBLIC_FAILED+MBEDTLS_ERR_MPI_ALLOC_FAILED"), "out of memory", True),
        (OSError(12), "out of memory", True),
        (OSError(-29184, "MBEDTLS_ERR_SSL_INVALID_RECORD"), "did not answer in TLS", False),
        (OSError(-29312, "MBEDTLS_ERR_SSL_CONN_EOF"), "closed the connection", True),
        (OSError(-30592, "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE"), "refused the TLS handshake", False),
        (OSError(-30336, "SSL - No CA Chain is set, but required to operate"), "pass cadata", False),
        (ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n"), "certificate", False),
        (ValueError("The certificate is not correctly signed by the trusted CA"), "certificate", False),
        (OSError(errno.ETIMEDOUT), "timed out", True),  # 110 on rp2 and unix, 116 on ESP32
        (ValueError("The certificate validity starts in the future"), "is the clock set? ntptime.settime()", True),
        (ValueError("The certificate validity has expired"), "is the clock set? ntptime.settime()", True),
    ]
    for exc, words, temporary in cases:
        e = smtp_duo.tls_error(exc, 587)  # with smtp_duo_explain installed: what to do, too
        check(isinstance(e, smtp_duo.SMTPTLSError) and isinstance(e, smtp_duo.SMTPError), exc)
        check(words in e.message and e.temporary == temporary and e.status == smtp_duo.TLS_ERROR, (exc, e.message))


# -- round trips: PIPELINING, CHUNKING, session reuse (both clients) ------------------------------

EHLO_PIPE = b"250-mem.test\r\n250-AUTH PLAIN\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
EHLO_CHUNK = EHLO_PIPE.replace(b"250 SIZE", b"250-CHUNKING\r\n250 SIZE")
EHLO_ONE_BY_ONE = b"250-mem.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
AUTH = {"username": "u", "password": "p", "allow_insecure_auth": True}


class Blocking:
    # How a scenario drives the blocking client...
    def client(self, srv, **kw):
        return MemClient(srv, **kw)

    def send(self, c, *mail):
        return outcome(lambda: c.mail_send(*mail))

    def session(self, c, mails, between=None):
        # Each mail's outcome and the server's read count after it.
        out = []
        with c.session() as s:
            for i, mail in enumerate(mails):
                if between:
                    between(i)
                out.append(outcome(lambda: s.mail_send(*mail)))
                out.append(c.server.reads)
        return out


class Async(Blocking):
    # ... and the asyncio one (smtp_duo_async), on the same in-memory server.
    def client(self, srv, **kw):
        from memserver import async_client

        return async_client(srv, **kw)

    def send(self, c, *mail):
        import asyncio

        async def go():
            try:
                return await c.mail_send(*mail)
            except smtp_duo.SMTPError as e:
                return e

        return result_of(asyncio.run(go()))

    def session(self, c, mails, between=None):
        import asyncio

        async def go():
            out = []
            async with c.session() as s:
                for i, mail in enumerate(mails):
                    if between:
                        between(i)
                    try:
                        out.append(result_of(await s.mail_send(*mail)))
                    except smtp_duo.SMTPError as e:
                        out.append(result_of(e))
                    out.append(c.server.reads)
            return out

        return asyncio.run(go())


def outcome(call):
    try:
        return result_of(call())
    except smtp_duo.SMTPError as e:
        return result_of(e)


def result_of(r):
    # A reply as its code, an error as (type name, code).
    if isinstance(r, smtp_duo.SMTPError):
        return (type(r).__name__, r.code)
    return r.code


def drivers():
    out = [Blocking()]
    try:
        import smtp_duo_async  # noqa: F401 -- not on a board that froze only smtp_duo

        out.append(Async())
    except ImportError:
        pass
    return out


MAIL = ("a@x.org", 2, "s", "line 1\n.line 2\n")


def test_waits_per_mail_pipelining_and_chunking():
    # A wait = a read from the server. First mail: greeting, EHLO, AUTH, envelope + DATA, final
    # reply (4 with CHUNKING: the message goes with the envelope); then 2, or 1 with CHUNKING.
    for d in drivers():
        for ehlo, first, further in ((EHLO_ONE_BY_ONE, 7, 4), (EHLO_PIPE, 5, 2), (EHLO_CHUNK, 4, 1)):
            srv = MemServer({"EHLO": ehlo})
            r = d.session(d.client(srv, **AUTH), [MAIL, MAIL, MAIL])
            check(r[0::2] == [250, 250, 250], (d, ehlo, r))
            check([r[1], r[3] - r[1], r[5] - r[3]] == [first, further, further], (d, ehlo, r))
            check(len(srv.messages) == 3, srv.messages)


def test_pipelined_envelope_goes_in_one_write_and_every_reply_is_checked():
    for d in drivers():
        srv = MemServer({"EHLO": EHLO_PIPE, "RCPT": [b"250 ok\r\n", b"550 5.1.1 no\r\n", b"250 ok\r\n"]})
        c = d.client(srv)
        check(d.send(c, ["a@x.org", "b@x.org", "c@x.org"], 2, "s", "hi") == 250, srv.commands)
        flight = [w for w in srv.sent if w.startswith(b"MAIL")]
        check(len(flight) == 1 and flight[0].endswith(b"RCPT TO:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\nDATA\r\n"),
              flight)
        check(len(srv.messages) == 1)


def test_pipelined_refusals():
    for d in drivers():
        # Everyone refused, yet the server says 354 to DATA: a lone dot ends it, nothing is sent.
        srv = MemServer({"EHLO": EHLO_PIPE, "RCPT": b"550 5.1.1 no\r\n"})
        check(d.send(d.client(srv), ["a@x.org", "b@x.org"], 2, "s", "secret") == ("SMTPRecipientsRefused", 550))
        check(srv.received().endswith(b"DATA\r\n.\r\nQUIT\r\n"), srv.received())
        check(b"secret" not in srv.received() and srv.messages == [b""], srv.messages)
        # The sender refused: the RCPT and DATA replies are read too, and the error is MAIL's.
        srv = MemServer({"EHLO": EHLO_PIPE, "MAIL": b"550 5.7.1 not you\r\n", "RCPT": b"503 5.5.1 MAIL first\r\n",
                         "DATA": b"503 5.5.1 no valid recipients\r\n"})
        check(d.send(d.client(srv), "a@x.org", 2, "s", "x") == ("SMTPError", 550))
        check(srv.received().endswith(b"DATA\r\nQUIT\r\n") and srv.closed, srv.received())
        # A 421 mid-flight: the rest is not waited for.
        srv = MemServer({"EHLO": EHLO_PIPE, "RCPT": [b"250 ok\r\n", b"421 4.3.2 bye\r\n"]})
        check(d.send(d.client(srv), ["a@x.org", "b@x.org"], 2, "s", "x") == ("SMTPRecipientsRefused", 421))
        check(srv.closed and srv.messages == [])


def test_bdat_sends_the_exact_octets_unstuffed():
    for d in drivers():
        srv = MemServer({"EHLO": EHLO_CHUNK})
        check(d.send(d.client(srv), "a@x.org", 2, "s", ".one\n..two\r\n.\r\nend") == 250)
        m = srv.messages[0]
        check(m.endswith(b"\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n"), m)  # no dot-stuffing
        bdat = [x for x in srv.commands if x.startswith(b"BDAT")]
        check(bdat == [b"BDAT %d LAST\r\n" % len(m)], (bdat, len(m)))
        check(b"\r\n.\r\nQUIT" not in srv.received())  # no DATA terminator


class Growing:
    # A seekable file whose content grows after it was measured.
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.passes = 0

    def tell(self):
        return self.pos

    def seek(self, pos):
        self.pos = pos
        self.passes += 1

    def readinto(self, buf):
        data = self.data + (b"GROWN\n" * 100 if self.passes > 1 else b"")
        n = min(len(buf), len(data) - self.pos)
        buf[:n] = data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_bdat_never_sends_past_the_announced_size():
    for d in drivers():
        srv = MemServer({"EHLO": EHLO_CHUNK})
        r = d.send(d.client(srv), "a@x.org", 2, "s", Growing(b"measured\n"))
        check(r == ("SMTPError", None), r)
        check(b"GROWN" not in srv.received() and srv.closed and srv.messages == [], srv.received())


def test_session_reopens_a_connection_the_server_dropped_while_idle():
    for d in drivers():
        for ehlo in (EHLO_ONE_BY_ONE, EHLO_PIPE, EHLO_CHUNK):
            srv = MemServer({"EHLO": ehlo})

            def drop(i):
                if i == 1:
                    srv.closing = True  # the server closed the idle connection (EOF pending)
                if i == 2:
                    srv.out += b"421 4.4.2 idle too long\r\n"
                    srv.closing = True

            r = d.session(d.client(srv), [MAIL, MAIL, MAIL], drop)
            check(r[0::2] == [250, 250, 250] and srv.connections == 3, (d, ehlo, r, srv.connections))
            check(len(srv.messages) == 3, srv.messages)


def test_session_reopens_once_when_a_reused_connection_is_gone_before_any_reply():
    for d in drivers():
        for ehlo in (EHLO_ONE_BY_ONE, EHLO_PIPE, EHLO_CHUNK):
            # The second mail's MAIL finds the connection closed (EOF, no reply): sent again on a
            # new connection. The third's RCPT gets EOF after MAIL was accepted: an error, no retry.
            srv = MemServer({"EHLO": ehlo, "MAIL": [b"250 ok\r\n", None, b"250 ok\r\n"],
                             "RCPT": [b"250 ok\r\n", b"250 ok\r\n", None, b"250 ok\r\n"]})
            r = d.session(d.client(srv), [MAIL, MAIL, MAIL])
            check(r[0::2] == [250, 250, ("SMTPConnectionError", None)], (d, ehlo, r))
            check(srv.connections == 2 and len(srv.messages) == 2, (d, ehlo, srv.connections, srv.messages))
            # A mail on its own connection (no session) is never retried.
            srv = MemServer({"EHLO": ehlo, "MAIL": None})
            check(d.send(d.client(srv), *MAIL) == ("SMTPConnectionError", None) and srv.connections == 1)


# -- runner ----------------------------------------------------------------------------------------


def tests():
    return sorted([n for n in globals() if n.startswith("test_")])


def run(names=None):
    passed = failed = 0
    for name in names or tests():
        try:
            globals()[name]()
            passed += 1
            print("ok", name)
        except Exception as e:
            failed += 1
            print("FAIL", name, repr(e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    run(sys.argv[1:])
