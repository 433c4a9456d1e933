"""Start a private Mosquitto on a free loopback port (tests, demo, benchmarks)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_bin() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    raise BrokerError("mosquitto is not installed: run scripts/bootstrap "
                      "(or apt-get install mosquitto)")


class Broker:
    """A Mosquitto process listening on 127.0.0.1:<free port>, config and log in `folder`."""

    def __init__(self, folder: Path, extra_conf: str = "", port: int | None = None,
                 config: str | None = None) -> None:
        """`config`: the whole mosquitto.conf instead of the anonymous loopback listener (it must
        listen on 127.0.0.1:`port`); `extra_conf` is appended either way."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        base = config if config is not None else (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 10000\nmax_inflight_messages 100\n")
        self.conf.write_text(base + extra_conf)
        self.log = open(folder / "mosquitto.log", "wb")
        self.proc = subprocess.Popen(
            [mosquitto_bin(), "-c", str(self.conf), "-v"], stdout=self.log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not start on port {self.port}; see {folder}/mosquitto.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
