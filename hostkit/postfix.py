"""Private Postfix instances on loopback for the tests and the benchmarks (stdlib only, needs
root), and Postfix's smtp-sink.

Install the packages with ``tools/install_postfix.sh``. Each ``PostfixServer``
lives in its own temporary directory (config, queue, data, SASL db, message
store, maillog), listens only on 127.0.0.1 and never touches /etc/postfix,
DNS, syslog or systemd. Every accepted message, whatever the recipient
domain, goes to a pipe(8) transport that writes it into the message store.

Ports:
  submission_port  AUTH PLAIN/LOGIN/CRAM-MD5 over plaintext (no TLS); MAIL
                   FROM without AUTH gets "530 5.7.0 <addr>: Sender address
                   rejected: Authentication required" (RCPT would also get
                   "554 5.7.1 ... Relay access denied").
  relay_port       no AUTH; anything from 127.0.0.1 is accepted.

With ``tls_cert``/``tls_key`` (PEM chain and key, copied into the instance)
two more ports, TLS 1.2+ only, no client certificates, no TLS session cache:
  starttls_port    STARTTLS offered; AUTH (same mechanisms and users as the
                   submission port) offered only after STARTTLS; MAIL before
                   STARTTLS gets "530 5.7.0 Must issue a STARTTLS command
                   first"; mail only from authenticated clients.
  tls_port         implicit TLS (wrapper mode, like port 465); AUTH offered;
                   mail only from authenticated clients.
The plaintext ports never offer STARTTLS. Handshakes (protocol, cipher,
failures) are logged to the maillog; start()'s readiness probe leaves one
"SSL_accept error ... lost connection" line for tls_port there.

What Postfix changes in ``data`` (see ``messages()``): lines end in LF, not
CRLF; the leading dot of dot-stuffed lines is removed; one ``Received:``
header (folded over several lines, continuation lines start with a TAB) is
prepended, e.g.::

    Received: from <HELO name> (unknown [127.0.0.1])
    \tby mail.smtp-duo.test (Postfix) with ESMTPA id 98EA520C316
    \tfor <bob@example.org>; Sat, 21 Nov 2026 23:38:52 +0000 (UTC)

("unknown" because client name lookup is off; ESMTPA after AUTH, else
ESMTP/SMTP, ESMTPS(A) over TLS, UTF8SMTP(A) with SMTPUTF8; with several
recipients there is no "for" clause and the ";" ends the "by" line). Nothing
else is
added: ``local_header_rewrite_clients`` is empty, so no Date/Message-ID/From/To
headers are filled in and no addresses are rewritten. ``strip_received()``
removes that first header.
"""

import atexit
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref

from hostkit.ports import free_ports

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SASLPASSWD2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
HOSTNAME = "mail.smtp-duo.test"


def postfix_available():
    """None when a private instance can start here, else why not."""
    if not os.access(POSTFIX, os.X_OK):
        return "Postfix is not installed (tools/install_postfix.sh)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    return None


def smtp_sink_path():
    """Postfix's smtp-sink (it takes every mail and throws it away), or None."""
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    return exe if os.access(exe, os.X_OK) else None

# pipe(8) target, run as nobody: $1 = store dir, then queue id, sender,
# recipients. One file per delivery: arg count, args (one per line), message.
# Written under a dot-name and renamed so readers never see partial files.
# Exit 75 (EX_TEMPFAIL) defers instead of bouncing into the store.
DELIVER_SH = r"""#!/bin/sh
dir=$1; shift
name=$(date +%s%N)-$$
{ echo $#; for a in "$@"; do printf '%s\n' "$a"; done; cat; } >"$dir/.$name" || exit 75
mv "$dir/.$name" "$dir/$name.msg" || exit 75
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = {hostname}
mydomain = smtp-duo.test
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP smtp_duo test instance
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No DNS: no reverse lookup of clients, no MX/A lookups anywhere.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
# Everything, for every address class, goes to the store. A fixed nexthop
# keeps all recipients of a message in one delivery.
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = store:store
virtual_transport = store:store
relay_transport = store:store
default_transport = store:store
store_destination_recipient_limit = 1000
# Deliver what the client sent: no header completion or address rewriting.
local_header_rewrite_clients =
biff = no
smtpd_relay_restrictions = permit_mynetworks, reject
# SASL (submission service only). Debian's smtpd ignores
# cyrus_sasl_config_path and reads $config_directory/sasl/smtpd.conf.
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {base}/conf/sasl
smtpd_sasl_local_domain = {realm}
smtpd_sasl_security_options = noanonymous
smtpd_tls_auth_only = no
submission_sender_restrictions = permit_sasl_authenticated,
    check_sender_access static:{{530 5.7.0 Authentication required}}
"""

