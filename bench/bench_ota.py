"""OTA figures (docs/ota.md): bytes over the air, alert latency while an update downloads, heap.

(a) Bytes: a full release of this checkout and a one-module change (tones.py), compressed, as
    `cx ota diff` counts them; then the same two updates to one emulated terminal on 4G only
    (its IP line cut), as the emulated modem counts the TCP payload it carried from the command
    to the confirmation (HTTP headers and MQTT included; no TLS here: the emulator's broker is
    plain MQTT).
(b) Latency: two terminals on IP take the same N alerts, first both idle, then while one of them
    downloads a full release from a slow server (2 kB/s): broker publish to amplifier on, as
    bench/bench_latency.py times it, side by side at the same instants.
(c) Heap: the terminal's `mem` lines (alloc and free after a collection at each quiet moment)
    idle and during the download, and any MemoryError in its console.
(d) Heap and flash over N successive full updates (default 20) of ONE terminal in one run
    (bench/bench_ota_heap.py, which also runs alone).

    .venv/bin/python bench/bench_ota.py [--n 20] [--updates 20] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from bench_latency import pct, read_events, wait_amp
from bench_ota_heap import heap_releases, heap_summary, heap_table, heap_updates
from otahelp import Commands, Server, build
from rig import Rig, Term

from tools import release
from tools.broker import Broker
from tools.envelope import KeyPair, topics_for

TITLE = "OTA"


def wait_state(rig: Rig, t: Term, version: str, state: str, timeout: float = 180) -> None:
    rig.rx.wait(lambda r: r.get("_dev") == t.id and r.get("ota") == version
                and r.get("state") == state, timeout)


def modem_down(t: Term) -> int:
    return int(json.loads(t.ctl("modem", "status"))["bytes_down"])


def over_4g(rig: Rig, key: KeyPair, server: Server, cmds: Commands,
            rels: list[Path]) -> list[int]:
    t = rig.terminal("g4", tid="T341122100201-88", trust=[rig.root.anchor(), key.anchor()],
                     ota_trial_s=120)
    n = len(t.events())
    t.ctl("link", "ip", "down")
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "4g", 120, since=n)
    out = []
    for rel in rels:
        before = modem_down(t)
        summary = json.loads((rel / "release.json").read_text())
        assert cmds.ota(t.id, rel, server.base)["ok"] is True
        wait_state(rig, t, summary["version"], "confirmed", 600)
        out.append(modem_down(t) - before)
        print(f"  {summary['version']} over 4G: {out[-1]} bytes down", flush=True)
    t.stop()
    return out


def pauses(log: list[dict[str, Any]]) -> dict[str, Any]:
    """The updater's `ota_paused` lines (it waited for an alert; ms: how long)."""
    ms = [e["ms"] for e in log if e.get("ev") == "ota_paused"]
    return {"count": len(ms), "ms_total": sum(ms), "ms_max": max(ms, default=0)}


def side_by_side(rig: Rig, terms: list[Term], n: int) -> list[list[float]]:
    """n alerts (level 2, siren) each sent once to every terminal in `terms` (one region): per
    terminal, broker publish to its amp 1 in ms; each cancelled and waited until every amp is 0.
    The same alert at the same instant: the same load, the same replay store on every one."""
    evs = [t.dir / "hw" / "events.jsonl" for t in terms]
    out: list[list[float]] = [[] for _ in terms]
    for _ in range(n):
        env, p = rig.alert(level=2, tone="siren")
        since = [len(read_events(ev)) for ev in evs]
        t0 = rig.send(env, topics_for(p))
        for k, ev in enumerate(evs):
            out[k].append((wait_amp(ev, 1, since[k], 10)["t"] - t0) * 1000)
        since = [len(read_events(ev)) for ev in evs]
        cenv, cp = rig.alert(kind="cancel", refs=[p["id"]])
        rig.send(cenv, topics_for(cp))
        for k, ev in enumerate(evs):
            wait_amp(ev, 0, since[k], 10)
    return out


