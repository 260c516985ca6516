"""smtp_duo_md5, the pure-Python MD5 behind AUTH CRAM-MD5 on boards whose hashlib has no md5.

Checked against RFC 1321's test suite and CPython's hashlib, on CPython and on the MicroPython
unix port; then smtp_duo is shown to fall back to it, on both runtimes, when hashlib lacks md5.
"""

import binascii
import hashlib
import math
import random
import sys
import types
from pathlib import Path

import pytest
from conftest import run_micropython

import smtp_duo
import smtp_duo_md5
from smtp_duo_md5 import md5

HERE = Path(__file__).resolve().parent

RFC1321 = [
    (b"", "d41d8cd98f00b204e9800998ecf8427e"),
    (b"a", "0cc175b9c0f1b6a831c399e269772661"),
    (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
    (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
    (b"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "d174ab98d277d9f5a5611c2c9f419d9f"),
    (b"1234567890" * 8, "57edf4a22be3c955ac49da2e2107b67a"),
]

# RFC 2195's CRAM-MD5 example.
CRAM = (b"tim", b"tanstaaftanstaaf", b"<1896.697170952@postoffice.reston.mci.net>")
CRAM_RESPONSE = b"tim b913a602c7eda7a495b4e6e7334d3890"


def hexdigest(h):
    return binascii.hexlify(h.digest()).decode()


def random_cases(seed, count, max_len=2000):
    """(data, chunk lengths) pairs; the chunks add up to len(data) and may be empty."""
    rng = random.Random(seed)
    lengths = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129]
    lengths += [rng.randint(0, max_len) for _ in range(count - len(lengths))]
    cases = []
    for n in lengths:
        data = rng.randbytes(n)
        chunks, left = [], n
        while left:
            c = min(left, rng.choice((0, 1, 3, 63, 64, 65, rng.randint(0, 300))))
            chunks.append(c)
            left -= c
        cases.append((data, chunks))
    return cases


# -- CPython --------------------------------------------------------------------------------


@pytest.mark.parametrize("data,expected", RFC1321)
def test_rfc1321_suite(data, expected):
    assert hexdigest(md5(data)) == expected
    h = md5()
    for b in data:
        h.update(bytes([b]))
    assert hexdigest(h) == expected


def test_sine_table():
    assert smtp_duo_md5._K == tuple(int(abs(math.sin(i + 1)) * 2**32) for i in range(64))


def test_random_chunks_match_hashlib():
    kinds = (bytes, bytearray, memoryview)
    for n, (data, chunks) in enumerate(random_cases(1321, 300)):
        h, pos = md5(), 0
        for c in chunks:
            h.update(kinds[n % 3](data[pos : pos + c]))
            pos += c
        assert h.digest() == hashlib.md5(data).digest(), (len(data), chunks)


def test_digest_does_not_finalise():
    h = md5(b"a" * 100)
    first = h.digest()
    assert h.digest() == first == hashlib.md5(b"a" * 100).digest()
    h.update(b"b" * 30)
    assert h.digest() == hashlib.md5(b"a" * 100 + b"b" * 30).digest()
    assert len(first) == h.digest_size == 16 and h.block_size == 64


def test_rejects_str():
    with pytest.raises(TypeError):
        md5().update("abc")


# -- MicroPython ----------------------------------------------------------------------------

# MicroPython's hash objects have no hexdigest(): hexlify the digests.
MP_DIGESTS = """\
import sys
from binascii import hexlify, unhexlify
from smtp_duo_md5 import md5

for line in open(sys.argv[1]):  # one input per line, in hex
    data = unhexlify(line.strip())
    whole = md5(data).digest()
    h = md5()
    view = memoryview(data)
    for i in range(0, len(data), 7):
        h.update(view[i : i + 7])
    print(hexlify(whole).decode(), hexlify(h.digest()).decode())

# Streaming a long input through one reused buffer: the heap is small, so memory that grew
# with the input would raise MemoryError.
chunk = bytearray(1000)
h = md5()
for i in range(100):
    for j in range(len(chunk)):
        chunk[j] = (i + j) & 255
    h.update(chunk)
print(hexlify(h.digest()).decode())
"""


def test_micropython_digests(micropython, mpy_dir, tmp_path):
    inputs = [d for d, _ in RFC1321] + [d for d, _ in random_cases(2195, 40)]
    script, lines_in = tmp_path / "md5_digests.py", tmp_path / "md5_inputs.txt"
    script.write_text(MP_DIGESTS)
    lines_in.write_text("".join(binascii.hexlify(d).decode() + "\n" for d in inputs))
    p = run_micropython(micropython, mpy_dir, [str(script), str(lines_in)], heap="32k", timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.split()
    for i, data in enumerate(inputs):
        expected = hashlib.md5(data).hexdigest()
        assert lines[2 * i : 2 * i + 2] == [expected, expected], len(data)
    long = bytes((i + j) & 255 for i in range(100) for j in range(1000))
    assert lines[-1] == hashlib.md5(long).hexdigest()
    assert len(lines) == 2 * len(inputs) + 1


# The shim directory goes first on sys.path: its hashlib.py shadows the built-in (extensible)
# hashlib, leaving sha1 and sha256 but no md5, as on a Pico W before 1.27. smtp_duo_md5.md5 is
# wrapped to count the hash objects smtp_duo takes from it.
MP_FALLBACK = """\
import sys
sys.path.insert(0, sys.argv[1])
import hashlib
print("md5" in dir(hashlib), "sha256" in dir(hashlib))

import smtp_duo_md5
made = []
python_md5 = smtp_duo_md5.md5


def counting_md5(*data):
    made.append(1)
    return python_md5(*data)


smtp_duo_md5.md5 = counting_md5
import smtp_duo

print(smtp_duo.cram_md5_response(b"tim", b"tanstaaftanstaaf",
                                 b"<1896.697170952@postoffice.reston.mci.net>").decode())
print(len(made))
"""


def test_micropython_cram_md5_falls_back(micropython, mpy_dir, tmp_path):
    script = tmp_path / "md5_fallback.py"
    script.write_text(MP_FALLBACK)
    p = run_micropython(micropython, mpy_dir, [str(script), str(HERE / "mpshim")], timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["False True", CRAM_RESPONSE.decode(), "2"]


def test_cpython_cram_md5_falls_back(monkeypatch):
    pico_hashlib = types.ModuleType("hashlib")  # a Pico W before 1.27: no md5
    pico_hashlib.sha1, pico_hashlib.sha256 = hashlib.sha1, hashlib.sha256
    monkeypatch.setitem(sys.modules, "hashlib", pico_hashlib)
    made = []

    def counting_md5(*data):
        made.append(1)
        return md5(*data)

    monkeypatch.setattr(smtp_duo_md5, "md5", counting_md5)
    assert smtp_duo.cram_md5_response(*CRAM) == CRAM_RESPONSE
    assert len(made) == 2  # inner and outer hash of the HMAC
    # And without the optional module there is nothing left to fall back to.
    monkeypatch.setitem(sys.modules, "smtp_duo_md5", None)
    with pytest.raises(ImportError):
        smtp_duo.cram_md5_response(*CRAM)
