# Horn terminal board (ESP32-WROVER-E, LAN8720 Ethernet, SIM7600 4G, PCM5102A -> 100 V line PA):
# the same API as board_emu.py on real pins. Pin map, parts and wiring: hardware/README.md.
import asyncio
import json
import time

import machine
import network
from esp32_image import (  # noqa: F401 (the board API: docs/ota.md "The runtime image")
    image_begin,
    image_confirm,
    image_finish,
    image_running,
    image_write,
)
from machine import ADC, I2S, Pin
from micropython import const

NAME = "horn"
RATE = const(16000)  # I2S sample rate, Hz (mono, signed 16-bit)

# --- pin map (hardware/README.md "Horn terminal"); board_column.py reuses it -----------------
# Mutable so board_column.py can override entries before anything is opened.
_P = {
    "amp": 12,  # amp relay driver input (10k pull-down: relay open at reset, GPIO12 strap low)
    "i2s_sck": 14,  # PCM5102A BCK
    "i2s_ws": 15,  # PCM5102A LRCK
    "i2s_sd": 13,  # PCM5102A DIN
    "line": 34,  # ADC1_CH6: speaker-line current front end (CT + precision rectifier)
    "supply": 35,  # ADC1_CH7: supply voltage divider 100k/18k
    "button": 39,  # input-only, external 10k pull-up, pressed = 0
    "led_link": 2,  # green
    "led_status": 5,  # red
    "eth_mdc": 23,
    "eth_mdio": 18,
    "eth_power": 32,  # enables the PHY's 50 MHz oscillator (pull-down: no clock on GPIO0 at reset)
    "eth_clk": 0,  # RMII REF_CLK input
    "modem_tx": 33,  # UART2 TX -> SIM7600 RXD (level shifter to 1.8 V); driver comes with link.py
    "modem_rx": 36,  # UART2 RX <- SIM7600 TXD
    "modem_pwrkey": 4,  # NPN open collector to PWRKEY, high = key pressed
}

# Speaker-line sense scale: the front end gives 1 mV at the ADC per mA of line current (RMS).
_LINE_MA_PER_MV = {"num": 1, "den": 1}
# Supply divider 100k over 18k: Vin = Vadc * 118 / 18.
_SUPPLY_NUM = const(118)
_SUPPLY_DEN = const(18)
_ADC_SAMPLES = const(8)

_IBUF = const(4096)  # I2S internal buffer, bytes: 128 ms at 16 kHz mono 16-bit
_CHUNK = const(1024)  # silence block written by drain(), bytes
_NET_WAIT_MS = const(10000)

# MicroPython on ESP32 counts seconds from 2000-01-01 on some versions; Unix seconds everywhere else.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
_SYNCED_AFTER = const(1704067200)  # 2024-01-01: an RTC past this was set by NTP before a reset
_RESET_MARK = b"cx-reset"  # RTC memory marker: board.reset() was deliberate


def epoch():
    """Unix epoch seconds. An int: ESP32 floats are single precision (128 s steps at 1.7e9)."""
    return time.time() + _EPOCH_OFFSET


_synced = False


def clock_synced():
    # The RTC keeps time across resets (not power cuts); once NTP has set it, it stays trusted.
    return _synced or epoch() >= _SYNCED_AFTER


def set_epoch(t):
    """Set the RTC from a trusted time (the 4G network's, AT+CCLK?): mbedTLS checks the broker
    certificate's dates against it. True: the board clock now reads `t`."""
    global _synced
    tm = time.gmtime(int(t) - _EPOCH_OFFSET)
    # gmtime: (year, month, mday, hour, minute, second, weekday, yearday);
    # RTC.datetime: (year, month, day, weekday, hours, minutes, seconds, subseconds).
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
    _synced = True
    return True


def _cause():
    c = machine.reset_cause()
    rtc = machine.RTC()
    mark = rtc.memory()
    rtc.memory(b"")
    if c == machine.WDT_RESET:
        return "watchdog"
    if c == machine.SOFT_RESET:
        # machine.reset() and a panic both report SOFT_RESET; only reset() leaves the mark
        return "reset" if mark == _RESET_MARK else "crash"
    return "power"  # power-on, brown-out, reset button, deep sleep


_CAUSE = _cause()


def boot_cause():
    return _CAUSE


def event(dev, value):
    """No event file on a real board: the console (UART0, mpremote) shows output changes."""
    print("hw", dev, value)


_amp = None


def amp_pin():
    """The amplifier relay output (1 closes the relay); opened once, starts open."""
    global _amp
    if _amp is None:
        _amp = Pin(_P["amp"], Pin.OUT, value=0)
    return _amp


