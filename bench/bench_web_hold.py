"""How long the local page holds the event loop without yielding, on the MicroPython unix port.

One micropython process (heap 1 MB) imports the firmware's own web.py (microdot from the
installed distribution, the emulated board), with a stand-in terminal and an event log of 120
alerts (3 receipts each, and an `ignored` envelope for another village each: 8 KB of tail, as a
terminal's after a busy day). A ticker task awaits asyncio.sleep_ms(0) in a loop and records
the gap between its wake-ups while the page answers N status-page requests one after the other
(a stream that yields at each read and each drain, as asyncio's does). The longest gaps are the
stretches the page holds the loop: on the ESP32 (about 10x slower) each of them delays alert
intake by ten times as much. Printed, not written to docs/ (bench_web.py's section quotes it).

    .venv/bin/python bench/bench_web_hold.py [--n 200] [--root DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import MICROPYTHON, ROOT

sys.path.insert(0, str(ROOT))
import microdot

from tools.webpass import hash_password

SCRIPT = """
import asyncio, gc, json, sys, time
import board_emu
sys.modules["board"] = board_emu  # as main.py, the boot selector, does
import web
f = open("log.jsonl", "w")
for i in range(120):
    aid = "20261201T%06dZ-5ab1cf0a7528c7e%d" % (i, i % 10)
    f.write(json.dumps({"ev": "mem", "alloc": 300000, "free": 700000, "t": 1795000000 + i}) + "\\n")
    for st in ("accepted", "playing", "done"):
        f.write(json.dumps({"ev": "receipt", "alert": aid, "status": st, "reason": None,
                            "kind": "alert", "level": 2, "t": 1795000000 + i}) + "\\n")
    f.write(json.dumps({"ev": "receipt", "alert": "x%d" % i, "status": "ignored",
                        "reason": "not_for_me", "t": 1795000000 + i}) + "\\n")
f.close()
class Log:
    path = "log.jsonl"
    counts = {"receipt": 480}
    def __call__(self, ev, **kw):
        pass
class O:
    pass
term = O(); term.agent = O(); term.arbiter = O(); term.mqtt = O()
term.agent.heartbeat = lambda: {"link": "ip", "rssi": 20, "v": "0.1.0", "up": 1234}
term.agent.faults = {"line_open": False}
term.arbiter.current = None
term.arbiter.waiting = []
term.mqtt.connected = True
app = web.Web({"web": {"pass": PASS}, "volume": 40}, Log(), term, None)
cookie = app.auth.open_session()
REQ = ("GET / HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\nConnection: keep-alive\\r\\n"
       "User-Agent: Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/120.0 Mobile\\r\\n"
       "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\\r\\n"
       "Sec-Fetch-Site: same-origin\\r\\nSec-Fetch-Mode: navigate\\r\\nSec-Fetch-Dest: document\\r\\n"
       "Accept-Encoding: gzip, deflate\\r\\nAccept-Language: zh-CN,zh;q=0.9\\r\\n"
       "Cookie: cxs=%s; lang=zh\\r\\n\\r\\n" % cookie).encode()
class R:
    def __init__(self):
        self.d = REQ
    async def readinto(self, mv):
        await asyncio.sleep_ms(0)
        n = min(len(mv), len(self.d))
        mv[:n] = self.d[:n]
        self.d = self.d[n:]
        return n
class W:
    n = 0
    def write(self, b):
        self.n += len(b)
    async def drain(self):
        await asyncio.sleep_ms(0)
    def get_extra_info(self, k):
        return ("127.0.0.1", 5)
    def close(self):
        pass
    async def wait_closed(self):
        pass
gaps = []
done = False
async def ticker():
    last = time.ticks_us()
    while not done:
        await asyncio.sleep_ms(0)
        now = time.ticks_us()
        gaps.append(time.ticks_diff(now, last))
        last = now
async def main():
    global done
    asyncio.create_task(ticker())
    await asyncio.sleep_ms(5)
    w = W()
    await app.handle_request(R(), w)  # warm up: imports, the first parse of the log
    del gaps[:]
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(N):
        await app.handle_request(R(), W())
    total = time.ticks_diff(time.ticks_us(), t0)
    done = True
    gaps.sort()
    print(json.dumps({"bytes": w.n, "per_request_us": total // N, "gaps": len(gaps),
                      "p50": gaps[len(gaps) // 2], "p99": gaps[len(gaps) * 99 // 100],
                      "max": gaps[-1], "top": gaps[-5:]}))
asyncio.run(main())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="status-page requests")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose firmware/ to run")
    args = ap.parse_args()
    lib = Path(microdot.__file__).resolve().parent.parent
    path = [".frozen", str(args.root / "firmware"), str(args.root / "hardware"), str(lib)]
    script = f"N = {args.n}\nPASS = {hash_password('bench-hold-2026')!r}\n" + SCRIPT
    with tempfile.TemporaryDirectory(prefix="cx-bench-web-hold-") as tmp:
        r = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1m", "-c", script], cwd=tmp,
                           env={"MICROPYPATH": ":".join(path), "CX_HW": tmp},
                           capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit((r.stdout + r.stderr).strip()[-800:] or f"micropython exited {r.returncode}")
    print(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