def latency(rig: Rig, key: KeyPair, server: Server, cmds: Commands, rel: Path,
            n: int) -> dict[str, Any]:
    # Two terminals of one village take the same alerts: first both idle (what the pair differs
    # by on its own), then while B downloads a release. Idle first and downloading after, on one
    # terminal, compared runs that differ in more than the update: the replay store grows by two
    # entries per alert and its write is on every verification's path (seen.py), and the load of
    # this shared machine drifts between the halves.
    trust = [rig.root.anchor(), key.anchor()]
    a = rig.terminal("lat-a", tid="T341122100201-76", trust=trust, hold_ms=100)
    t = rig.terminal("lat", tid="T341122100201-77", trust=trust, hold_ms=100)
    time.sleep(2)  # past the boot-time heap reading
    pair = side_by_side(rig, [a, t], n)
    mem_idle = [e for e in t.log() if e.get("ev") == "mem"]
    server.rate = 2000
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    deadline = time.monotonic() + 60
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    k = len(t.log())
    during = side_by_side(rig, [a, t], n)
    staged = [r for r in rig.rx.items if r.get("_dev") == t.id and r.get("state") == "staged"]
    deadline = time.monotonic() + 10  # the quiet moment after the last alert logs its mem line
    while time.monotonic() < deadline and not [e for e in t.log()[k:] if e.get("ev") == "mem"]:
        time.sleep(0.2)
    mem_busy = [e for e in t.log()[k:] if e.get("ev") == "mem"]
    errors = [ln for ln in t.console().splitlines() if "MemoryError" in ln]
    paused = pauses(t.log()[k:])
    server.rate = None
    a.stop()
    t.stop()
    return {"pair_a": pair[0], "pair_b": pair[1], "idle": during[0], "busy": during[1],
            "still_downloading": not staged, "paused": paused,
            "mem_idle": mem_idle[-1] if mem_idle else None,
            "mem_busy_min_free": min((e["free"] for e in mem_busy), default=None),
            "mem_busy_max_alloc": max((e["alloc"] for e in mem_busy), default=None),
            "memory_errors": errors}


