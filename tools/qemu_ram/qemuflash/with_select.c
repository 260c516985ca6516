// The select module, built from MicroPython's own extmod/modselect.c: the qemu port's
// mpconfigport.h sets MICROPY_PY_SELECT to 0 with no way to override it, and every board
// smtp_duo targets has the module. (ticks.c gives it a clock.)
#include "py/mpconfig.h"
#undef MICROPY_PY_SELECT
#define MICROPY_PY_SELECT (1)
#include "extmod/modselect.c"
