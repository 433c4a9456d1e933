# The ESP32 runtime image (MicroPython itself) into the next OTA app partition, for the real boards
# (board_horn.py re-exports it, board_column.py through board_horn). docs/ota.md "The runtime image
# (esp32.Partition)"; the emulated board has its own record of the same five calls.
import binascii
import hashlib

import esp32
from micropython import const


def _event(dev, value):
    print("hw", dev, value)  # as board_horn.event: the console shows each step


# docs/ota.md "The runtime image (esp32.Partition)": needs otadata + ota_0/ota_1 in the partition
# table and, for image_confirm(), a build with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE.
_BLOCK = const(4096)  # esp32.Partition's native block: the flash erase page
_APP_MAGIC = const(0xE9)  # first byte of every ESP-IDF app image (esp_image_header_t.magic)
_img = None


def _running():
    # The 1.29 stubs type Partition's id as str; the port takes the ints BOOT and RUNNING too.
    return esp32.Partition(esp32.Partition.RUNNING)  # pyright: ignore[reportArgumentType]


class _Image:
    def __init__(self, part, nbytes):
        self.part = part
        self.nbytes = nbytes
        self.count = 0  # bytes taken
        self.block = 0  # next block to write
        self.fill = 0  # bytes waiting in buf
        self.buf = bytearray(_BLOCK)
        self.sha = hashlib.sha256()

    def flush(self):
        self.part.writeblocks(self.block, self.buf)  # the simple form erases the block first
        self.block += 1
        self.fill = 0

    def readback(self):
        # sha256 of what the flash now holds, not of what was handed to write()
        h = hashlib.sha256()
        left, b, buf = self.nbytes, 0, self.buf
        while left > 0:
            self.part.readblocks(b, buf)
            h.update(buf if left >= _BLOCK else memoryview(buf)[:left])
            left -= _BLOCK
            b += 1
        return binascii.hexlify(h.digest()).decode()


def image_running():
    """Label of the partition the running firmware booted from ("ota_0", "ota_1", "factory")."""
    return _running().info()[4]


def image_begin(nbytes):
    """Start a runtime image of `nbytes` in the next OTA slot; returns the slot's label.
    ValueError "no_update_slot" (factory-only partition table), "image_too_large" (over the
    slot's size), "image_empty". Drops an unfinished earlier image (it is never booted)."""
    global _img
    _img = None
    if nbytes < 1:
        raise ValueError("image_empty")
    try:
        part = _running().get_next_update()
    except OSError:
        raise ValueError("no_update_slot")  # ENOENT: no OTA app partition
    info = part.info()  # (type, subtype, addr, size, label, encrypted)
    if nbytes > info[3]:
        raise ValueError("image_too_large")
    _img = _Image(part, nbytes)
    _event("image", {"step": "begin", "slot": info[4], "nbytes": nbytes, "size": info[3]})
    return info[4]


def image_write(chunk):
    """The image's next bytes, any length: every 4096-byte block goes to flash once full.
    ValueError "image_not_begun", or "image_too_long" past the size given to image_begin()."""
    im = _img
    if im is None:
        raise ValueError("image_not_begun")
    n = len(chunk)
    if im.count + n > im.nbytes:
        raise ValueError("image_too_long")
    im.sha.update(chunk)
    mv = memoryview(chunk)
    i = 0
    while i < n:
        k = min(_BLOCK - im.fill, n - i)
        im.buf[im.fill:im.fill + k] = mv[i:i + k]
        im.fill += k
        i += k
        if im.fill == _BLOCK:
            im.flush()
    im.count += n


def image_finish(sha256_hex):
    """True when every byte came, they hash to `sha256_hex` (as written and as read back), the
    image starts like an app image and set_boot() took the slot (ESP-IDF validates it): the
    next reset boots it on trial. False otherwise, the boot partition unchanged."""
    global _img
    im, _img = _img, None
    if im is None:
        return False
    if im.fill:
        im.buf[im.fill:] = b"\xff" * (_BLOCK - im.fill)  # as erased flash
        im.flush()
    want = sha256_hex.lower()
    got = binascii.hexlify(im.sha.digest()).decode()
    why = None
    if im.count != im.nbytes:
        why = "image_short"
    elif got != want or im.readback() != want:
        why = "hash_mismatch"
    else:
        im.part.readblocks(0, im.buf)
        if im.buf[0] != _APP_MAGIC:
            why = "not_an_app_image"
        else:
            try:
                im.part.set_boot()
            except OSError:
                why = "set_boot_refused"  # esp_ota_set_boot_partition did not validate it
    _event("image", {"step": "finish", "bytes": im.count, "sha256": got, "why": why})
    return why is None


def image_confirm():
    """After the new runtime's trial proved itself: cancel the bootloader's rollback. True when
    done (also with nothing on trial); False on a build without rollback support."""
    try:
        esp32.Partition.mark_app_valid_cancel_rollback()
    except OSError:
        return False
    _event("image", {"step": "confirm"})
    return True
