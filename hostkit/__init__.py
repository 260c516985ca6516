"""hostkit: host-only development code shared by tools/ and tests_host/. It never goes on a board.

Both the tools (run as scripts: each puts the repository's root on sys.path first) and the tests
(tests_host/conftest.py puts it there) import it; tools/ and tests_host/ never import each other.
A test that needs a tool's figures runs the tool as a program and reads its --json output.
manifest.py freezes only lib/ and package*.json lists only lib/, so nothing here reaches a board
or a mip index.

  ports    free_port(), free_ports(n): loopback ports for the servers the tools and tests start
  mpy      MicroPython's host programs: the unix port, mpy-cross (compile_mpy()), mpremote
  qemu     the emulated Cortex-M board (QEMU driven by mpremote, RawRepl), its flash layout and
           the littlefs image builder for it
  postfix  private Postfix instances on loopback (PostfixServer), Postfix's smtp-sink
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository's root
