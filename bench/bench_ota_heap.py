"""OTA heap and flash over N successive full updates of ONE emulated terminal in one run
(part (d) of bench/bench_ota.py, which writes its figures into the OTA section).

Versions 1.0.1 .. 1.0.N from the factory image, each a full release (every source gets a line
`_BENCH_REL = k`, so every .mpy changes and every file is downloaded); each must reach
`confirmed` (ota.md §4) and the next boot must run the new version. A probe envelope (answered
`ignored`) every second makes the terminal log a `mem` line at each quiet moment of the update;
its `ready` line gives the heap at each boot; the console is searched for MemoryError; the
emulated flash folder is listed after each update.

    .venv/bin/python bench/bench_ota_heap.py [--updates 20]     (prints only; docs/ untouched)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from otahelp import Commands, Server, build
from rig import Rig, Term

from tools import terminal_files
from tools.broker import Broker
from tools.envelope import KeyPair

RATE = 8000  # bytes/s from the file server: a download of some seconds, so heap lines in it


def heap_releases(d: Path, key: KeyPair, server: Server, n: int) -> list[tuple[Path, dict[str, Any]]]:
    """n full releases 1.0.1 .. 1.0.n: every source with `_BENCH_REL = k` appended (every
    .mpy differs from the one before, so each update downloads every file)."""
    srcs = {name: src.read_text() for src, name in terminal_files.release_files()}
    out = []
    for k in range(1, n + 1):
        rel = d / f"h{k:02d}"
        s = build(rel, key, f"1.0.{k}",
                  replace={name: text + f"\n_BENCH_REL = {k}\n" for name, text in srcs.items()})
        server.dirs.append(rel)
        out.append((rel, s))
    return out


def lines_from(t: Term, start: int) -> list[dict[str, Any]]:
    """The terminal's log lines (the console gets each one, across reboots) from byte `start`."""
    out = []
    raw = (t.dir / "hw" / "console.log").read_bytes()[start:]
    for ln in raw.decode(errors="replace").splitlines():
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
    return out


def console_size(t: Term) -> int:
    p = t.dir / "hw" / "console.log"
    return p.stat().st_size if p.exists() else 0


def flash_state(fl: Path) -> dict[str, Any]:
    total = vb = logs = 0
    for p in fl.rglob("*"):
        try:
            if not p.is_file():
                continue
            size = p.stat().st_size
        except OSError:
            continue  # the log rotating under us
        total += size
        if p.is_relative_to(fl / "v"):
            vb += size
        elif p.name.startswith("log."):
            logs += size
    v = fl / "v"
    return {"versions": sorted(p.name for p in v.iterdir()) if v.exists() else [],
            "stage": (fl / "stage").exists(), "root": sorted(p.name for p in fl.iterdir()),
            "total": total, "v_bytes": vb, "logs": logs, "other": total - vb - logs}


def ended(dev: str, ver: str) -> Any:
    return lambda r: (r.get("_dev") == dev and r.get("ota") == ver
                      and r.get("state") in ("confirmed", "failed", "rolled_back"))


def mem_after_confirmed(t: Term, start: int) -> list[dict[str, Any]]:
    ls = lines_from(t, start)
    i = next((j for j, e in enumerate(ls) if e.get("ev") == "ota_confirmed"), None)
    return [e for e in ls[i:] if e.get("ev") == "mem"] if i is not None else []


