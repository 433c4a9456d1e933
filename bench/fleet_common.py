"""What bench_fleet.py's parts share: the run's constants, the simulated fleet's ids and
heartbeats, and the simulator processes it forks (publishers, bare subscribers, beaters)."""

from __future__ import annotations

import heapq
import json
import multiprocessing as mp
import random
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.sim import heartbeat

N_DEV = 10_000
SHARE_HB = "$share/fleet/eb/dev/+/hb"
INGEST_HB_S = 900
"""hb_s the ingestion heartbeats declare (the 4G interval): the sweep does not mark the 10,000
offline between runs. It changes nothing in what a heartbeat costs to store."""
BIG_QUEUE = ("max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n"
             "max_inflight_bytes 0\n")
"""Appended to tools/broker.py's config for the ingestion runs (later lines win)."""
DEFAULT_INFLIGHT = "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 20\n"
"""Mosquitto's own default max_inflight_messages, for the QoS 1 comparison run."""
DETECT_HB_S = 10
SILENCED = 20
WILLS = 5

PACED = ((0, 6000), (0, 10000), (1, 6000))
"""(QoS, heartbeats/s) of the paced runs: the simulator's 10,000 devices at a steady rate, above
the 5,000/s target (a paced run cannot measure more than it is offered)."""
PACED_COUNT = 50_000

ctx = mp.get_context("fork")


def device_ids(n: int = N_DEV) -> list[tuple[str, str]]:
    """(id, region): 100 towns of 100 villages in county 341122."""
    out = []
    for i in range(n):
        region = f"341122{100 + i // 100:03d}{i % 100 + 1:03d}"
        out.append((f"T{region}-01", region))
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[max(0, -(-len(s) * p // 100) - 1)] if s else float("nan")


def payloads(devs: list[str], rounds: int, run: int) -> list[tuple[str, bytes]]:
    """`rounds` heartbeats per device, round after round; (t, up) distinct per run."""
    t0 = int(time.time()) - 100_000 + run * 1000
    return [(f"eb/dev/{d}/hb",
             json.dumps(heartbeat(d, t0 + r, hb_s=INGEST_HB_S, up=run * 1000 + r),
                        separators=(",", ":")).encode())
            for r in range(rounds) for d in devs]


# ------------------------------------------------------------------ simulator processes


def _connect(host: str, port: int, name: str, inflight: int = 20) -> mqtt.Client:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a child: end quietly when terminated
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{secrets.token_hex(3)}")
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    up = threading.Event()
    c.on_connect = lambda *_a: up.set()
    c.connect(host, port, keepalive=60)
    c.loop_start()
    if not up.wait(10):
        raise SystemExit(f"{name}: no CONNACK")
    return c


def _publisher(host: str, port: int, items: list[tuple[str, bytes]], qos: int,
               ready: Any, go: Any, out: Any, rate: float | None = None) -> None:
    c = _connect(host, port, "bench-pub", inflight=1000)
    ready.release()
    go.wait()
    t0 = time.time()
    if rate is None:
        infos = [c.publish(topic, body, qos) for topic, body in items]
    else:  # paced: slices of 50, each at its due time
        infos = []
        for k in range(0, len(items), 50):
            ahead = t0 + k / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
            infos.extend(c.publish(topic, body, qos) for topic, body in items[k:k + 50])
    t_sent = time.time()
    for i in infos:
        i.wait_for_publish(300)
    t1 = time.time()
    ok = sum(1 for i in infos if i.is_published())
    c.disconnect()
    c.loop_stop()
    out.put(("pub", len(items), ok, t0, t_sent, t1))


def _bare_sub(host: str, port: int, ready: Any, pub_done: Any, out: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    n = 0
    first = last = 0.0
    cpu_last = 0.0
    n_cpu = 0
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal n, first, last, cpu_last, n_cpu
        t = time.time()
        if n == 0:
            first = t
        n += 1
        last = t
        if n % 500 == 0:
            cpu_last, n_cpu = time.process_time(), n

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{secrets.token_hex(3)}",
                    clean_session=True)
    c.on_message = on_message
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(SHARE_HB, 1)  # as the service subscribes
    c.connect(host, port, keepalive=60)
    c.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("bare subscriber: no SUBACK")
    cpu_ready = time.process_time()
    ready.release()
    t_done = 0.0
    while True:
        time.sleep(0.05)
        if pub_done.is_set():
            t_done = t_done or time.time()
            if time.time() - max(last, t_done) > 2.0:
                break
    c.disconnect()
    c.loop_stop()
    out.put(("bare", n, first, last, cpu_last - cpu_ready, n_cpu))


def _beater(host: str, port: int, devices: list[str], hb_s: int, silence: set[str],
            silence_ev: Any, stop_ev: Any, out: Any, seed: int) -> None:
    """Every device heartbeats every hb_s ±10 %, first beats spread over one interval. When
    `silence_ev` is set, the devices in `silence` stop; their last publish times go to `out`."""
    c = _connect(host, port, "bench-beat")
    rnd = random.Random(seed)
    now = time.time()
    n = len(devices)
    heap = [(now + hb_s * i / n, i) for i in range(n)]
    heapq.heapify(heap)
    up = [0] * n
    last: dict[str, float] = {}
    silenced = False
    sent = 0
    while not stop_ev.is_set():
        now = time.time()
        if not silenced and silence_ev.is_set():
            silenced = True
            out.put(("silenced", {d: last.get(d) for d in silence}))
        while heap and heap[0][0] <= now:
            due, i = heapq.heappop(heap)
            d = devices[i]
            if silenced and d in silence:
                continue
            up[i] += hb_s
            body = json.dumps(heartbeat(d, int(now), hb_s=hb_s, up=up[i]), separators=(",", ":"))
            c.publish(f"eb/dev/{d}/hb", body, 0)
            if d in silence:
                last[d] = time.time()
            sent += 1
            heapq.heappush(heap, (due + hb_s * rnd.uniform(0.9, 1.1), i))
        time.sleep(max(0.0, min(0.01, heap[0][0] - time.time())) if heap else 0.01)
    c.disconnect()
    c.loop_stop()
    out.put(("beat", sent))


class Children:
    """The processes this script forked; all ended by their handle."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def end(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
        self.procs.clear()
