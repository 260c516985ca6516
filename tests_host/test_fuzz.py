"""Fuzzing the reply reader and the EHLO parser: whatever bytes a server sends, mail_send()
returns a 2xx Reply or raises an SMTPError (never ValueError, UnicodeError, IndexError,
MemoryError, ...), the connection ends closed, and memory stays bounded.

CPython: Hypothesis, derandomized and without an example database, so every run (and CI) tries
the same examples: random bytes, and replies built to be nearly right (real codes with odd
separators and texts, CR/LF variants, NULs, non-UTF-8, lines about the 1 KiB cap, replies about
the 100-line cap), mutated, concatenated and cut into reads of random sizes, as the greeting or
the reply to any command. tracemalloc shows that an 8 MiB flood is refused within a few KiB.

MicroPython: portable/fuzz_portable.py on the unix port with a fixed heap, from .mpy, with a
fixed seed; it checks the same, that the heap does not grow from case to case, and what one
reply line costs the heap.
"""

import re
import tracemalloc

import pytest
from conftest import HERE, run_micropython
from hostkit.mpy import compile_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_portable
import smtp_duo
from fuzz_portable import (AUTH_STEPS, EHLO_AUTH, FLOODS, PROBES, VERBS, MemClient, flood_bound, run_case,
                           run_flood)
from memserver import MemServer

SEED = 20240521
MIB = 1024 * 1024
KIB = 1024


def fuzz(n):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- server byte streams ----------------------------------------------------------------------------

CODES = st.sampled_from([b"220", b"221", b"235", b"250", b"251", b"334", b"354", b"421", b"450", b"452",
                         b"500", b"501", b"530", b"535", b"550", b"552", b"554"])
code = st.one_of(CODES, CODES, st.integers(0, 999).map(lambda n: b"%03d" % n), st.binary(max_size=4))
sep = st.one_of(st.sampled_from([b" ", b"-", b""]), st.binary(min_size=1, max_size=2))
eol = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r", b"\x00\r\n", b" \r\n"])
text = st.one_of(
    st.binary(max_size=60),
    # Lone surrogates come out as CESU-8: bytes no UTF-8 decoder accepts.
    st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\xe2\x82"]),
              st.integers(1, 400)).map(lambda t: t[0] * t[1]),
    st.integers(1000, 1030).map(lambda n: b"t" * n),  # about the 1024-octet line cap
)
line = st.tuples(code, sep, text, eol).map(b"".join)


def well_formed(c, texts):
    return b"".join([c + (b" " if i == len(texts) - 1 else b"-") + t + b"\r\n" for i, t in enumerate(texts)])


plain_text = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
reply = st.one_of(
    st.lists(line, min_size=1, max_size=6).map(b"".join),
    st.builds(well_formed, CODES, st.lists(plain_text, min_size=1, max_size=6)),
    st.builds(well_formed, CODES, st.integers(95, 105).map(lambda n: [b"x"] * n)),  # about the line cap
)


def mutate(data, edits):
    for op, pos, blob in edits:
        i = pos % (len(data) + 1)
        if op == 0:
            data = data[:i] + blob + data[i + len(blob):]
        elif op == 1:
            data = data[:i] + blob + data[i:]
        elif op == 2:
            data = data[:i] + data[i + 1 + len(blob):]
        elif op == 3:
            data = data[:i] + data[i:i + 64] + data[i:]
        else:
            data = data[:i]
    return data


edits = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4000), st.binary(max_size=3)), min_size=1,
                 max_size=4)
stream = st.one_of(
    st.binary(max_size=2500),
    reply,
    st.builds(mutate, reply, edits),
    st.lists(reply, min_size=2, max_size=3).map(b"".join),  # the rest is read as the next reply
)
# MemServer script values: bytes, None (the server closes), b"" (it never answers), or a list
# taken one per command.
value = st.one_of(stream, st.lists(stream, min_size=1, max_size=3), st.none(), st.just(b""))
scripts = st.dictionaries(st.sampled_from(VERBS), value, min_size=1, max_size=3)
read_sizes = st.lists(st.integers(0, 1100), max_size=6)  # 0: whatever is there
AUTH_TYPES = [smtp_duo.AUTH_AUTO, smtp_duo.AUTH_PLAIN, smtp_duo.AUTH_LOGIN, smtp_duo.AUTH_CRAM_MD5,
              smtp_duo.AUTH_XOAUTH2]


