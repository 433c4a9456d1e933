# Emulated board: the same API as the ESP32 boards, with every output recorded under DIR/hw/ and
# every input taken from the host emulator's bus (specs/emulator.md). Installed on flash as board.py.
import asyncio
import binascii
import hashlib
import json
import os
import socket
import struct
import sys
import time

from micropython import const

NAME = "emu"
RATE = const(16000)  # I2S sample rate of the reference boards, Hz
# Host-side audio buffering the emulated I2S allows before write() waits, like DMA buffers.
_AHEAD_MS = const(120)

_HW = os.getenv("CX_HW") or "hw"
_BUS_PORT = os.getenv("CX_BUS")
_CAUSE = os.getenv("CX_BOOT_CAUSE") or "power"
_IP_PROXY = os.getenv("CX_IP_PROXY")  # port of the emulator's cuttable IP line

_events = None
_bus = None
_adc = {"line_ma": 450, "supply_mv": 13800}  # a healthy line while playing, mains charger


_OFFSET = float(os.getenv("CX_CLOCK_OFFSET") or 0)  # `cx emu run --clock-offset S`


def epoch():
    """Unix epoch seconds (float), the host's clock plus the emulator's clock offset (a test of
    the seven o'clock programme need not wait for seven o'clock: docs/broadcast.md)."""
    return time.time() + _OFFSET


def clock_synced():
    # The emulator host keeps true time (as NTP would give), so the clock counts as set at boot
    # unless the host says otherwise.
    return os.getenv("CX_CLOCK") != "unsynced"


def set_epoch(t):
    """The host's clock is not ours to set: False, and clock.py keeps an offset instead."""
    return False


def boot_cause():
    return _CAUSE


def event(dev, value):
    """Record an output change: one JSON line in DIR/hw/events.jsonl."""
    global _events
    if _events is None:
        _events = open(_HW + "/events.jsonl", "a")
    _events.write(json.dumps({"t": time.time(), "dev": dev, "value": value}) + "\n")
    _events.flush()


class _Pin:
    def __init__(self, dev):
        self._dev = dev
        self._v = None

    def value(self, v=None):
        if v is None:
            return self._v or 0
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            event(self._dev, v)
        return v


def amp_pin():
    """The amplifier relay output (1 closes the relay)."""
    return _Pin("amp")


def led(state):
    """Show a light state (docs/web.md "Lights"): an `led` event with its name."""
    event("led", state)


# The button's level is the host's: `cx emu ctl DIR press` keeps "held until" (epoch seconds) in
# DIR/hw/button.json and sends it on the bus, so firmware/button.py debounces a real level and a
# press held through a restart is down at boot.
_btn_until = 0.0


def _btn_load():
    global _btn_until
    try:
        with open(_HW + "/button.json") as f:
            _btn_until = float(json.load(f)["until"])
    except (OSError, ValueError, KeyError, TypeError):
        pass


def button():
    """The operator button's level reader: True while it is held down."""
    return lambda: time.time() < _btn_until


WEB_HOST = "127.0.0.1"  # the local page listens on loopback only (specs/emulator.md `web`)


def web_port(default=80):
    """The local page's port: the free loopback port the host emulator picked (CX_WEB_PORT)."""
    return int(os.getenv("CX_WEB_PORT") or 0) or default


def net_apply(net):
    """Network settings from the local page (firmware/webnet.py): recorded as a `net` event; the
    emulated terminal keeps its loopback link."""
    event("net", net)


def recovery_ap(ssid, key):
    """Recovery mode's own Wi-Fi (docs/web.md): recorded as an `ap` event (the SSID, never the
    key); the emulated page stays on its loopback port. Returns the page's address there."""
    event("ap", {"ssid": ssid, "security": "wpa2-psk", "key_chars": len(key)})
    return WEB_HOST


def adc(name):
    """Read an analogue input in engineering units (line_ma, supply_mv)."""
    return _adc.get(name, 0)


class _Wdt:
    def __init__(self, timeout_ms):
        _bus_send("wdt %d\n" % timeout_ms)

    def feed(self):
        _bus_send("feed\n")


def WDT(timeout_ms):
    return _Wdt(timeout_ms)


def reset():
    # The host restarts us on the same flash, reporting cause "reset".
    sys.exit(3)


async def open_tcp(host, port):
    """Open a TCP stream over the IP path. In the emulator the path is the host's line proxy
    (CX_IP_PROXY): it answers OK once the far end is connected, and never while the line is cut,
    as a real connect's SYN would go unanswered (callers bound the wait)."""
    if not _IP_PROXY:
        return await asyncio.open_connection(host, port)
    r, w = await asyncio.open_connection("127.0.0.1", int(_IP_PROXY))
    try:
        w.write(("%s %d\n" % (host, port)).encode())
        await w.drain()
        if await r.readline() != b"OK\n":
            raise OSError("connection refused")
    except BaseException:
        w.close()
        await w.wait_closed()
        raise
    return r, w


