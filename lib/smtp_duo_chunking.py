# smtp_duo_chunking: the message's size for smtp_duo: SIZE= on MAIL (RFC 1870, a message over
# the server's limit refused before it is sent) and, when the server offers CHUNKING (RFC
# 3030), the whole message as one BDAT chunk in the envelope's flight: one round trip fewer,
# no dot-stuffing. smtp_duo imports it when the server offers SIZE or CHUNKING. MIT licence.

import smtp_duo


class _Count:
    # The output interface (README section 3, Extensions), counting what would be sent without dots.
    dots = False
    counting = True
    unknown = False  # a part's size cannot be known before it is sent (a one-shot stream)
    window = 128  # quoted-printable windows while counting

    def __init__(self):
        self.n = 0

    def put(self, data):
        self.n += len(data)

    def stuff(self):
        pass

    def full(self):
        return False

    def terminate(self):
        return ()


def params(client, msg):
    """` SIZE=n` for MAIL (b"" without SIZE); sets msg.size, None when it cannot be known."""
    count = _Count()
    for _ in msg.write(count):
        pass
    msg.size = None if count.unknown else count.n
    if msg.size is None or not client.has_extension("SIZE"):
        return b""
    if client.size_limit and msg.size > client.size_limit:
        raise smtp_duo.SMTPError("message of %d octets over the server's SIZE limit %d"
                                 % (msg.size, client.size_limit), smtp_duo.OVERSIZE_MAIL_DATA,
                                 None, "MAIL", False)
    return b" SIZE=%d" % msg.size


class Chunk(smtp_duo.Output):
    """The flight with the message as one BDAT chunk: exactly msg.size octets, not stuffed,
    and never one more (a source that changed since it was measured fails the mail, and the
    connection is closed, so the server drops the incomplete chunk)."""

    begun = False

    def bdat(self):
        yield from self.ask(b"BDAT %d LAST" % self.msg.size, False)
        self.dots = False
        yield from self.client.write_message(self, self.msg)
        r = yield from self.replies()
        self.check(True)
        return r

    def begin(self):
        smtp_duo.Output.begin(self)
        self.begun = True

    def flush(self):
        if self.begun and self.total + self.n + len(self.big or b"") - self.start > (self.msg.size or 0):
            raise _changed()
        yield from smtp_duo.Output.flush(self)

    def terminate(self):
        yield from smtp_duo.Output.terminate(self)
        if self.total - self.start != self.msg.size:
            raise _changed()


def _changed():
    return smtp_duo.SMTPError("the body changed while it was sent (its size was measured "
                              "first): connection closed, mail not sent", smtp_duo.INVALID_PARAM,
                              None, "BDAT", False)
