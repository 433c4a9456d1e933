"""The operator's local page: load time in a real browser, alert latency while it is loaded,
heap with and without it.

(a) Heap after boot: one terminal provisioned with a page password (`web.pass`), one without
    (the `web` key left out: docs/web.md, the page then offers nothing), one after the other in
    the same run; the first `mem` line each logs after boot (online, idle, collected). No config
    turns the page off (docs/web.md, firmware/config.py: without `web` it still serves the
    "password never set" page), so the page's own share is measured apart: gc.mem_alloc() that
    importing web.py (and what it imports: microdot, webauth, webpage...; at boot) and then
    webupload.py (at the first upload) adds on top of every other firmware module, in one
    micropython process with the terminal's heap, from the terminal's own flashed files.
(b) Page load: headless Chromium (tests/browser.py, phone screen) logs in, then loads the status
    page N times; each load's Navigation Timing entry (request to first byte, to the last byte,
    to DOMContentLoaded, to load), and the login POST itself (PBKDF2 on the terminal).
(c) Alert latency, broker publish to amplifier on (as bench/bench_latency.py): N alerts with the
    page idle, then N while the browser reloads the status page back to back; same terminal,
    same run; and the `mem` line after those alerts (the heap after the page served them).

    .venv/bin/python bench/bench_web.py [--n 30] [--loads 30] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import alert_latencies, bench_rig, pct
from report import MICROPYTHON, ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from browser import PHONE, Browser, Page, web_pass
from rig import Rig, Term

from tools.emu.run import DEFAULT_HEAP

TITLE = "Local page"
HOLD_MS = 100
PASSWORD = "bench-page-2026"
TARGET_P99_MS = 100  # the alert latency target (docs/benchmarks.md "Alert latency")
GROWTH_ROUNDS, GROWTH_LOADS = 3, 40
NAV = """const e = performance.getEntriesByType('navigation')[0];
return {ttfb: e.responseStart - e.requestStart, response: e.responseEnd - e.startTime,
        dom: e.domContentLoadedEventEnd - e.startTime, load: e.loadEventEnd - e.startTime,
        bytes: e.transferSize, body: e.decodedBodySize};"""


def first_mem(t: Term, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mem = [e for e in t.log() if e.get("ev") == "mem"]
        if mem:
            return mem[0]
        time.sleep(0.2)
    raise SystemExit(f"{t.id}: no mem line within {timeout}s")


IMPORT_COST = """
import gc, sys
import board_emu
sys.modules["board"] = board_emu  # as main.py, the boot selector, does
for m in REST:
    try:
        __import__(m)
    except Exception as e:
        print("skipped", m, repr(e))
gc.collect()
a = gc.mem_alloc()
import web
gc.collect()
b = gc.mem_alloc()
import webupload
gc.collect()
c = gc.mem_alloc()
print(json.dumps({"rest": a, "page": b - a, "upload": c - b,
                  "modules": [m for m in sys.modules if m.startswith(("web", "microdot"))]}))