def modem_uart():
    """The 4G module's UART as asyncio (reader, writer), or None when no modem is fitted. The
    emulator serves a SIM7600 model on the pseudo-terminal named by CX_MODEM_PTY (docs/modem.md)."""
    path = os.getenv("CX_MODEM_PTY")
    if not path:
        return None
    s = asyncio.StreamReader(open(path, "r+b"))  # asyncio's one Stream class: both ends
    return s, s


class AudioOut:
    """I2S output. Samples are mono signed 16-bit little-endian at RATE; write() paces to real time."""

    def __init__(self, rate=RATE):
        self.rate = rate
        path = _HW + "/speaker.wav"
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        if size < 44:
            f = open(path, "wb")
            f.write(_wav_header(rate, 0))
            f.close()
            size = 44
        self._f = open(path, "r+b")
        self._data = size - 44
        self._t0 = 0
        self._sent = 0
        self._source = None
        self._alert = None

    def volume(self, v):
        event("volume", v)

    last = 0  # the last sample written, as its 16-bit pattern (the player ramps down from it)

    def begin(self, source, alert):
        self._source = source
        self._alert = alert
        self._t0 = time.ticks_ms()
        self._sent = 0
        event("audio", {"state": "start", "source": source, "alert": alert})

    async def write(self, buf):
        f = self._f
        if len(buf) >= 2:
            self.last = buf[len(buf) - 2] | buf[len(buf) - 1] << 8  # the last sample (a ramp's start)
        f.seek(44 + self._data)
        f.write(buf)
        self._data += len(buf)
        f.seek(4)
        f.write(struct.pack("<I", 36 + self._data))
        f.seek(40)
        f.write(struct.pack("<I", self._data))
        f.flush()
        self._sent += len(buf) // 2
        ahead = self._sent * 1000 // self.rate - time.ticks_diff(time.ticks_ms(), self._t0)
        if ahead > _AHEAD_MS:
            await asyncio.sleep_ms(ahead - _AHEAD_MS)
        else:
            await asyncio.sleep_ms(0)

    async def drain(self):
        ahead = self._sent * 1000 // self.rate - time.ticks_diff(time.ticks_ms(), self._t0)
        if ahead > 0:
            await asyncio.sleep_ms(ahead)

    def end(self, why="done"):
        event("audio", {"state": "stop", "source": self._source, "alert": self._alert, "why": why})
        self._source = None


