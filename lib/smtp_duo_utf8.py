# smtp_duo_utf8: internationalised addresses for smtp_duo (SMTPUTF8, RFC 6531): an address
# with non-ASCII characters goes in MAIL and RCPT, and in the header as UTF-8, when the
# server offers SMTPUTF8; otherwise the mail fails before MAIL. smtp_duo imports it for a
# mail with such an address. MIT licence.

import smtp_duo


def params(client):
    """The MAIL parameters for a mail with a non-ASCII address (SMTPNotSupportedError when
    the server does not offer SMTPUTF8)."""
    if not client.has_extension("SMTPUTF8"):
        raise smtp_duo.SMTPNotSupportedError(
            "a non-ASCII address needs the server's SMTPUTF8, which it does not offer",
            smtp_duo.INVALID_PARAM, None, "MAIL", False)
    return b" SMTPUTF8"
