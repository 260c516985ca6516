#!/usr/bin/env bash
# The main job in one command: installs what is missing, then sends a sensor alert through
# smtp_duo on MicroPython to a local SMTP server and prints what arrived.
# Flags (see --help) send it to a real server instead, e.g.
#   bash tools/demo.sh --server mail.lan --to me@example.com
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup.sh" --demo >&2
exec "$root/.venv/bin/python" "$root/tools/demo.py" "$@"
