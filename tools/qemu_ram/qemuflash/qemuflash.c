// qemuflash.Flash(): a block device over the MPS2 board's SSRAM2/3 (4 MiB at 0x20000000), which
// the firmware itself never uses (mcu/arm/mps2.ld puts code, data, stack and the GC heap in
// SSRAM1). Files kept there are outside the GC heap, as on a board's flash chip, and reading
// them is a memcpy from a memory-mapped address, as rp2.Flash does from XIP flash: no
// per-read garbage on the heap. tools/board_ram.py has QEMU load a littlefs image there
// (-device loader) and mounts it with vfs.VfsLfs2(Flash(), progsize=256), as rp2's _boot.py does.
//
// The protocol is the extended block device one (readblocks/writeblocks with an offset, ioctl
// with erase), like rp2.Flash. Writes work too (an erase sets 0xFF), so the filesystem is an
// ordinary read-write one; the contents last until QEMU exits (a soft reset keeps them).

#include <string.h>

#include "py/mperrno.h"
#include "py/runtime.h"
#include "extmod/vfs.h"

#define QEMUFLASH_BASE (0x20000000)
#define QEMUFLASH_BYTES (2 * 1024 * 1024) // tools/board_ram.py builds its image for this size
#define QEMUFLASH_BLOCK (4096) // a flash erase block, as on rp2 and esp32

typedef struct _qemuflash_obj_t {
    mp_obj_base_t base;
} qemuflash_obj_t;

extern const mp_obj_type_t qemuflash_type;

// One device, in ROM: Flash() allocates nothing.
static const qemuflash_obj_t qemuflash_obj = {{&qemuflash_type}};

static mp_obj_t qemuflash_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 0, false);
    return MP_OBJ_FROM_PTR(&qemuflash_obj);
}

// The flash address of (block, offset) for `len` bytes, or OSError(EIO) past the end.
static uint8_t *qemuflash_addr(mp_obj_t block_in, size_t n_args, const mp_obj_t *args, size_t len) {
    mp_int_t block = mp_obj_get_int(block_in);
    mp_int_t offset = n_args == 4 ? mp_obj_get_int(args[3]) : 0;
    if (block < 0 || offset < 0 || (size_t)block * QEMUFLASH_BLOCK + offset + len > QEMUFLASH_BYTES) {
        mp_raise_OSError(MP_EIO);
    }
    return (uint8_t *)(QEMUFLASH_BASE + block * QEMUFLASH_BLOCK + offset);
}

static mp_obj_t qemuflash_readblocks(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_WRITE);
    memcpy(buf.buf, qemuflash_addr(args[1], n_args, args, buf.len), buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(qemuflash_readblocks_obj, 3, 4, qemuflash_readblocks);

static mp_obj_t qemuflash_writeblocks(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_READ);
    uint8_t *addr = qemuflash_addr(args[1], n_args, args, buf.len);
    if (n_args == 3) {
        // The simple protocol: erase the blocks first, as rp2.Flash does.
        memset(addr, 0xff, (buf.len + QEMUFLASH_BLOCK - 1) / QEMUFLASH_BLOCK * QEMUFLASH_BLOCK);
    }
    memcpy(addr, buf.buf, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(qemuflash_writeblocks_obj, 3, 4, qemuflash_writeblocks);

static mp_obj_t qemuflash_ioctl(mp_obj_t self_in, mp_obj_t cmd_in, mp_obj_t arg_in) {
    switch (mp_obj_get_int(cmd_in)) {
        case MP_BLOCKDEV_IOCTL_INIT:
        case MP_BLOCKDEV_IOCTL_DEINIT:
        case MP_BLOCKDEV_IOCTL_SYNC:
            return MP_OBJ_NEW_SMALL_INT(0);
        case MP_BLOCKDEV_IOCTL_BLOCK_COUNT:
            return MP_OBJ_NEW_SMALL_INT(QEMUFLASH_BYTES / QEMUFLASH_BLOCK);
        case MP_BLOCKDEV_IOCTL_BLOCK_SIZE:
            return MP_OBJ_NEW_SMALL_INT(QEMUFLASH_BLOCK);
        case MP_BLOCKDEV_IOCTL_BLOCK_ERASE: {
            mp_int_t block = mp_obj_get_int(arg_in);
            if (block < 0 || block >= QEMUFLASH_BYTES / QEMUFLASH_BLOCK) {
                return MP_OBJ_NEW_SMALL_INT(-MP_EIO);
            }
            memset((uint8_t *)(QEMUFLASH_BASE + block * QEMUFLASH_BLOCK), 0xff, QEMUFLASH_BLOCK);
            return MP_OBJ_NEW_SMALL_INT(0);
        }
        default:
            return mp_const_none;
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(qemuflash_ioctl_obj, qemuflash_ioctl);

static const mp_rom_map_elem_t qemuflash_locals_dict_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&qemuflash_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&qemuflash_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&qemuflash_ioctl_obj) },
};
static MP_DEFINE_CONST_DICT(qemuflash_locals_dict, qemuflash_locals_dict_table);

MP_DEFINE_CONST_OBJ_TYPE(
    qemuflash_type,
    MP_QSTR_Flash,
    MP_TYPE_FLAG_NONE,
    make_new, qemuflash_make_new,
    locals_dict, &qemuflash_locals_dict
    );

static const mp_rom_map_elem_t qemuflash_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_qemuflash) },
    { MP_ROM_QSTR(MP_QSTR_Flash), MP_ROM_PTR(&qemuflash_type) },
};
static MP_DEFINE_CONST_DICT(qemuflash_module_globals, qemuflash_module_globals_table);

const mp_obj_module_t qemuflash_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&qemuflash_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_qemuflash, qemuflash_module);
