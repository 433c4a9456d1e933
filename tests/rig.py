"""End-to-end rig: real Mosquitto, keys made at test time, terminals run by `cx emu run`.

Tests talk to terminals only as the outside world does: envelopes published to the broker,
receipts read from `eb/dev/<id>/event`, outputs read from `DIR/hw/` (specs/emulator.md).
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tools.envelope import KeyPair, make_alert_payload, sign_alert, topics_for
from tools.keys import new_issuer

CX = str(Path(sys.executable).parent / "cx")
# The emulator's default heap is the reference board's (hardware/README.md); the memory benchmark
# reruns the end-to-end suite with smaller heaps through this variable.
HEAP = os.environ.get("CX_TEST_HEAP", "1m")
REGION = "341122100201"


class Receipts:
    """A paho subscriber collecting every terminal receipt."""

    def __init__(self, host: str, port: int) -> None:
        self.items: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rx-{os.getpid()}-{id(self)}")
        self.c.on_message = self._on
        self.c.connect(host, port)
        self.c.subscribe("eb/dev/+/event", 1)
        self.c.loop_start()
        time.sleep(0.2)

    def _on(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            r = json.loads(msg.payload)
        except ValueError:
            r = {"raw": msg.payload}
        r["_dev"] = msg.topic.split("/")[2]
        with self.cond:
            self.items.append(r)
            self.cond.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20,
             start: int = 0) -> dict[str, Any]:
        """The first receipt from index `start` on that matches pred."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.items[start:]:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching receipt within {timeout}s; got {self.items[-10:]}")
                self.cond.wait(left)

    def for_alert(self, aid: str | None, dev: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [r for r in self.items if r.get("alert") == aid and (dev is None or r["_dev"] == dev)]

    def statuses(self, aid: str, dev: str | None = None) -> list[str]:
        return [r["status"] for r in self.for_alert(aid, dev)]

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Term:
    """One emulated terminal run by `cx emu run` in its own folder."""

    def __init__(self, path: Path, cfg: dict[str, Any], heap: str = HEAP,
                 env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ, **(env or {}))
        self.dir = path
        self.cfg = cfg
        self.id = cfg["id"]
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(cfg))
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.start(wait=False)

    def start(self, reflash: bool = False, wait: bool = True) -> None:
        args = [CX, "emu", "run", "--dir", str(self.dir), "--config", str(self.dir / "config.json"),
                "--heap", self.heap]
        if reflash:
            args.append("--reflash")
        self.out = open(self.dir / "emu.out", "ab")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_online()

    def wait_online(self, timeout: float = 30, since: int = 0) -> None:
        self.wait_event(lambda e: e["dev"] == "link" and e["value"] == "ip", timeout, since)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()

    def ctl(self, *args: str) -> str:
        r = subprocess.run([CX, "emu", "ctl", str(self.dir), *args], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def events(self) -> list[dict[str, Any]]:
        p = self.dir / "hw" / "events.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20,
                   since: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events()[since:]:
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event in {timeout}s; last: {self.events()[-8:]}"
                                     f"\nconsole: {self.console()[-2000:]}")
            time.sleep(0.05)

    def console(self) -> str:
        p = self.dir / "hw" / "console.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def log(self) -> list[dict[str, Any]]:
        p = self.dir / "flash" / "log.jsonl"
        out = []
        if p.exists():
            for line in p.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def samples(self) -> tuple[int, list[int]]:
        """(rate, samples) of speaker.wav, read as any WAV reader would."""
        p = self.dir / "hw" / "speaker.wav"
        if not p.exists():
            return 16000, []
        with wave.open(str(p), "rb") as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            n = w.getnframes()
            data = w.readframes(n)
            rate = w.getframerate()
        return rate, list(struct.unpack(f"<{len(data) // 2}h", data))

    def sample_count(self) -> int:
        p = self.dir / "hw" / "speaker.wav"
        if not p.exists():
            return 0
        with wave.open(str(p), "rb") as w:
            return w.getnframes()


class Rig:
    def __init__(self, tmp: Path, broker: Any) -> None:
        self.tmp = tmp
        self.broker = broker
        now = int(time.time())
        self.root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
        self.issuer = new_issuer(self.root, "county-341122", ["341122"], ["alert"],
                                 now - 3600, now + 365 * 86400)
        self.rx = Receipts(broker.host, broker.port)
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}-{id(self)}")
        self.pub.connect(broker.host, broker.port)
        self.pub.loop_start()
        self.terms: list[Term] = []

    def config(self, tid: str = "T341122100201-01", region: str = REGION, **extra: Any) -> dict[str, Any]:
        cfg = {"id": tid, "region": region, "trust": [self.root.anchor()],
               "mqtt": {"host": self.broker.host, "port": self.broker.port}}
        cfg.update(extra)
        return cfg

    def terminal(self, name: str = "t1", heap: str = HEAP, env: dict[str, str] | None = None,
                 **cfg: Any) -> Term:
        t = Term(self.tmp / name, self.config(**cfg), heap, env)
        self.terms.append(t)  # before waiting, so close() stops it even if it never comes up
        t.wait_online()
        return t

    def alert(self, key: KeyPair | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        kw.setdefault("regions", [REGION[:6] + "000000"])
        if kw.get("kind", "alert") != "cancel":
            kw.setdefault("level", 2)
            if "clip" not in kw:
                kw.setdefault("tone", "siren")
        p = make_alert_payload(**kw)
        return sign_alert(key or self.issuer, p), p

    def send(self, env: str | bytes, topics: list[str] | None = None) -> float:
        data = env.encode() if isinstance(env, str) else env
        if topics is None:
            topics = [f"eb/alert/{REGION[:6]}"]
        t = time.time()
        for topic in topics:
            self.pub.publish(topic, data, qos=1).wait_for_publish(5)
        return t

    def send_alert(self, **kw: Any) -> dict[str, Any]:
        env, p = self.alert(**kw)
        self.send(env, topics_for(p))
        return p

    def close(self) -> None:
        for t in self.terms:
            t.stop()
        self.rx.stop()
        self.pub.loop_stop()
        self.pub.disconnect()


def goertzel_power(samples: list[int], rate: int, freq: float) -> float:
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + k * s1 - s2
        s2, s1 = s1, s0
    return s1 * s1 + s2 * s2 - k * s1 * s2


def band_fraction(samples: list[int], rate: int, lo: float, hi: float, step: float = 50) -> float:
    """Share of tone energy (probed every `step` Hz from 100 to 3000 Hz) lying in [lo, hi]."""
    inside = total = 0.0
    f = 100.0
    while f <= 3000:
        p = goertzel_power(samples, rate, f)
        total += p
        if lo <= f <= hi:
            inside += p
        f += step
    return inside / total if total else 0.0
