#!/usr/bin/env bash
# Install Postfix + Cyrus SASL tools for the private instances of
# hostkit/postfix.py (the tests' and the benchmarks'). Idempotent; never leaves
# the system-wide Postfix instance running unless it was already running before.
set -euo pipefail

PACKAGES=(postfix sasl2-bin libsasl2-modules)
POLICY=/usr/sbin/policy-rc.d
POSTFIX=/usr/sbin/postfix

die() { echo "install_postfix.sh: ERROR: $*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install_postfix.sh: already installed: ${PACKAGES[*]}"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root to install: ${missing[*]}"
command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu only)"

# Is the system-wide instance running already? (No systemd here, so ask postfix.)
was_running=no
if [[ -x $POSTFIX ]] && "$POSTFIX" status >/dev/null 2>&1; then
    was_running=yes
fi

# Keep maintainer scripts from starting services while installing.
created_policy=no
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    created_policy=yes
fi
cleanup() { [[ $created_policy == yes ]] && rm -f "$POLICY"; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
    || die "debconf-set-selections failed"
echo "install_postfix.sh: installing: ${missing[*]}"
apt-get update -q || die "apt-get update failed"
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
    || die "apt-get install ${PACKAGES[*]} failed"

if [[ $was_running == no ]] && "$POSTFIX" status >/dev/null 2>&1; then
    echo "install_postfix.sh: stopping system-wide postfix started by the install"
    "$POSTFIX" stop >/dev/null 2>&1 || true
fi

for p in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] \
        || die "package $p is not installed after apt-get"
done
[[ -x /usr/sbin/saslpasswd2 ]] || die "saslpasswd2 missing after install"
echo "install_postfix.sh: installed $(dpkg-query -W -f='${Package} ${Version}' postfix)"
