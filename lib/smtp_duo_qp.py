# smtp_duo_qp: quoted-printable text parts for smtp_duo (RFC 2045 6.7), for text that cannot
# go 7bit or 8bit: 8-bit text to a server without 8BITMIME, a line over 998 octets, a NUL,
# or a one-shot stream that cannot be scanned first. smtp_duo imports it when a mail needs
# it (README section 5). MIT licence.

_HEX = b"0123456789ABCDEF"


class QP:
    """The quoted-printable sink of a smtp_duo text part: text(data, i, j) takes windows of
    the text as they are (CR, LF or CRLF line ends, a CRLF maybe split between two windows),
    end() finishes. Lines of at most 76 characters with soft breaks; "=", a blank
    before a line end and every other octet outside printable ASCII as =XX; a line-leading
    "." stuffed under DATA. A line is built in a small buffer and put whole."""

    def __init__(self, out):
        self.out = out
        self.line = bytearray(76)
        self.mv = memoryview(self.line)
        self.col = 0
        self.blank = -1  # a space or tab held back: encoded if the line ends after it
        self.cr = False  # the last octet was a CR: an LF next completes that line end

    def text(self, data, i, j):
        # Octet by octet from the window itself: no copy of it is made.
        cr = self.cr
        while i < j:
            c = data[i]
            i += 1
            if c == 10 and cr:
                cr = False
                continue
            cr = c == 13
            if cr or c == 10:
                self.end(True)
                continue
            if self.blank >= 0:
                self._emit(self.blank, 1)
                self.blank = -1
            if c == 32 or c == 9:
                self.blank = c
            else:
                self._emit(c, 3 if c == 61 or c > 126 or c < 32 else 1)
        self.cr = cr

    def _emit(self, c, width):
        if self.col + width > 75:  # a soft line break
            self._put(b"=\r\n")
        if width == 1:
            if not self.col and c == 46 and self.out.dots:
                self.out.stuff()
            self.line[self.col] = c
            self.col += 1
        else:
            self._hex(c)

    def _hex(self, c):
        # "=XX" into the line, an octet at a time: nothing allocated per octet encoded.
        line = self.line
        line[self.col] = 61
        line[self.col + 1] = _HEX[c >> 4]
        line[self.col + 2] = _HEX[c & 15]
        self.col += 3

    def _put(self, end):
        self.out.put(self.mv[: self.col])
        self.out.put(end)
        self.col = 0

    def end(self, eol=False):
        """The end of a line (eol), or of the text: a held blank encoded, CRLF."""
        if self.blank >= 0:  # RFC 2045 6.7 (3): a trailing blank is encoded
            if self.col + 3 > 76:
                self._put(b"=\r\n")
            self._hex(self.blank)
            self.blank = -1
        if eol or self.col:
            self._put(b"\r\n")
