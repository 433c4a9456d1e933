"""Emulator host: runs one terminal's real firmware under the pinned MicroPython unix port.

It prepares the terminal's flash folder, owns the control socket (`cx emu ctl`) and the hardware
bus (button, ADC values in; watchdog feeds out), and restarts the firmware as a board reboots:
on `machine.reset()`, watchdog expiry, crash or power cut. Contract: shared/specs/emulator.md.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tools import firmware, terminal_config, terminal_files
from tools.emu.modem import ModemModel

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_HEAP = "1m"  # hardware/README.md: the reference board's heap, capped at 1 MB
EXIT_RESET = 3  # board.reset() exits with this code
SHORT_MS, LONG_MS = 200, 2500  # `press` and `press --long`: the button held this long
MAX_HOLD_MS = 600_000  # `press --hold-ms N`: up to 10 min


class EmuError(Exception):
    """A user-facing emulator error (one line)."""


def micropython_bin() -> str:
    try:
        return firmware.micropython_bin()
    except firmware.NoMicroPython as e:
        raise EmuError(str(e)) from None


def load_config(path: Path) -> dict:
    """A config the terminal's own check accepts (tools/terminal_config.py), as written."""
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise EmuError(f"cannot read config {path}: {e.strerror}") from None
    except ValueError as e:
        raise EmuError(f"config {path} is not valid JSON: {e}") from None
    try:
        reason = terminal_config.refusal(cfg)
    except firmware.FirmwareError as e:
        raise EmuError(str(e)) from None
    if reason is not None:
        raise EmuError(f"config {path}: bad {terminal_config.describe(reason)}; a terminal "
                       "would refuse it")
    return cfg


def device_files() -> list[tuple[Path, str]]:
    """(source, name on flash) for everything flashed to a terminal: tools/terminal_files.py
    with the emulated board (hardware/board_emu.py), the boot selector main.py last."""
    return terminal_files.files("emu")


def config_files(config: dict, src_dir: Path | None) -> list[tuple[Path, str]]:
    """(source, name on flash) of the files a config names: the broker's CA when MQTT is over
    TLS, taken from beside the config as `cx fleet provision --tls-ca` writes it."""
    files = terminal_files.named(config, src_dir or Path("."))
    for src, _ in files:
        if not src.is_file():
            raise EmuError(f"config asks for TLS but its CA {src} does not exist "
                           f"(cx fleet provision --tls-ca writes it beside config.json)")
    return files


def flash(dirpath: Path, config: dict, reflash: bool, src_dir: Path | None = None) -> None:
    """Copy firmware and config (and the files it names, from `src_dir`) to DIR/flash."""
    extra = config_files(config, src_dir)
    fl = dirpath / "flash"
    if (fl / "main.py").exists() and not reflash:
        return
    fl.mkdir(parents=True, exist_ok=True)
    # A reflash is a factory image again: no other version, no update half-way (docs/ota.md).
    for stale in ("v", "stage"):
        shutil.rmtree(fl / stale, ignore_errors=True)
    *version, selector = device_files()
    for src, name in version + extra:
        (fl / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, fl / name)
    for name, text in terminal_files.boot_data("emu").items():
        (fl / name).write_text(text)
    (fl / "config.json").write_text(json.dumps(config, indent=1))
    for stale in ("config.bak",):
        (fl / stale).unlink(missing_ok=True)
    shutil.copyfile(selector[0], fl / selector[1])  # main.py last, as on a board


