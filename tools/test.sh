#!/usr/bin/env bash
# The whole test suite in one command: installs what is missing (tools/setup.sh), then runs
# pytest over tests_host/ with the client on CPython and on the MicroPython unix port.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k postfix -x`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest tests_host "$@"
