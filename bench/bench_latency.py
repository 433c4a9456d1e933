"""Alert latency: broker publish to amplifier on, for one idle terminal and for a fleet of 50.

(a) One terminal (`cx emu run`, horn, hold 100 ms): N alerts one after the other; each is timed
    from time.time() just before the paho publish to the `t` of its `amp` 1 event in
    hw/events.jsonl (written by the terminal, same host clock), then cancelled (amp 0) before
    the next one.
(b) `cx emu fleet --count 50` (default heap), all online: one alert for the county; the time
    until the last (and the median) of the 50 switches its amplifier on. Repeated, with a
    cancel in between.

    .venv/bin/python bench/bench_latency.py [--n 50] [--fleet 50] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from rig import CX, REGION, Rig, Term

from tools.broker import Broker
from tools.emu.run import DEFAULT_HEAP
from tools.envelope import topics_for

TITLE = "Alert latency"
HOLD_MS = 100


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (with 50 samples, p99 is the largest)."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def wait_amp(path: Path, value: int, since: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for e in read_events(path)[since:]:
            if e["dev"] == "amp" and e["value"] == value:
                return e
        if time.monotonic() > deadline:
            raise SystemExit(f"{path}: no amp {value} within {timeout}s")
        time.sleep(0.01)


def alert_latencies(rig: Rig, t: Term, n: int) -> list[float]:
    """n alerts to terminal t (level 2, siren), each from the publish to its amp 1 in ms, then
    cancelled and waited until amp 0 (bench_ota.py and bench_web.py measure with it too)."""
    ev = t.dir / "hw" / "events.jsonl"
    out = []
    for _ in range(n):
        env, p = rig.alert(level=2, tone="siren")
        since = len(read_events(ev))
        t0 = rig.send(env, topics_for(p))
        out.append((wait_amp(ev, 1, since, 10)["t"] - t0) * 1000)
        since = len(read_events(ev))
        cenv, cp = rig.alert(kind="cancel", refs=[p["id"]])
        rig.send(cenv, topics_for(cp))
        wait_amp(ev, 0, since, 10)
    return out


@contextlib.contextmanager
def bench_rig(prefix: str) -> Iterator[tuple[Path, Broker, Rig]]:
    """A temporary folder with a private broker and a rig for one benchmark run; SIGTERM or
    Ctrl-C stop the terminals and the broker and exit 130 (bench_link.py, bench_web.py too)."""

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        broker = Broker(Path(tmp) / "broker")
        rig = None
        try:
            rig = Rig(Path(tmp), broker)
            yield Path(tmp), broker, rig
        except KeyboardInterrupt:
            print("interrupted: stopping terminals and broker", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            if rig is not None:
                rig.close()
            broker.stop()


# --- (a) one terminal -----------------------------------------------------------------------


def single(rig: Rig, n: int) -> list[float]:
    t = rig.terminal("single", heap=DEFAULT_HEAP, tid="T341122100201-99", hold_ms=HOLD_MS)
    ev = t.dir / "hw" / "events.jsonl"
    time.sleep(2)  # past the boot-time heap reading
    out = []
    for i in range(n):
        env, p = rig.alert(level=2, tone="siren")
        since = len(read_events(ev))
        t0 = rig.send(env, topics_for(p))
        on = wait_amp(ev, 1, since, 10)
        out.append((on["t"] - t0) * 1000)
        since = len(read_events(ev))
        cenv, cp = rig.alert(kind="cancel", refs=[p["id"]])
        rig.send(cenv, topics_for(cp))
        wait_amp(ev, 0, since, 10)
        print(f"  alert {i + 1:2}/{n}: {out[-1]:6.1f} ms", flush=True)
    return out


# --- (b) a fleet ----------------------------------------------------------------------------


class Fleet:
    """`cx emu fleet` in its own session, so cleanup can reach every terminal it started."""

    def __init__(self, rig: Rig, count: int, folder: Path, **cfg: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tpl = folder / "template.json"
        tpl.write_text(json.dumps(rig.config(hold_ms=HOLD_MS, **cfg)))
        self.dirs = [folder / f"T{int(REGION) + i:012d}-01" for i in range(count)]
        self.out = open(folder / "fleet.out", "ab")
        self.proc = subprocess.Popen(
            [CX, "emu", "fleet", "--count", str(count), "--dir", str(folder),
             "--config-template", str(tpl)],
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def events(self, d: Path) -> list[dict[str, Any]]:
        return read_events(d / "hw" / "events.jsonl")

    def wait_online(self, timeout: float) -> float:
        t0 = time.monotonic()
        left = list(self.dirs)
        while left:
            if self.proc.poll() is not None:
                raise SystemExit(f"cx emu fleet exited rc={self.proc.returncode}")
            left = [d for d in left
                    if not any(e["dev"] == "link" and e["value"] == "ip" for e in self.events(d))]
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{len(left)} terminals not online after {timeout}s: {left[:3]}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this script started
                self.proc.wait()
        self.out.close()


def fleet_round(rig: Rig, fleet: Fleet) -> list[float]:
    """One alert for the county: each terminal's publish-to-amp-on latency, ms."""
    paths = [d / "hw" / "events.jsonl" for d in fleet.dirs]
    env, p = rig.alert(level=2, tone="siren", regions=[REGION[:6] + "000000"])
    since = [len(read_events(x)) for x in paths]
    t0 = rig.send(env, topics_for(p))
    lat = [(wait_amp(x, 1, s, 30)["t"] - t0) * 1000 for x, s in zip(paths, since, strict=True)]
    since = [len(read_events(x)) for x in paths]
    cenv, cp = rig.alert(kind="cancel", refs=[p["id"]])
    rig.send(cenv, topics_for(cp))
    for x, s in zip(paths, since, strict=True):
        wait_amp(x, 0, s, 30)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="alerts to the single terminal")
    ap.add_argument("--fleet", type=int, default=50, help="terminals in the fleet")
    ap.add_argument("--rounds", type=int, default=3, help="county-wide alerts to the fleet")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    load_before = os.getloadavg()
    with bench_rig("cx-bench-latency-") as (tmp, _broker, rig):
        fleet = None
        try:
            print(f"(a) one terminal, {args.n} alerts", flush=True)
            single_ms = single(rig, args.n)
            for t in rig.terms:
                t.stop()
            rig.terms.clear()
            print(f"(b) fleet of {args.fleet}", flush=True)
            fleet = Fleet(rig, args.fleet, tmp / "fleet")
            boot_s = fleet.wait_online(300)
            print(f"  all {args.fleet} online after {boot_s:.1f} s", flush=True)
            time.sleep(3)  # let boot-time work (first heap reading) finish everywhere
            rounds = []
            for r in range(args.rounds):
                lat = fleet_round(rig, fleet)
                rounds.append(lat)
                print(f"  round {r + 1}: first {min(lat):.0f} ms, p50 {pct(lat, 50):.0f} ms, "
                      f"last {max(lat):.0f} ms", flush=True)
                time.sleep(2)
            load_during = os.getloadavg()
        finally:
            if fleet is not None:
                fleet.stop()

    p50, p99, mx = pct(single_ms, 50), pct(single_ms, 99), max(single_ms)
    print(f"(a) single terminal, {len(single_ms)} alerts: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"max {mx:.1f} ms (target p99 <= 100 ms)")
    worst = max(max(r) for r in rounds)
    print(f"(b) fleet of {args.fleet}: last terminal on after "
          f"{', '.join(f'{max(r):.0f}' for r in rounds)} ms (target <= 1500 ms)")
    if args.no_write:
        return
    rows = "\n".join(
        f"| {i + 1} | {min(r):.0f} | {pct(r, 50):.0f} | {max(r):.0f} | "
        f"{'yes' if max(r) <= 1500 else '**no**'} |" for i, r in enumerate(rounds))
    write_section(TITLE, f"""
`python bench/bench_latency.py` reproduces it. Latency is from `time.time()` just before the
paho publish (QoS 1, to a private Mosquitto on loopback) to the `t` the terminal wrote on its
`amp` 1 line in hw/events.jsonl: the same host clock, so it covers broker delivery, MQTT
parsing, Ed25519 verification, the seen store's flash write, arbitration and the relay.

**Machine: 2 cores, shared with other engineers, whose test runs may overlap this one** (1-min
load average {load_before[0]:.1f} before, {load_during[0]:.1f} at the end). Each terminal is a
MicroPython unix-port process; in (b) 50 of them plus Mosquitto share the 2 cores, so the fleet figure is
mostly the host's CPU working through 50 signature verifications one or two at a time, not
what 50 separate boards (one core each) would see.

### (a) One idle terminal, {len(single_ms)} alerts in a row

Horn profile, hold {HOLD_MS} ms, heap {DEFAULT_HEAP}; each alert (level 2, siren) cancelled
once its amplifier is on, and the next sent after amp 0.

| p50 | p99 (nearest rank: of 50, the largest) | max | min | target |
|---:|---:|---:|---:|---|
| {p50:.1f} ms | {p99:.1f} ms | {mx:.1f} ms | {min(single_ms):.1f} ms | p99 <= 100 ms: {'met' if p99 <= 100 else '**not met**'} |

### (b) One county-wide alert to {args.fleet} terminals

`cx emu fleet --count {args.fleet}` (heap {DEFAULT_HEAP}), all online (a `link` "ip" event each;
{boot_s:.0f} s from start on this host), then one alert for `341122000000` on `eb/alert/341122`.

| round | first terminal on (ms) | p50 across terminals (ms) | last terminal on (ms) | last <= 1.5 s |
|---:|---:|---:|---:|---|
{rows}

The first terminal is not much earlier than the last: the 50 processes verify at once and the
host shares its 2 cores among them, so they finish together.

Worst last-terminal time over {len(rounds)} rounds: {worst:.0f} ms.
""")
    print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
