# Emulated board: the same API as the ESP32 boards, with every output recorded under DIR/hw/ and
# every input taken from the host emulator's bus (specs/emulator.md). Installed on flash as board.py.
import asyncio
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


def epoch():
    """Unix epoch seconds (float)."""
    return time.time()


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
    event("led", state)


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

    def begin(self, source, alert):
        self._source = source
        self._alert = alert
        self._t0 = time.ticks_ms()
        self._sent = 0
        event("audio", {"state": "start", "source": source, "alert": alert})

    async def write(self, buf):
        f = self._f
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


async def bus_task(on_press):
    """Reads host input lines: `press short|long`, `adc NAME VALUE`."""
    if _bus is None:
        return
    r = asyncio.StreamReader(_bus)
    while True:
        line = await r.readline()
        if not line:
            return
        parts = line.decode().split()
        try:
            if parts[0] == "press":
                on_press(parts[1] if len(parts) > 1 else "short")
            elif parts[0] == "adc":
                _adc[parts[1]] = int(parts[2])
        except (IndexError, ValueError):
            pass


_bus_connect()
