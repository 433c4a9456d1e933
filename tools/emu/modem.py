"""Emulated SIM7600 4G module on a pseudo-terminal, its TCP sockets bridged to real TCP.

The firmware opens ``ModemModel.device_path`` (given to it as ``CX_MODEM_PTY``) as its UART.
The model answers the AT subset firmware/modem.py uses (docs/modem.md), in manual receive mode:
data from the network waits here until the firmware asks with ``AT+CIPRXGET=2``. Faults are set
with ``control()`` (``cx emu ctl DIR modem …`` / ``link 4g …``). Nothing the firmware sends can
end the model's thread: a bad command is logged and answered ``ERROR``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import select
import socket
import termios
import threading
import time
from pathlib import Path

import serial

from tools.emu.netdelay import DelayLine

MAX_LINKS = 10  # SIM7600: links 0..9
MAX_SEND = 1500  # AT+CIPSEND length limit
MAX_RECV = 1500  # AT+CIPRXGET=2 length limit
MAX_CMD = 1024  # longest command line accepted
RX_HOLD = 65536  # bytes held per link before the model stops reading its socket (TCP backpressure)
DATA_IDLE_S = 2.0  # a '>' prompt left without data for this long ends with ERROR
CONNECT_S = 5.0
TZ_QUARTERS = 32  # network time zone: UTC+8, as a Chinese network reports it
GARBLE_ONE_IN = 8  # with garble on, a reply line is corrupted with probability 1/N (default N)


class _Link:
    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.rx = bytearray()
        self.remote_closed = False
        self.closed = False
        self.notified = False  # +CIPRXGET: 1 sent since the buffer was last emptied
        self.down: DelayLine | None = None  # the network's delay each way (`modem latency`)
        self.up: DelayLine | None = None


class ModemModel:
    """A SIM7600 on a pty. ``start()``, hand ``device_path`` to the firmware, ``stop()``."""

    def __init__(self, log_path: str | Path | None = None) -> None:
        self._master, slave = os.openpty()
        self.device_path = os.ttyname(slave)
        os.close(slave)
        # pyserial keeps the slave end open (so the firmware can close and reopen it across
        # restarts without the master seeing a hang-up) and sets it raw 8N1 at 115200.
        self._port = serial.Serial(
            self.device_path, 115200, bytesize=8, parity="N", stopbits=1, timeout=0
        )
        # VMIN=0: a read on the firmware's side returns what is there instead of blocking until
        # its whole buffer is full (MicroPython's file readinto loops on a blocking tty).
        fd = self._port.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        os.set_blocking(self._master, False)
        self._log_file = open(log_path, "a") if log_path else None
        self._lock = threading.RLock()  # state and output
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        # module state
        self.echo = True
        self.cmee = 0
        self.cereg_n = 0
        self.rx_manual = False
        self.net_open = False
        self.apn = ""
        self.links: dict[int, _Link] = {}
        # controls
        self.sim = True
        self.reg_set = 1
        self.link_up = True
        self.csq = 20
        self.delay_ms = 0
        self.latency_ms = self.jitter_ms = 0  # one-way network delay, each direction
        self.garble = False
        self.garble_one_in = GARBLE_ONE_IN
        self._rng = random.Random(3)  # the same faults on every run of a test
        self.split = False
        self.mute = False
        self.time_valid = True  # registered from the start: the network has set the clock
        # counters
        self.bytes_up = 0  # TCP payload firmware -> network (CIPSEND)
        self.bytes_down = 0  # TCP payload network -> firmware (CIPRXGET=2)
        self.commands = 0
        self.errors = 0
        self._lines_out = 0
        self._in = bytearray()
        self._send_wait: tuple[int, int] | None = None  # (link, length) after a '>' prompt
        self._send_t = 0.0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="modem-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for i in list(self.links):
                self._drop_link(i)
        for t in self._readers:
            t.join(2)
        self._port.close()
        try:
            os.close(self._master)
        except OSError:
            pass
        if self._log_file:
            self._log_file.close()

    # --- controls ------------------------------------------------------------------------

    def control(self, args: list[str]) -> str:
        """One control command (see docs/modem.md); returns a one-line answer."""
        try:
            return self._control(args)
        except (IndexError, ValueError) as e:
            return f"error: bad arguments {' '.join(args)!r} ({e})"

    def _control(self, a: list[str]) -> str:
        if a[:2] == ["link", "4g"]:
            up = _onoff(a[2], "up", "down")
            with self._lock:
                self.link_up = up
                self._reg_changed()
            return "ok"
        if len(a) < 2 or a[0] != "modem":
            raise ValueError(f"unknown command {' '.join(a)!r}")
        cmd = a[1]
        with self._lock:
            if cmd == "signal":
                n = int(a[2])
                if not (0 <= n <= 31 or n == 99):
                    raise ValueError("signal is 0..31 or 99")
                self.csq = n
            elif cmd == "sim":
                self.sim = _onoff(a[2], "in", "out")
                self._say("+CPIN: READY" if self.sim else "+SIMCARD: NOT AVAILABLE", urc=True)
                self._reg_changed()
            elif cmd == "reg":
                n = int(a[2])
                if n not in (0, 1, 2, 3, 4, 5):
                    raise ValueError("reg is 0..5")
                self.reg_set = n
                self._reg_changed()
            elif cmd == "delay":
                self.delay_ms = max(0, int(a[2]))
            elif cmd == "latency":
                self.latency_ms = max(0, int(a[2]))
                self.jitter_ms = max(0, int(a[3])) if len(a) > 3 else 0
            elif cmd == "garble":
                self.garble = _onoff(a[2])
                if self.garble:
                    self.garble_one_in = max(2, int(a[3])) if len(a) > 3 else GARBLE_ONE_IN
            elif cmd == "split":
                self.split = _onoff(a[2])
            elif cmd == "mute":
                self.mute = _onoff(a[2])
            elif cmd == "status":
                return json.dumps(self.status())
            else:
                raise ValueError(f"unknown command {' '.join(a)!r}")
        self._log(f"control {' '.join(a)}")
        return "ok"

    def status(self) -> dict:
        with self._lock:
            return {
                "state": self._state(),
                "sim": self.sim,
                "reg": self._reg(),
                "csq": self.csq,
                "link_4g": "up" if self.link_up else "down",
                "net_open": self.net_open,
                "delay_ms": self.delay_ms,
                "latency_ms": self.latency_ms,
                "jitter_ms": self.jitter_ms,
                "garble": self.garble,
                "split": self.split,
                "mute": self.mute,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "commands": self.commands,
                "errors": self.errors,
                "links": {
                    str(i): {
                        "host": k.host,
                        "port": k.port,
                        "pending": len(k.rx),
                        "remote_closed": k.remote_closed,
                    }
                    for i, k in self.links.items()
                },
            }

    def _state(self) -> str:
        if not self.sim:
            return "no_sim"
        if self._reg() not in (1, 5):
            return "searching"
        return "online" if self.net_open else "registered"

    def _reg(self) -> int:
        if not self.sim:
            return 0
        if not self.link_up:
            return 2
        return self.reg_set

    def _reg_changed(self) -> None:
        stat = self._reg()
        if self.cereg_n:
            self._say(f"+CEREG: {stat}", urc=True)
        if stat in (1, 5):
            self.time_valid = True
            return
        for i in list(self.links):  # the bearer is gone, and every socket with it
            self._drop_link(i)
            self._say(f"+IPCLOSE: {i},2", urc=True)
        if self.net_open:
            self.net_open = False
            self._say("+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY", urc=True)

    # --- serial side -----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._master], [], [], 0.05)
                if r:
                    try:
                        data = os.read(self._master, 4096)
                    except OSError as e:
                        if e.errno in (errno.EAGAIN, errno.EIO):
                            time.sleep(0.05)  # EIO: no one has the slave open
                            continue
                        raise
                    with self._lock:
                        if not self.mute:
                            self._in += data
                self._step()
            except Exception as e:  # the model must outlive any input
                self.errors += 1
                self._log(f"internal error: {e!r}")
                with self._lock:
                    self._in.clear()
                    self._send_wait = None

    def _step(self) -> None:
        while True:
            with self._lock:
                if self.mute:
                    self._in.clear()
                    self._send_wait = None
                    return
                if self._send_wait is not None:
                    link, n = self._send_wait
                    if len(self._in) < n:
                        if time.monotonic() - self._send_t > DATA_IDLE_S:
                            self._in.clear()
                            self._send_wait = None
                            self._log(f"CIPSEND {link}: data never came")
                            self._reply("ERROR")
                        return
                    data = bytes(self._in[:n])
                    del self._in[:n]
                    self._send_wait = None
                    self._send_data(link, data)
                    continue
                i = -1
                for j, c in enumerate(self._in):
                    if c in (13, 10):
                        i = j
                        break
                if i < 0:
                    if len(self._in) > MAX_CMD:
                        self._in.clear()
                        self.errors += 1
                        self._log("command line too long: dropped")
                        self._reply("ERROR")
                    return
                raw = bytes(self._in[:i])
                del self._in[: i + 1]
            raw = raw.replace(b"\x1b", b"").strip()
            if raw:
                self._command(raw)

    def _command(self, raw: bytes) -> None:
        self.commands += 1
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        with self._lock:
            if self.echo:
                self._write(raw + b"\r\n")
            try:
                text = raw.decode("ascii")
                if not text.isprintable() or not text[:2].upper() == "AT":
                    raise ValueError("not an AT command")
                self._dispatch(text[2:])
            except Exception as e:
                self.errors += 1
                self._log(f"bad command {raw[:80]!r}: {e}")
                self._reply("ERROR")

    def _dispatch(self, c: str) -> None:  # one branch per command, like the manual
        u = c.upper()
        if u == "":
            return self._reply("OK")
        if u in ("E0", "E1"):
            self.echo = u == "E1"
            return self._reply("OK")
        if m := re.fullmatch(r"\+CMEE=([012])", u):
            self.cmee = int(m[1])
            return self._reply("OK")
        if m := re.fullmatch(r"\+CEREG=([012])", u):
            self.cereg_n = int(m[1])
            return self._reply("OK")
        if u == "+CTZU=1" or u == "+CTZU=0":
            return self._reply("OK")
        if u == "+CPIN?":
            if not self.sim:
                return self._cme(10, "SIM not inserted")
            return self._reply("+CPIN: READY", "OK")
        if u == "+CSQ":
            return self._reply(f"+CSQ: {self.csq},99", "OK")
        if u == "+CEREG?":
            return self._reply(f"+CEREG: {self.cereg_n},{self._reg()}", "OK")
        if m := re.fullmatch(r'\+CGDCONT=1,"IP","([^"]{0,63})"', c, re.IGNORECASE):
            self.apn = m[1]
            return self._reply("OK")
        if m := re.fullmatch(r"\+CIPRXGET=([01])", u):
            if self.net_open:
                return self._reply("ERROR")  # must be set before NETOPEN
            self.rx_manual = m[1] == "1"
            return self._reply("OK")
        if u == "+NETOPEN?":
            return self._reply(f"+NETOPEN: {int(self.net_open)}", "OK")
        if u == "+NETOPEN":
            if self.net_open:
                return self._reply("+IP ERROR: Network is already opened", "ERROR")
            self._reply("OK")
            ok = self.sim and self._reg() in (1, 5)
            self.net_open = ok
            return self._reply(f"+NETOPEN: {0 if ok else 1}")
        if u == "+NETCLOSE":
            for i in list(self.links):
                self._drop_link(i)
            was = self.net_open
            self.net_open = False
            return self._reply("OK", f"+NETCLOSE: {0 if was else 2}")
        if m := re.fullmatch(r'\+CIPOPEN=(\d),"TCP","([^"]{1,128})",(\d{1,5})', c, re.IGNORECASE):
            return self._open(int(m[1]), m[2], int(m[3]))
        if m := re.fullmatch(r"\+CIPSEND=(\d),(\d{1,5})", u):
            link, n = int(m[1]), int(m[2])
            k = self.links.get(link)
            if k is None or k.closed or k.remote_closed or not 1 <= n <= MAX_SEND:
                return self._reply("ERROR")
            self._write(b"\r\n> ")
            self._send_wait = (link, n)
            self._send_t = time.monotonic()
            return None
        if m := re.fullmatch(r"\+CIPRXGET=2,(\d),(\d{1,5})", u):
            return self._recv(int(m[1]), int(m[2]))
        if m := re.fullmatch(r"\+CIPRXGET=4,(\d)", u):
            k = self.links.get(int(m[1]))
            if k is None:
                return self._reply("ERROR")
            return self._reply(f"+CIPRXGET: 4,{m[1]},{len(k.rx)}", "OK")
        if m := re.fullmatch(r"\+CIPCLOSE=(\d)", u):
            link = int(m[1])
            if link not in self.links:
                return self._reply(f"+CIPCLOSE: {link},4", "ERROR")
            self._drop_link(link)
            return self._reply("OK", f"+CIPCLOSE: {link},0")
        if u == "+CCLK?":
            return self._reply(f'+CCLK: "{self._cclk()}"', "OK")
        raise ValueError("unsupported command")

    def _cme(self, code: int, text: str) -> None:
        if self.cmee == 1:
            self._reply(f"+CME ERROR: {code}")
        elif self.cmee == 2:
            self._reply(f"+CME ERROR: {text}")
        else:
            self._reply("ERROR")

    def _cclk(self) -> str:
        if not self.time_valid:
            return "80/01/06,00:00:00+00"
        t = time.gmtime(time.time() + TZ_QUARTERS * 900)
        return (
            f"{t.tm_year % 100:02d}/{t.tm_mon:02d}/{t.tm_mday:02d},"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}+{TZ_QUARTERS:02d}"
        )

    # --- sockets -----------------------------------------------------------------------------

    def _open(self, link: int, host: str, port: int) -> None:
        if not self.net_open or link >= MAX_LINKS:
            return self._reply("ERROR")
        old = self.links.get(link)
        if old is not None and not old.remote_closed:
            self._reply("OK")
            return self._reply(f"+CIPOPEN: {link},4")
        self._drop_link(link)
        self._reply("OK")
        try:
            sock = socket.create_connection((host, port), CONNECT_S)
        except OSError as e:
            self._log(f"CIPOPEN {link} {host}:{port}: {e}")
            return self._reply(f"+CIPOPEN: {link},1")
        sock.settimeout(None)
        k = _Link(sock, host, port)
        self.links[link] = k
        t = threading.Thread(
            target=self._pump, args=(link, k), daemon=True, name=f"modem-link{link}"
        )
        self._readers = [r for r in self._readers if r.is_alive()] + [t]
        t.start()
        self._reply(f"+CIPOPEN: {link},0")

    def _pump(self, link: int, k: _Link) -> None:
        # network -> held buffer; the firmware takes it with CIPRXGET=2
        while not self._stop.is_set():
            with self._lock:
                full = len(k.rx) + (k.down.queued if k.down else 0) >= RX_HOLD
            if full:
                time.sleep(0.01)
                continue
            try:
                data = k.sock.recv(4096)
            except OSError:
                data = b""
            if self.latency_ms or (k.down is not None and k.down.busy()):
                if k.down is None:
                    k.down = DelayLine(lambda d: self._arrive(link, k, d), f"modem-down{link}")
                k.down.put(data, self._delay())
            else:
                self._arrive(link, k, data)
            if not data:
                return

    def _delay(self) -> float:
        return (self.latency_ms + self._rng.uniform(0, self.jitter_ms)) / 1000

    def _arrive(self, link: int, k: _Link, data: bytes) -> None:
        # what the network delivers (b"": the peer closed) reaches the module's buffer
        with self._lock:
            if k.closed:
                return
            if not data:
                k.remote_closed = True
                self._say(f"+IPCLOSE: {link},1", urc=True)
                return
            k.rx += data
            if not k.notified:
                k.notified = True
                self._say(f"+CIPRXGET: 1,{link}", urc=True)

    def _send_data(self, link: int, data: bytes) -> None:
        k = self.links.get(link)
        if k is None or k.closed or k.remote_closed or not self.link_up:
            return self._reply("ERROR")
        try:
            if self.latency_ms or (k.up is not None and k.up.busy()):
                if k.up is None:
                    k.up = DelayLine(k.sock.sendall, f"modem-up{link}")
                k.up.put(data, self._delay())
            else:
                k.sock.sendall(data)
        except OSError as e:
            self._log(f"CIPSEND {link}: {e}")
            return self._reply("ERROR")
        self.bytes_up += len(data)
        self._reply("OK", f"+CIPSEND: {link},{len(data)},{len(data)}")

    def _recv(self, link: int, n: int) -> None:
        k = self.links.get(link)
        if k is None or not self.rx_manual or not 1 <= n <= MAX_RECV:
            return self._reply("ERROR")
        if not k.rx:
            k.notified = False
            return self._reply("+IP ERROR: No data", "ERROR")
        data = bytes(k.rx[:n])
        del k.rx[:n]
        if not k.rx:
            k.notified = False
        self.bytes_down += len(data)
        self._reply(f"+CIPRXGET: 2,{link},{len(data)},{len(k.rx)}")
        self._write(data)
        self._reply("OK")

    def _drop_link(self, link: int) -> None:
        k = self.links.pop(link, None)
        if k is None:
            return
        k.closed = True
        for line in (k.down, k.up):
            if line is not None:
                line.stop()
        try:
            k.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        k.sock.close()

    # --- output --------------------------------------------------------------------------

    def _reply(self, *lines: str) -> None:
        for line in lines:
            self._say(line)

    def _say(self, line: str, urc: bool = False) -> None:
        b = line.encode()
        if not urc:
            self._lines_out += 1
            if self.garble and self._rng.randrange(self.garble_one_in) == 0:
                b = self._corrupt(b)
        self._write(b"\r\n" + b + b"\r\n")

    def _corrupt(self, b: bytes) -> bytes:
        kind = self._rng.randrange(4)
        self._log(f"garbling {b[:40]!r} (kind {kind})")
        if kind == 0:
            return b[: len(b) // 2] + b"#\xff~" + b[len(b) // 2 :]  # noise inside the line
        if kind == 1:
            return b[: max(1, len(b) // 2)]  # truncated
        if kind == 2:
            return b"\x00" * 300 + b"\r\n" + b  # an overlong junk line before the real one
        return b"\xfe\xfd" + b.lower()  # binary noise, case mangled

    def _write(self, b: bytes) -> None:
        if self.mute:
            return
        if not self.split:
            self._put(b)
            return
        i = 0
        step = 1
        while i < len(b):
            step = step % 7 + 1
            self._put(b[i : i + step])
            i += step
            time.sleep(0.001)

    def _put(self, b: bytes) -> None:
        view = memoryview(b)
        deadline = time.monotonic() + 1.0
        while view:
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._log(f"firmware not reading: {len(view)} bytes dropped")
                    return
                time.sleep(0.002)
            except OSError as e:
                self._log(f"write: {e}")
                return

    def _log(self, msg: str) -> None:
        if self._log_file:
            self._log_file.write(f"{time.time():.3f} {msg}\n")
            self._log_file.flush()


def _onoff(v: str, on: str = "on", off: str = "off") -> bool:
    if v not in (on, off):
        raise ValueError(f"expected {on} or {off}")
    return v == on
