"""bench_fleet.py's measurements: (1) ingestion through the bare subscriber(s) and through
`cx fleet serve`, live, paced and from a backlog, the writer alone, the in-flight probe; (2)
offline detection among the simulated fleet. Each returns its figures as a dict for
fleet_report.py."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fleet_common import (
    BIG_QUEUE,
    DEFAULT_INFLIGHT,
    DETECT_HB_S,
    N_DEV,
    PACED,
    PACED_COUNT,
    SHARE_HB,
    SILENCED,
    WILLS,
    Children,
    _bare_sub,
    _beater,
    _connect,
    _publisher,
    ctx,
    device_ids,
    payloads,
)
from paho.mqtt.enums import CallbackAPIVersion

from fleet.service import BATCH_SIZE
from fleet.sim import FakeTerminal, ServeProcess
from fleet.store import OFFLINE_AFTER, Store
from tools.broker import Broker

# ------------------------------------------------------------------ ingestion

def publish_all(kids: Children, broker: Broker, items: list[tuple[str, bytes]], qos: int,
                conns: int, extra_ready: int, ready: Any, rate: float | None = None
                ) -> tuple[float, Any, list[Any]]:
    """Fork `conns` publishers (a device always on the same one), wait until they and
    `extra_ready` others released `ready`, go (all together at `rate`/s if given, else as fast
    as the broker takes them). Returns (t_go, result queue, processes)."""
    go = ctx.Event()
    out = ctx.Queue()
    shards: list[list[tuple[str, bytes]]] = [[] for _ in range(conns)]
    for topic, body in items:
        shards[hash(topic) % conns].append((topic, body))
    ps = [kids.start(_publisher, broker.host, broker.port, s, qos, ready, go, out,
                     None if rate is None else rate * len(s) / max(1, len(items)))
          for s in shards]
    for _ in range(conns + extra_ready):
        if not ready.acquire(timeout=30):
            raise SystemExit("simulator or subscriber not ready")
    t_go = time.time()
    go.set()
    return t_go, out, ps


def pub_results(out: Any, conns: int) -> dict[str, Any]:
    rs = [out.get(timeout=600) for _ in range(conns)]
    return {"sent": sum(r[1] for r in rs), "acked": sum(r[2] for r in rs),
            "t0": min(r[3] for r in rs), "t_sent": max(r[4] for r in rs),
            "t_end": max(r[5] for r in rs)}


def bare_run(kids: Children, broker: Broker, items: list[tuple[str, bytes]], qos: int,
             conns: int, subs: int, rate: float | None = None) -> dict[str, Any]:
    ready = ctx.Semaphore(0)
    pub_done = ctx.Event()
    sub_out = ctx.Queue()
    for _ in range(subs):
        kids.start(_bare_sub, broker.host, broker.port, ready, pub_done, sub_out)
    t_go, out, _ = publish_all(kids, broker, items, qos, conns, subs, ready, rate)
    pub = pub_results(out, conns)
    pub_done.set()
    rs = [sub_out.get(timeout=120) for _ in range(subs)]
    kids.end()
    got = sum(r[1] for r in rs)
    t_last = max(r[3] for r in rs)
    return {**pub, "qos": qos, "got": got, "t_go": t_go, "t_last": t_last,
            "rate": got / (t_last - t_go), "pub_rate": pub["sent"] / (pub["t_end"] - t_go),
            "split": [r[1] for r in rs]}


def served_run(kids: Children, broker: Broker, items: list[tuple[str, bytes]], qos: int,
               conns: int, count: Callable[[], int], rate: float | None = None
               ) -> dict[str, Any]:
    base = count()
    ready = ctx.Semaphore(0)
    t_go, out, ps = publish_all(kids, broker, items, qos, conns, 0, ready, rate)
    expect = len(items)
    samples = [(t_go, 0)]
    pub: dict[str, Any] | None = None
    last_change = t_go
    while True:
        time.sleep(0.1)
        n = count() - base
        now = time.time()
        if n != samples[-1][1]:
            last_change = now
        samples.append((now, n))
        if pub is None and not any(p.is_alive() for p in ps):
            pub = pub_results(out, conns)
        if n >= expect or (pub is not None and now - max(last_change, pub["t_end"]) > 5):
            break
    if pub is None:
        pub = pub_results(out, conns)
    kids.end()
    stored = samples[-1][1]
    t_last = next(t for t, n in samples if n == stored)
    lo = next(t for t, n in samples if n >= 0.1 * stored)
    hi = next(t for t, n in samples if n >= 0.9 * stored)
    return {**pub, "qos": qos, "stored": stored, "t_go": t_go, "t_last": t_last,
            "rate": stored / (t_last - t_go),
            "mid_rate": 0.8 * stored / (hi - lo) if hi > lo else float("nan"),
            "pub_rate": pub["sent"] / (pub["t_end"] - t_go)}


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _service_pids(svcs: list[ServeProcess]) -> list[int]:
    """Each service's receiver and its writer process."""
    pids = []
    for sv in svcs:
        pid = sv.proc.pid
        pids.append(pid)
        for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                pids.append(int(k))
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        os.kill(pid, sig)


