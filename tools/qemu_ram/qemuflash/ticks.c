// The clock the time, select and _asyncio modules (and littlefs's file times) need; the qemu
// port has none. It counts the MPS2 FPGA's 32-bit COUNTER register, which runs at 25 MHz in
// QEMU, into microseconds and milliseconds since boot, with 32-bit arithmetic only (libgcc's
// 64-bit division would drag in unwind tables the port's linker script does not place). Right
// as long as something reads the clock at least every 171 s (one turn of the counter).

#include "py/mphal.h"
#include "py/runtime.h"

#define FPGAIO_COUNTER (*(volatile uint32_t *)0x40028018)
#define COUNTS_PER_US (25)

static uint32_t last_count, count_rest, us_now, us_rest, ms_now;

static void tick(void) {
    uint32_t now = FPGAIO_COUNTER;
    uint32_t counts = now - last_count + count_rest;
    last_count = now;
    count_rest = counts % COUNTS_PER_US;
    uint32_t us = counts / COUNTS_PER_US;
    us_now += us;
    us += us_rest;
    us_rest = us % 1000;
    ms_now += us / 1000;
}

mp_uint_t mp_hal_ticks_cpu(void) {
    return FPGAIO_COUNTER;
}

mp_uint_t mp_hal_ticks_us(void) {
    tick();
    return us_now;
}

mp_uint_t mp_hal_ticks_ms(void) {
    tick();
    return ms_now;
}

uint64_t mp_hal_time_ns(void) {
    // No calendar clock: the time since boot (littlefs stamps files with it).
    tick();
    return (uint64_t)ms_now * 1000000 + (uint64_t)us_rest * 1000;
}

void mp_hal_delay_us(mp_uint_t us) {
    mp_uint_t start = mp_hal_ticks_us();
    while (mp_hal_ticks_us() - start < us) {
    }
}

void mp_hal_delay_ms(mp_uint_t ms) {
    mp_uint_t start = mp_hal_ticks_ms();
    while (mp_hal_ticks_ms() - start < ms) {
        mp_handle_pending(true);
    }
}
