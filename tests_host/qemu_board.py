"""An emulated Cortex-M board (MicroPython's qemu port, machine mps2-an385) driven by mpremote.

    board = QemuBoard(ROOT / ".deps/firmware/qemu/firmware.elf").start()
    print(board.exec("import smtp_duo; print(smtp_duo.__version__)"))
    board.stop()

The code is tools/qemu.py, shared with tools/board_ram.py (which needs the same QEMU handling);
this module loads it by its path and re-exports its names, so the tests keep importing
`qemu_board` and tools/ never needs to be on sys.path. See tools/qemu.py for the details.
"""

import importlib.util
import sys
from pathlib import Path

_NAME = "smtp_duo_tools_qemu"  # a name of its own in sys.modules: no clash with any "qemu"
_PATH = Path(__file__).resolve().parent.parent / "tools" / "qemu.py"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)
_qemu = sys.modules[_NAME]

ROOT = _qemu.ROOT
MACHINE = _qemu.MACHINE
RAMFS_SOURCE = _qemu.RAMFS_SOURCE
BoardError = _qemu.BoardError
QemuBoard = _qemu.QemuBoard
RawRepl = _qemu.RawRepl
default_firmware = _qemu.default_firmware
find_mpremote = _qemu.find_mpremote