# led(state), docs/web.md "Lights": (green link LED, red status LED), each (period, on, offset)
# in 50 ms ticks of a timer; PWM cannot blink slower than 1 Hz. Unknown names are ignored.
_ON, _OFF = (1, 1, 0), (1, 0, 0)
_LEDS = {
    "recovery": ((10, 5, 0), (10, 5, 5)),  # both, alternately, 2 Hz
    "alert": (_OFF, _ON),
    "local": ((5, 2, 0), _OFF),  # green 4 Hz (200 ms period: the tick's nearest)
    "fault": (_OFF, (20, 10, 0)),  # red 1 Hz
    "ip": (_ON, _OFF),
    "4g": ((40, 20, 0), _OFF),  # green 0.5 Hz
    "offline": (_OFF, (100, 2, 0)),  # red 100 ms every 5 s
}
_pats = [_OFF, _OFF]  # what the link and the status LED show now
_pins = []
_ticks = 0


def _led_tick(_t):
    global _ticks
    _ticks += 1
    for i in (0, 1):
        period, on, off = _pats[i]
        _pins[i].value(1 if (_ticks + off) % period < on else 0)


def led(state):
    pat = _LEDS.get(state)
    if pat is None:
        return
    if not _pins:
        _pins.append(Pin(_P["led_link"], Pin.OUT, value=0))
        _pins.append(Pin(_P["led_status"], Pin.OUT, value=0))
        machine.Timer(0).init(period=50, mode=machine.Timer.PERIODIC, callback=_led_tick)
    _pats[0], _pats[1] = pat


def button():
    """The operator button's level reader: True while pressed (GPIO 39, pressed = 0)."""
    pin = Pin(_P["button"], Pin.IN)  # input-only pin: the pull-up is on the board
    return lambda: pin.value() == 0


WEB_HOST = "0.0.0.0"  # the local page listens on every interface: the LAN (and Wi-Fi)


def web_port(default=80):
    return default  # the local page: config web.port, 80 unless set (docs/web.md)


_adcs = {}


def _read_mv(key):
    a = _adcs.get(key)
    if a is None:
        a = _adcs[key] = ADC(Pin(_P[key]), atten=ADC.ATTN_11DB)  # 0.15..2.45 V calibrated
    uv = 0
    for _ in range(_ADC_SAMPLES):
        uv += a.read_uv()
    return uv // (_ADC_SAMPLES * 1000)


def adc(name):
    """Read an analogue input in engineering units (line_ma, supply_mv); 0 for unknown names."""
    if name == "line_ma":
        return _read_mv("line") * _LINE_MA_PER_MV["num"] // _LINE_MA_PER_MV["den"]
    if name == "supply_mv":
        return _read_mv("supply") * _SUPPLY_NUM // _SUPPLY_DEN
    return 0


def WDT(timeout_ms):
    # ESP32's task watchdog cannot be stopped once started; main.py feeds it from the event loop.
    return machine.WDT(timeout=timeout_ms)


def reset():
    machine.RTC().memory(_RESET_MARK)
    machine.reset()


# --- IP path: LAN8720 over RMII, brought up on the first connection -------------------------

_lan = None


async def _net_up():
    global _lan, _synced
    if _lan is None:
        # getattr: micropython-esp32-stubs 1.29 declares LAN twice, the last time without the
        # constructor and isconnected(); the ESP32 port takes these keywords (esp32 quickref, LAN).
        _lan = getattr(network, "LAN")(  # noqa: B009 (the stubs, see above)
            mdc=Pin(_P["eth_mdc"]),
            mdio=Pin(_P["eth_mdio"]),
            power=Pin(_P["eth_power"]),
            ref_clk=Pin(_P["eth_clk"]),
            ref_clk_mode=Pin.IN,
            phy_type=network.PHY_LAN8720,
            phy_addr=0,
        )
        _lan.active(True)
        net_apply(None)
    t0 = time.ticks_ms()
    while not _lan.isconnected():
        if time.ticks_diff(time.ticks_ms(), t0) > _NET_WAIT_MS:
            raise OSError(113)  # EHOSTUNREACH: the caller's reconnect backoff handles it
        await asyncio.sleep_ms(100)
    if not _synced:
        try:
            import ntptime

            ntptime.settime()  # blocking, 1 s timeout at most
            _synced = True
        except Exception:
            pass


def net_apply(net):
    """The local page's network settings (firmware/webnet.py: checked, stored in net.json):
    a static address or DHCP on the LAN, now if it is up, else when it comes up. None: what
    net.json holds (at the interface's first bring-up)."""
    if net is None:
        try:
            with open("net.json") as f:  # beside config.json, as webnet.PATH
                net = json.load(f)
        except (OSError, ValueError):
            net = {}
    if _lan is None or not isinstance(net, dict):
        return
    if net.get("mode") == "static":
        _lan.ifconfig((net["address"], net["netmask"], net["gateway"],
                       net.get("dns") or net["gateway"]))
    else:
        _lan.ipconfig(dhcp4=True)


