"""Shared fixtures: a real Mosquitto on a free loopback port, the pinned micropython binary."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MICROPYTHON = str(VENV_BIN / "micropython") if (VENV_BIN / "micropython").exists() else "micropython"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_bin() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    pytest.fail("mosquitto not installed: run scripts/bootstrap")


class Broker:
    def __init__(self, tmp: Path, extra_conf: str = "") -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 1000\n{extra_conf}"
        )
        self.log = open(tmp / "mosquitto.log", "wb")
        self.proc = subprocess.Popen(
            [mosquitto_bin(), "-c", str(self.conf), "-v"], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


def run_mpy(script: str, *, cwd: Path | None = None, path: list[Path] | None = None,
            heap: str = "1m", timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a MicroPython snippet with the given module search path (default: firmware/)."""
    paths = path if path is not None else [ROOT / "firmware", ROOT / "hardware"]
    e = dict(os.environ)
    e["MICROPYPATH"] = ":".join([".frozen"] + [str(p) for p in paths])
    if env:
        e.update(env)
    return subprocess.run(
        [MICROPYTHON, "-X", f"heapsize={heap}", "-c", script],
        cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout,
    )
