# Replies in step with commands (both clients, CPython and MicroPython): a reply the client
# did not ask for (a stray line, an early reply, one reply too many in a pipelined flight) is
# an SMTPProtocolError, never the answer to the next command, so a mail the server refused
# never looks delivered. Against the in-memory server, which queues every reply the moment
# the command arrives, so what a stray line does is the same on every run.
# Run directly: `micropython replies_portable.py`.

import sys

import smtp_duo
from memserver import MemServer
from test_portable import EHLO_CHUNK, EHLO_ONE_BY_ONE, EHLO_PIPE, check, drivers, rng

EHLOS = (EHLO_ONE_BY_ONE, EHLO_PIPE, EHLO_CHUNK)
STRAY = b"250 2.0.0 stray\r\n"


def mail(n):
    return ("a@x.org", 2, "m%d" % n, "line %d\n" % n)


def protocol_error(r):
    return r == ("SMTPProtocolError", None)


def test_stray_line_behind_the_ehlo_reply_is_refused_before_mail():
    for d in drivers():
        for ehlo in EHLOS:
            for segment in (0, 1):
                # The case: EHLO reply and a stray 250 in one segment, the mail refused.
                srv = MemServer({"EHLO": ehlo + STRAY, "DOT": b"554 5.7.1 no\r\n",
                                 "BDAT": b"554 5.7.1 no\r\n"}, segment=segment)
                r = d.send(d.client(srv), *mail(1))
                check(protocol_error(r), (d, ehlo, segment, r))
                check(srv.messages == [] and b"MAIL" not in srv.received(), (d, ehlo, srv.received()))
                check(srv.closed and b"QUIT" not in srv.received(), (d, ehlo))


def test_stray_line_behind_the_greeting_is_refused():
    for d in drivers():
        srv = MemServer({"greeting": b"220 mem.test\r\n" + STRAY})
        r = d.send(d.client(srv), *mail(1))
        check(protocol_error(r) and srv.received() == b"", (d, r, srv.received()))


def test_extra_reply_in_a_pipelined_flight_fails_the_mail():
    for d in drivers():
        for ehlo in (EHLO_PIPE, EHLO_CHUNK):
            for verb in ("MAIL", "RCPT"):
                # One reply too many for the flight, then the message refused: the extra line
                # must not let the RCPT reply stand in for the final one.
                srv = MemServer({"EHLO": ehlo, verb: b"250 ok\r\n" + STRAY,
                                 "DOT": b"554 5.7.1 no\r\n", "BDAT": b"554 5.7.1 no\r\n"})
                r = d.send(d.client(srv), *mail(1))
                check(r != 250 and r[0] in ("SMTPProtocolError", "SMTPError"), (d, ehlo, verb, r))


def test_early_final_reply_behind_354_fails_the_mail():
    for d in drivers():
        # "354" and an early "250" in one segment, then the real answer to the data: 554.
        srv = MemServer({"DATA": b"354 go\r\n250 2.0.0 early\r\n", "DOT": b"554 5.7.1 no\r\n"})
        r = d.send(d.client(srv), *mail(1))
        check(protocol_error(r), (d, r))
        check(srv.messages == [], (d, srv.messages))  # the body was never sent


def test_stray_line_after_a_final_reply_in_a_session():
    for d in drivers():
        for ehlo in EHLOS:
            # Mail 1's 250 comes with a stray 250 behind it; mail 2 is refused by the server.
            # Mail 1 cannot be trusted (the stray may be its real answer): a protocol error;
            # mail 2 goes over a new connection and gets its own 554, not the stray 250.
            srv = MemServer({"EHLO": ehlo, "DOT": [b"250 ok\r\n" + STRAY, b"554 5.7.1 no\r\n"],
                             "BDAT": [b"250 ok\r\n" + STRAY, b"554 5.7.1 no\r\n"]})
            r = d.session(d.client(srv), [mail(1), mail(2)])
            check(protocol_error(r[0]) and r[2] == ("SMTPError", 554), (d, ehlo, r))
            check(srv.connections == 2, (d, ehlo, srv.connections))


def test_quit_answered_by_a_mail_reply_fails_the_mail():
    for d in drivers():
        # QUIT is answered 221; a 554 there is the answer to an earlier command, so the one
        # taken as the final reply was not. 421 and 500-504 are what a server may say to QUIT.
        for quit, ok in ((b"554 5.7.1 late\r\n", False), (b"250 2.0.0 late\r\n", False),
                         (b"421 4.3.0 bye\r\n", True), (b"500 5.5.2 what\r\n", True), (None, True)):
            srv = MemServer({"QUIT": quit})
            r = d.send(d.client(srv), *mail(1))
            check(r == 250 if ok else protocol_error(r), (d, quit, r))


class ClosingServer(MemServer):
    # Closes the connection right behind its reply to the message (no QUIT awaited).
    def _next(self, verb):
        v = MemServer._next(self, verb)
        if verb == "DOT":
            self.closing = True  # set before the reply is queued: it still goes out
        return v

    def _chunk_end(self):
        MemServer._chunk_end(self)
        self.closing = True


def test_a_server_that_closes_right_after_the_final_reply_is_fine():
    for d in drivers():
        for ehlo in EHLOS:
            srv = ClosingServer({"EHLO": ehlo})
            check(d.send(d.client(srv), *mail(1)) == 250 and len(srv.messages) == 1, (d, ehlo))


# -- the property: any interleaving of extra, early or missing replies ---------------------------


