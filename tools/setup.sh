#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently:
#   .venv/ with requirements-dev.txt, Postfix (Debian packages), the MicroPython unix port
#   (.deps/), firmware with smtp_duo frozen in (unix + qemu), the boards' type stubs.
# Safe to run again; a second run takes a few seconds.
#   tools/setup.sh --demo   only what tools/demo.sh needs: the venv and the MicroPython runtime.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.requirements-dev.txt
if ! cmp -s requirements-dev.txt "$stamp"; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
fi

bash tools/install_micropython.sh
if [ "${1:-}" = "--demo" ]; then
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
