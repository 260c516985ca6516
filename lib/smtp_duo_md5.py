# smtp_duo_md5: MD5 (RFC 1321) in pure Python, for firmware whose hashlib has no md5
# (Pico W before MicroPython 1.27). smtp_duo needs it only for AUTH CRAM-MD5; MD5 is no
# longer collision resistant, so do not use it for anything that needs a secure hash.
# MIT licence.

from struct import pack, pack_into, unpack_from

# floor(abs(sin(i + 1)) * 2**32): written out because a board's single-precision float
# cannot compute it.
_K = (
    0xD76AA478, 0xE8C7B756, 0x242070DB, 0xC1BDCEEE,
    0xF57C0FAF, 0x4787C62A, 0xA8304613, 0xFD469501,
    0x698098D8, 0x8B44F7AF, 0xFFFF5BB1, 0x895CD7BE,
    0x6B901122, 0xFD987193, 0xA679438E, 0x49B40821,
    0xF61E2562, 0xC040B340, 0x265E5A51, 0xE9B6C7AA,
    0xD62F105D, 0x02441453, 0xD8A1E681, 0xE7D3FBC8,
    0x21E1CDE6, 0xC33707D6, 0xF4D50D87, 0x455A14ED,
    0xA9E3E905, 0xFCEFA3F8, 0x676F02D9, 0x8D2A4C8A,
    0xFFFA3942, 0x8771F681, 0x6D9D6122, 0xFDE5380C,
    0xA4BEEA44, 0x4BDECFA9, 0xF6BB4B60, 0xBEBFBC70,
    0x289B7EC6, 0xEAA127FA, 0xD4EF3085, 0x04881D05,
    0xD9D4D039, 0xE6DB99E5, 0x1FA27CF8, 0xC4AC5665,
    0xF4292244, 0x432AFF97, 0xAB9423A7, 0xFC93A039,
    0x655B59C3, 0x8F0CCC92, 0xFFEFF47D, 0x85845DD1,
    0x6FA87E4F, 0xFE2CE6E0, 0xA3014314, 0x4E0811A1,
    0xF7537E82, 0xBD3AF235, 0x2AD7D2BB, 0xEB86D391,
)

# Left-rotation amounts: four per round, repeated over the round's 16 steps.
_S = (7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21)


def _compress(h, block, off):
    """Mix the 64-byte block at block[off:] into the state list h."""
    x = unpack_from("<16I", block, off)
    K = _K
    S = _S
    a, b, c, d = h
    for i in range(64):
        r = i >> 4
        # F, G, H and I of RFC 1321; F and G rewritten to need no bitwise NOT, which would
        # make negative ints.
        if r == 0:
            f = d ^ (b & (c ^ d))
            g = i
        elif r == 1:
            f = c ^ (d & (b ^ c))
            g = (5 * i + 1) & 15
        elif r == 2:
            f = b ^ c ^ d
            g = (3 * i + 5) & 15
        else:
            f = c ^ (b | (d ^ 0xFFFFFFFF))
            g = (7 * i) & 15
        f = (a + f + K[i] + x[g]) & 0xFFFFFFFF
        s = S[r << 2 | i & 3]
        # The bits the shift pushes past 32 vanish in the final mask.
        a, d, c, b = d, c, b, (b + (f << s | f >> (32 - s))) & 0xFFFFFFFF
    h[0] = (h[0] + a) & 0xFFFFFFFF
    h[1] = (h[1] + b) & 0xFFFFFFFF
    h[2] = (h[2] + c) & 0xFFFFFFFF
    h[3] = (h[3] + d) & 0xFFFFFFFF


class md5:
    """hashlib-style MD5: md5(data=b""), update(data), digest(). digest() does not finalise:
    more data may follow and digest() be asked again."""

    digest_size = 16
    block_size = 64

    def __init__(self, data=b""):
        self._h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
        self._buf = bytearray(64)  # the partial block; its length is self._len % 64
        self._len = 0
        if data:
            self.update(data)

    def update(self, data):
        data = memoryview(data)  # slices without copying; refuses str like hashlib does
        n = len(data)
        fill = self._len & 63
        self._len += n
        i = 0
        if fill:
            i = min(64 - fill, n)
            self._buf[fill : fill + i] = data[:i]
            if fill + i < 64:
                return
            _compress(self._h, self._buf, 0)
        while n - i >= 64:
            _compress(self._h, data, i)
            i += 64
        self._buf[: n - i] = data[i:]

    def digest(self):
        # Pad copies of the state so that this object can go on hashing.
        h = self._h[:]
        buf = bytearray(self._buf)
        fill = self._len & 63
        buf[fill] = 0x80
        buf[fill + 1 :] = bytes(63 - fill)
        if fill >= 56:  # no room for the length: it goes in one more block
            _compress(h, buf, 0)
            buf[:] = bytes(64)
        bits = self._len << 3
        pack_into("<II", buf, 56, bits & 0xFFFFFFFF, bits >> 32 & 0xFFFFFFFF)
        _compress(h, buf, 0)
        return pack("<4I", *h)