# Appended to MAIN_CF with tls_cert. TLS stays off (level none) unless a
# service in master.cf turns it on. No session cache database and a zero
# cache timeout (no session tickets either): every handshake is a full one.
MAIN_CF_TLS = """\
smtpd_tls_chain_files = {base}/conf/tls/key.pem, {base}/conf/tls/chain.pem
smtpd_tls_security_level = none
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_ask_ccert = no
smtpd_tls_session_cache_database =
smtpd_tls_session_cache_timeout = 0
smtpd_tls_loglevel = 1
"""

# Per-service -o overrides so more listeners (e.g. TLS) can be added as lines.
MASTER_CF = """\
127.0.0.1:{relay_port} inet n - n - - smtpd
  -o syslog_name=postfix/relay
  -o smtpd_sasl_auth_enable=no
127.0.0.1:{submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=$submission_sender_restrictions
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
{tls_services}pickup     unix  n - n 60  1 pickup
cleanup    unix  n - n -   0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -   - trivial-rewrite
bounce     unix  - - n -   0 bounce
defer      unix  - - n -   0 bounce
trace      unix  - - n -   0 bounce
verify     unix  - - n -   1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -   - proxymap
proxywrite unix  - - n -   1 proxymap
showq      unix  n - n -   - showq
error      unix  - - n -   - error
retry      unix  - - n -   - error
discard    unix  - - n -   - discard
anvil      unix  - - n -   1 anvil
scache     unix  - - n -   1 scache
postlog    unix-dgram n - n - 1 postlogd
store      unix  - n n -   - pipe flags=q user=nobody null_sender=
  argv={base}/deliver.sh {base}/store ${{queue_id}} ${{sender}} ${{recipient}}
"""

# Inserted into MASTER_CF with tls_cert. Postfix 3.7 smtpd seeds OpenSSL's
# PRNG through tlsmgr(8) even without a session cache: without it STARTTLS
# gets "454 4.7.0 TLS not available due to local problem" (maillog: "no
# entropy for TLS key generation"). Its PRNG state file goes to
# $data_directory (private to the instance).
MASTER_CF_TLS = """\
127.0.0.1:{starttls_port} inet n - n - - smtpd
  -o syslog_name=postfix/starttls
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=$submission_sender_restrictions
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{tls_port} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_delay_reject=no
  -o smtpd_sender_restrictions=$submission_sender_restrictions
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
tlsmgr     unix  - - n 1000? 1 tlsmgr
"""

SASL_CONF = """\
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN CRAM-MD5
sasldb_path: {base}/conf/sasl/sasldb2
"""

_running = weakref.WeakSet()


@atexit.register
def _stop_all():
    for server in list(_running):
        server.stop()


def _pid_alive(pid):
    # The daemonized master is reparented to pid 1, which may reap it late:
    # a zombie counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _base_parent():
    # postfix/nobody must traverse every ancestor; a private TMPDIR won't do.
    d = os.path.realpath(tempfile.gettempdir())
    while d != "/":
        if not os.stat(d).st_mode & 0o001:
            return "/tmp"
        d = os.path.dirname(d)
    return None


def strip_received(data):
    """Remove the first (Postfix-added, possibly folded) Received: header."""
    if not data.startswith(b"Received:"):
        return data
    end = data.index(b"\n") + 1
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\n", end) + 1
    return data[end:]


