#!/usr/bin/env bash
# Builds MicroPython firmware from Debian trixie's micropython source package (1.25.0), for the
# host tests and for a look at a bare Cortex-M board; unix and qemu with smtp_duo FROZEN in
# (manifest.py with md5=True), qemu-ram and qemu-112k without:
#   unix      the unix port (VARIANT=standard, no TLS, no btree, no ffi), frozen: asyncio, smtp_duo,
#             smtp_duo_md5                  -> <deps>/firmware/unix/micropython
#   qemu      ports/qemu BOARD=MPS2_AN385 (Cortex-M3 under qemu-system-arm), frozen: smtp_duo,
#             smtp_duo_md5                  -> <deps>/firmware/qemu/firmware.elf
#             (installs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm first if
#             missing; that needs root)
#   qemu-ram  the same board for tools/board_ram.py: nothing frozen, a 1 MiB GC heap, littlefs
#             on a flash-like block device outside the heap, time, select and _asyncio (C
#             sources in tools/qemu_ram/), asyncio as .mpy beside it for the board's filesystem
#                                           -> <deps>/firmware/qemu-ram/firmware.elf, lib/asyncio/
#   qemu-112k qemu-ram with the GC heap of an ESP32_GENERIC board: 112 KiB (114688 B), for
#             tests_host/test_packages.py (what fits on such a board, from .py and from .mpy)
#                                           -> <deps>/firmware/qemu-112k/firmware.elf, lib/asyncio/
#   all       all four
# <deps> is ${SMTP_DUO_DEPS:-<repo root>/.deps}. The source package is fetched once into
# <deps>/src/ with a private apt configuration (the system's apt sources are left alone) and
# unpacked once. A target is rebuilt only when what goes into it changed: this script, and
# lib/*.py and manifest.py (unix, qemu) or tools/qemu_ram/ (qemu-ram, qemu-112k), by a hash stamp next to
# its output; otherwise the script returns in about a second.
#
# Usage: tools/build_firmware.sh [--force | --check] [unix|qemu|qemu-ram|qemu-112k|all]  (default: unix)
#   --force   rebuild even if the stamp says the firmware is up to date
#   --check   build nothing: exit 0 if up to date, 3 if missing or out of date
# Environment:
#   SMTP_DUO_DEPS           where to fetch, build and install (default: .deps at the repo root)
#   SMTP_DUO_DEBIAN_MIRROR  Debian mirror URI (default: as tools/install_micropython.sh finds it)
#   JOBS                    make -j (default: 2)
#
# Any failure exits non-zero with the reason (and the tail of the build log); nothing is skipped.
set -euo pipefail

prog=build_firmware
die() {
    echo "$prog: error: $*" >&2
    exit 1
}
say() {
    echo "$prog: $*" >&2
}
now() {
    date +%s.%N
}
since() { # seconds since $1, one decimal
    awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'
}

force=0
check=0
target=
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        --check) check=1 ;;
        unix | qemu | qemu-ram | qemu-112k | all)
            [ -z "$target" ] || die "give one target (unix, qemu, qemu-ram, qemu-112k or all)"
            target=$arg
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done
if [ "$force" = 1 ] && [ "$check" = 1 ]; then
    die "--force and --check do not go together"
fi
target=${target:-unix}
case $target in
    all) targets=(unix qemu qemu-ram qemu-112k) ;;
    *) targets=("$target") ;;
esac

t_start=$(now)
script=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)/$(basename -- "${BASH_SOURCE[0]}")
repo_root=$(cd -- "$(dirname -- "$script")/.." && pwd)
deps=${SMTP_DUO_DEPS:-$repo_root/.deps}
mkdir -p -- "$deps" || die "cannot create $deps"
deps=$(cd -- "$deps" && pwd)
src_root=$deps/src
fw=$deps/firmware
jobs=${JOBS:-2}

[ -f "$repo_root/manifest.py" ] || die "no manifest.py at $repo_root"