def wait_probing(rig: Rig, t: Term, pred: Any, timeout: float, start: int = 0) -> dict[str, Any]:
    """rx.wait(pred) while a probe goes to `t` every second (each one a quiet moment after, so a
    `mem` line); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    topic = f"eb/alert/{t.cfg['region'][:6]}"
    while True:
        rig.probe(t.cfg["region"], topic)
        try:
            return rig.rx.wait(pred, max(0.1, min(1.0, deadline - time.monotonic())), start)
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


def heap_updates(rig: Rig, key: KeyPair, server: Server, cmds: Commands,
                 rels: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    t = rig.terminal("heap", tid="T341122100201-66", trust=[rig.root.anchor(), key.anchor()],
                     ota_trial_s=120)
    fl = t.dir / "flash"
    ready0 = [e for e in lines_from(t, 0) if e.get("ev") == "ready"]
    rows = [{"n": 0, "version": "factory", "flash": flash_state(fl),
             "ready": ready0[-1] if ready0 else None}]
    server.rate = RATE
    for k, (rel, summary) in enumerate(rels, 1):
        ver = summary["version"]
        c0, r0, q0 = console_size(t), len(rig.rx.items), len(server.requests)
        t0 = time.monotonic()
        ack = cmds.ota(t.id, rel, server.base)
        assert ack["ok"] is True, ack
        end = wait_probing(rig, t, ended(t.id, ver), 300, r0)
        secs = time.monotonic() - t0
        assert end["state"] == "confirmed", end
        # a heap line of the new version after its confirmation (steady state)
        deadline = time.monotonic() + 60
        while not (after := mem_after_confirmed(t, c0)):
            assert time.monotonic() < deadline, "no mem line after the confirmation"
            seen = len(rig.rx.probe_answers(t.id))
            rig.probe(t.cfg["region"], f"eb/alert/{t.cfg['region'][:6]}")
            rig.rx.probe_answers(t.id, None, 1.0, seen + 1)
        ls = lines_from(t, c0)
        sw = next(j for j, e in enumerate(ls) if e.get("ev") == "ota_switch")
        boot = next(j for j, e in enumerate(ls) if e.get("ev") == "boot" and j > sw)
        ready = next(e for e in ls[boot:] if e.get("ev") == "ready")
        during = [e for e in ls[:sw] if e.get("ev") == "mem"]
        cf = next(j for j, e in enumerate(ls) if e.get("ev") == "ota_confirmed")
        trial = [e for e in ls[boot:cf] if e.get("ev") == "mem"]
        text = (t.dir / "hw" / "console.log").read_bytes()[c0:].decode(errors="replace")
        status = json.loads(t.ctl("status"))
        row = {"n": k, "version": ver, "secs": secs,
               "fetched": sum(1 for _, s in server.requests[q0:] if s == 0),
               "files": len(summary["files"]), "samples": len(during),
               "min_free": min((e["free"] for e in during), default=None),
               "max_alloc": max((e["alloc"] for e in during), default=None),
               "trial_min_free": min((e["free"] for e in trial), default=None),
               "ready": ready, "after": after[0], "booted": ls[boot].get("version"),
               "status_version": status["version"],
               "memory_errors": text.count("MemoryError"), "flash": flash_state(fl)}
        assert row["booted"] == ver and row["status_version"] == ver, row
        rows.append(row)
        f = row["flash"]
        print(f"  {ver}: {secs:.1f} s, fetched {row['fetched']}/{row['files']}, "
              f"{row['samples']} mem lines, min free {row['min_free']}, max alloc "
              f"{row['max_alloc']}, ready alloc {ready['alloc']}, after {after[0]['alloc']}, "
              f"MemoryError {row['memory_errors']}; flash v/ {f['versions']} {f['v_bytes']} B, "
              f"stage {f['stage']}, logs {f['logs']} B, other {f['other']} B; {f['root']}",
              flush=True)
    server.rate = None
    text = t.console()
    t.stop()
    return {"rows": rows, "memory_errors": [ln for ln in text.splitlines() if "MemoryError" in ln],
            "tracebacks": text.count("Traceback")}


def heap_table(h: dict[str, Any]) -> str:
    kb = lambda b: "-" if b is None else f"{b / 1024:.1f}"
    out = [("| update | time | files fetched | mem lines | min free | most in use | at ready: in "
            "use / free | in use after confirmed | MemoryError | v/ after | v/ | stage/ | logs | "
            "other files |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|"]
    for r in h["rows"]:
        f, rd = r["flash"], r.get("ready") or {}
        ready = f"{kb(rd.get('alloc'))} / {kb(rd.get('free'))}"
        if r["n"] == 0:
            out.append(f"| factory boot | | | | | | {ready} | | | {', '.join(f['versions'])} | "
                       f"{kb(f['v_bytes'])} | {'yes' if f['stage'] else 'no'} | {kb(f['logs'])} | "
                       f"{kb(f['other'])} |")
            continue
        out.append(f"| {r['n']} ({r['version']}) | {r['secs']:.0f} s | {r['fetched']}/{r['files']} | "
                   f"{r['samples']} | {kb(r['min_free'])} | {kb(r['max_alloc'])} | {ready} | "
                   f"{kb(r['after']['alloc'])} | {r['memory_errors']} | "
                   f"{', '.join(f['versions'])} | {kb(f['v_bytes'])} | "
                   f"{'yes' if f['stage'] else 'no'} | {kb(f['logs'])} | {kb(f['other'])} |")
    return "\n".join(out)


def heap_summary(h: dict[str, Any]) -> str:
    rows = h["rows"][1:]
    kb = lambda b: f"{b / 1024:.1f} KB"
    span = lambda xs: (f"{kb(min(xs))} .. {kb(max(xs))}" if kb(min(xs)) != kb(max(xs))
                       else f"{kb(min(xs))} every time ({min(xs)} .. {max(xs)} bytes)")
    free = [r["min_free"] for r in rows if r["min_free"] is not None]
    alloc = [r["max_alloc"] for r in rows if r["max_alloc"] is not None]
    fl = [r["flash"] for r in rows]
    one = all(f["versions"] == [r["version"]] for f, r in zip(fl, rows, strict=True))
    return (
        f"{len(rows)} successive updates of one emulated terminal in one run (default heap, "
        f"the file server at {RATE // 1000} kB/s so each download lasts some seconds), versions "
        f"1.0.1 .. 1.0.{len(rows)} from the factory image, each a full release: every source "
        "has a line `_BENCH_REL = k` added, so every .mpy changes and each update downloads, "
        "inflates and verifies all files. Each one reached `confirmed` and the terminal's next "
        "boot (its `boot` event, `cx emu ctl status`) ran the new version. "
        "While an update runs the benchmark sends a probe envelope (answered `ignored`) every "
        "second, so the terminal logs a `mem` line (gc.mem_alloc / gc.mem_free after a "
        "gc.collect) at each quiet moment; \"min free\" and \"most in use\" are over those lines "
        "from the command to the switch (the download, inflate and staging, in the old "
        "version), sampled about once a second, so they are the live heap after a "
        "collection, not the peak between collections. \"At ready\" is the `ready` line of the "
        "new version's boot, \"after confirmed\" the first `mem` line after it confirmed; time "
        "is from the command to the `confirmed` report. The flash columns list the emulated "
        "flash folder after each update: `v/` (versions and bytes), `stage/`, the event logs "
        "(log.jsonl and log.1.jsonl, capped at 64 KB each) and every other file (config, "
        "pointer, selector, clock).\n\n"
        + heap_table(h) + "\n\n"
        f"Over the {len(rows)} updates: at least {kb(min(free))} free and at most "
        f"{kb(max(alloc))} in use during a download; in use at ready {span([r['ready']['alloc'] for r in rows])}, "
        f"after the confirmation {span([r['after']['alloc'] for r in rows])}. "
        f"MemoryError lines in the console over the whole run: {len(h['memory_errors'])} "
        f"(tracebacks of any kind: {h['tracebacks']}). "
        f"Flash: {'exactly one version in `v/` after each update (the old one deleted at the confirmation)' if one else 'MORE than one version left in `v/`'}, "
        f"`stage/` {'never left behind' if not any(f['stage'] for f in fl) else 'LEFT BEHIND'}; "
        f"`v/` {span([f['v_bytes'] for f in fl])} (the factory image's .py sources were "
        f"{kb(h['rows'][0]['flash']['v_bytes'])}), other files {span([f['other'] for f in fl])}; "
        "the logs grow to their cap (the probes' receipts are logged) and stay there."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=20, help="successive full updates")
    args = ap.parse_args()
    key = KeyPair.generate("root", "county-ota", ["341122"], ["ota"])
    with tempfile.TemporaryDirectory(prefix="cx-bench-ota-heap-") as tmp:
        d = Path(tmp)
        broker = Broker(d / "broker")
        server = Server()
        rels = heap_releases(d, key, server, args.updates)
        cmds = Commands(broker.host, broker.port)
        rig = Rig(d / "rig", broker)
        try:
            h = heap_updates(rig, key, server, cmds, rels)
        finally:
            rig.close()
            cmds.close()
            server.close()
            broker.stop()
    print(heap_table(h))
    print(heap_summary(h))


if __name__ == "__main__":
    main()