def make_case(script, sizes, auth, traced, session):
    kw = {}
    base = {}
    if auth is not None:
        kw = dict(username="u", password="p", allow_insecure_auth=True, authentication_type=auth)
        base = {"EHLO": EHLO_AUTH, "AUTH": AUTH_STEPS}
    if traced:
        kw["debug"] = fuzz_portable.debug
    base.update(script)
    return base, sizes, kw, session, ["a@x.org", "b@x.org"]


@fuzz(1200)
@given(scripts, read_sizes, st.one_of(st.none(), st.sampled_from(AUTH_TYPES)), st.booleans(), st.booleans())
def test_any_server_bytes_give_a_reply_or_an_smtp_error(script, sizes, auth, traced, session):
    # run_case raises anything that is not an SMTPError, and checks the client is closed with
    # a sane state (size_limit an int >= 0, has_extension() a bool).
    run_case(make_case(script, sizes, auth, traced, session))


@fuzz(500)
@given(st.sampled_from(VERBS), st.binary(max_size=3000), read_sizes, st.booleans())
def test_random_bytes_as_any_reply(verb, data, sizes, traced):
    run_case(make_case({verb: data}, sizes, None, traced, False))


# -- the EHLO parser ---------------------------------------------------------------------------------

KNOWN = {b"AUTH": "AUTH", b"SIZE": "SIZE", b"PIPELINING": "PIPELINING", b"8BITMIME": "8BITMIME",
         b"SMTPUTF8": "SMTPUTF8", b"STARTTLS": "STARTTLS", b"CHUNKING": "CHUNKING",
         b"ENHANCEDSTATUSCODES": "ENHANCEDSTATUSCODES"}
MECH_BITS = {b"XOAUTH2": smtp_duo.AUTH_XOAUTH2, b"CRAM-MD5": smtp_duo.AUTH_CRAM_MD5,
             b"PLAIN": smtp_duo.AUTH_PLAIN, b"LOGIN": smtp_duo.AUTH_LOGIN}
OTHER_MECHS = [b"GSSAPI", b"NTLM", b"PLAINX", b"XPLAIN", b"LOGIN-2", b"CRAM-MD", b"SCRAM-SHA-1"]
SIZE_GARBAGE = [b"-1", b"+5", b"1e6", b"0x10", b"1.5", b"12a", b"\xd9\xa1\xd9\xa2", b"\xc2\xb2", b""]


def recased(word, flips):
    # Letters whose bit in `flips` is set go lower case.
    return bytes([c ^ 0x20 if 0x41 <= c <= 0x5A and (flips >> (i % 31)) & 1 else c
                  for i, c in enumerate(word)])


@st.composite
def ehlo_replies(draw):
    """(EHLO reply, expected extensions, expected AUTH mechanisms, expected SIZE limit), from
    lines in the shapes RFC 5321 allows (keyword in any case, then parameters after SP, or "="
    as some servers write AUTH=LOGIN), among noise lines no keyword can be read from."""
    ext, mechs, size = set(), set(), 0
    contents = [draw(st.sampled_from([b"mem.test", b"mem.test Hello", b"AUTH PLAIN", b"SIZE 5"]))]  # ignored
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["keyword", "auth", "size", "noise"]))
        flips = draw(st.integers(0, 2 ** 31 - 1))
        if kind == "keyword":
            kw = draw(st.sampled_from(sorted(KNOWN) + [b"DSN", b"X-EXPS", b"AUTHX", b"SIZES"]))
            params = draw(st.one_of(st.just(b""), st.binary(max_size=30).map(
                lambda b: b" " + bytes([c for c in b if c not in b"\r\n="]))))
            contents.append(recased(kw, flips) + params)
            if kw in KNOWN:
                ext.add(kw)
            first = params.split(None, 1)
            if kw == b"SIZE" and first and first[0].isdigit():  # random parameters may be a size
                size = int(first[0])
        elif kind == "auth":
            names = draw(st.lists(st.sampled_from(sorted(MECH_BITS) + OTHER_MECHS), max_size=6))
            first = draw(st.sampled_from([b" ", b"=", b"  ", b"\t"])) if names else b""
            between = draw(st.sampled_from([b" ", b"  ", b"\t"]))
            contents.append(recased(b"AUTH", flips) + first + between.join(recased(n, ~flips) for n in names))
            ext.add(b"AUTH")
            mechs.update(n for n in names if n in MECH_BITS)
        elif kind == "size":
            how = draw(st.sampled_from([b" ", b"=", b"\t", b"  "]))
            digits = draw(st.booleans())
            if digits:
                param = str(draw(st.integers(0, 10 ** 40))).encode()
            else:
                param = draw(st.sampled_from(SIZE_GARBAGE))
            tail = draw(st.sampled_from([b"", b" 7", b" x"])) if digits else b" x"  # the first word counts
            contents.append(recased(b"SIZE", flips) + how + param + tail)
            ext.add(b"SIZE")
            if digits:
                size = int(param)
        else:  # "X" first: no keyword can be read from it, whatever follows
            contents.append(b"X" + bytes([c for c in draw(st.binary(max_size=60)) if c != 0x0A]))
    n = len(contents)
    data = b"".join([b"250" + (b" " if i == n - 1 else b"-") + c + b"\r\n" for i, c in enumerate(contents)])
    return data, ext, mechs, size


