#!/usr/bin/env bash
# Installs everything the tests and the demo need, idempotently:
#   .venv/ with requirements-dev.txt, Postfix (Debian packages), MicroPython unix port (.deps/).
# Safe to run again; a second run takes about a second.
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

bash tools/install_postfix.sh
bash tools/install_micropython.sh
