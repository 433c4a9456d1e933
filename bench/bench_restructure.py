"""Before and after a restructuring (issue 9): the same three figures for two trees, alternating.

For each tree (an exported commit with the Python that runs its `cx`), in turn, ROUNDS times:
- heap after boot: the `ready` line of one emulated terminal (real Mosquitto, heap 1m): bytes
  in use once Terminal() is built and collected, deterministic to the byte;
- alert latency: N alerts to that terminal, broker publish to amplifier on (as
  bench/bench_latency.py (a) times it);
- ingestion: the fleet writer alone (bench_fleet's `isolation`: parse, then Store.ingest of 50
  batches of 200 heartbeats on SQLite).
This machine is shared: the rounds alternate the two trees so load falls on both, and the
figures kept are p50 over every round's alerts and the best round for ingestion.

    .venv/bin/python bench/bench_restructure.py --base DIR:PYTHON --after DIR:PYTHON
        [--label-base TEXT] [--label-after TEXT] [--rounds 3] [--n 20] [--no-write]

    The measuring half runs inside each tree:  PYTHON bench/bench_restructure.py measure DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TITLE = "Restructuring (issue 9): before and after"
HERE = Path(__file__).resolve()


def measure(root: Path, n: int) -> dict[str, Any]:
    """Runs inside `root`'s own Python: its firmware, its rig, its fleet store."""
    os.environ["PYTHONPATH"] = str(root)
    # this script's own folder (sys.path[0]) is not the tree measured: its bench modules are
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE.parent]
    for p in (root, root / "tests", root / "bench"):
        sys.path.insert(0, str(p))
    os.chdir(root)
    from rig import Rig

    from tools.broker import Broker
    from tools.envelope import topics_for
    try:
        import fleet_measure as fm
    except ImportError:
        import bench_fleet as fm
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cx-restructure-") as tmp:
        broker = Broker(Path(tmp) / "broker")
        rig = Rig(Path(tmp), broker)
        try:
            t = rig.terminal("t1", heap="1m", hold_ms=100)
            out["ready"] = next(e for e in t.log() if e.get("ev") == "ready")["alloc"]
            ev = t.dir / "hw" / "events.jsonl"
            lat = []
            for _ in range(n):
                env, p = rig.alert(level=2, tone="siren")
                since = len(_events(ev))
                t0 = rig.send(env, topics_for(p))
                lat.append((_amp(ev, 1, since)["t"] - t0) * 1000)
                since = len(_events(ev))
                cenv, cp = rig.alert(kind="cancel", refs=[p["id"]])
                rig.send(cenv, topics_for(cp))
                _amp(ev, 0, since)
            out["latency_ms"] = lat
        finally:
            rig.close()
            broker.stop()
        out["ingest"] = fm.isolation(f"sqlite:///{tmp}/fleet.sqlite", 50)
    return out


def _events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            pass
    return out


def _amp(path: Path, value: int, since: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in _events(path)[since:]:
            if e["dev"] == "amp" and e["value"] == value:
                return e
        time.sleep(0.01)
    raise SystemExit(f"no amp {value} within {timeout}s")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[max(0, -(-len(s) * p // 100) - 1)] if s else float("nan")


def run_tree(spec: str, n: int) -> dict[str, Any]:
    d, py = spec.split(":", 1)
    r = subprocess.run([py, str(HERE), "measure", d, "--n", str(n)], capture_output=True,
                       text=True, timeout=900, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{d}: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, res: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for name, label in (("base", args.label_base), ("after", args.label_after)):
        rs = res[name]
        lat = [x for r in rs for x in r["latency_ms"]]
        ing = min(rs, key=lambda r: r["ingest"]["ingest_ms"])["ingest"]
        lo, hi = min(r["ready"] for r in rs), max(r["ready"] for r in rs)
        ready = f"{lo:,} B" if lo == hi else f"{lo:,} – {hi:,} B"
        rows.append(f"| {label} | {ready} | {pct(lat, 50):.1f} ms | "
                    f"{pct(lat, 99):.1f} ms | {ing['ingest_ms']:.2f} ms | "
                    f"{min(r['ingest']['parse_us'] for r in rs):.1f} µs |")
    return "\n".join([
        (f"`python bench/bench_restructure.py` ({args.rounds} alternating rounds; {args.n} alerts "
        "per round). The machine was shared during the run (other engineers' test suites), "
        "so latencies carry that load on both sides alike; the heap figure does not move with "
        "load, but can differ by a few hundred bytes from one boot of the same tree to the next "
        "(a range when it did)."),
        "",
        ("| tree | heap in use at `ready` | alert latency p50 | p99 | ingest per 200-heartbeat "
        "batch (best round) | parse per message (best) |"),
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        args.note,
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    m = sub.add_parser("measure")
    m.add_argument("root", type=Path)
    m.add_argument("--n", type=int, default=20)
    ap.add_argument("--base", help="DIR:PYTHON of the tree before")
    ap.add_argument("--after", help="DIR:PYTHON of the tree after")
    ap.add_argument("--label-base", default="before")
    ap.add_argument("--label-after", default="after")
    ap.add_argument("--note", default="")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=20, help="alerts per round")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.cmd == "measure":
        print(json.dumps(measure(args.root.resolve(), args.n)))
        return
    if not args.base or not args.after:
        ap.error("--base and --after are needed")
    res: dict[str, list[dict[str, Any]]] = {"base": [], "after": []}
    for r in range(args.rounds):
        for name in ("base", "after"):
            res[name].append(run_tree(getattr(args, name), args.n))
            x = res[name][-1]
            print(f"round {r + 1} {name}: ready {x['ready']} B, latency p50 "
                  f"{pct(x['latency_ms'], 50):.1f} ms, ingest {x['ingest']['ingest_ms']:.2f} "
                  f"ms/batch", flush=True)
    text = report(args, res)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(HERE.parent))
        from report import write_section

        write_section(TITLE, text)
        print(f"wrote {TITLE!r} to docs/benchmarks.md")


if __name__ == "__main__":
    main()