def bare_drain(kids: Children, broker: Broker, items: list[tuple[str, bytes]], qos: int,
               conns: int, subs: int) -> dict[str, Any]:
    """The bare subscriber(s) frozen (SIGSTOP) while the publishers send everything, then
    thawed: how fast they work off the backlog with the machine to themselves."""
    ready = ctx.Semaphore(0)
    pub_done = ctx.Event()
    sub_out = ctx.Queue()
    ps = [kids.start(_bare_sub, broker.host, broker.port, ready, pub_done, sub_out)
          for _ in range(subs)]
    for _ in range(subs):
        if not ready.acquire(timeout=30):
            raise SystemExit("bare subscriber not ready")
    _signal_all([p.pid for p in ps], signal.SIGSTOP)
    _, out, _ = publish_all(kids, broker, items, qos, conns, 0, ctx.Semaphore(0))
    pub_results(out, conns)
    time.sleep(0.5)  # the broker has queued the rest
    t_go = time.time()
    _signal_all([p.pid for p in ps], signal.SIGCONT)
    pub_done.set()
    rs = [sub_out.get(timeout=300) for _ in range(subs)]
    kids.end()
    got = sum(r[1] for r in rs)
    t_last = max(r[3] for r in rs)
    cpu, n_cpu = sum(r[4] for r in rs), sum(r[5] for r in rs)
    return {"qos": qos, "got": got, "rate": got / (t_last - t_go),
            "cpu_us": cpu / max(1, n_cpu) * 1e6}


def served_drain(kids: Children, broker: Broker, items: list[tuple[str, bytes]], qos: int,
                 conns: int, svcs: list[ServeProcess], count: Callable[[], int]
                 ) -> dict[str, Any]:
    """The same with the running service(s): receivers and writers frozen while the publishers
    send, thawed, timed until every heartbeat is a row; CPU of receivers + writers."""
    pids = _service_pids(svcs)
    base = count()
    _signal_all(pids, signal.SIGSTOP)
    try:
        _, out, _ = publish_all(kids, broker, items, qos, conns, 0, ctx.Semaphore(0))
        pub_results(out, conns)
        kids.end()
        time.sleep(0.5)
        cpu0 = sum(_cpu(p) for p in pids)
        t_go = time.time()
    finally:
        _signal_all(pids, signal.SIGCONT)
    expect = len(items)
    n, t_last, last_change = 0, t_go, t_go
    while n < expect and time.time() - last_change < 10:
        time.sleep(0.02)
        m = count() - base
        if m != n:
            n, t_last = m, time.time()
            last_change = t_last
    cpu = sum(_cpu(p) for p in pids) - cpu0
    return {"qos": qos, "stored": n, "rate": n / (t_last - t_go),
            "cpu_us": cpu / max(1, n) * 1e6}


def stop_totals(text: str) -> dict[str, int]:
    m = re.search(r"stopped: (\d+) messages stored \((\d+) heartbeats, \d+ receipts, (\d+) bad\), "
                  r"(\d+) acknowledged, (\d+) dropped", text)
    if not m:
        return {}
    return dict(zip(("stored", "heartbeats", "bad", "acked", "dropped"),
                    (int(g) for g in m.groups()), strict=True))