def check_sane(c):
    assert isinstance(c.size_limit, int) and c.size_limit >= 0
    for name in list(KNOWN.values()) + ["pipelining", "Auth", "DSN", "", "\u00e9", "X" * 300]:
        assert isinstance(c.has_extension(name), bool)
    assert isinstance(c._mechs, bytes) and len(c._mechs) <= 1026  # one bounded object


@fuzz(600)
@given(ehlo_replies(), read_sizes)
def test_ehlo_reply_sets_extensions_mechanisms_and_size(case, sizes):
    data, ext, mechs, size = case
    c = MemClient(fuzz_portable.Chopped({"EHLO": data}, sizes))
    try:
        c.mail_send("a@x.org", smtp_duo.PRIORITY_NORMAL, "s", "b")
    except smtp_duo.SMTPError as e:  # a small SIZE refuses the mail: fine, the state is checked
        assert e.status == smtp_duo.OVERSIZE_MAIL_DATA and size, e
    check_sane(c)
    assert {kw for kw, name in KNOWN.items() if c.has_extension(name)} == ext
    assert {kw for kw, name in KNOWN.items() if c.has_extension(name.lower())} == ext
    assert {m for m in MECH_BITS if b" " + m + b" " in c._mechs} == mechs
    assert c.size_limit == size


ehlo_line = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    st.tuples(st.sampled_from([b"AUTH", b"auth", b"SIZE", b"size", b"Size=", b"AUTH=", b"8bitmime"]),
              st.binary(max_size=80)).map(lambda t: (t[0] + t[1]).replace(b"\n", b"")),
    st.integers(900, 1019).map(lambda n: (b"AUTH" + b" a" * n)[:n]),  # many words, up to the cap
    st.integers(900, 1014).map(lambda n: b"SIZE " + b"9" * n),
)


@fuzz(400)
@given(st.lists(ehlo_line, max_size=8), read_sizes)
def test_ehlo_parser_survives_any_lines(lines, sizes):
    # Through the reader (lines of up to 1020 octets after "250-"), and straight into the parser.
    data = b"250-mem.test\r\n" + b"".join([b"250-" + x + b"\r\n" for x in lines]) + b"250 end\r\n"
    run_case(({"EHLO": data}, sizes, {}, False, ["a@x.org"]))
    c = MemClient(MemServer())
    c._ehlo_line(0, b"mem.test")
    for i, x in enumerate(lines):
        c._ehlo_line(i + 1, x)
    check_sane(c)


# -- bounded memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", [0, 3], ids=["reads of 1 KiB", "reads of 3 bytes"])
@pytest.mark.parametrize("name,head,unit", FLOODS, ids=[f[0] for f in FLOODS])
def test_a_flood_is_refused_early_in_bounded_memory(name, head, unit, segment):
    # The server offers 8 MiB (1 MiB in 3-byte reads, should a regression read it all); the
    # reader refuses at the line or line-count cap, having read at most 100 lines and one
    # buffer, and the whole call allocates under 64 KiB (client included).
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        e, served = run_flood(head, unit, (1 if segment else 8) * MIB, segment)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(e, smtp_duo.SMTPProtocolError) and e.status == smtp_duo.OVERSIZE_SERVER_REPLY, e
    assert served <= flood_bound(head, unit)
    assert peak < 64 * KIB, peak