# The board manifest given to the build as FROZEN_MANIFEST. Written at run time (it holds this
# checkout's absolute path), so it is never committed.
manifest_text() {
    echo "# Written by tools/build_firmware.sh for the $1 firmware; do not edit."
    if [ "$1" = unix ]; then
        # What VARIANT=standard freezes, minus mip and ssl (micropython-lib is not in the source
        # package, and this build has no TLS).
        # shellcheck disable=SC2016 # $(MPY_DIR) is for manifestfile.py, not the shell
        echo 'include("$(MPY_DIR)/extmod/asyncio")'
    fi
    printf 'include("%s", all=True)\n' "$repo_root/manifest.py"
}

output_of() {
    case $1 in
        unix) echo "$fw/unix/micropython" ;;
        qemu) echo "$fw/qemu/firmware.elf" ;;
        qemu-ram) echo "$fw/qemu-ram/firmware.elf" ;;
        qemu-112k) echo "$fw/qemu-112k/firmware.elf" ;;
    esac
}

# The measuring firmware's board support (a user C module and a linker script).
qemu_ram_src=$repo_root/tools/qemu_ram

# Everything the firmware is made from, as far as this project controls it.
stamp_of() {
    local inputs f
    if [ "$1" = qemu-ram ] || [ "$1" = qemu-112k ]; then
        # Nothing of lib/ goes into this firmware (board_ram.py puts the modules on its
        # filesystem at run time), so a change to the library does not rebuild it.
        inputs=("$qemu_ram_src"/*.ld "$qemu_ram_src"/*/*)
    else
        inputs=("$repo_root/manifest.py" "$repo_root"/lib/*.py)
    fi
    {
        echo "target $1"
        [ "$1" = qemu-ram ] || [ "$1" = qemu-112k ] || manifest_text "$1"
        cat -- "$script"
        for f in "${inputs[@]}"; do
            echo "== ${f#"$repo_root"/}"
            cat -- "$f"
        done
    } | sha256sum | cut -d' ' -f1
}

up_to_date() {
    local out
    out=$(output_of "$1")
    [ "$force" = 0 ] && [ -s "$out" ] && [ -f "$out.stamp" ] && [ "$(cat -- "$out.stamp")" = "$(stamp_of "$1")" ]
}

# Fast path: nothing to do.
todo=()
for t in "${targets[@]}"; do
    if up_to_date "$t"; then
        say "$t: up to date: $(output_of "$t")"
    else
        todo+=("$t")
    fi
done
if [ "${#todo[@]}" = 0 ]; then
    say "nothing to do ($(since "$t_start") s)"
    exit 0
fi
if [ "$check" = 1 ]; then
    say "missing or out of date: ${todo[*]} (run tools/build_firmware.sh $target)"
    exit 3
fi

# --- from here on: a real build ------------------------------------------------------------

trap 'echo "$prog: error: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

mkdir -p -- "$fw" "$src_root"
# Several processes may call this at once: one builds, the others wait and reuse the result.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$deps/.build_firmware.lock"
    flock 9
fi

for tool in make gcc python3 tar xz sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (needed to build MicroPython)"
done

# --- the source: Debian trixie's micropython source package --------------------------------

fetch_source() {
    if [ -f "$src_root/.unpacked" ]; then
        srcdir=$src_root/$(cat -- "$src_root/.unpacked")
        if [ -f "$srcdir/py/mpconfig.h" ] && [ -d "$srcdir/ports/unix" ]; then
            return 0
        fi
    fi
    local t0 mirror aptdir apt_opts trixie_mirror
    t0=$(now)
    command -v apt-get >/dev/null 2>&1 || die "'apt-get' not found: this script needs a Debian-based host"
    # A private apt configuration of its own (not install_micropython.sh's, which it rewrites).
    aptdir=$src_root/apt
    # shellcheck source=tools/trixie_apt.sh
    . "$repo_root/tools/trixie_apt.sh"
    trixie_apt "$aptdir" deb-src || die "cannot set up the private apt configuration"
    mirror=$trixie_mirror

    say "fetching the micropython source package of Debian trixie from $mirror"
    apt-get "${apt_opts[@]}" --error-on=any update >"$aptdir/update.log" 2>&1 || {
        cat "$aptdir/update.log" >&2
        die "apt-get update of the private trixie deb-src sources failed (log above)"
    }
    rm -f -- "$src_root"/micropython_*
    (cd -- "$src_root" && apt-get "${apt_opts[@]}" source --download-only micropython) >"$aptdir/source.log" 2>&1 || {
        cat "$aptdir/source.log" >&2
        die "apt-get source --download-only micropython failed (log above)"
    }
    local origs=("$src_root"/micropython_*.orig.tar.*)
    if [ "${#origs[@]}" != 1 ] || [ ! -f "${origs[0]}" ]; then
        die "expected one micropython_*.orig.tar.* in $src_root, found: ${origs[*]}"
    fi

    local stage top
    stage=$(mktemp -d "$src_root/unpack.XXXXXX")
    tar -xf "${origs[0]}" -C "$stage" || {
        rm -rf -- "$stage"
        die "cannot unpack ${origs[0]}"
    }
    top=$(cd -- "$stage" && ls -A)
    if [ "$(echo "$top" | wc -l)" != 1 ] || [ ! -f "$stage/$top/py/mpconfig.h" ]; then
        rm -rf -- "$stage"
        die "${origs[0]} is not a MicroPython source tree"
    fi
    rm -rf -- "${src_root:?}/$top"
    mv -- "$stage/$top" "$src_root/$top"
    rmdir -- "$stage"
    echo "$top" >"$src_root/.unpacked"
    srcdir=$src_root/$top
    say "source: $(basename -- "${origs[0]}") unpacked into $srcdir ($(since "$t0") s)"
}

# --- the Arm toolchain and QEMU (system packages) --------------------------------------------

qemu_packages=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)

have_package() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

install_qemu_tools() {
    local missing=() p t0
    for p in "${qemu_packages[@]}"; do
        have_package "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" = 0 ] && return 0
    t0=$(now)
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install --no-install-recommends ${missing[*]})"
    say "installing ${missing[*]} (apt-get, system sources)"
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=900)
    if [ -z "$(apt-cache policy "${missing[0]}" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)"')" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=900 update >&2 || die "apt-get update failed"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
    for p in "${missing[@]}"; do
        have_package "$p" || die "$p is still not installed after apt-get install"
    done
    say "installed ${missing[*]} ($(since "$t0") s)"
}

# --- building --------------------------------------------------------------------------------

# make with the output in a log; on failure the log's tail and a non-zero exit.
run_make() {
    local log=$1
    shift
    if ! make "$@" >>"$log" 2>&1; then
        tail -n 60 -- "$log" >&2
        die "make $* failed (the last 60 lines are above; whole log: $log)"
    fi
}

libdir=$fw/micropython-lib-empty

build_common() {
    fetch_source
    # The build asks git for a version: stop git from finding this project's repository above
    # the unpacked source (it then takes the version from py/mpconfig.h).
    export GIT_CEILING_DIRECTORIES=$src_root
    # No micropython-lib here: the manifests require() nothing from it, but the build wants
    # MPY_LIB_DIR to hold a README.md.
    mkdir -p -- "$libdir"
    [ -f "$libdir/README.md" ] || echo "Empty on purpose: the smtp_duo firmware needs nothing from micropython-lib." >"$libdir/README.md"
    local t0
    if [ ! -x "$srcdir/mpy-cross/build/mpy-cross" ]; then
        t0=$(now)
        say "building mpy-cross (log: $fw/mpy-cross.log)"
        : >"$fw/mpy-cross.log"
        run_make "$fw/mpy-cross.log" -C "$srcdir/mpy-cross" -j"$jobs"
        say "built mpy-cross ($(since "$t0") s)"
    fi
}

# makemanifest.py reuses a frozen .mpy that is newer than its .py: after a checkout of an older
# file it would keep the newer code. The stamp changed, so compile the frozen modules afresh.
forget_frozen() { # build dir
    rm -rf -- "$1/frozen_mpy" "$1/frozen_content.c"
}

write_manifest() { # target -> path of its board manifest
    local path=$fw/$1/manifest.py
    mkdir -p -- "$fw/$1"
    if [ ! -f "$path" ] || [ "$(cat -- "$path")" != "$(manifest_text "$1")" ]; then
        manifest_text "$1" >"$path"
    fi
    echo "$path"
}

build_unix() {
    local t0 out manifest log check got march
    t0=$(now)
    out=$(output_of unix)
    manifest=$(write_manifest unix)
    log=$fw/unix/build.log
    : >"$log"
    say "building the unix port with smtp_duo frozen (log: $log)"
    forget_frozen "$srcdir/ports/unix/build-standard"
    # smtp_duo_fast is native code: frozen for this CPU (the board ports set their own -march).
    case $(uname -m) in
        x86_64) march=x64 ;;
        i?86) march=x86 ;;
        *) die "no MicroPython native emitter for $(uname -m): smtp_duo_fast cannot be frozen" ;;
    esac
    run_make "$log" -C "$srcdir/ports/unix" -j"$jobs" VARIANT=standard \
        FROZEN_MANIFEST="$manifest" MPY_LIB_DIR="$libdir" MPY_CROSS_FLAGS="-march=$march" \
        MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_SSL_MBEDTLS=0 MICROPY_SSL_AXTLS=0 MICROPY_PY_SSL=0
    cp -- "$srcdir/ports/unix/build-standard/micropython" "$out.tmp"
    mv -f -- "$out.tmp" "$out"
    # The modules must come from the frozen bytecode (sys.path holds only ".frozen").
    check='import smtp_duo, smtp_duo_md5; print(smtp_duo.__file__, smtp_duo.__version__)'
    got=$(cd / && MICROPYPATH=.frozen "$out" -c "$check" 2>&1) || {
        echo "$got" >&2
        die "the built firmware cannot import smtp_duo (output above)"
    }
    [ "${got%% *}" = smtp_duo.py ] || die "smtp_duo is not frozen in the built firmware: $got"
    stamp_of unix >"$out.stamp"
    say "unix: built $out ($got) in $(since "$t0") s"
}

build_qemu() {
    local t0 out manifest log elf
    install_qemu_tools
    t0=$(now)
    out=$(output_of qemu)
    manifest=$(write_manifest qemu)
    log=$fw/qemu/build.log
    : >"$log"
    say "building ports/qemu BOARD=MPS2_AN385 with smtp_duo frozen (log: $log)"
    forget_frozen "$srcdir/ports/qemu/build-MPS2_AN385"
    # make does not see a changed MICROPY_HEAP_SIZE: main.c, which sizes the heap, is rebuilt.
    rm -f -- "$srcdir/ports/qemu/build-MPS2_AN385/main.o"
    # A 192 KB heap (the port's default is 140 KB): the tests keep the deployed files in a RAM
    # filesystem on the same heap, where a real board has flash beside its 110-190 KB heap.
    run_make "$log" -C "$srcdir/ports/qemu" -j"$jobs" BOARD=MPS2_AN385 MICROPY_HEAP_SIZE=196608 \
        FROZEN_MANIFEST="$manifest" MPY_LIB_DIR="$libdir"
    elf=$srcdir/ports/qemu/build-MPS2_AN385/firmware.elf
    grep -aq 'smtp_duo_md5\.py' -- "$elf" || die "smtp_duo_md5.py is not frozen in $elf"
    cp -- "$elf" "$out.tmp"
    mv -f -- "$out.tmp" "$out"
    stamp_of qemu >"$out.stamp"
    say "qemu: built $out in $(since "$t0") s (run: qemu-system-arm -machine mps2-an385 -nographic -monitor null -semihosting -serial pty -kernel $out)"
}

# The RAM benchmark's board (tools/board_ram.py): MPS2_AN385 WITHOUT smtp_duo frozen (frozen
# names sit in ROM and would make a .py or .mpy import look cheaper), in a build directory of
# its own. Its 1 MiB heap fits a big module's .py import; MPS2_AN385 has 4 MiB of SSRAM1 for
# code, data, heap and stack. tools/qemu_ram/ adds qemuflash.Flash (a block device over
# SSRAM2/3, which the firmware does not use: files there are outside the GC heap, as in a
# board's flash) and the time, select and _asyncio modules the boards have and the port leaves
# out. asyncio itself is not frozen: its .mpy files go to lib/asyncio beside the firmware, and
# board_ram.py puts them on the board's filesystem.
qemu_ram_heap=1048576
# The same board with the GC heap of an ESP32_GENERIC (about 110-130 KB free there without
# PSRAM): tests_host/test_packages.py checks what fits in it. A real heap of that size, not ballast
# in the 1 MiB one: smtp_duo sizes its buffers from the heap's total (gc.mem_free() +
# gc.mem_alloc()), so ballast would leave it believing it is on a big board.
qemu_112k_heap=114688
qemu_ram_asyncio=(__init__ core event funcs lock stream) # extmod/asyncio/manifest.py's list

# build_qemu_fs TARGET HEAP BUILD-DIR WHAT: MPS2_AN385 with tools/qemu_ram/, nothing frozen.
build_qemu_fs() {
    local target=$1 heap=$2 build=$3 what=$4 t0 out dir log elf m
    install_qemu_tools
    t0=$(now)
    out=$(output_of "$target")
    dir=$(dirname -- "$out")
    mkdir -p -- "$dir"
    log=$dir/build.log
    : >"$log"
    say "building ports/qemu BOARD=MPS2_AN385 $what, nothing frozen, heap $heap B (log: $log)"
    # From clean (about 30 s, and only when this script or tools/qemu_ram/ changed): make would
    # not see a changed MICROPY_HEAP_SIZE, nor a module added to or removed from tools/qemu_ram/.
    rm -rf -- "${srcdir:?}/ports/qemu/$build"
    # FROZEN_MANIFEST= (empty): the port's default manifest would freeze its tests.
    run_make "$log" -C "$srcdir/ports/qemu" -j"$jobs" BOARD=MPS2_AN385 BUILD="$build" \
        MICROPY_HEAP_SIZE="$heap" MICROPY_VFS_LFS2=1 \
        USER_C_MODULES="$qemu_ram_src" LDSCRIPT="$qemu_ram_src/mps2_ram.ld" \
        FROZEN_MANIFEST= MPY_LIB_DIR="$libdir"
    elf=$srcdir/ports/qemu/$build/firmware.elf
    if grep -aq 'smtp_duo[a-z_]*\.py' -- "$elf"; then
        die "$elf has a frozen smtp_duo module; the $target firmware must not"
    fi
    grep -aq 'qemuflash' -- "$elf" || die "qemuflash is not in $elf (tools/qemu_ram not built in?)"
    rm -rf -- "$dir/lib.tmp"
    mkdir -p -- "$dir/lib.tmp/asyncio"
    for m in "${qemu_ram_asyncio[@]}"; do
        "$srcdir/mpy-cross/build/mpy-cross" -O3 -s "asyncio/$m.py" -o "$dir/lib.tmp/asyncio/$m.mpy" \
            "$srcdir/extmod/asyncio/$m.py" >>"$log" 2>&1 ||
            die "mpy-cross failed on extmod/asyncio/$m.py (log: $log)"
    done
    rm -rf -- "$dir/lib"
    mv -- "$dir/lib.tmp" "$dir/lib"
    cp -- "$elf" "$out.tmp"
    mv -f -- "$out.tmp" "$out"
    stamp_of "$target" >"$out.stamp"
    say "$target: built $out in $(since "$t0") s (heap $heap B)"
}

build_qemu_ram() {
    build_qemu_fs qemu-ram "$qemu_ram_heap" build-MPS2_AN385-ram "for RAM measurements (tools/board_ram.py)"
}

build_qemu_112k() {
    build_qemu_fs qemu-112k "$qemu_112k_heap" build-MPS2_AN385-112k "the size of an ESP32_GENERIC"
}

srcdir=
for t in "${todo[@]}"; do
    if up_to_date "$t"; then # built by another process while this one waited for the lock
        say "$t: up to date: $(output_of "$t")"
        continue
    fi
    [ -n "$srcdir" ] || build_common
    "build_${t//-/_}"
done
say "done ($(since "$t_start") s)"