def _wav_header(rate, n):
    return (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", n))


# --- host bus: presses and ADC values in, watchdog feeds out -------------------------------------


def _bus_send(line):
    if _bus is None:
        return
    try:
        _bus.write(line.encode())
    except OSError:
        pass


def _bus_connect():
    global _bus
    if not _BUS_PORT or _bus is not None:
        return
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", int(_BUS_PORT))[0][-1])
    s.setblocking(False)
    _bus = s


async def bus_task():
    """Reads host input lines: `button UNTIL` (held down until epoch UNTIL), `adc NAME VALUE`."""
    global _btn_until
    if _bus is None:
        return
    r = asyncio.StreamReader(_bus)
    while True:
        line = await r.readline()
        if not line:
            return
        parts = line.decode().split()
        try:
            if parts[0] == "button":
                _btn_until = float(parts[1])
            elif parts[0] == "adc":
                _adc[parts[1]] = int(parts[2])
        except (IndexError, ValueError):
            pass



# --- runtime image: what board_horn.py would write to the next OTA app partition -------------
# docs/ota.md "The runtime image (esp32.Partition)". No partition is written: DIR/hw/image.json
# keeps the slots (running, boot, trial) and the last image (slot, bytes, blocks, sha256, why,
# set_boot, confirmed), and events.jsonl gets {"dev": "image"} for each step and block. The slot
# size is CX_IMAGE_SLOT bytes (default 0x180000, ota_0/ota_1 of partitions-4MiB-ota.csv; 0: a
# factory-only table). A boot (this module's import) after set_boot runs the new slot on trial;
# the next boot without image_confirm() rolls back, as the ESP-IDF bootloader does.

_BLOCK = const(4096)
_APP_MAGIC = const(0xE9)
_SLOT = int(os.getenv("CX_IMAGE_SLOT") or 0x180000)
_img = None


def _state():
    try:
        with open(_HW + "/image.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"running": "ota_0", "boot": "ota_0", "trial": False}


def _save(st):
    with open(_HW + "/image.json.tmp", "w") as f:
        json.dump(st, f)
    os.rename(_HW + "/image.json.tmp", _HW + "/image.json")


def _image_boot():
    try:
        os.stat(_HW + "/image.json")
    except OSError:
        return  # no runtime image was ever written here
    st = _state()
    if st["boot"] != st["running"]:
        st["previous"], st["running"], st["trial"] = st["running"], st["boot"], True
        event("image", {"step": "boot", "slot": st["running"], "trial": True})
    elif st.get("trial"):
        st["running"] = st["boot"] = st.get("previous", st["running"])
        st["trial"] = False
        event("image", {"step": "rollback", "slot": st["running"]})
    else:
        return
    _save(st)


class _Image:
    def __init__(self, slot, nbytes):
        self.slot = slot
        self.nbytes = nbytes
        self.count = 0
        self.blocks = 0
        self.fill = 0
        self.first = -1  # the image's first byte
        self.sha = hashlib.sha256()

    def flush(self):
        event("image", {"step": "block", "slot": self.slot, "block": self.blocks})
        self.blocks += 1
        self.fill = 0


def image_running():
    """Label of the partition the running firmware booted from ("ota_0", "ota_1", "factory")."""
    return _state()["running"]


def image_begin(nbytes):
    """Start a runtime image of `nbytes` in the next OTA slot; returns the slot's label.
    ValueError "no_update_slot" (factory-only partition table), "image_too_large" (over the
    slot's size), "image_empty". Drops an unfinished earlier image (it is never booted)."""
    global _img
    _img = None
    if nbytes < 1:
        raise ValueError("image_empty")
    if not _SLOT:
        raise ValueError("no_update_slot")
    if nbytes > _SLOT:
        raise ValueError("image_too_large")
    st = _state()
    slot = "ota_1" if st["running"] == "ota_0" else "ota_0"
    _img = _Image(slot, nbytes)
    st["image"] = {"slot": slot, "size": _SLOT, "nbytes": nbytes, "bytes": 0, "blocks": 0,
                   "sha256": None, "why": "unfinished", "set_boot": False, "confirmed": False}
    _save(st)
    event("image", {"step": "begin", "slot": slot, "nbytes": nbytes, "size": _SLOT})
    return slot


def image_write(chunk):
    """The image's next bytes, any length: every 4096-byte block goes to flash once full.
    ValueError "image_not_begun", or "image_too_long" past the size given to image_begin()."""
    im = _img
    if im is None:
        raise ValueError("image_not_begun")
    n = len(chunk)
    if im.count + n > im.nbytes:
        raise ValueError("image_too_long")
    if n and im.count == 0:
        im.first = chunk[0]
    im.sha.update(chunk)
    im.count += n
    room = _BLOCK - im.fill
    while n >= room:
        im.flush()
        n -= room
        room = _BLOCK
    im.fill += n


def image_finish(sha256_hex):
    """True when every byte came, they hash to `sha256_hex` (the real board also reads the flash
    back) and the image starts like an app image: set_boot() is recorded and the next boot runs
    the slot on trial. False otherwise, the boot slot unchanged."""
    global _img
    im, _img = _img, None
    if im is None:
        return False
    if im.fill:
        im.flush()  # the last block, padded with 0xFF
    got = binascii.hexlify(im.sha.digest()).decode()
    why = None
    if im.count != im.nbytes:
        why = "image_short"
    elif got != sha256_hex.lower():
        why = "hash_mismatch"
    elif im.first != _APP_MAGIC:
        why = "not_an_app_image"
    st = _state()
    st["image"] = {"slot": im.slot, "size": _SLOT, "nbytes": im.nbytes, "bytes": im.count,
                   "blocks": im.blocks, "sha256": got, "expected": sha256_hex, "why": why,
                   "set_boot": why is None, "confirmed": False}
    if why is None:
        st["boot"] = im.slot
    _save(st)
    event("image", {"step": "finish", "bytes": im.count, "sha256": got, "why": why})
    if why is None:
        event("image", {"step": "set_boot", "slot": im.slot})
    return why is None


def image_confirm():
    """After the new runtime's trial proved itself: cancel the bootloader's rollback. True when
    done (also with nothing on trial); False on a build without rollback support."""
    st = _state()
    st["trial"] = False
    if "image" in st and st["image"]["slot"] == st["running"]:
        st["image"]["confirmed"] = True
    _save(st)
    event("image", {"step": "confirm", "slot": st["running"]})
    return True


_bus_connect()
_btn_load()
_image_boot()
