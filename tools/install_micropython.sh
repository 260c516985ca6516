#!/usr/bin/env bash
# Installs a real MicroPython (the unix port, 1.25 with TLS) for the host tests.
#
# Debian 12 has no micropython package, but Debian 13 "trixie" has one. Its binary needs
# trixie's glibc, so this script fetches trixie's packages with a private apt configuration
# (the system's apt sources, lists and caches are left alone), unpacks them into
#     ${SMTP_DUO_DEPS:-<repo root>/.deps}/micropython/
# and writes a wrapper
#     ${SMTP_DUO_DEPS:-<repo root>/.deps}/bin/micropython
# that runs the binary through trixie's own dynamic loader. The wrapper finds everything
# relative to itself, so the deps folder can be moved.
#
# Usage: tools/install_micropython.sh [--force]
#   --force   reinstall even if the installed runtime works
# Environment:
#   SMTP_DUO_DEPS           where to install (default: .deps at the repo root)
#   SMTP_DUO_DEBIAN_MIRROR  Debian mirror URI (default: the first "URIs:" line of
#                           /etc/apt/sources.list.d/debian.sources, else the first
#                           "deb" line of /etc/apt/sources.list)
#
# Already installed and working: returns at once (one run of the wrapper).
set -euo pipefail

prog=install_micropython
die() {
    echo "$prog: error: $*" >&2
    exit 1
}
say() {
    echo "$prog: $*" >&2
}

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd -- "$script_dir/.." && pwd)
deps=${SMTP_DUO_DEPS:-$repo_root/.deps}
mkdir -p -- "$deps" || die "cannot create $deps"
deps=$(cd -- "$deps" && pwd)

wrapper=$deps/bin/micropython
root=$deps/micropython

works() {
    [ -x "$wrapper" ] && "$wrapper" -c "import sys" >/dev/null 2>&1
}

# Fast path: nothing to do.
if [ "$force" = 0 ] && works; then
    exit 0
fi

# --- from here on: a real install -------------------------------------------------------

stage=
cleanup() {
    if [ -n "$stage" ] && [ -d "$stage" ]; then
        rm -rf -- "$stage"
    fi
}
trap cleanup EXIT
trap 'echo "$prog: error: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

case $(uname -m) in
    x86_64) ;;
    *) die "only x86_64 hosts are supported (this is $(uname -m))" ;;
esac
triplet=x86_64-linux-gnu
ldso=ld-linux-x86-64.so.2

for tool in apt-get dpkg; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: this script needs a Debian-based host"
done

# Several test processes may call this at once: one installs, the others wait and reuse it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$deps/.install_micropython.lock"
    flock 9
    if [ "$force" = 0 ] && works; then
        exit 0
    fi
fi

aptdir=$deps/apt
# shellcheck source=tools/trixie_apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/trixie_apt.sh"
trixie_apt "$aptdir" deb || die "cannot set up the private apt configuration"
mirror=$trixie_mirror

# The binary's libraries (see `ld.so --list` below); libgcc-s1 is what libc6 depends on.
packages=(micropython libc6 libgcc-s1 libffi8 libmbedcrypto16 libmbedtls21 libmbedx509-7)

say "updating the package list of Debian trixie from $mirror"
apt-get "${apt_opts[@]}" --error-on=any update >"$aptdir/update.log" 2>&1 || {
    cat "$aptdir/update.log" >&2
    die "apt-get update of the private trixie sources failed (log above)"
}

say "downloading: ${packages[*]}"
rm -f -- "$aptdir/archives/"*.deb
(cd -- "$aptdir/archives" && apt-get "${apt_opts[@]}" download "${packages[@]}") >"$aptdir/download.log" 2>&1 || {
    cat "$aptdir/download.log" >&2
    die "apt-get download failed (log above)"
}

stage=$(mktemp -d "$deps/micropython.new.XXXXXX")
for deb in "$aptdir/archives/"*.deb; do
    dpkg -x "$deb" "$stage" || die "dpkg -x $deb failed"
done

lib=$stage/usr/lib/$triplet
[ -x "$stage/usr/bin/micropython" ] || die "the micropython package has no usr/bin/micropython"
[ -x "$lib/$ldso" ] || die "libc6 has no usr/lib/$triplet/$ldso"

# ldd-style check: every library the binary needs must come from the unpacked root.
listing=$("$lib/$ldso" --library-path "$lib" --list "$stage/usr/bin/micropython" 2>&1) || {
    echo "$listing" >&2
    die "the dynamic loader cannot resolve micropython's libraries (output above)"
}
missing=$(echo "$listing" | awk -v root="$stage/" '/=>/ && index($3, root) != 1 { print $1 }')
if [ -n "$missing" ] || echo "$listing" | grep -q 'not found'; then
    echo "$listing" >&2
    die "libraries not found in the unpacked packages: ${missing:-see above}"
fi

# Swap the new root in, then (re)write the wrapper.
rm -rf -- "$root"
mv -- "$stage" "$root"
stage=
mkdir -p "$deps/bin"
cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Written by tools/install_micropython.sh: runs Debian trixie's MicroPython unix port through
# trixie's own dynamic loader. Paths are relative to this file, so its folder can be moved.
self=\$(readlink -f -- "\$0" 2>/dev/null) || self=\$0
here=\$(cd -- "\$(dirname -- "\$self")" && pwd) || exit 127
root=\$(dirname -- "\$here")/micropython
lib=\$root/usr/lib/$triplet
exec "\$lib/$ldso" --library-path "\$lib" "\$root/usr/bin/micropython" "\$@"
EOF
chmod 755 "$wrapper.tmp"
mv -f -- "$wrapper.tmp" "$wrapper"

check='import sys, socket, tls, hashlib; print(sys.implementation.version)'
out=$("$wrapper" -c "$check" 2>&1) || {
    echo "$out" >&2
    die "the installed micropython does not run (output above)"
}
say "installed MicroPython $out: $wrapper"