def test_tracemalloc_sees_what_a_holding_reader_would_hold():
    # The control for the test above: a reader that kept what it was offered would be seen.
    flood = fuzz_portable.Flood(b"", b"x", 8 * MIB)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        held = bytearray()
        buf = bytearray(1024)
        while True:
            n = flood.read_into(memoryview(buf), 0)
            if not n:
                break
            held += buf[:n]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(held) == 8 * MIB and peak >= 8 * MIB


@pytest.mark.parametrize("name,data,command", PROBES, ids=[p[0] for p in PROBES])
def test_one_reply_line_costs_little_memory_on_cpython(name, data, command):
    srv = MemServer()
    c = MemClient(srv, debug=fuzz_portable.debug)
    c._link = srv.connect()
    c._run(c._reply("greeting"))
    srv.out = data
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        c._run(c._reply(command, None, c._ehlo_line if command == "EHLO" else None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= fuzz_portable.COST_MAX, peak


# -- the portable fuzzer -------------------------------------------------------------------------------


def test_portable_fuzz_on_cpython():
    r = fuzz_portable.run(3000, SEED, verbose=True)
    assert r["failures"] == 0, r
    # The cases get everywhere: accepted mails, refusals, broken replies, silence, hang-ups.
    for outcome in ("Reply", "SMTPError", "SMTPProtocolError", "SMTPTimeoutError", "SMTPConnectionError",
                    "SMTPAuthenticationError", "SMTPRecipientsRefused"):
        assert r["outcomes"].get(outcome, 0) > 0, r["outcomes"]


MP_CASES = 6000
# The fuzzer itself (generator, MemServer, their code) takes ~40 KiB of a MicroPython heap and
# fragments it; 192k leaves the client room to spare, so a MemoryError here is the library's.
MP_HEAP = "192k"


@pytest.fixture(scope="module")
def mp_fuzz(micropython, mpy_dir):
    compile_all([HERE / "portable" / "memserver.py", HERE / "portable" / "fuzz_portable.py"], mpy_dir)
    p = run_micropython(micropython, mpy_dir, ["-m", "fuzz_portable", str(MP_CASES), str(SEED)], heap=MP_HEAP,
                        timeout=120)
    return p, p.stdout + p.stderr


def test_micropython_fuzz_gives_only_smtp_errors_on_a_flat_heap(mp_fuzz):
    p, out = mp_fuzz
    assert p.returncode == 0, out
    m = re.search(r"^fuzz: (\d+) cases, (\d+) failures, heap (\d+)/(\d+)$", p.stdout, re.M)
    assert m, out
    cases, failures, first, last = map(int, m.groups())
    assert (cases, failures) == (MP_CASES, 0), out
    assert last - first <= 512, out  # gc.collect(); gc.mem_alloc() before the 50th case and after the last
    low, high = map(int, re.search(r"^heap range (\d+)\.\.(\d+)$", p.stdout, re.M).groups())
    assert high - low <= 1024, out
    floods = re.findall(r"^flood: (.+): 8 MiB offered, (\d+) read, heap (\d+)/(\d+)$", p.stdout, re.M)
    assert [f[0] for f in floods] == [f[0] for f in FLOODS], out
    for (name, served, before, after), (_, head, unit) in zip(floods, FLOODS):
        assert int(served) <= flood_bound(head, unit), name
        assert int(after) - int(before) <= 1024, name


def test_micropython_one_reply_line_costs_bounded_heap(mp_fuzz):
    # Heap bytes allocated while reading one reply line of at most 1 KiB, counted with the GC
    # off (everything the reader asked for), without and with the debug transcript.
    p, out = mp_fuzz
    costs = re.findall(r"^cost: (.+): (\S+)/(\S+)$", p.stdout, re.M)
    assert [c[0] for c in costs] == [pr[0] for pr in PROBES], out

    def fits(n):  # a count of bytes, or "MemoryError"
        return n.isdigit() and int(n) <= fuzz_portable.COST_MAX

    over = ["%s: %s/%s bytes" % c for c in costs if not (fits(c[1]) and fits(c[2]))]
    assert not over, "reply lines costing over %d bytes of heap: %s" % (fuzz_portable.COST_MAX, over)