class IpLine:
    """The terminal's IP path: a loopback proxy the host can cut (`cx emu ctl DIR link ip down`).

    The firmware's board opens every IP connection through it, naming the destination in a first
    line; the proxy answers "OK" once the far end is connected. Cut, it behaves like a dead line:
    connections in progress go silent (nothing forwarded, nothing closed) and new ones never get
    their answer, so the firmware must notice by itself, as on a real village line. Restored, new
    connections work and the silent ones are closed (their state is long gone on a real network).
    """

    def __init__(self) -> None:
        self.up = True
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._lock = threading.Lock()
        self._dead: list[socket.socket] = []  # sockets of connections cut while in use
        self._gen = 0  # bumped at every cut: connections of an older generation are dead
        self.bytes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, up: bool) -> None:
        with self._lock:
            if up == self.up:
                return
            self.up = up
            if not up:
                self._gen += 1
            else:
                for s in self._dead:
                    try:
                        s.close()
                    except OSError:
                        pass
                self._dead = []

    def close(self) -> None:
        self.set(True)
        try:
            self._srv.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        up = None
        try:
            conn.settimeout(10)
            head = b""
            while not head.endswith(b"\n") and len(head) < 300:
                chunk = conn.recv(1)
                if not chunk:
                    raise OSError("closed before the destination line")
                head += chunk
            host, port = head.decode().split()
            conn.settimeout(None)
            while not self.up:  # a cut line: the connect is never answered
                r, _, _ = select.select([conn], [], [], 0.2)
                if r and not conn.recv(4096):
                    raise OSError("gave up")
            up = socket.create_connection((host, int(port)), 5)
            with self._lock:
                gen = self._gen
            conn.sendall(b"OK\n")
            socks = [conn, up]
            while True:
                r, _, _ = select.select(socks, [], [], 0.5)
                if self._gen != gen:
                    with self._lock:
                        self._dead += [conn, up]
                    return  # silent from now on; closed when the line comes back
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (up if s is conn else conn).sendall(data)
                    self.bytes += len(data)
        except (OSError, ValueError):
            for s in (conn, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass


class Terminal:
    """One emulated terminal: a supervised micropython process plus its host-side hardware."""

    def __init__(self, dirpath: Path, heap: str = DEFAULT_HEAP, quiet: bool = False) -> None:
        self.dir = dirpath.resolve()
        self.heap = heap
        self.quiet = quiet
        self.hw = self.dir / "hw"
        self.hw.mkdir(parents=True, exist_ok=True)
        self.adc: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self.cause = "power"
        self.next_cause: str | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.bus_conn: socket.socket | None = None
        self.wdt_ms = 0
        self.last_feed = time.monotonic()
        self.boots = 0
        self._bus_srv = socket.socket()
        self._bus_srv.bind(("127.0.0.1", 0))
        self._bus_srv.listen(4)
        self.bus_port = self._bus_srv.getsockname()[1]
        self.web_port = free_port()  # the local page's (board.web_port()), kept across reboots
        self.ip = IpLine()
        self.modem = ModemModel(log_path=self.hw / "modem.log")  # the SIM7600 on the board
        self.modem.start()
        self._ctl_path = self.dir / "ctl.sock"
        self._ctl_path.unlink(missing_ok=True)
        self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctl.bind(str(self._ctl_path))
        self._ctl.listen(4)
        self._threads = [
            threading.Thread(target=self._bus_accept, daemon=True),
            threading.Thread(target=self._ctl_loop, daemon=True),
            threading.Thread(target=self._wdt_loop, daemon=True),
        ]
        for t in self._threads:
            t.start()

    # --- process supervision ------------------------------------------------------------------

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"emu {self.dir.name}: {msg}", flush=True)

    def running_version(self) -> str | None:
        """The firmware version the terminal said it booted (after an OTA switch or rollback,
        the new or the old one), from its last boot event."""
        b = last_boot(self.hw)
        v = b.get("version") if b else None
        return v if isinstance(v, str) else None

    def _start(self) -> None:
        env = dict(os.environ)
        env.update({
            "MICROPYPATH": ".frozen:" + str(self.dir / "flash"),
            "CX_HW": str(self.hw),
            "CX_BUS": str(self.bus_port),
            "CX_BOOT_CAUSE": self.cause,
            "CX_IP_PROXY": str(self.ip.port),
            "CX_MODEM_PTY": self.modem.device_path,
            "CX_WEB_PORT": str(self.web_port),
        })
        console = open(self.hw / "console.log", "ab")
        self.wdt_ms = 0
        self.last_feed = time.monotonic()
        self.proc = subprocess.Popen(
            [micropython_bin(), "-X", f"heapsize={self.heap}", "main.py"],
            cwd=self.dir / "flash", env=env, stdout=console, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        console.close()
        self.boots += 1
        self.say(f"boot #{self.boots} cause={self.cause} pid={self.proc.pid}")

    def run(self) -> int:
        """Run until stop(); restart the firmware whenever it exits."""
        fast_crashes = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            with self.lock:
                self._start()
            proc = self.proc
            assert proc is not None
            rc = proc.wait()
            if self.stopping.is_set():
                break
            with self.lock:
                cause = self.next_cause
                self.next_cause = None
            if cause is None:
                cause = "reset" if rc == EXIT_RESET else "crash"
            self.cause = cause
            self.say(f"firmware exited rc={rc}: restarting ({cause})")
            if cause == "crash":
                fast_crashes = fast_crashes + 1 if time.monotonic() - started < 5 else 0
                # a board in a crash loop reboots anyway, but don't spin the host CPU
                self.stopping.wait(min(5.0, 0.2 * 2 ** min(fast_crashes, 5)))
        return 0

    def kill(self, cause: str) -> None:
        with self.lock:
            self.next_cause = cause
            if self.proc and self.proc.poll() is None:
                self.proc.kill()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            p = self.proc
        if p and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s in (self._ctl, self._bus_srv):
            try:
                s.close()
            except OSError:
                pass
        self.ip.close()
        self.modem.stop()
        self._ctl_path.unlink(missing_ok=True)

    # --- hardware bus -------------------------------------------------------------------------

    def _bus_accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._bus_srv.accept()
            except OSError:
                return
            with self.lock:
                self.bus_conn = conn
                for name, value in self.adc.items():
                    self._bus_send(f"adc {name} {value}\n")
            threading.Thread(target=self._bus_read, args=(conn,), daemon=True).start()

    def press(self, args: list[str]) -> str:
        """`press [--long] [--hold-ms N]`: the button down for SHORT_MS, LONG_MS or N ms. The
        host keeps "held until" (epoch s) in DIR/hw/button.json and tells the firmware on the
        bus; the emulated board reads it at boot, so a press held through a restart (power-cut)
        is down when the firmware starts, as on a board (docs/web.md "Recovery mode")."""
        ms = LONG_MS if "--long" in args else SHORT_MS
        rest = [a for a in args if a != "--long"]
        if rest:
            if len(rest) != 2 or rest[0] != "--hold-ms" or not rest[1].isdigit() \
                    or not 1 <= int(rest[1]) <= MAX_HOLD_MS:
                return f"error: usage: press [--long] [--hold-ms N] (N 1..{MAX_HOLD_MS})"
            ms = int(rest[1])
        until = time.time() + ms / 1000
        with self.lock:
            tmp = self.hw / "button.json.tmp"
            tmp.write_text(json.dumps({"until": until}))
            tmp.replace(self.hw / "button.json")
            self._bus_send(f"button {until:.3f}\n")
        return "ok"

    def _bus_send(self, line: str) -> bool:
        conn = self.bus_conn
        if conn is None:
            return False
        try:
            conn.sendall(line.encode())
            return True
        except OSError:
            return False

    def _bus_read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode(errors="replace").split()
                if parts[:1] == ["wdt"] and len(parts) == 2 and parts[1].isdigit():
                    self.wdt_ms = int(parts[1])
                    self.last_feed = time.monotonic()
                elif parts[:1] == ["feed"]:
                    self.last_feed = time.monotonic()
        with self.lock:
            if self.bus_conn is conn:
                self.bus_conn = None
        conn.close()

    def _wdt_loop(self) -> None:
        while not self.stopping.wait(0.1):
            ms = self.wdt_ms
            if ms and (time.monotonic() - self.last_feed) * 1000 > ms:
                self.say(f"watchdog expired ({ms} ms without a feed)")
                self.wdt_ms = 0
                self.kill("watchdog")

    # --- control socket -----------------------------------------------------------------------

    def _ctl_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._ctl.accept()
            except OSError:
                return
            with conn:
                try:
                    req = conn.recv(4096).decode().split()
                    reply = self.control(req)
                except Exception as e:  # never let a bad request kill the emulator
                    reply = f"error: {e}"
                try:
                    conn.sendall(reply.encode() + b"\n")
                except OSError:
                    pass

    def control(self, args: list[str]) -> str:
        if not args:
            return "error: empty command"
        cmd = args[0]
        if cmd == "press":
            return self.press(args[1:])
        if cmd == "adc":
            if len(args) != 3 or not args[2].lstrip("-").isdigit():
                return "error: usage: adc NAME VALUE (VALUE an integer)"
            with self.lock:
                self.adc[args[1]] = int(args[2])
                self._bus_send(f"adc {args[1]} {args[2]}\n")
            return "ok"
        if cmd == "power-cut":
            self.kill("power")
            return "ok"
        if cmd == "link":
            if len(args) != 3 or args[1] not in ("ip", "4g") or args[2] not in ("up", "down"):
                return "error: usage: link ip|4g up|down"
            if args[1] == "ip":
                self.ip.set(args[2] == "up")
                return "ok"
            return self.modem.control(args)
        if cmd == "modem":
            return self.modem.control(args)
        if cmd == "status":
            p = self.proc
            return json.dumps({"pid": p.pid if p else None, "boots": self.boots, "cause": self.cause,
                               "version": self.running_version(), "web": last_web(self.hw)})
        return f"error: unknown command {cmd!r} (press, adc, power-cut, link, modem, status)"


def free_port() -> int:
    """A TCP port free on loopback now (the firmware binds it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_web(hw: Path) -> str | None:
    """The local page's URL from the `web` event of the running boot, or None (not listening)."""
    try:
        lines = (hw / "events.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if '"web"' in line or '"boot"' in line:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("dev") == "boot":
                return None
            if e.get("dev") == "web" and isinstance(e.get("value"), dict):
                url = e["value"].get("url")
                return url if isinstance(url, str) else None
    return None


def last_boot(hw: Path) -> dict | None:
    """The value of the last `boot` event in hw/events.jsonl: the version that actually runs."""
    try:
        lines = (hw / "events.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if '"boot"' in line:
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line being written
            if e.get("dev") == "boot" and isinstance(e.get("value"), dict):
                return e["value"]
    return None


def control(dirpath: Path, args: list[str], timeout: float = 5.0) -> str:
    path = Path(dirpath) / "ctl.sock"
    if not path.exists():
        raise EmuError(f"no running terminal in {dirpath} (no ctl.sock)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            raise EmuError(f"no running terminal in {dirpath} (ctl.sock refused)") from None
        s.sendall(" ".join(args).encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()