class PostfixServer:
    """A private Postfix instance; see the module docstring."""

    def __init__(self, users=None, realm="example.test", tls_cert=None, tls_key=None):
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.users = dict(users if users is not None else {"alice": "secret"})
        self.realm = realm
        self.tls_cert = None if tls_cert is None else os.fspath(tls_cert)
        self.tls_key = None if tls_key is None else os.fspath(tls_key)
        self.base = None
        self.submission_port = self.relay_port = None
        self.starttls_port = self.tls_port = None
        self._master_pid = None
        self._watchdog = None

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=15):
        if self.base is not None:
            raise RuntimeError("PostfixServer already started")
        if os.geteuid() != 0:
            raise RuntimeError("PostfixServer needs root (postfix start)")
        for prog in (POSTFIX, SASLPASSWD2):
            if not os.access(prog, os.X_OK):
                raise RuntimeError(f"{prog} missing: run tools/install_postfix.sh")
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                # A port picked by free_ports() was taken before master bound it.
                if "Address already in use" not in str(e) or attempt == 2:
                    raise

    def _start_once(self, timeout):
        self.base = base = tempfile.mkdtemp(prefix="smtp-duo-postfix-",
                                            dir=_base_parent())
        os.chmod(base, 0o755)  # postfix/nobody must traverse it
        _running.add(self)
        try:
            self._setup(base)
            self._launch(base, timeout)
        except BaseException:
            self.stop()
            raise

    def _setup(self, base):
        nobody = pwd.getpwnam("nobody")
        postfix_gid = grp.getgrnam("postfix").gr_gid
        tls = self.tls_cert is not None
        ports = free_ports(4 if tls else 2)
        self.relay_port, self.submission_port = ports[:2]
        if tls:
            self.starttls_port, self.tls_port = ports[2:]
        for d in ("conf", "conf/sasl", "queue", "store"):
            os.mkdir(os.path.join(base, d), 0o755)
        if tls:
            # Readable by root and the postfix group only.
            os.mkdir(os.path.join(base, "conf", "tls"), 0o755)
            for src, name in ((self.tls_cert, "chain.pem"), (self.tls_key, "key.pem")):
                dst = os.path.join(base, "conf", "tls", name)
                shutil.copyfile(src, dst)
                os.chown(dst, 0, postfix_gid)
                os.chmod(dst, 0o640)
        os.mkdir(os.path.join(base, "data"), 0o700)
        os.chown(os.path.join(base, "data"), pwd.getpwnam("postfix").pw_uid,
                 postfix_gid)
        os.chown(os.path.join(base, "store"), nobody.pw_uid, nobody.pw_gid)
        fmt = dict(base=base, hostname=HOSTNAME, realm=self.realm,
                   relay_port=self.relay_port,
                   submission_port=self.submission_port,
                   starttls_port=self.starttls_port, tls_port=self.tls_port)
        main_cf = MAIN_CF + (MAIN_CF_TLS if tls else "")
        fmt["tls_services"] = MASTER_CF_TLS.format(**fmt) if tls else ""
        for name, text, mode in (("conf/main.cf", main_cf.format(**fmt), 0o644),
                                 ("conf/master.cf", MASTER_CF.format(**fmt), 0o644),
                                 ("conf/sasl/smtpd.conf", SASL_CONF.format(**fmt), 0o644),
                                 ("deliver.sh", DELIVER_SH, 0o755)):
            path = os.path.join(base, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
            # Postfix re-reads (300 ms sleeps, ~2 s) config files modified
            # within the current second; backdate them.
            os.utime(path, (time.time() - 10,) * 2)
        sasldb = os.path.join(base, "conf", "sasl", "sasldb2")
        for user, password in self.users.items():
            subprocess.run([SASLPASSWD2, "-p", "-c", "-f", sasldb, "-u",
                            self.realm, user], input=password.encode(),
                           check=True, capture_output=True)
        if self.users:
            os.chown(sasldb, 0, postfix_gid)
            os.chmod(sasldb, 0o640)

    def _postfix(self, *args):
        return subprocess.run([POSTFIX, "-c", os.path.join(self.base, "conf"),
                               *args], capture_output=True, text=True)

    def _launch(self, base, timeout):
        r = self._postfix("start")
        if r.returncode != 0:
            raise RuntimeError(self._diagnose(
                f"postfix start failed (rc={r.returncode}): {r.stdout}{r.stderr}"))
        with open(os.path.join(base, "queue", "pid", "master.pid")) as f:
            self._master_pid = int(f.read().split()[0])
        # Cleans up if this Python process dies without running atexit.
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", 'read _; "$0" -c "$1/conf" stop; i=0; '
             'while [ $i -lt 50 ] && ! grep -qs zombie "/proc/$2/status" '
             '&& [ -e "/proc/$2" ]; do sleep 0.2; i=$((i+1)); done; '
             'kill -9 "$2"; rm -rf "$1"', POSTFIX, base, str(self._master_pid)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        pending = {p for p in (self.relay_port, self.submission_port,
                               self.starttls_port, self.tls_port) if p}
        while pending:
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise RuntimeError(self._diagnose(
                    f"postfix not listening on {sorted(pending)} after {timeout}s"))
            if pending:
                time.sleep(0.05)

    def _diagnose(self, msg):
        check = self._postfix("check")
        return (f"{msg}\n--- postfix check (rc={check.returncode}) ---\n"
                f"{check.stdout}{check.stderr}\n--- maillog tail ---\n"
                f"{self.log_tail()}")

    def stop(self):
        """Stop the instance and delete its directory. Safe to call twice."""
        if self.base is None:
            return
        _running.discard(self)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._master_pid is not None:
            self._postfix("stop")
            deadline = time.monotonic() + 10
            while _pid_alive(self._master_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(self._master_pid):
                os.kill(self._master_pid, signal.SIGKILL)
            self._master_pid = None
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    # -- inspection --------------------------------------------------------
    def log(self):
        """The instance's maillog text ('' if none yet)."""
        try:
            with open(os.path.join(self.base, "maillog"), errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def _queue_busy(self):
        # Messages still in incoming/active may have deliveries outstanding.
        for sub in ("incoming", "active"):
            for _, _, files in os.walk(os.path.join(self.base, "queue", sub)):
                if files:
                    return True
        return False

    def _read_store(self):
        store = os.path.join(self.base, "store")
        by_id = {}
        for name in sorted(n for n in os.listdir(store) if n.endswith(".msg")):
            with open(os.path.join(store, name), "rb") as f:
                raw = f.read()
            lines = raw.split(b"\n")
            nargs = int(lines[0])
            args = [a.decode("utf-8", "surrogateescape") for a in lines[1:nargs + 1]]
            data = b"\n".join(lines[nargs + 1:])
            msg = by_id.setdefault(args[0], {"queue_id": args[0], "sender": args[1],
                                             "recipients": [], "data": data})
            msg["recipients"] = sorted(set(msg["recipients"]) | set(args[2:]))
        return list(by_id.values())  # dicts keep first-delivery order

    def messages(self, count=None, timeout=10):
        """Delivered messages, in delivery order, one dict per queue id:
        {"queue_id", "sender" ('' for <>), "recipients" (sorted), "data"}.

        ``data`` is exactly what Postfix piped out (LF line endings, one
        Received: header prepended, see module docstring and
        ``strip_received()``). A message with recipients in several domains
        may arrive in several deliveries; they are merged. With ``count``,
        wait until at least that many messages are fully delivered, else
        raise TimeoutError with the maillog tail.
        """
        if count is None:
            return self._read_store()
        deadline = time.monotonic() + timeout
        while True:
            msgs = self._read_store()
            if len(msgs) >= count and not self._queue_busy():
                return msgs
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"expected {count} message(s), got {len(msgs)} after "
                    f"{timeout}s\n--- maillog tail ---\n{self.log_tail()}")
            time.sleep(0.05)

    def clear(self):
        """Forget all delivered messages."""
        store = os.path.join(self.base, "store")
        for name in os.listdir(store):
            if name.endswith(".msg"):
                os.unlink(os.path.join(store, name))