class PlanServer(MemServer):
    """Decides each real reply at random as the command arrives (a sender or recipient refused
    now and then, the message refused or deferred) and now and then damages the reply stream:
    a line too many behind a reply, a reply missing, the next reply sent early behind this one,
    or the connection closed. It keeps the verdict it really gave each mail (by the recipients,
    which carry the mail's name): "refused" when a refusal was sent for the sender, every
    recipient, DATA or the message, "accepted" when the message got a 2xx."""

    def __init__(self, ehlo, rnd, mutate, segment):
        MemServer.__init__(self, {"EHLO": ehlo}, segment=segment)
        self.rnd = rnd
        self.mutate = mutate  # chance per reply of a damage
        self.mutations = 0
        self.early = None  # the code already sent, early, for the next command
        self.tx = None
        self.txs = []

    def verdict(self, name):
        v = "none"
        for tx in self.txs:
            if tx["name"] == name:
                v = "refused" if tx["refused"] else "accepted" if tx["accepted"] else "open"
        return v

    def _pick(self, *choices):  # (weight, code) pairs
        total = 0
        for w, _ in choices:
            total += w
        x = self.rnd.getrandbits(16) % total
        for w, c in choices:
            if x < w:
                return c
            x -= w
        return choices[-1][1]

    def _decide(self, verb):
        tx = self.tx
        if verb == "MAIL":
            return self._pick((9, 250), (1, 550))
        if verb == "RSET":
            return 250
        if verb in ("RCPT", "DATA", "BDAT", "DOT") and tx is None:
            return 503
        if verb == "RCPT":
            return self._pick((3, 250), (1, 550))
        if verb == "DATA":
            return 354 if tx["ok"] else 554
        if verb == "BDAT" and not tx["ok"]:
            return 554
        if verb in ("DOT", "BDAT"):
            return self._pick((6, 250), (2, 554), (2, 451))
        return None  # greeting, EHLO, QUIT, unknown: the defaults

    def _sent(self, verb, code):
        # What the mail's transaction now is, from the code this command really got.
        if verb == "MAIL":
            self.tx = {"name": None, "mail": code, "ok": 0, "rcpts": 0, "refused": code >= 400,
                       "accepted": False}
            self.txs.append(self.tx)
            return
        tx = self.tx
        if tx is None or verb not in ("RCPT", "DATA", "DOT", "BDAT"):
            if verb == "RSET":
                self.tx = None
            return
        if verb == "RCPT":
            line = self.commands[-1]
            tx["name"] = line[line.find(b"<") + 1 : line.find(b"-")].decode()
            tx["rcpts"] += 1
            tx["ok"] += code < 400
            return
        if code >= 400 or not tx["ok"]:
            tx["refused"] = True
        elif verb != "DATA" and tx["mail"] < 400:
            tx["accepted"] = True

    def _next(self, verb):
        code = self._decide(verb)
        if self.early is not None:  # answered already, early, behind the previous reply
            if code is not None:
                self._sent(verb, self.early)
            self.early = None
            return b""
        real = MemServer._next(self, verb) if code is None else b"%d real\r\n" % code
        damage = self.rnd.getrandbits(16) % 1000 < self.mutate * 1000
        if damage:
            self.mutations += 1
            kind = self.rnd.getrandbits(8) % 5
            if kind == 0:
                return b""  # no reply at all
            if kind == 1:
                return None  # the connection closes instead
        if code is not None:
            self._sent(verb, code)
        if real is None or not damage:
            return real
        if kind == 2:
            self.early = 250  # the next command's reply comes now
            return real + b"250 2.0.0 early\r\n"
        extra = b"%d 2.0.0 extra\r\n" % self._pick((4, 250), (1, 354), (1, 221), (1, 451), (1, 554))
        if kind == 3:
            return real + extra
        return real + b"250-multi\r\n" + extra


def replay(seed, trials):
    rnd = rng(seed)
    done = mutated = 0
    for d in drivers():
        for t in range(trials):
            ehlo = EHLOS[rnd.getrandbits(8) % 3]
            segment = (0, 0, 1, 3, 7)[rnd.getrandbits(8) % 5]
            mutate = (0, 0.05, 0.15, 0.3)[rnd.getrandbits(8) % 4]
            srv = PlanServer(ehlo, rnd, mutate, segment)
            n = 1 + rnd.getrandbits(8) % 3
            mails = []
            for i in range(n):
                name = "m%d" % (t * 10 + i)
                rcpts = ["%s-r%d@x.org" % (name, k) for k in range(1 + rnd.getrandbits(8) % 3)]
                mails.append((rcpts, 2, name, "line %s\n" % name))
            c = d.client(srv)
            if n > 1 and rnd.getrandbits(1):
                try:
                    r = d.session(c, mails)[0::2]
                except smtp_duo.SMTPError as e:  # the session could not open: no mail went
                    r = [(type(e).__name__, e.code)] * n
            else:
                r = [d.send(c, *m) for m in mails]
            for m, res in zip(mails, r):
                v = srv.verdict(m[2])
                where = (d, seed, t, ehlo, segment, mutate, m[2], res, v, srv.mutations)
                check(res == 250 or isinstance(res, tuple) and res[0].startswith("SMTP"), where)
                if res == 250:  # never a success for a mail the server refused
                    check(v != "refused", where)
                if not srv.mutations:  # an undamaged stream: exactly the server's verdict
                    check((res == 250) == (v == "accepted"), where)
            done += 1
            mutated += srv.mutations > 0
    return done, mutated


def test_any_interleaving_of_extra_early_or_missing_replies():
    done, mutated = replay(12, 150)
    check(mutated * 3 > done, (done, mutated))  # most runs really were damaged


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
