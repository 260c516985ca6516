// The _asyncio module, built from MicroPython's own extmod/modasyncio.c: the qemu port's
// mpconfigport.h sets MICROPY_PY_ASYNCIO to 0 with no way to override it, and every board
// smtp_duo targets has the module. (ticks.c gives it a clock.)
#include "py/mpconfig.h"
#undef MICROPY_PY_ASYNCIO
#define MICROPY_PY_ASYNCIO (1)
#include "extmod/modasyncio.c"