"""


def page_cost(t: Term) -> dict[str, Any]:
    """The page's modules' heap on top of the rest of the firmware, from `t`'s flashed files."""
    ptr = json.loads((t.dir / "flash" / "ota.json").read_text())
    vdir = t.dir / "flash" / "v" / ptr["run"]
    env = dict(os.environ, MICROPYPATH=f".frozen:{vdir}", CX_HW=str(t.dir / "cost-hw"))
    env.pop("CX_BUS", None)
    (t.dir / "cost-hw").mkdir(exist_ok=True)
    rest = sorted(p.stem for p in vdir.glob("*.py")
                  if not p.stem.startswith(("web", "board_", "main")))
    script = f"import json\nREST = {rest!r}\n" + IMPORT_COST
    r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", script],
                       cwd=t.dir / "cost-hw", env=env,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"importing the page's modules failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def next_mem(t: Term, logged: int, timeout: float = 20) -> dict[str, Any]:
    """The first `mem` line after the first `logged` lines of t's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mem = [e for e in t.log()[logged:] if e.get("ev") == "mem"]
        if mem:
            return mem[0]
        time.sleep(0.2)
    raise SystemExit(f"{t.id}: no mem line within {timeout}s")


def heap(rig: Rig) -> dict[str, dict[str, Any]]:
    out = {}
    for name, extra in (("with", {"web": {"pass": web_pass(PASSWORD)}}), ("without", {})):
        t = rig.terminal(f"heap-{name}", heap=DEFAULT_HEAP, tid=f"T341122100201-{name[:2]}",
                         hold_ms=HOLD_MS, **extra)
        m = first_mem(t)
        ready = next((e for e in t.log() if e.get("ev") == "ready"), {})
        served = any(e["dev"] == "web" for e in t.events())
        out[name] = {"alloc": m["alloc"], "free": m["free"], "ready_alloc": ready.get("alloc"),
                     "served": served}
        if name == "with":
            out["cost"] = page_cost(t)
            c = out["cost"]
            print(f"  the page's modules: {c['page'] / 1024:.1f} KB (+ upload "
                  f"{c['upload'] / 1024:.1f} KB) on top of {c['rest'] / 1024:.1f} KB", flush=True)
        print(f"  {name} page: {m['alloc'] / 1024:.1f} KB in use, {m['free'] / 1024:.1f} KB free "
              f"(web event: {served})", flush=True)
        t.stop()
        rig.terms.remove(t)
    return out


class Reloader(threading.Thread):
    """Reloads the status page back to back (the browser's one driver is used by this thread
    alone while it runs), keeping each load's timing."""

    def __init__(self, page: Page) -> None:
        super().__init__(daemon=True)
        self.page = page
        self.stop = threading.Event()
        self.loads: list[dict[str, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.page.open("/")
                self.loads.append(self.page.d.execute_script(NAV))
            except Exception as e:  # a load that failed is counted, the loop goes on
                self.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")


def tree(root: int) -> set[int]:
    """root and every process below it (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(kids.get(p, []))
    return out


def pin(t: Term | None) -> None:
    """The terminal's processes on CPU 0, this bench's others (browser, chromedriver, broker,
    the bench) on CPU 1; with t None, every one of them on both again. Each thread is set
    (sched_setaffinity takes a thread id)."""
    term = tree(t.proc.pid) if t is not None and t.proc is not None else set()
    for p in tree(os.getpid()):
        cpus = {0, 1} if t is None else ({0} if p in term else {1})
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
        except OSError:  # gone meanwhile
            pass


def reloading(rig: Rig, t: Term, page: Page, n: int) -> tuple[list[float], int, int]:
    """n alert latencies while the browser reloads the status page back to back, the loads
    completed during them and in all."""
    r = Reloader(page)
    r.start()
    while len(r.loads) + len(r.errors) < 2:  # the reloading has begun
        time.sleep(0.05)
    k = len(r.loads)
    busy = alert_latencies(rig, t, n)
    during = len(r.loads) - k
    r.stop.set()
    r.join(60)
    if r.errors:
        print(f"  {len(r.errors)} loads failed, e.g. {r.errors[0]}", flush=True)
    return busy, during, len(r.loads)


def page_and_latency(rig: Rig, n: int, loads: int) -> dict[str, Any]:
    t = rig.terminal("web", heap=DEFAULT_HEAP, tid="T341122100201-77", hold_ms=HOLD_MS,
                     web={"pass": web_pass(PASSWORD)})
    url = t.wait_event(lambda e: e["dev"] == "web", 30)["value"]["url"]
    first_mem(t)  # past the boot-time heap reading
    b = Browser(PHONE)
    try:
        page = Page(b, url)
        page.open("/login")
        login_page = page.d.execute_script(NAV)
        t0 = time.monotonic()
        page.login(PASSWORD)
        login_s = time.monotonic() - t0
        login_nav = page.d.execute_script(NAV)
        assert page.path() == "/", f"login failed: {page.text()[:300]}"
        status = []
        for _ in range(loads):
            page.open("/")
            status.append(page.d.execute_script(NAV))
        print(f"  status page: p50 load {pct([x['load'] for x in status], 50):.0f} ms, "
              f"{status[-1]['body']} bytes", flush=True)
        idle = alert_latencies(rig, t, n)
        print(f"  idle: p50 {pct(idle, 50):.1f} ms", flush=True)
        busy, during, all_loads = reloading(rig, t, page, n)
        print(f"  while reloading ({during} loads during the alerts): p50 {pct(busy, 50):.1f} ms",
              flush=True)
        # the same again with the terminal on a core of its own: what is left of the difference
        # is the page's own work, not the browser taking the terminal's CPU
        pin(t)
        try:
            idle_pinned = alert_latencies(rig, t, n)
            busy_pinned, during_pinned, more = reloading(rig, t, page, n)
            all_loads += more
        finally:
            pin(None)
        print(f"  pinned: idle p50 {pct(idle_pinned, 50):.1f} ms, reloading p50 "
              f"{pct(busy_pinned, 50):.1f} ms", flush=True)
        total = len(status) + all_loads + 2  # and the login page and its answer
        logged = len(t.log())
        rig.fence(t)  # an envelope: the terminal's next quiet moment logs its heap
        growth = [(total, next_mem(t, logged))]
        for _ in range(GROWTH_ROUNDS):  # does the heap level off as the page keeps serving?
            for _ in range(GROWTH_LOADS):
                page.open("/")
            total += GROWTH_LOADS
            logged = len(t.log())
            rig.fence(t)  # an envelope: the terminal's next quiet moment logs its heap
            growth.append((total, next_mem(t, logged)))
        print("  heap after loads: " + ", ".join(f"{n}: {m['alloc'] / 1024:.1f} KB"
                                                  for n, m in growth), flush=True)
    finally:
        b.close()
    errors = [ln for ln in t.console().splitlines() if "MemoryError" in ln]
    t.stop()
    return {"login_page": login_page, "login_s": login_s, "login_nav": login_nav,
            "status": status, "idle": idle, "busy": busy, "reloads_during": during,
            "idle_pinned": idle_pinned, "busy_pinned": busy_pinned,
            "during_pinned": during_pinned, "memory_errors": errors, "growth": growth}


def met(xs: list[float]) -> str:
    return "met" if pct(xs, 99) <= TARGET_P99_MS else "**not met**"


def row(name: str, xs: list[dict[str, float]], key: str) -> str:
    v = [x[key] for x in xs]
    return f"| {name} | {pct(v, 50):.0f} | {pct(v, 95):.0f} | {max(v):.0f} |"


def report(h: dict[str, Any], d: dict[str, Any], load: tuple[float, float]) -> str:
    kb = lambda b: f"{b / 1024:.1f} KB"
    w, wo = h["with"], h["without"]
    st = d["status"]
    lines = [
        ("`python bench/bench_web.py` reproduces it (about a minute). One emulated terminal "
         f"(`cx emu run`, heap {DEFAULT_HEAP}, real Mosquitto on loopback); Debian's headless "
         "Chromium on a phone screen (390x844, tests/browser.py) over loopback, so the times "
         "are the terminal's own work, not a Wi-Fi link's. Load average (1 min) of this shared "
         f"machine at the start and the end: {load[0]:.1f} / {load[1]:.1f}."),
        "",
        "### Heap after boot, with the page and without",
        "",
        "| terminal | in use | free | page served (`web` event) |",
        "|---|---:|---:|---|",
        f"| `web.pass` provisioned | {kb(w['alloc'])} | {kb(w['free'])} | {w['served']} |",
        f"| no `web` key | {kb(wo['alloc'])} | {kb(wo['free'])} | {wo['served']} |",
        "",
        (f"The first `mem` line after boot (online, idle, collected) of each; difference "
         f"{kb(w['alloc'] - wo['alloc'])}. Both serve a page: no config turns it off (without "
         "`web` the terminal still serves the one \"password never set\" page, docs/web.md), "
         "so this row pair shows what a password costs, not what the page does. The page's own "
         f"share: importing web.py and what it imports ({', '.join(sorted(h['cost']['modules']))}"
         f") adds {kb(h['cost']['page'])} (at boot) and webupload.py {kb(h['cost']['upload'])} "
         f"(at the first upload) to the {kb(h['cost']['rest'])} of every other firmware module "
         f"(one micropython process, heap {DEFAULT_HEAP}, the terminal's flashed files, "
         "gc.mem_alloc() after gc.collect()). A terminal without the page would so hold about "
         f"{kb(w['alloc'] - h['cost']['page'])} after boot, less the server's few objects."
        ),
        "",
        ("Heap as the page keeps serving (the `mem` line at the terminal's next quiet moment, "
         "collected; boot first):"),
        "",
        "| status page loads so far | in use | free |",
        "|---:|---:|---:|",
        f"| 0 (after boot) | {kb(w['alloc'])} | {kb(w['free'])} |",
        *[f"| {n} | {kb(m['alloc'])} | {kb(m['free'])} |" for n, m in d["growth"]],
        "",
        f"### Page load in the browser ({len(st)} loads of the status page after login)",
        "",
        "Navigation Timing of each load, ms from the navigation's start:",
        "",
        "| | p50 | p95 | max |",
        "|---|---:|---:|---:|",
        row("request to first byte", st, "ttfb"),
        row("last byte", st, "response"),
        row("DOMContentLoaded", st, "dom"),
        row("load (stylesheet included)", st, "load"),
        "",
        (f"The status page is {st[-1]['body']} bytes of HTML; the login page loaded in "
         f"{d['login_page']['load']:.0f} ms; the login POST (a PBKDF2-HMAC-SHA256 check of 4,096 "
         f"iterations on the terminal, then the status page) took {d['login_s'] * 1000:.0f} ms "
         "from the click to the status page."),
        "",
        "### Alert latency while the page is loaded",
        "",
        (f"Broker publish to amplifier on, {len(d['idle'])} alerts each (level 2, cancelled once "
         "the amplifier is on, as in the alert latency section), one terminal, same run: first "
         "with the page idle, then while the browser reloads the status page back to back "
         f"({d['reloads_during']} loads completed during those alerts); then both again with "
         "the terminal's processes pinned to CPU 0 and the browser, chromedriver, broker and "
         f"bench to CPU 1 ({d['during_pinned']} loads), so that the browser cannot take the "
         "terminal's core: what differs between idle and reloading when pinned is the page's own "
         "work in the terminal's loop, what differs only unpinned is two cores shared. Other "
         "engineers' processes are on neither list and may run on either core."),
        "",
        f"| | p50 | p99 | max | p99 <= {TARGET_P99_MS} ms |",
        "|---|---:|---:|---:|---|",
        (f"| page idle | {pct(d['idle'], 50):.1f} ms | {pct(d['idle'], 99):.1f} ms | "
        f"{max(d['idle']):.1f} ms | {met(d['idle'])} |"),
        (f"| page reloaded back to back | {pct(d['busy'], 50):.1f} ms | "
        f"{pct(d['busy'], 99):.1f} ms | {max(d['busy']):.1f} ms | {met(d['busy'])} |"),
        (f"| page idle, pinned | {pct(d['idle_pinned'], 50):.1f} ms | "
        f"{pct(d['idle_pinned'], 99):.1f} ms | {max(d['idle_pinned']):.1f} ms | "
        f"{met(d['idle_pinned'])} |"),
        (f"| page reloaded back to back, pinned | {pct(d['busy_pinned'], 50):.1f} ms | "
        f"{pct(d['busy_pinned'], 99):.1f} ms | {max(d['busy_pinned']):.1f} ms | "
        f"{met(d['busy_pinned'])} |"),
        "",
        f"MemoryError lines in the console: {len(d['memory_errors'])}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="alerts idle, and again while loading")
    ap.add_argument("--loads", type=int, default=30, help="timed loads of the status page")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    load_before = os.getloadavg()
    with bench_rig("cx-bench-web-") as (_tmp, _broker, rig):
        print("(a) heap after boot, with and without the page", flush=True)
        h = heap(rig)
        print(f"(b, c) page load and alert latency, {args.n} alerts each", flush=True)
        d = page_and_latency(rig, args.n, args.loads)
    load_after = os.getloadavg()
    md = report(h, d, (load_before[0], load_after[0]))
    print(md)
    if not args.no_write:
        write_section(TITLE, md)
        print(f"wrote {TITLE!r} to docs/benchmarks.md")


if __name__ == "__main__":
    main()
