"""A fleet OTA rig for the rollout tests: a store with provisioned terminals, an uploaded
release, `cx fleet serve` (ingestion) on the test's broker, the file server, fake terminals that
answer `ota`, and engines (in this process, or `cx ota serve` as a child)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from otafleet import make_release, until

from fleet import ota
from fleet.ota_engine import Engine
from fleet.ota_http import FileServer
from fleet.sim import FakeTerminal, ServeProcess
from fleet.store import Store

TOWNS = ("341122100201", "341122101202", "341122102203", "341122103204")


def ids(n: int) -> list[str]:
    return [f"T{TOWNS[i % len(TOWNS)]}-{i:02d}" for i in range(n)]


class Rig:
    def __init__(self, tmp: Path, broker: Any, url: str, n: int, version: str = "1.2.0") -> None:
        self.tmp, self.broker, self.url, self.version = tmp, broker, url, version
        self.devices = ids(n)
        self.store = Store.open(url)
        self.store.upsert_devices([(d, d[1:13], "horn") for d in self.devices])
        rel_dir = make_release(tmp / "rel", version)
        self.files = tmp / "store"
        self.files.mkdir()
        rel = ota.read_release(rel_dir)
        ota.copy_files(rel_dir, rel, self.files)
        self.store.add_release(rel)
        self.http = FileServer(self.files, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.http.port}"
        self.serve = ServeProcess(url, broker.address, "ota-test", str(tmp / "serve.log"))
        self.serve.wait_for("connected to broker")
        self.terminals: dict[str, FakeTerminal] = {}
        self.engines: list[tuple[Engine, threading.Event, threading.Thread]] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []

    def connect(self, devices: list[str], *, behaviour: str = "confirm", link: str = "ip",
                wait: bool = True) -> list[FakeTerminal]:
        out = []
        for d in devices:
            t = FakeTerminal(self.broker.host, self.broker.port, d)
            t.ota_behaviour = behaviour
            t.fields["link"] = link
            t.heartbeat(qos=1)
            self.terminals[d] = t
            out.append(t)
        if wait:
            until(lambda: all(self.store.device(d).state == "online" and
                              self.store.device(d).link == link for d in devices),
                  what=f"{len(devices)} terminals online")
        return out

    def engine(self, instance: str, *, ack_timeout: float = 10.0) -> Engine:
        e = Engine(self.url, self.broker.host, self.broker.port, self.base, instance=instance,
                   every=0.05, ack_timeout=ack_timeout, log=self.logs.append)
        stop = threading.Event()
        th = threading.Thread(target=e.run, args=(stop,), daemon=True)
        th.start()
        self.engines.append((e, stop, th))
        return e

    def cx_serve(self, instance: str, *, ack_timeout: float = 60,
                 base: str | None = None) -> subprocess.Popen[bytes]:
        exe = str(Path(sys.executable).parent / "cx")
        log = open(self.tmp / f"ota-{instance}.log", "wb")
        p = subprocess.Popen([exe, "ota", "serve", "--db", self.url, "--broker",
                              self.broker.address, "--store", str(self.files), "--http",
                              "127.0.0.1:0", "--instance", instance, "--every", "0.05",
                              "--ack-timeout", str(ack_timeout),
                              *(["--base", base] if base else [])],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children.append(p)
        return p

    def state(self) -> str:
        return self.store.rollout(self.version).state

    def wait_state(self, *states: str, timeout: float = 30) -> str:
        return until(lambda: self.state() in states and self.state(), timeout,
                     what=f"rollout {' or '.join(states)}; targets "
                          f"{self.store.targets(self.version)}")

    def ota_commands(self, device: str) -> list[dict[str, Any]]:
        return [c for c in self.terminals[device].commands if c.get("op") == "ota"] \
            if device in self.terminals else []

    def close(self) -> None:
        for _e, stop, th in self.engines:
            stop.set()
            th.join(10)
        for p in self.children:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self.terminals.values():
            t.close()
        self.serve.stop()
        self.http.stop()
        self.store.close()