def serve(db: str, broker: Broker, names: list[str], folder: Path) -> list[ServeProcess]:
    svcs = [ServeProcess(db, broker.address, n, str(folder / f"{n}.log")) for n in names]
    for s in svcs:
        s.wait_for("connected to broker", 30)
        s.wait_for("storing into", 30)
    time.sleep(1.0)  # the SUBACK
    return svcs


def ingestion(kids: Children, tmp: Path, db: str, count: Callable[[], int], names: list[str],
              n_msgs: int, conns: int, label: str) -> dict[str, Any]:
    devs = [d for d, _ in device_ids()]
    rounds = max(1, n_msgs // N_DEV)
    res: dict[str, Any] = {"label": label, "instances": len(names), "runs": []}
    broker = Broker(tmp / f"broker-{label}", extra_conf=BIG_QUEUE)
    svcs: list[ServeProcess] = []
    try:
        for run, qos in enumerate((0, 1)):
            items = payloads(devs, rounds, run)
            b = bare_run(kids, broker, items, qos, conns, len(names))
            print(f"  [{label}] bare x{len(names)} QoS {qos}: {b['got']}/{b['sent']} received, "
                  f"{b['rate']:,.0f}/s (publisher {b['pub_rate']:,.0f}/s)", flush=True)
            res["runs"].append({"bare": b})
        # Before any service connects: their sessions would take a share of the backlog.
        for run, qos in enumerate((0, 1)):
            res["runs"][run]["bare_drain"] = bare_drain(
                kids, broker, payloads(devs, rounds, 40 + run), qos, conns, len(names))
        res["paced"] = []
        for k, (qos, rate) in enumerate(PACED):
            b = bare_run(kids, broker, payloads(devs, PACED_COUNT // N_DEV, 50 + k), qos, conns,
                         len(names), rate)
            res["paced"].append({"qos": qos, "offered": rate, "bare": b})
        svcs = serve(db, broker, names, tmp)
        for k, (qos, rate) in enumerate(PACED):
            sv = served_run(kids, broker, payloads(devs, PACED_COUNT // N_DEV, 60 + k), qos, conns,
                            count, rate)
            pr = res["paced"][k]
            pr["served"] = sv
            pr["ratio"] = sv["rate"] / pr["bare"]["rate"]
            print(f"  [{label}] paced QoS {qos} at {rate:,}/s: bare {pr['bare']['rate']:,.0f}/s, "
                  f"service {sv['rate']:,.0f}/s ({sv['stored']:,} stored, last row "
                  f"{sv['t_last'] - sv['t_sent']:.2f} s after the last publish): "
                  f"{pr['ratio']:.2f}", flush=True)
        for run, qos in enumerate((0, 1)):
            items = payloads(devs, rounds, 10 + run)
            s = served_run(kids, broker, items, qos, conns, count)
            ratio = s["rate"] / res["runs"][run]["bare"]["rate"]
            print(f"  [{label}] served x{len(names)} QoS {qos}: {s['stored']}/{s['sent']} stored, "
                  f"{s['rate']:,.0f}/s ({ratio:.2f} of bare; 10-90 % {s['mid_rate']:,.0f}/s; "
                  f"publisher {s['pub_rate']:,.0f}/s)", flush=True)
            res["runs"][run]["served"] = s
            res["runs"][run]["ratio"] = ratio
        for run, qos in enumerate((0, 1)):
            d = served_drain(kids, broker, payloads(devs, rounds, 30 + run), qos, conns, svcs,
                             count)
            b = res["runs"][run]["bare_drain"]
            d["ratio"] = d["rate"] / b["rate"]
            res["runs"][run]["served_drain"] = d
            print(f"  [{label}] backlog QoS {qos}: bare {b['rate']:,.0f}/s "
                  f"({b['cpu_us']:.0f} µs CPU/msg), service {d['rate']:,.0f}/s "
                  f"({d['cpu_us']:.0f} µs CPU/msg): {d['ratio']:.2f}", flush=True)
    finally:
        res["totals"] = [stop_totals(s.stop(timeout=120)) for s in svcs]
        broker.stop()
    return res


def qos1_default_inflight(kids: Children, tmp: Path, db: str, count: Callable[[], int],
                          conns: int) -> dict[str, Any]:
    """One round of QoS 1 heartbeats with Mosquitto's default max_inflight_messages (20)."""
    devs = [d for d, _ in device_ids()]
    broker = Broker(tmp / "broker-inflight20", extra_conf=DEFAULT_INFLIGHT)
    svcs: list[ServeProcess] = []
    try:
        svcs = serve(db, broker, ["bench-inflight20"], tmp)
        s = served_run(kids, broker, payloads(devs, 1, 20), 1, conns, count)
    finally:
        for sv in svcs:
            sv.stop(timeout=120)
        broker.stop()
    print(f"  [sqlite, inflight 20] QoS 1: {s['stored']}/{s['sent']} stored, {s['rate']:,.0f}/s",
          flush=True)
    return s


def sqlite_count(path: Path) -> Callable[[], int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    return lambda: int(conn.execute("SELECT COUNT(*) FROM heartbeats").fetchone()[0])


def register(db: str, n: int = N_DEV) -> float:
    t = time.monotonic()
    st = Store.open(db)
    try:
        st.upsert_devices([(d, r, "horn") for d, r in device_ids(n)])
    finally:
        st.close()
    return time.monotonic() - t


def isolation(url: str, batches: int = 50) -> dict[str, float]:
    """The writer's cost without MQTT: parse, Store.ingest per batch of BATCH_SIZE, and two
    parts of it timed on their own with the same SQL (history trim, alarm reconcile)."""
    from fleet.ingest import parse

    st = Store.open(url)
    try:
        ids = device_ids()
        st.upsert_devices([(d, r, "horn") for d, r in ids])
        items = payloads([d for d, _ in ids], 2, 50)[: batches * BATCH_SIZE]
        now = time.time()
        t = time.perf_counter()
        recs = [parse(tp, body, now) for tp, body in items]
        parse_us = (time.perf_counter() - t) / len(items) * 1e6
        t = time.perf_counter()
        for i in range(batches):
            st.ingest(recs[i * BATCH_SIZE:(i + 1) * BATCH_SIZE])
        ingest_ms = (time.perf_counter() - t) / batches * 1000
        devs = sorted({r.device for r in recs[:BATCH_SIZE]})  # type: ignore[union-attr]
        trim = reconcile = 0.0
        for _ in range(5):
            with st.transaction() as cur:
                t = time.perf_counter()
                st.trim_history(cur, devs)  # as ingest() does
                trim += time.perf_counter() - t
                t = time.perf_counter()
                st.reconcile_alarms(cur, time.time(), devs)
                reconcile += time.perf_counter() - t
    finally:
        st.close()
    return {"parse_us": parse_us, "ingest_ms": ingest_ms, "per_msg_us": ingest_ms * 1000 /
            BATCH_SIZE, "trim_ms": trim / 5 * 1000, "reconcile_ms": reconcile / 5 * 1000}


def inflight_probe(tmp: Path) -> tuple[int, int]:
    """A manual-ack QoS 1 subscriber that acknowledges nothing, 500 messages published, with
    max_inflight_messages 20: how many arrive; then after acknowledging those."""
    broker = Broker(tmp / "broker-probe", extra_conf="max_inflight_messages 20\n")
    got: list[Any] = []
    try:
        s = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe",
                        clean_session=False, manual_ack=True)
        s.on_message = lambda _c, _u, m: got.append(m)
        s.connect(broker.host, broker.port)
        s.loop_start()
        time.sleep(0.3)
        s.subscribe(SHARE_HB, 1)
        time.sleep(0.5)
        p = _connect(broker.host, broker.port, "bench-probe-pub", inflight=1000)
        infos = [p.publish(f"eb/dev/d{i}/hb", b"{}", 1) for i in range(500)]
        for i in infos:
            i.wait_for_publish(10)
        time.sleep(1.5)
        first = len(got)
        for m in got[:first]:
            s.ack(m.mid, 1)
        time.sleep(1.5)
        after = len(got)
        p.disconnect()
        p.loop_stop()
        s.disconnect()
        s.loop_stop()
    finally:
        broker.stop()
    return first, after


# ------------------------------------------------------------------ offline detection


def detection(kids: Children, tmp: Path) -> dict[str, Any]:
    db = tmp / "detect.sqlite"
    register(str(db))
    ids = [d for d, _ in device_ids()]
    rnd = random.Random(7)
    wills = ids[:WILLS]
    beating = ids[WILLS:]
    silence = set(rnd.sample(beating, SILENCED))
    broker = Broker(tmp / "broker-detect")
    svcs: list[ServeProcess] = []
    terms: list[FakeTerminal] = []
    res: dict[str, Any] = {}
    try:
        svcs = serve(str(db), broker, ["bench-detect"], tmp)
        silence_ev, stop_ev, out = ctx.Event(), ctx.Event(), ctx.Queue()
        half = len(beating) // 2
        for k, part in enumerate((beating[:half], beating[half:])):
            kids.start(_beater, broker.host, broker.port, part, DETECT_HB_S,
                       silence & set(part), silence_ev, stop_ev, out, k)
        for d in wills:
            t = FakeTerminal(broker.host, broker.port, d, hb_s=DETECT_HB_S, answer_commands=False)
            t.start_heartbeats()
            terms.append(t)
        store = Store.open(str(db))
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        t0 = time.time()
        while True:
            online = conn.execute("SELECT COUNT(*) FROM devices WHERE state = 'online'"
                                  ).fetchone()[0]
            if online == N_DEV:
                break
            if time.time() - t0 > 6 * DETECT_HB_S:
                raise SystemExit(f"only {online} of {N_DEV} online after {6 * DETECT_HB_S} s")
            time.sleep(0.5)
        res["online_after"] = time.time() - t0
        print(f"  all {N_DEV} online after {res['online_after']:.1f} s", flush=True)
        time.sleep(DETECT_HB_S)  # a full interval of steady state
        silence_ev.set()
        last: dict[str, float] = {}
        for _ in range(2):
            last.update(out.get(timeout=10)[1])
        seen: dict[str, float] = {}
        deadline = time.time() + OFFLINE_AFTER * DETECT_HB_S * 1.1 + 30
        while len(seen) < SILENCED and time.time() < deadline:
            now = time.time()
            for a in store.alarms(active=True, kind="offline"):
                if a.device in silence and a.device not in seen:
                    seen[a.device] = now
            time.sleep(0.2)
        alarms = {a.device: a for a in store.alarms(active=True, kind="offline")}
        res["silenced"] = [
            {"device": d, "last_pub": last[d], "seen": seen.get(d),
             "opened": alarms[d].opened_at if d in alarms else None,
             "last_hb_at": store.device(d).last_hb_at, "detail": alarms[d].detail
             if d in alarms else None} for d in sorted(silence)]
        res["false"] = sorted(set(alarms) - silence)
        # the last-will path
        killed: dict[str, float] = {}
        wseen: dict[str, float] = {}
        for t in terms:  # one at a time: die() takes up to ~1 s (paho's loop_stop) before the drop
            t.die()
            killed[t.device] = time.time()
            deadline = time.time() + 15
            while t.device not in wseen and time.time() < deadline:
                now = time.time()
                if store.alarms(active=True, kind="offline", device=t.device):
                    wseen[t.device] = now
                time.sleep(0.02)
        alarms = {a.device: a for a in store.alarms(active=True, kind="offline")}
        res["wills"] = [{"device": d, "killed": killed[d], "seen": wseen.get(d),
                         "opened": alarms[d].opened_at if d in alarms else None,
                         "detail": alarms[d].detail if d in alarms else None} for d in wills]
        res["false_after"] = sorted(set(alarms) - silence - set(wills))
        stop_ev.set()
        res["beats"] = sum(out.get(timeout=10)[1] for _ in range(2))
        store.close()
        conn.close()
    finally:
        for t in terms:
            t.stop_heartbeats()
        kids.end()
        for s in svcs:
            res["log"] = s.stop(timeout=60)
        broker.stop()
    return res


