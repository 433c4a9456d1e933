"""OTA rollout of 1,000 simulated terminals through 4 waves: wall time, peak concurrent downloads,
time from a bad first wave to the abort.

Every part is the real one but the terminals: a private Mosquitto (tools/broker.py), the fleet
store on SQLite, `cx fleet serve` storing what the terminals say (fleet.sim.ServeProcess), the
rollout engine of `cx ota serve` (fleet.ota_engine.Engine, in this process, one step every
`--every` s) and its file server (fleet.ota_http.FileServer, which counts the file bodies it is
sending), serving a release of tests/otafleet.make_release whose 38 files are the terminal's
own sources (tools.terminal_files), zlib-compressed. The terminals are bench/ota_swarm.py: one
asyncio process, one MQTT connection per terminal, real HTTP downloads at `--kbps` per terminal.

(1) good release: every terminal confirms; waves 1%,10%,50%,100%, soak 0, `--max-parallel`.
(2) bad release: the first wave's terminals report `rolled_back selftest`, the others would
    confirm; time from the first failing report to the rollout `aborted`, and no `ota` command
    to any terminal outside wave 1 (checked for 3 engine steps after the abort).

    .venv/bin/python bench/bench_ota_rollout.py [--n 1000] [--max-parallel 50] [--kbps 48]
                                                [--every 2] [--no-write]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import ota_swarm
from otafleet import make_release

from fleet import ota
from fleet.ota_engine import Engine
from fleet.ota_http import FileServer
from fleet.sim import ServeProcess
from fleet.store import Store
from tools.broker import Broker
from tools.terminal_files import release_files

WAVES = [1.0, 10.0, 50.0, 100.0]
HB_S = 30
STEP = 0.2
"""Seconds a simulated terminal spends between staged, trial and its outcome."""
ACTIVE = ",".join(f"'{s}'" for s in ota.ACTIVE)
ctx = mp.get_context("fork")


def device_ids(n: int) -> list[tuple[str, str]]:
    """(id, region): towns of 100 villages in county 341122."""
    return [(f"T341122{100 + i // 100:03d}{i % 100 + 1:03d}-01",
             f"341122{100 + i // 100:03d}{i % 100 + 1:03d}") for i in range(n)]


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"not within {timeout} s: {what}")


def rollout(tmp: Path, args: argparse.Namespace, version: str, bad: set[str]) -> dict[str, Any]:
    """One rollout on fresh parts (`args.db_pg`: a new PostgreSQL database, else SQLite); the
    terminals in `bad` roll back. Returns its figures."""
    devs = device_ids(args.n)
    broker = Broker(tmp / "broker")
    db = args.db_pg.create_db("rollout_" + version.replace(".", "_")) if args.db_pg else \
        str(tmp / "fleet.sqlite")
    store = Store.open(db)
    store.upsert_devices([(d, reg, "horn") for d, reg in devs])
    rel_dir = make_release(tmp / "rel", version,
                           {name: src.read_bytes() for src, name in release_files()})
    rel = ota.read_release(rel_dir)
    (tmp / "files").mkdir()
    ota.copy_files(rel_dir, rel, tmp / "files")
    store.add_release(rel)
    http = FileServer(tmp / "files", "127.0.0.1", 0).start()
    serve = ServeProcess(db, broker.address, "bench", str(tmp / "serve.log"))
    ready, out, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    swarm = ctx.Process(target=ota_swarm.child, daemon=True, args=(
        (broker.host, broker.port), [(d, "rollback" if d in bad else "confirm") for d, _ in devs],
        HB_S, args.kbps * 1000, STEP, ready, stop, out))
    stop_engine = threading.Event()
    engine_thread: threading.Thread | None = None
    logs: list[str] = []
    try:
        serve.wait_for("connected to broker")
        t0 = time.monotonic()
        swarm.start()
        kind, info = ready.get(timeout=120)
        if kind != "ready":
            raise SystemExit(f"the swarm failed: {info}")
        t_conn = time.monotonic() - t0
        poll = Store.open(db)  # the benchmark's own connection, as a status reader would be

        def row(sql: str, *p: Any) -> Any:
            with poll.transaction(write=False) as tx:
                return tx.execute(sql, p).fetchone()

        def count(sql: str, *p: Any) -> int:
            return int(row(sql, *p)[0])

        wait(lambda: count("SELECT COUNT(*) FROM devices WHERE state = 'online'") == args.n,
             60, f"{args.n} terminals online in the store")
        t_online = time.monotonic() - t0
        print(f"  {args.n} terminals connected in {t_conn:.1f} s, online in the store after "
              f"{t_online:.1f} s", flush=True)
        load0 = os.getloadavg()[0]
        n = store.create_rollout(version, WAVES, max_parallel=args.max_parallel, soak=0,
                                 abort_at=0.2)
        engine = Engine(db, broker.host, broker.port, f"http://127.0.0.1:{http.port}",
                        instance="bench", every=args.every, log=logs.append)
        engine_thread = threading.Thread(target=engine.run, args=(stop_engine,), daemon=True)
        engine_thread.start()
        starts: dict[int, float] = {}
        peak_active = 0
        state, aborted_seen = "running", None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            state, wave, started, _ended = row(
                "SELECT state, wave, wave_started_at, ended_at FROM ota_rollouts WHERE "
                "version = ?", version)
            if wave >= 0 and started is not None:
                starts.setdefault(wave, started)
            peak_active = max(peak_active, count(
                f"SELECT COUNT(*) FROM ota_targets WHERE version = ? AND state IN ({ACTIVE})",
                version))
            if state == "done":
                break
            if state == "aborted":
                aborted_seen = aborted_seen or time.time()
                if time.time() > aborted_seen + 3 * args.every:
                    break
            time.sleep(0.05)
        load1 = os.getloadavg()[0]
        targets = store.targets(version)
        ro = store.rollout(version)
        stop_engine.set()
        engine_thread.join(10)
        stop.set()
        kind, recs = out.get(timeout=60)
        if kind != "records":
            raise SystemExit(f"the swarm failed: {recs}")
        poll.close()
    finally:
        stop_engine.set()
        if engine_thread is not None:
            engine_thread.join(10)
        stop.set()
        swarm.join(10)
        if swarm.is_alive():
            swarm.terminate()
            swarm.join(5)
        log = serve.stop()
        http.stop()
        store.close()
        broker.stop()
    if "Traceback" in log:
        raise SystemExit(f"cx fleet serve failed:\n{log[-3000:]}")
    states: dict[str, int] = {}
    for t in targets:
        states[t["state"]] = states.get(t["state"], 0) + 1
    wave_of = {t["device"]: t["wave"] for t in targets}
    ota_cmds = {d: [c for c in r.commands if c[1] == "ota"] for d, r in recs.items()}
    return {"n": n, "version": version, "state": state, "created": ro.created_at,
            "ended": ro.ended_at, "reason": ro.reason,
            "starts": starts, "states": states, "targets": targets, "wave_of": wave_of,
            "recs": recs, "ota_cmds": ota_cmds, "peak_downloads": http.peak,
            "served": http.served, "refused": http.refused, "peak_active": peak_active,
            "t_conn": t_conn, "t_online": t_online, "load": (load0, load1),
            "sent": engine.sent, "steps": engine.steps, "logs": logs,
            "resent": sum(int(m[1]) for x in logs
                          if (m := re.search(r"(\d+) commands unacknowledged", x)))}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    n = best = 0
    for _, d in edges:
        n += d
        best = max(best, n)
    return best


def good(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    r = rollout(tmp, args, "1.2.0", set())
    if r["state"] != "done":
        raise SystemExit(f"good release: the rollout is {r['state']} ({r['reason']}): "
                         f"{r['states']}")
    starts, end = r["starts"], r["ended"]
    r["waves"] = []
    for w in range(len(WAVES)):
        a = starts[w]
        b = starts.get(w + 1, end)
        r["waves"].append((w + 1, sum(1 for t in r["targets"] if t["wave"] == w), b - a))
    r["total"] = end - r["created"]
    once = [d for d, c in r["ota_cmds"].items() if len(c) != 1]
    r["not_once"] = len(once)
    spans = []
    for d, rec in r["recs"].items():
        conf = [t for t, s in rec.reports if s == "confirmed"]
        if r["ota_cmds"][d] and conf:
            spans.append(conf[0] - r["ota_cmds"][d][0][0])
    r["update_p50"] = statistics.median(spans)
    fetches = [rec.fetch for rec in r["recs"].values() if rec.fetch]
    r["fetch_p50"] = statistics.median(b - a for a, b in fetches)
    r["peak_fetching"] = max_overlap(fetches)
    r["http_503"] = sum(rec.http_503 for rec in r["recs"].values())
    return r


def bad(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    first = {d for d, w, _ in ota.assign_waves(sorted(d for d, _ in device_ids(args.n)), WAVES)
             if w == 0}
    r = rollout(tmp, args, "1.3.0", first)
    if r["state"] != "aborted":
        raise SystemExit(f"bad release: the rollout is {r['state']}, not aborted: {r['states']}")
    fails = sorted(t for d in first for t, s in r["recs"][d].reports if s == "rolled_back")
    r["wave1"] = len(first)
    r["fails"] = len(fails)
    r["first_fail_to_abort"] = r["ended"] - fails[0]
    r["k"] = int(0.2 * len(first)) + 1  # the failure that passes --abort-at 0.2
    r["kth_fail_to_abort"] = r["ended"] - fails[r["k"] - 1]
    r["start_to_abort"] = r["ended"] - r["created"]
    r["outside"] = sorted(d for d, c in r["ota_cmds"].items() if c and d not in first)
    return r


def report(args: argparse.Namespace, runs: list[tuple[str, dict[str, Any], dict[str, Any]]]
           ) -> str:
    zb = sum(f["zbytes"] for f in ota.read_release(args.rel_dir).files)
    names = [name for name, _, _ in runs]
    cols = " | ".join(names)
    lines = [
        (f"`python bench/bench_ota_rollout.py{' --pg' if args.pg else ''}` reproduces it (about "
         f"{args.elapsed / 60:.0f} minutes; without `--pg` SQLite only). Real parts: a private "
         f"Mosquitto, the fleet store ({' and '.join(names)}: each run on fresh parts), `cx "
         "fleet serve` (ingestion of acknowledgements, reports and heartbeats), the rollout "
         f"engine of `cx ota serve` (`fleet.ota_engine.Engine`, one step every {args.every:g} "
         "s, its default) and its file server on loopback. The release is "
         "`tests/otafleet.make_release` of the terminal's 38 source files "
         f"({zb / 1000:.1f} KB compressed, every file downloaded: the terminals hold none)."),
        "",
        (f"The {args.n:,} terminals are `bench/ota_swarm.py`: one asyncio process, one MQTT "
         "connection per terminal (last will, `eb/dev/<id>/cmd` subscription, retained "
         f"`online`, a heartbeat every {HB_S} s), the `ota` command acknowledged at once, each "
         f"file fetched over HTTP/1.0 at most {args.kbps:g} kB/s per terminal (its link), "
         "inflated and its sha256 checked, and the reports of ota.md §4 (`downloading` per "
         f"tenth, `staged`, `trial`, then the outcome, {STEP:g} s apart). Not one paho "
         "`FakeTerminal` each: paho waits in `select()`, which takes no descriptor above 1024, "
         "and a client holds three, so one process stopped at 340 clients (\"no CONNACK\") "
         "when tried here."),
        "",
        f"### (1) Good release: waves 1%,10%,50%,100%, soak 0, --max-parallel {args.max_parallel}",
        "",
        f"| wave | terminals | {cols} |",
        "|---|---:|" + "---:|" * len(runs),
    ]
    g0 = runs[0][1]
    for k, (w, n, _) in enumerate(g0["waves"]):
        lines.append(f"| {w} | {n:,} | " + " | ".join(f"{g['waves'][k][2]:.1f} s"
                                                     for _, g, _ in runs) + " |")

    def row(label: str, f: Any) -> str:
        return f"| {label} | " + " | ".join(f(g, b) for _, g, b in runs) + " |"

    lines += [
        f"| all | {g0['n']:,} | " + " | ".join(
            f"**{g['total']:.1f} s** ({g['n'] / g['total']:.1f}/s)" for _, g, _ in runs) + " |",
        "",
        f"| | {cols} |",
        "|---|" + "---:|" * len(runs),
        row("peak terminals downloading at once (their view)",
            lambda g, b: f"**{g['peak_fetching']}**"),
        row("peak file bodies being sent (file server)", lambda g, b: str(g["peak_downloads"])),
        row("peak targets claimed, not finished (store)", lambda g, b: str(g["peak_active"])),
        row("files served / turned away 503", lambda g, b: f"{g['served']:,} / {g['refused']}"),
        row("targets at the end", lambda g, b: ", ".join(
            f"{v:,} {k}" for k, v in sorted(g["states"].items()))),
        row("terminals not sent their command exactly once", lambda g, b: str(g["not_once"])),
        row("commands sent again (no acknowledgement)", lambda g, b: str(g["resent"])),
        row("one update, command to `confirmed`: median", lambda g, b: f"{g['update_p50']:.2f} s"),
        row("of which the download: median", lambda g, b: f"{g['fetch_p50']:.2f} s"),
        row("swarm connected / online in the store", lambda g, b:
            f"{g['t_conn']:.1f} / {g['t_online']:.1f} s"),
        row("load average, start / end", lambda g, b:
            f"{g['load'][0]:.1f} / {g['load'][1]:.1f}"),
        "",
        (f"--max-parallel {args.max_parallel}: every peak within it. The terminals' view is the "
         "download as a place of --max-parallel means it (first GET of an update to the last "
         "byte of its last file). The file server counts a body only while it writes it: a "
         "file of this release (2.3 KB compressed on average) fits in the socket buffer, so it "
         "is handed over at once and the terminal's slow link does not show there. The store's "
         "figure is `sent`, `downloading`, `staged` and `trial` polled every 50 ms. The "
         f"download takes longer than {zb / 1000:.1f} KB at {args.kbps:g} kB/s alone "
         f"({zb / args.kbps / 1000:.1f} s): 38 HTTP connections, one per file, on this loaded "
         "machine."),
        "",
        ("The wall time is what `--max-parallel` and the engine's step allow: a place freed by a "
         "confirmation is filled at the next step, so each place carries one update per "
         "(update time + up to one step)."),
        "",
        "### (2) Bad release: wave 1 rolls back",
        "",
        (f"Wave 1 ({runs[0][2]['wave1']} terminals) reports `rolled_back selftest`; --abort-at "
         "0.2: the wave aborts as soon as its failures alone pass 20 % of it "
         f"({runs[0][2]['k']} of {runs[0][2]['wave1']}), or once it is finished."),
        "",
        f"| seconds | {cols} |",
        "|---|" + "---:|" * len(runs),
        row("first failing report to `aborted`",
            lambda g, b: f"**{b['first_fail_to_abort']:.2f}**"),
        row(f"failing report number {runs[0][2]['k']} to `aborted`", lambda g, b:
            f"{b['kth_fail_to_abort']:.2f}"),
        row("rollout start to `aborted`", lambda g, b: f"{b['start_to_abort']:.2f}"),
        row("terminals outside wave 1 sent an `ota` command", lambda g, b:
            f"**{len(b['outside'])}**"),
        "",
        (f"The rollout's reason: \"{runs[0][2]['reason']}\". Outside wave 1 is watched for "
         f"{3 * args.every:g} s after the abort. From the report that settles it, the abort "
         "takes ingestion (`cx fleet serve`'s batch) plus at most one engine step."),
        "",
        ("No baseline: this is a capacity figure of the fleet side on this machine (the "
         "terminals' update time here is the simulated link's, not a real terminal's minutes of "
         "download, reboot and trial; on a real fleet the wall time is set by those, by "
         "--max-parallel and by the soak)."),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="simulated terminals")
    ap.add_argument("--max-parallel", type=int, default=50)
    ap.add_argument("--kbps", type=float, default=48.0, help="download kB/s per terminal")
    ap.add_argument("--every", type=float, default=2.0, help="engine step, seconds")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per rollout")
    ap.add_argument("--pg", action="store_true",
                    help="the same runs again on PostgreSQL (tests/pg.py)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()
    t0 = time.monotonic()
    cluster = None
    runs = []
    with tempfile.TemporaryDirectory(prefix="cx-bench-rollout-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            args.db_pg = None
            runs.append(("SQLite", *both(args, tmp / "sqlite")))
            if args.pg:
                from pg import PgCluster

                cluster = args.db_pg = PgCluster()
                runs.append(("PostgreSQL", *both(args, tmp / "pg")))
        finally:
            if cluster is not None:
                cluster.destroy()
        args.rel_dir = tmp / "sqlite" / "good" / "rel"
        args.elapsed = time.monotonic() - t0
        text = report(args, runs)
    print(text)
    if not args.no_write:
        title = f"OTA rollout ({args.n:,} simulated terminals)"
        write_section(title, text)
        print(f"wrote {title!r} to docs/benchmarks.md")


def both(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    store = "PostgreSQL" if args.db_pg else "SQLite"
    print(f"(1) good release, {args.n:,} terminals, {store}", flush=True)
    (tmp / "good").mkdir(parents=True)
    g = good(args, tmp / "good")
    print(f"  done in {g['total']:.1f} s; peak downloading {g['peak_fetching']} (terminals), "
          f"{g['peak_downloads']} (file server), peak active {g['peak_active']} (store); "
          f"max-parallel {args.max_parallel}", flush=True)
    assert max(g["peak_downloads"], g["peak_active"], g["peak_fetching"]) <= args.max_parallel
    print(f"(2) bad release, wave 1 rolls back, {store}", flush=True)
    (tmp / "bad").mkdir()
    b = bad(args, tmp / "bad")
    print(f"  aborted {b['first_fail_to_abort']:.2f} s after the first failing report, "
          f"{b['start_to_abort']:.2f} s after the start; outside wave 1 sent: "
          f"{len(b['outside'])}", flush=True)
    assert not b["outside"], b["outside"][:10]
    return g, b


if __name__ == "__main__":
    main()
