"""Fake terminals speaking docs/fleet-protocol.md from CPython: for tests, demos and the
ingestion benchmark (many devices over one connection). Not the agent: the agent is
`agent/agent.py` under MicroPython; this only says what a terminal says on the wire."""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.ota import OtaError, manifest_payload
from tools.mqttsession import BrokerAuth

OTA_BEHAVIOURS = ("confirm", "rollback", "fail", "silent", "busy")
"""What a fake terminal does with an `ota` command (`ota_behaviour`; or `refuse:<reason>`)."""


def heartbeat(device: str, t: int, *, hb_s: int = 60, up: int | None = None,
              **fields: Any) -> dict[str, Any]:
    """A heartbeat object with healthy defaults; `fields` override them."""
    hb: dict[str, Any] = {
        "id": device, "t": t, "v": "0.1.0", "up": t if up is None else up, "reset": "power",
        "link": "ip", "rssi": None, "g4": [0, 0], "heap": 905000, "clock": "synced", "amp": 0,
        "line": "ok", "line_ma": 0, "supply": "mains", "supply_mv": 12600, "counts": {},
        "last_alert": None, "hb_s": hb_s,
    }
    hb.update(fields)
    return hb


class FakeTerminal:
    """One terminal with its own connection: retained `online` state, `offline` as its last
    will, heartbeats (by hand or every `hb_s`), events, and acknowledged commands. `auth`: its
    login on a broker with ACLs (user = the device id, the password of its config)."""

    def __init__(self, host: str, port: int, device: str, *, hb_s: int = 60,
                 answer_commands: bool = True, auth: BrokerAuth | None = None) -> None:
        self.device = device
        self.hb_s = hb_s
        self.fields: dict[str, Any] = {}
        self.commands: list[dict[str, Any]] = []
        self._t = int(time.time())
        self._up = 0
        self._beating: threading.Event | None = None
        self._connected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"sim-{device}-{secrets.token_hex(3)}")
        self.c.will_set(f"eb/dev/{device}/state", "offline", qos=1, retain=True)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self._answer = answer_commands
        # OTA: what to do with an `ota` command, the pause between two reports, and what
        # happened (monotonic times of the acknowledgement and of the last report).
        self.ota_behaviour = "confirm"
        self.ota_step = 0.02
        self.ota_fetch = True
        self.ota_events: list[dict[str, Any]] = []
        self.ota_started: float | None = None
        self.ota_ended: float | None = None
        if auth is not None:
            auth.apply(self.c)
        self.c.connect(host, port, keepalive=10)
        self.c.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"fake terminal {device}: no CONNACK from {host}:{port}")

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self._answer:
            c.subscribe(f"eb/dev/{self.device}/cmd", 1)
        c.publish(f"eb/dev/{self.device}/state", "online", qos=1, retain=True)
        self._connected.set()

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            cmd = json.loads(msg.payload)
        except ValueError:
            cmd = None
        ack: dict[str, Any]
        if not isinstance(cmd, dict):
            ack = {"cid": None, "ok": False, "error": "bad_json"}
        else:
            self.commands.append(cmd)
            ack = self.answer(cmd)
        ack["t"] = int(time.time())
        c.publish(f"eb/dev/{self.device}/ack", json.dumps(ack), qos=1)
        if isinstance(cmd, dict) and cmd.get("op") == "ota" and ack.get("ok"):
            self.ota_started = time.monotonic()
            threading.Thread(target=self._update, args=(cmd.get("args") or {},),
                             daemon=True).start()

    def answer(self, cmd: dict[str, Any]) -> dict[str, Any]:
        cid, op, args = cmd.get("cid"), cmd.get("op"), cmd.get("args") or {}
        if not cid:
            return {"cid": None, "ok": False, "error": "no_cid"}
        if op == "status":
            return {"cid": cid, "ok": True, "error": None, "result": self.heartbeat_obj()}
        if op == "volume":
            v = args.get("volume")
            if not isinstance(v, int) or not 0 <= v <= 100:
                return {"cid": cid, "ok": False, "error": "bad_args"}
            return {"cid": cid, "ok": True, "error": None, "result": {"volume": v}}
        if op == "ota":
            b = self.ota_behaviour
            if b == "silent":
                return {"cid": cid, "ok": True, "error": None}
            if b.startswith("refuse:") or b == "busy":
                return {"cid": cid, "ok": False, "error": b.removeprefix("refuse:")}
            return {"cid": cid, "ok": True, "error": None}
        if op == "selftest":
            return {"cid": cid, "ok": True, "error": None,
                    "result": {"line": self.fields.get("line", "ok"), "line_ma": 310}}
        return {"cid": cid, "ok": False, "error": "unknown_op"}

    def _report(self, version: str, state: str, reason: str | None = None, done: int = 0,
                total: int = 0) -> None:
        ev = {"ota": version, "state": state, "reason": reason, "done": done, "total": total,
              "t": max(self._t, int(time.time()))}
        self.ota_events.append(ev)
        self.event(ev)

    def _update(self, args: dict[str, Any]) -> None:
        """The update as a terminal reports it (ota.md §4), per `ota_behaviour`; the files are
        fetched from `base` and checked when `ota_fetch` (and the manifest names them)."""
        try:
            man = manifest_payload(str(args.get("manifest", "")))
        except OtaError:
            man = {}
        version = str(man.get("version", "0.0.0"))
        files = [f for f in man.get("files") or [] if isinstance(f, dict)]
        total = sum(int(f.get("bytes", 0)) for f in files)
        if self.ota_behaviour == "silent":
            return
        self._report(version, "downloading", total=total)
        time.sleep(self.ota_step)
        if self.ota_fetch and files and not self._fetch(str(args.get("base", "")), files):
            self._report(version, "failed", "bad_hash", total=total)
        elif self.ota_behaviour == "fail":
            self._report(version, "failed", "unreachable", total=total)
        else:
            for state in ("staged", "trial"):
                self._report(version, state, done=total, total=total)
                time.sleep(self.ota_step)
            if self.ota_behaviour == "rollback":
                self._report(version, "rolled_back", "selftest", done=total, total=total)
            else:
                self.fields["v"] = version
                self._report(version, "confirmed", done=total, total=total)
                self.heartbeat(qos=1)
        self.ota_ended = time.monotonic()

    @staticmethod
    def _fetch(base: str, files: list[dict[str, Any]]) -> bool:
        for f in files:
            try:
                with urllib.request.urlopen(f"{base}/{f['sha256']}.z", timeout=10) as r:
                    data = zlib.decompress(r.read())
            except (OSError, ValueError, zlib.error):
                return False
            if hashlib.sha256(data).hexdigest() != f["sha256"]:
                return False
        return True

    def heartbeat_obj(self, **fields: Any) -> dict[str, Any]:
        self._t = max(self._t + 1, int(time.time()))
        self._up += self.hb_s
        return heartbeat(self.device, self._t, hb_s=self.hb_s, up=self._up,
                         **{**self.fields, **fields})

    def heartbeat(self, qos: int = 0, **fields: Any) -> dict[str, Any]:
        """Publish one heartbeat (terminals use QoS 0) and return it."""
        hb = self.heartbeat_obj(**fields)
        self.c.publish(f"eb/dev/{self.device}/hb", json.dumps(hb), qos=qos)
        return hb

    def event(self, obj: dict[str, Any]) -> None:
        self.c.publish(f"eb/dev/{self.device}/event", json.dumps(obj), qos=1).wait_for_publish(5)

    def fault(self, fault: str, active: bool, value: int = 0) -> None:
        # Terminal time, as the heartbeats count it (the fleet ignores faults older than them).
        self.event({"fault": fault, "active": active, "value": value,
                    "t": max(self._t, int(time.time()))})

    def start_heartbeats(self) -> None:
        """A heartbeat now and then every `hb_s` seconds, until `stop_heartbeats`."""
        self.stop_heartbeats()
        stop = self._beating = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                self.heartbeat()
                stop.wait(self.hb_s)

        threading.Thread(target=beat, daemon=True).start()

    def stop_heartbeats(self) -> None:
        if self._beating is not None:
            self._beating.set()
            self._beating = None

    def die(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the last will."""
        self.stop_heartbeats()
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.stop_heartbeats()
        self.c.disconnect()
        self.c.loop_stop()


def publish_heartbeats(host: str, port: int, devices: Iterable[str], rounds: int, *,
                       qos: int = 1, hb_s: int = 60, t0: int | None = None) -> int:
    """`rounds` heartbeats from every device over one connection (a load simulator); returns
    how many were published (and, at QoS 1, acknowledged by the broker)."""
    devices = list(devices)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-load-{secrets.token_hex(3)}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    t0 = int(time.time()) if t0 is None else t0
    infos = []
    for r in range(rounds):
        for d in devices:
            body = json.dumps(heartbeat(d, t0 + r, hb_s=hb_s, up=r), separators=(",", ":"))
            infos.append(c.publish(f"eb/dev/{d}/hb", body, qos=qos))
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()
    return len(infos)


class ServeProcess:
    """`cx fleet serve` as a child process (tests, benchmarks), its output in `log_path`."""

    def __init__(self, db: str, broker: str, instance: str, log_path: str, *extra: str,
                 cx: str | None = None) -> None:
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        exe = cx or str(Path(sys.executable).parent / "cx")
        self.proc = subprocess.Popen(
            [exe, "fleet", "serve", "--db", db, "--broker", broker, "--instance", instance,
             *extra], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 15, count: int = 1) -> str:
        """Wait until `needle` appears `count` times in the output; returns the output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.text()
            if out.count(needle) >= count:
                return out
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen (exit {self.proc.poll()}):\n{out}")
            time.sleep(0.05)

    def stop(self, sig: int | None = None, timeout: float = 15) -> str:
        """SIGTERM (or `sig`) and wait; returns the whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                self.proc.wait(timeout)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.text()
