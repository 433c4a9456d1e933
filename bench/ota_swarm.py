"""A swarm of simulated terminals for bench_ota_rollout.py: many devices in one asyncio process,
each with its own MQTT 3.1.1 connection and its own HTTP downloads, saying on the wire what
fleet/sim.py's FakeTerminal says (docs/fleet-protocol.md, ../shared/specs/ota.md §2 and §4).

Why not one FakeTerminal each: paho's network loop waits in select(), which takes no descriptor
above 1024, and a paho client holds three (its socket and a wake-up socket pair), so one process
stops at about 340 clients ("no CONNACK"); 1,000 would also be 1,000 loop threads on 2 cores.
Here one event loop (epoll) carries every connection.

Each device, on its own connection:
- CONNECT (clean session, keepalive 120 s) with the last will `offline` (QoS 1, retained) on
  `eb/dev/<id>/state`, SUBSCRIBE `eb/dev/<id>/cmd` at QoS 1, `online` retained, a heartbeat at
  QoS 1, then a heartbeat (QoS 0) every `hb_s` seconds, the first ones spread over one interval;
  while an update is under way the heartbeat carries `"ota": {"version", "state"}`.
- an `ota` command (PUBACKed): acknowledged on `eb/dev/<id>/ack` at once (`ok: true`; the same
  version again changes nothing); then the §4 reports on `eb/dev/<id>/event` at QoS 1:
  `downloading` at the start and after each further tenth of the bytes verified, every file of
  the manifest fetched with `GET <base>/<sha256>.z` (HTTP/1.0, a connection each, read at most
  `rate` bytes/s: the terminal's link), inflated and its sha256 checked; `staged`, `trial`, then
  `confirmed` (and a heartbeat with the new `v`) or, for behaviour `rollback`, `rolled_back`
  reason `selftest`; `fail`: `failed unreachable` after the download; a bad file `failed
  bad_hash`. `step` seconds between staged, trial and the outcome (the reboot and the trial).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fleet.ota import OtaError, manifest_payload
from fleet.sim import heartbeat

KEEPALIVE = 120
CONNECT_AT_ONCE = 50
"""Connections opened together while the swarm starts (the broker's accept queue)."""


def _len(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _len(len(body)) + body


@dataclass
class Record:
    """What one device saw and did, for the benchmark's checks (epoch seconds)."""

    commands: list[tuple[float, str]] = field(default_factory=list)
    reports: list[tuple[float, str]] = field(default_factory=list)
    fetch: tuple[float, float] | None = None
    """(first GET sent, last byte of the last file received) of the update's download."""
    http_503: int = 0


class Device:
    def __init__(self, swarm: Swarm, device: str, behaviour: str) -> None:
        self.swarm, self.device, self.behaviour = swarm, device, behaviour
        self.rec = Record()
        self.version = "0.1.0"
        self.ota: dict[str, str] | None = None
        self.updating: str | None = None
        self._pid = 0
        self._t = int(time.time())
        self._up = 0
        self._w: asyncio.StreamWriter | None = None
        self.subscribed = asyncio.Event()

    # ---- MQTT

    def _send(self, data: bytes) -> None:
        if self._w is not None and not self._w.is_closing():
            self._w.write(data)

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        pid = b""
        if qos:
            self._pid = self._pid % 65535 + 1
            pid = struct.pack("!H", self._pid)
        self._send(_packet(0x30 | qos << 1 | int(retain), _str(topic) + pid + payload.encode()))

    async def connect(self) -> None:
        host, port = self.swarm.broker
        r, w = await asyncio.open_connection(host, port)
        self._w = w
        will = f"eb/dev/{self.device}/state"
        w.write(_packet(0x10, _str("MQTT") + bytes([4, 0x2E]) + struct.pack("!H", KEEPALIVE)
                        + _str(f"swarm-{self.device}") + _str(will) + _str("offline")))
        first, body = await self._read(r)
        if first >> 4 != 2 or body[1] != 0:
            raise RuntimeError(f"{self.device}: CONNACK {body!r}")
        w.write(_packet(0x82, struct.pack("!H", 1) + _str(f"eb/dev/{self.device}/cmd") + b"\1"))
        self.publish(will, "online", qos=1, retain=True)
        self.heartbeat(qos=1)
        self.swarm.tasks.add(asyncio.create_task(self._reader(r)))

    @staticmethod
    async def _read(r: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await r.readexactly(1))[0]
        n = shift = 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return first, await r.readexactly(n) if n else b""

    async def _reader(self, r: asyncio.StreamReader) -> None:
        try:
            while True:
                first, body = await self._read(r)
                kind = first >> 4
                if kind == 9:
                    self.subscribed.set()
                elif kind == 3:
                    qos = first >> 1 & 3
                    tl = struct.unpack("!H", body[:2])[0]
                    at = 2 + tl
                    if qos:
                        self._send(_packet(0x40, body[at:at + 2]))
                        at += 2
                    self._command(body[at:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def close(self) -> None:
        if self._w is not None:
            self._send(b"\xe0\x00")
            self._w.close()

    # ---- the terminal

    def heartbeat(self, qos: int = 0) -> None:
        self._t = max(self._t + 1, int(time.time()))
        self._up += self.swarm.hb_s
        hb = heartbeat(self.device, self._t, hb_s=self.swarm.hb_s, up=self._up, v=self.version)
        if self.ota is not None:
            hb["ota"] = self.ota
        self.publish(f"eb/dev/{self.device}/hb", json.dumps(hb, separators=(",", ":")), qos)

    def _command(self, payload: bytes) -> None:
        try:
            cmd = json.loads(payload)
        except ValueError:
            return
        if not isinstance(cmd, dict):
            return
        op, cid = cmd.get("op"), cmd.get("cid")
        self.rec.commands.append((time.time(), str(op)))
        ack: dict[str, Any] = {"cid": cid, "ok": op == "ota", "error": None if op == "ota"
                               else "unknown_op", "t": int(time.time())}
        self.publish(f"eb/dev/{self.device}/ack", json.dumps(ack), qos=1)
        if op != "ota":
            return
        args = cmd.get("args") or {}
        try:
            man = manifest_payload(str(args.get("manifest", "")))
        except OtaError:
            return
        version = str(man.get("version"))
        if self.updating == version or self.version == version:
            return  # the same manifest again: acknowledged, nothing changes (docs/ota.md)
        self.updating = version
        self.swarm.tasks.add(asyncio.create_task(self._update(version, man, str(args["base"]))))

    def _report(self, version: str, state: str, reason: str | None, done: int,
                total: int) -> None:
        now = time.time()
        self.rec.reports.append((now, state))
        self.ota = {"version": version, "state": state}
        ev = {"ota": version, "state": state, "reason": reason, "done": done, "total": total,
              "t": max(self._t, int(now))}
        self.publish(f"eb/dev/{self.device}/event", json.dumps(ev), qos=1)

    async def _update(self, version: str, man: dict[str, Any], base: str) -> None:
        files = [f for f in man.get("files") or [] if isinstance(f, dict)]
        total = sum(int(f["bytes"]) for f in files)
        done, tenth = 0, 1
        self._report(version, "downloading", None, 0, total)
        t0 = time.time()
        for f in files:
            data = await self.swarm.fetch(f"{base}/{f['sha256']}.z", self.rec)
            try:
                ok = data is not None and hashlib.sha256(zlib.decompress(data)).hexdigest() \
                    == f["sha256"]
            except zlib.error:
                ok = False
            if not ok:
                self._report(version, "failed", "bad_hash", done, total)
                self.ota, self.updating = None, None
                return
            done += int(f["bytes"])
            if done * 10 >= tenth * total and done < total:
                self._report(version, "downloading", None, done, total)
                tenth = done * 10 // total + 1
        self.rec.fetch = (t0, time.time())
        if self.behaviour == "fail":
            self._report(version, "failed", "unreachable", done, total)
            self.ota, self.updating = None, None
            return
        for state in ("staged", "trial"):
            self._report(version, state, None, total, total)
            await asyncio.sleep(self.swarm.step)
        if self.behaviour == "rollback":
            self._report(version, "rolled_back", "selftest", total, total)
        else:
            self.version = version
            self._report(version, "confirmed", None, total, total)
        self.ota, self.updating = None, None
        self.heartbeat(qos=1)


class Swarm:
    """The devices and their shared settings; `run` is the child process's whole life."""

    def __init__(self, broker: tuple[str, int], devices: list[tuple[str, str]], *, hb_s: int,
                 rate: float, step: float) -> None:
        self.broker, self.hb_s, self.rate, self.step = broker, hb_s, rate, step
        self.devices = [Device(self, d, b) for d, b in devices]
        self.tasks: set[asyncio.Task[None]] = set()

    async def fetch(self, url: str, rec: Record) -> bytes | None:
        """GET url (HTTP/1.0) read at most `rate` bytes/s; None when it cannot be had."""
        u = urlsplit(url)
        for _ in range(30):
            try:
                r, w = await asyncio.open_connection(u.hostname, u.port or 80)
            except OSError:
                return None
            try:
                w.write(f"GET {u.path} HTTP/1.0\r\nHost: {u.netloc}\r\n\r\n".encode())
                head = await r.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if status == 503:
                    rec.http_503 += 1
                    await asyncio.sleep(1.0)
                    continue
                if status != 200:
                    return None
                size = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                if line.lower().startswith(b"content-length:")))
                body, t0 = bytearray(), time.monotonic()
                while len(body) < size:
                    chunk = await r.read(min(4096, size - len(body)))
                    if not chunk:
                        return None
                    body += chunk
                    ahead = t0 + len(body) / self.rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                return bytes(body)
            except (OSError, ValueError, StopIteration, asyncio.IncompleteReadError):
                return None
            finally:
                w.close()
        return None

    async def _beats(self, d: Device) -> None:
        await asyncio.sleep(random.uniform(0, self.hb_s))
        while True:
            d.heartbeat()
            await asyncio.sleep(self.hb_s)

    async def start(self) -> None:
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def one(d: Device) -> None:
            async with gate:
                await d.connect()
                await asyncio.wait_for(d.subscribed.wait(), 30)

        await asyncio.gather(*(one(d) for d in self.devices))
        for d in self.devices:
            self.tasks.add(asyncio.create_task(self._beats(d)))

    async def run(self, ready: Any, stop: Any) -> dict[str, Record]:
        await self.start()
        ready.put(("ready", time.time()))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for d in self.devices:
            d.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.sleep(0.2)
        return {d.device: d.rec for d in self.devices}


def child(broker: tuple[str, int], devices: list[tuple[str, str]], hb_s: int, rate: float,
          step: float, ready: Any, stop: Any, out: Any) -> None:
    """The swarm's process (multiprocessing target): `ready` gets ("ready", t) once every device
    is connected and subscribed, `out` the records once `stop` is set."""
    try:
        recs = asyncio.run(Swarm(broker, devices, hb_s=hb_s, rate=rate, step=step)
                           .run(ready, stop))
    except Exception as e:  # the parent reports it rather than waiting forever
        ready.put(("error", repr(e)))
        out.put(("error", repr(e)))
        return
    out.put(("records", recs))