def report(d: dict[str, Any]) -> str:
    full, one = d["full"], d["one"]
    la = d["lat"]
    kb = lambda b: f"{b / 1024:.1f} KB"
    g4 = d["g4"]
    lines = [
        ("`python bench/bench_ota.py` reproduces it (a few minutes). Releases built from this "
        "checkout by `cx ota build`'s library (mpy-cross, zlib per file); the emulator on its "
        "default heap, real Mosquitto, loopback file server. Load average (1 min) of this "
        f"shared machine at the start and the end of the run: {d['load'][0]:.1f} / "
        f"{d['load'][1]:.1f} (the latencies below move with it)."),
        "",
        "### Bytes over the air",
        "",
        "| update | files | compressed | over 4G (modem payload, command to confirmation) |",
        "|---|---:|---:|---:|",
        (f"| full release {full['new']} (factory image: every file) | {full['count']} | "
        f"{kb(full['zbytes'])} | {kb(g4[0])} |"),
        (f"| one module changed ({one['new']}: tones.mpy) | {one['count']} | {kb(one['zbytes'])} "
        f"({one['percent']} % of the full release) | {kb(g4[1])} |"),
        "",
        ("The 4G column is everything the modem carried down while the update ran: the file "
        "bodies, their HTTP headers, and the MQTT of that time (the command, reports, the "
        "reconnection after the switch, heartbeats)."),
        "",
        "### Alert latency while an update downloads",
        "",
        (f"Broker publish to amplifier on, {len(la['busy'])} alerts per row. Two terminals of one "
         "village on IP, A and B, take the very same alerts (each alert is published once and "
         "both answer it): first with both idle, then while B downloads a full release from a "
         "slow file server (2 kB/s), so the download spans every alert (still downloading at "
         f"the last one: {la['still_downloading']}). The comparison is A and B at the same "
         "instants: the same machine load, the same number of alerts in each replay store "
         "(its lookups grow with it). While an alert "
         "waits for its verdict or plays, B's download waits (`ota_paused` in its log: "
         f"{la['paused']['count']} times, {la['paused']['ms_total'] / 1000:.1f} s in all, at "
         f"most {la['paused']['ms_max']} ms)."),
        "",
        "| | p50 | p99 | max |",
        "|---|---:|---:|---:|",
    ]
    rows = (("A, both idle", la["pair_a"]), ("B, both idle", la["pair_b"]),
            ("A idle, while B downloads", la["idle"]), ("**B while downloading**", la["busy"]))
    for label, xs in rows:
        lines.append(f"| {label} | {pct(xs, 50):.1f} ms | {pct(xs, 99):.1f} ms | "
                     f"{max(xs):.1f} ms |")
    lines += [
        "",
        ("How the download yields and what was measured on the way from the broker to the "
         "amplifier: docs/ota.md \"Alerts first\"."),
    ]
    mi = la["mem_idle"] or {}
    lines += [
        "",
        "### Heap",
        "",
        (f"Idle after the alerts: {kb(mi.get('alloc', 0))} in use, {kb(mi.get('free', 0))} free. "
         + (f"During the download: at most {kb(la['mem_busy_max_alloc'])} in use, at least "
            f"{kb(la['mem_busy_min_free'])} free (the files stream through one 1 KB buffer). "
            if la["mem_busy_max_alloc"] is not None
            else "During the download: no quiet moment logged heap use. ")
         + f"MemoryError lines in the console: {len(la['memory_errors'])}."),
        "",
        f"### Heap and flash over {len(d['heap']['rows']) - 1} successive updates",
        "",
        heap_summary(d["heap"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="alerts per condition")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    ap.add_argument("--updates", type=int, default=20, help="successive full updates in (d)")
    args = ap.parse_args()
    key = KeyPair.generate("root", "county-ota", ["341122"], ["ota"])
    load0 = os.getloadavg()[0]
    tones = (ROOT / "firmware" / "tones.py").read_text()
    with tempfile.TemporaryDirectory(prefix="cx-bench-ota-") as tmp:
        d = Path(tmp)
        r1, r2, r3 = d / "r020", d / "r021", d / "r030"
        s1 = build(r1, key, "0.2.0")
        s2 = build(r2, key, "0.2.1", replace={"tones.py": tones + "\nBENCH = 1\n"})
        build(r3, key, "0.3.0", replace={"tones.py": tones + "\nBENCH = 3\n"})
        out: dict[str, Any] = {"full": release.diff({"files": []}, s1), "one": release.diff(s1, s2)}
        broker = Broker(d / "broker")
        server = Server()
        server.dirs += [r1, r2, r3]
        hrels = heap_releases(d, key, server, args.updates)
        cmds = Commands(broker.host, broker.port)
        rig = Rig(d / "rig", broker)
        try:
            print("(a) bytes over 4G", flush=True)
            out["g4"] = over_4g(rig, key, server, cmds, [r1, r2])
            print("(b) latency idle and while downloading", flush=True)
            out["lat"] = latency(rig, key, server, cmds, r1, args.n)
            print(f"(d) heap and flash over {len(hrels)} successive full updates", flush=True)
            out["heap"] = heap_updates(rig, key, server, cmds, hrels)
        finally:
            rig.close()
            cmds.close()
            server.close()
            broker.stop()
    out["load"] = (load0, os.getloadavg()[0])
    print(heap_table(out["heap"]))
    la = out["lat"]
    print(f"full {out['full']['zbytes']} B, one module {out['one']['zbytes']} B "
          f"({out['one']['percent']} %); 4G {out['g4']}")
    for name in ("pair_a", "pair_b", "idle", "busy"):
        print(f"latency {name}: p50 {pct(la[name], 50):.1f} ms p99 {pct(la[name], 99):.1f} ms")
    if not args.no_write:
        write_section(TITLE, report(out))
        print(f"wrote {TITLE!r} to docs/benchmarks.md")


if __name__ == "__main__":
    main()
