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
from tools.regions import prefixes, within

CX = str(Path(sys.executable).parent / "cx")
# The emulator's default heap is the reference board's (hardware/README.md); the memory benchmark
# reruns the end-to-end suite with smaller heaps through this variable.
HEAP = os.environ.get("CX_TEST_HEAP", "1m")
REGION = "341122100201"
# Ids of the rig's own probes (Rig.wait_answering, Rig.fence): envelopes a terminal must answer
# `ignored`/`not_for_me` (alerts.md §4 rule 12: nothing plays, nothing is remembered). Receipts
# keeps their receipts apart from `items`, so no test's counts or matches ever see one.
PROBE = "probe-"
PROBE_QUIET_S = 2.0  # a probe round gets no answer for this long: publish the unanswered again


class Receipts:
    """A paho subscriber collecting every terminal receipt: the rig's probes' in `probes` (each
    with `_at`, the length of `items` when it arrived), everything else in `items`."""

    def __init__(self, host: str, port: int) -> None:
        self.items: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []
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
            if isinstance(r.get("alert"), str) and r["alert"].startswith(PROBE):
                r["_at"] = len(self.items)
                self.probes.append(r)
            else:
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

    def probe_answers(self, dev: str, ids: set[str] | None = None, timeout: float = 0,
                      at_least: int = 1) -> dict[str, dict[str, Any]]:
        """The probe receipts from `dev` (of the probes `ids`, if given), by probe id; waits up to
        `timeout` s until there are `at_least` of them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = {r["alert"]: r for r in self.probes
                       if r["_dev"] == dev and (ids is None or r["alert"] in ids)}
                left = deadline - time.monotonic()
                if len(got) >= at_least or left <= 0:
                    return got
                self.cond.wait(left)

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
        # called by wait_online once the link is up: Rig.adopt makes it wait until the terminal
        # answers on every alert topic (its SUBSCRIBEs have reached the broker)
        self.on_online: Callable[[Term], None] | None = None
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
        """Until the link is up over IP (an event from `since` on) and, for a terminal a rig
        adopted, it has answered a probe on each of its alert topics."""
        self.wait_event(lambda e: e["dev"] == "link" and e["value"] == "ip", timeout, since)
        if self.on_online is not None:
            self.on_online(self)

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
                           timeout=30)  # a loaded machine; ctl itself answers in ms
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

    def log(self, rotated: bool = False) -> list[dict[str, Any]]:
        """The terminal's event log on flash; with `rotated`, the older generation first (the
        firmware renames log.jsonl to log.1.jsonl at its size limit)."""
        names = ["log.1.jsonl", "log.jsonl"] if rotated else ["log.jsonl"]
        out = []
        for name in names:
            p = self.dir / "flash" / name
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
        self._probes = 0

    def config(self, tid: str = "T341122100201-01", region: str = REGION, **extra: Any) -> dict[str, Any]:
        cfg = {"id": tid, "region": region, "trust": [self.root.anchor()],
               "mqtt": {"host": self.broker.host, "port": self.broker.port}}
        cfg.update(extra)
        return cfg

    def terminal(self, name: str = "t1", heap: str = HEAP, env: dict[str, str] | None = None,
                 **cfg: Any) -> Term:
        t = self.adopt(Term(self.tmp / name, self.config(**cfg), heap, env))
        t.wait_online()
        return t

    def adopt(self, t: Term) -> Term:
        """Stop `t` at close() (even if it never comes up); its wait_online waits until it
        answers on every alert topic."""
        self.terms.append(t)
        t.on_online = lambda t: self.wait_answering(t.id, t.cfg["region"])
        return t

    # --- probes ----------------------------------------------------------------------------

    def probe(self, region: str, topic: str) -> str:
        """Publish to `topic` an envelope signed by the rig's issuer (its root when the region
        is outside the issuer's scope) for a village no terminal of the rig is in, with a fresh
        `probe-` id: every terminal that gets it answers `ignored`/`not_for_me`. Returns its id."""
        self._probes += 1
        aid = f"{PROBE}{self._probes}-{time.monotonic_ns()}"
        codes = {t.cfg["region"] for t in self.terms} | {region}
        other = next(region[:9] + v for v in ("999", "998", "997") if region[:9] + v not in codes)
        key = self.issuer if within(other, self.issuer.scope) else self.root
        p = make_alert_payload(regions=[other], kind="test", level=4, tone="chime", id=aid,
                               expires_in=600)
        self.send(sign_alert(key, p), [topic])
        return aid

    def wait_answering(self, dev: str, region: str, timeout: float = 60) -> None:
        """Until terminal `dev` (region code `region`) has answered a probe on each of its five
        alert topics (alerts.md §6), so the broker holds all its SUBSCRIBEs: a link event only
        says they were written. A probe published before its SUBSCRIBE arrived is lost, so the
        unanswered topics get a new probe whenever no answer came for PROBE_QUIET_S."""
        deadline = time.monotonic() + timeout
        sent: dict[str, str] = {}  # probe id -> topic
        pending = {f"eb/alert/{p}" for p in prefixes(region)}
        while pending:
            for topic in sorted(pending):
                sent[self.probe(region, topic)] = topic
            while pending:
                seen = len(self.rx.probe_answers(dev, set(sent)))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{dev} never answered a probe on {sorted(pending)} "
                                         f"within {timeout}s")
                got = self.rx.probe_answers(dev, set(sent), min(PROBE_QUIET_S, left), seen + 1)
                pending -= {sent[aid] for aid in got}
                if len(got) == seen:
                    break  # quiet: publish the unanswered topics' probes again

    def fence(self, t: Term, topic: str = f"eb/alert/{REGION[:6]}",
              timeout: float = 30) -> dict[str, Any]:
        """One probe to `t` on `topic`, answered: returns its receipt, whose `_at` is the length
        `rx.items` had when it came. The terminal takes envelopes in and answers them in order,
        so every first receipt (accepted, rejected, ignored) for what the rig published to `topic`
        before is in rx.items[:_at], and none for what it publishes after."""
        aid = self.probe(t.cfg["region"], topic)
        got = self.rx.probe_answers(t.id, {aid}, timeout)
        assert got, f"{t.id} did not answer the probe {aid} on {topic} within {timeout}s"
        return got[aid]

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
