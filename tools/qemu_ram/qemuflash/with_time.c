// The time module, built from MicroPython's own extmod/modtime.c: the qemu port's
// mpconfigport.h sets MICROPY_PY_TIME to 0 with no way to override it, and every board
// smtp_duo targets has the module. (ticks.c gives it a clock.)
#include "py/mpconfig.h"
#undef MICROPY_PY_TIME
#define MICROPY_PY_TIME (1)
#include "extmod/modtime.c"
