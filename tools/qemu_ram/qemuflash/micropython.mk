# The measuring firmware's board support (tools/build_firmware.sh qemu-ram passes this folder's
# parent as USER_C_MODULES): a flash-like block device outside the GC heap, and the time,
# select and _asyncio modules every board smtp_duo targets has.
QEMUFLASH_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += \
	$(QEMUFLASH_DIR)/qemuflash.c \
	$(QEMUFLASH_DIR)/ticks.c \
	$(QEMUFLASH_DIR)/with_time.c \
	$(QEMUFLASH_DIR)/with_select.c \
	$(QEMUFLASH_DIR)/with_asyncio.c