def recovery_ap(ssid, key):
    """Recovery mode's own Wi-Fi access point (docs/web.md "Recovery mode"): WPA2-PSK with the
    key from the terminal's label, so a technician beside the pole reaches the page at this
    address (192.168.4.1, the ESP32 port's default) even when the LAN settings cut it off. The
    page listens on every interface (WEB_HOST). Gone at the restart that ends recovery."""
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    ap.config(essid=ssid, password=key, authmode=network.AUTH_WPA2_PSK, max_clients=2)
    return ap.ifconfig()[0]


async def open_tcp(host, port):
    """Open a TCP stream over the IP path."""
    await _net_up()
    return await asyncio.open_connection(host, port)


# --- 4G path: SIM7600 on UART2 (hardware/README.md "Horn terminal"), driven by firmware/modem.py

_MODEM_UART = const(2)
_MODEM_BAUD = const(115200)
# A CIPRXGET=2 reply is up to 1460 payload bytes plus its header and OK: 4 KB holds two of them
# and the URCs around them while the event loop is busy elsewhere.
_MODEM_RXBUF = const(4096)
_MODEM_TXBUF = const(2048)  # one 1460-byte CIPSEND chunk
_PWRKEY_MS = const(600)  # SIM7600/EC20 power on with a >= 500 ms PWRKEY pulse
_MODEM_BOOT_MS = const(100)
_modem = None


def modem_uart():
    """The SIM7600's UART as asyncio (reader, writer), opened once. After a power-on boot the
    module is off too, so PWRKEY is pulsed; after a reset or watchdog it kept running, and a pulse
    would switch it off (PWRKEY toggles), so none is given. A silent module is the driver's
    'no_answer' (docs/modem.md)."""
    global _modem
    if _modem is None:
        if _CAUSE == "power":
            key = Pin(_P["modem_pwrkey"], Pin.OUT, value=1)
            time.sleep_ms(_PWRKEY_MS)
            key.value(0)
            time.sleep_ms(_MODEM_BOOT_MS)
        else:
            Pin(_P["modem_pwrkey"], Pin.OUT, value=0)
        u = machine.UART(_MODEM_UART, baudrate=_MODEM_BAUD, bits=8, parity=None, stop=1,
                         tx=_P["modem_tx"], rx=_P["modem_rx"], rxbuf=_MODEM_RXBUF,
                         txbuf=_MODEM_TXBUF, timeout=0)
        s = asyncio.StreamReader(u)  # asyncio's one Stream class: both ends
        _modem = (s, s)
    return _modem


class AudioOut:
    """I2S output to the PCM5102A. Samples are mono signed 16-bit little-endian at RATE; write()
    waits while the I2S buffer is full, so it paces to real time like the emulated board."""

    def __init__(self, rate=RATE):
        self.rate = rate
        self._i2s = I2S(
            0,
            sck=Pin(_P["i2s_sck"]),
            ws=Pin(_P["i2s_ws"]),
            sd=Pin(_P["i2s_sd"]),
            mode=I2S.TX,
            bits=16,
            format=I2S.MONO,
            rate=rate,
            ibuf=_IBUF,
        )
        self._w = asyncio.StreamWriter(self._i2s)
        self._zero = bytearray(_CHUNK)  # silence for drain(); never written to
        self._source = None
        self._alert = None

    def volume(self, v):
        # The firmware scales samples itself (tones.py, clip.py); the PA's own gain is set once by
        # the installer. Reported like the emulated board does.
        event("volume", v)

    def begin(self, source, alert):
        self._source = source
        self._alert = alert
        event("audio", {"state": "start", "source": source, "alert": alert})

    last = 0  # the last sample written, as its 16-bit pattern (the player ramps down from it)

    async def write(self, buf):
        if len(buf) >= 2:
            self.last = buf[len(buf) - 2] | buf[len(buf) - 1] << 8
        self._w.write(buf)
        await self._w.drain()  # returns once the I2S buffer has taken it all

    async def drain(self):
        # Push a buffer's worth of silence so every real sample has left the I2S buffer, then
        # wait for the DMA to play it out; the output then idles on silence, not on a stale block.
        for _ in range(_IBUF // _CHUNK):
            self._w.write(self._zero)
            await self._w.drain()
        await asyncio.sleep_ms(_IBUF * 1000 // (self.rate * 2))

    def end(self, why="done"):
        event("audio", {"state": "stop", "source": self._source, "alert": self._alert, "why": why})
        self._source = None


async def bus_task():
    """No host bus on a real board (the emulated one reads its inputs here)."""
