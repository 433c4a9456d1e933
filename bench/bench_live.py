"""Live announcements (docs/broadcast.md §7): mouth-to-horn delay over IP and over the emulated 4G
modem, bytes over 4G per minute, and the terminal's own cost per second of live audio.

(a) One emulated terminal (`cx emu run`, default heap), real Mosquitto on loopback. The sender
    (tools/live.py, as `cx broadcast live` sends) streams SECONDS of silence with a 60 ms 1 kHz
    beep at every whole second, paced in real time; the same stream again with the terminal's IP
    line cut (`cx emu ctl link ip down`: MQTT over the emulated SIM7600, its default timings).
    Delay per beep = when its first sample plays in speaker.wav (the `audio` start event's time
    plus the sample's offset: the emulated I2S plays in real time from there) minus when the
    sender's clock reached that sample (the stream's start plus the sample's offset).
    4G bytes: the modem's downlink counter over the stream. Then a third stream with the
    emulated 4G network delaying every byte each way (`modem latency 150 100`: 150 ms plus up
    to 100 ms, a slow rural cell; --latency/--jitter).
(b) The receiver alone in one MicroPython process (firmware/live.py, the real adpcm, ed25519 and
    hashlib; an output that does not pace): CPU per second of audio and bytes allocated
    (`micropython.mem_total()`), and the heap after a collection at the start and after
    LONG_MIN minutes of stream (no growth).

    .venv/bin/python bench/bench_live.py [--seconds 20] [--long-min 30] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import Fleet, bench_rig, pct
from report import MICROPYTHON, ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from rig import REGION, Rig, Term

from tools import adpcm, live
from tools.emu.run import DEFAULT_HEAP
from tools.envelope import KeyPair

TITLE = "Live announcements"
RATE = 16000
BEEP_S = 0.06
BEEP_AT = 0.2  # s into each second
THRESHOLD = 2000


def beeps(seconds: int) -> list[bytes]:
    out = []
    for k in range(seconds * RATE // adpcm.BLOCK_SAMPLES):
        block = bytearray(live.PCM_BYTES)
        for j in range(adpcm.BLOCK_SAMPLES):
            n = k * adpcm.BLOCK_SAMPLES + j
            into = n / RATE % 1.0 - BEEP_AT
            if 0 <= into < BEEP_S:
                struct.pack_into("<h", block, 2 * j, int(12000 * math.sin(2 * math.pi * 1000 * n / RATE)))
        out.append(bytes(block))
    return out


def onsets(samples: list[int]) -> list[int]:
    """Sample indexes where a beep starts (above THRESHOLD after 0.3 s below it)."""
    out, quiet = [], RATE
    for i, x in enumerate(samples):
        if abs(x) > THRESHOLD:
            if quiet >= 0.3 * RATE:
                out.append(i)
            quiet = 0
        else:
            quiet += 1
    return out


def publisher(rig: Rig, s: live.Stream) -> Callable[[bytes | str, int], None]:
    """live.send's `pub` for stream s: each message to every topic of s, QoS 1 ones waited for."""
    def pub(payload: bytes | str, qos: int) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        for tp in s.topics:
            info = rig.pub.publish(tp, data, qos=qos)
            if qos:
                info.wait_for_publish(10)

    return pub


def one_stream(rig: Rig, t: Term, key: KeyPair, seconds: int, path: str) -> dict[str, Any]:
    j0 = t.sample_count()
    n_ev = len(t.events())
    m0 = json.loads(t.ctl("modem", "status"))["bytes_down"]
    s = live.Stream(key, [REGION], volume=100)
    pub = publisher(rig, s)
    msgs = list(s.messages(beeps(seconds)))
    start = time.time()
    live.send(msgs, pub)
    r = rig.rx.wait(lambda r: r.get("live") == s.id and r["status"] in ("done", "preempted"),
                    seconds + 30)
    m1 = json.loads(t.ctl("modem", "status"))["bytes_down"]
    ev = next(e for e in t.events()[n_ev:] if e["dev"] == "audio"
              and e["value"]["state"] == "start" and str(e["value"]["source"]).startswith("live:"))
    _rate, sp = t.samples()
    played = sp[j0:]
    got = onsets(played)
    sent = [k * RATE + int(BEEP_AT * RATE) for k in range(seconds)]
    # the played beeps are the last len(got) of the sent ones when the first were never heard
    # (the stream starts at its first verified batch)
    sent = sent[len(sent) - len(got):] if len(got) <= len(sent) else sent
    delays = [(ev["t"] + g / RATE) - (start + x / RATE) for g, x in zip(got, sent, strict=False)]
    return {"path": path, "receipt": r, "delays": delays, "beeps": (len(got), seconds),
            "bytes_down": m1 - m0, "seconds": seconds, "messages": len(msgs),
            "payload_bytes": sum(len(p) for _d, p, _q in msgs)}


def fleet_stream(count: int, seconds: int) -> dict[str, Any]:
    """`cx emu fleet --count N` on one live stream for the county: how many played it whole, and
    the spread of the first beep's playing time between the first and the last terminal."""
    with bench_rig("cx-bench-live-fleet-") as (tmp, _broker, rig):
        key = KeyPair.generate("root", "county-341122-live-fleet", ["341122"], ["daily"])
        fleet = Fleet(rig, count, tmp / "fleet", trust=[rig.root.anchor(), key.anchor()])
        try:
            up = fleet.wait_online(600)
            for d in fleet.dirs:  # their SUBSCRIBEs are at the broker: each answers a probe
                rig.wait_answering(d.name, d.name[1:13], 120)
            s = live.Stream(key, [REGION[:6] + "000000"], volume=100)
            since = {d: len(fleet.events(d)) for d in fleet.dirs}
            pub = publisher(rig, s)
            start = time.time()
            live.send(s.messages(beeps(seconds)), pub)
            got = {}
            deadline = time.monotonic() + seconds + 60
            while len(got) < count and time.monotonic() < deadline:
                for r in list(rig.rx.items):
                    if r.get("live") == s.id and r["status"] in ("done", "preempted"):
                        got[r["_dev"]] = r
                time.sleep(0.2)
            firsts = []
            for d in fleet.dirs:
                ev = next((e for e in fleet.events(d)[since[d]:] if e["dev"] == "audio"
                           and str(e["value"].get("source", "")).startswith("live:")), None)
                if ev is not None:
                    firsts.append(ev["t"] - start)
        finally:
            fleet.stop()
    whole = [r for r in got.values() if r["reason"] == "ended" and r["silent"] <= seconds * 2]
    return {"count": count, "online_s": up, "receipts": len(got), "whole": len(whole),
            "chunks": sorted(r["chunks"] for r in got.values()),
            "start_spread_ms": (max(firsts) - min(firsts)) * 1000 if firsts else None,
            "starts": len(firsts)}


def end_to_end(seconds: int, latency: int = 0, jitter: int = 0) -> list[dict[str, Any]]:
    out = []
    with bench_rig("cx-bench-live-") as (_tmp, _broker, rig):
        key = KeyPair.generate("root", "county-341122-live-bench", ["341122"], ["daily"])
        t = rig.terminal("t1", heap=DEFAULT_HEAP, hold_ms=200,
                         trust=[rig.root.anchor(), key.anchor()])
        out.append(one_stream(rig, t, key, seconds, "ip"))
        print(f"  IP: p50 {pct(out[-1]['delays'], 50) * 1000:.0f} ms", flush=True)
        n = len(t.events())
        assert t.ctl("link", "ip", "down") == "ok"
        t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "4g", 90, n)
        rig.wait_answering(t.id, t.cfg["region"])
        out.append(one_stream(rig, t, key, seconds, "4g"))
        print(f"  4G: p50 {pct(out[-1]['delays'], 50) * 1000:.0f} ms", flush=True)
        if latency:
            # a rural 4G cell: each way `latency` ms plus up to `jitter` (tools/emu/netdelay.py)
            assert t.ctl("modem", "latency", str(latency), str(jitter)) == "ok"
            rig.wait_answering(t.id, t.cfg["region"])
            path = f"4g, +{latency}..{latency + jitter} ms each way"
            out.append(one_stream(rig, t, key, seconds, path))
            print(f"  {path}: p50 {pct(out[-1]['delays'], 50) * 1000:.0f} ms", flush=True)
    return out


MPY = """
import asyncio, gc, json, micropython, time
import live
class Clock:
    synced = True
    def now(self):
        return int(time.time())
class Seen:
    def has(self, *a):
        return False
    def add(self, *a):
        pass
class Arb:
    item = None
    def submit(self, it):
        Arb.item = it
class Out:
    rate = 16000
    last = 0
    async def write(self, b):
        self.last = b[len(b) - 2] | b[len(b) - 1] << 8  # as the boards keep it (gaps fade from it)
        await asyncio.sleep_ms(0)  # yields, as the paced output does, but never waits
L = live.Live(json.loads(%(trust)r), %(region)r, Seen(), Clock(), Arb(), lambda *a, **k: None,
              lambda ev: None)
f = open(%(path)r, "rb")
def msg():
    n = f.read(2)
    if not n:
        return None
    return f.read(int.from_bytes(n, "big"))
L._jws(msg())  # the header
s = Arb.item.s
buf = bytearray(640)
blank = bytes(640)
from array import array
readings = array("i", [0] * 24)  # (batch, alloc) pairs, preallocated: not part of what grows
nread = [0]
async def feed():
    k = 0
    while True:
        m = msg()
        if m is None:
            return
        if m[0] == 1:
            L.take(m)
        else:
            L._jws(m)  # a batch: verified here, then its 25 chunks play
            k += 1
            while s.next < k * s.batch:  # its chunks played (Out.write yields each time)
                await asyncio.sleep_ms(0)
            if (k == 2 or k %% %(every)d == 0) and nread[0] < 12:
                gc.collect()
                readings[2 * nread[0]] = k
                readings[2 * nread[0] + 1] = gc.mem_alloc()
                nread[0] += 1
async def main():
    t = asyncio.create_task(s.play(Out(), 80, buf, blank))  # the header's default volume
    m0 = micropython.mem_total()
    t0 = time.ticks_us()
    await feed()
    us = time.ticks_diff(time.ticks_us(), t0)
    m1 = micropython.mem_total()
    t.cancel()
    print("RESULT " + json.dumps({"us": us, "bytes": m1 - m0, "played": s.played,
                                  "silent": s.silent, "refused": s.refused,
                                  "heap": [[readings[2 * i], readings[2 * i + 1]]
                                           for i in range(nread[0])]}))
asyncio.run(main())
"""


def receiver_cost(minutes: float, tmp: Path) -> dict[str, Any]:
    key = KeyPair.generate("root", "county-341122-live-cost", ["341122"], ["daily"])
    s = live.Stream(key, [REGION], volume=100, batch=live.BATCH)
    speech = adpcm.encode(b"".join(int(v).to_bytes(2, "little", signed=True)
                                   for v in adpcm.speech_like(30 * RATE)))
    n = int(minutes * 60 * 50)
    path = tmp / "stream.bin"
    with open(path, "wb") as f:
        def put(b: bytes) -> None:
            f.write(len(b).to_bytes(2, "big") + b)
        put(s.header.encode())
        pending: list[bytes] = []
        for seq in range(n):
            c = live.chunk(s.tag, seq, speech[seq % len(speech)])
            put(c)
            pending.append(c)
            if len(pending) == live.BATCH:
                put(live.batch(key, s.id, seq + 1 - live.BATCH, pending).encode())
                pending = []
    every = max(1, n // live.BATCH // 10)
    script = MPY % {"trust": json.dumps([key.anchor()]), "region": REGION, "path": str(path),
                    "every": every}
    env = dict(os.environ, MICROPYPATH=f".frozen:{ROOT / 'firmware'}:{ROOT / 'hardware'}")
    import subprocess

    r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", script],
                       env=env, capture_output=True, text=True, timeout=3600, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    out = json.loads(line[7:])
    out["seconds"] = n / 50
    return out


def report(e2e: list[dict[str, Any]], cost: dict[str, Any], short: dict[str, Any],
           load: tuple[float, float], fl: dict[str, Any] | None = None) -> str:
    rows = []
    for d in e2e:
        ms = [x * 1000 for x in d["delays"]]
        r = d["receipt"]
        if len(ms) * 2 < d["beeps"][1]:  # too few heard to pair beeps with their sending
            rows.append(f"| {d['path']} | {len(ms)} of {d['beeps'][1]} | not measured | | | "
                        f"{r.get('chunks')} / {r.get('silent')} ({r['status']} {r['reason']}) |")
            continue
        rows.append(f"| {d['path']} | {len(ms)} of {d['beeps'][1]} | {pct(ms, 50):.0f} ms | "
                    f"{pct(ms, 99):.0f} ms | {max(ms):.0f} ms | {r['chunks']} / {r['silent']} |")
    g4 = next(d for d in e2e if d["path"] == "4g")
    per_min = g4["bytes_down"] / g4["seconds"] * 60
    sent_min = g4["payload_bytes"] / g4["seconds"] * 60
    sec = short["seconds"]
    heap = cost["heap"]
    lines = [
        ("`python bench/bench_live.py` reproduces it. One emulated terminal (`cx emu run`, heap "
        f"{DEFAULT_HEAP}), real Mosquitto on loopback, the sender of `cx broadcast live` "
        "(tools/live.py: 20 ms IMA ADPCM chunks, a signed batch of 25 hashes every 0.5 s, the "
        f"header every 2 s), {e2e[0]['seconds']} s of silence with a 60 ms 1 kHz beep each second. "
        f"Load average (1 min) at the start and the end: {load[0]:.1f} / {load[1]:.1f}."),
        "",
        "### Mouth-to-horn delay",
        "",
        ("From the sender's clock reaching a beep's first sample to that sample playing in "
        "speaker.wav (the `audio` start event's time plus the sample's offset). A chunk waits "
        "for its batch (up to 0.5 s) and then its turn; the first batch starts the playback, "
        "over 4G after 360 ms of silence (the jitter buffer sized for the link, §7: a batch may "
        "come 510 ms later than the first one did, 150 ms over IP)."),
        "",
        "| path | beeps heard | p50 | p99 | max | chunks played / silent |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        ("Targets (issue 13): at most 1.0 s over IP, 2.5 s over 4G. The emulated modem adds no "
         "network delay of its own; the last row gives its network one (`cx emu ctl DIR modem "
         "latency MS JITTER`, tools/emu/netdelay.py: every byte each way MS plus 0..JITTER ms "
         "later, in order) and the jitter buffer of §7 has to absorb it."),
        "",
        "### Over 4G",
        "",
        (f"Downlink bytes the emulated modem counted during the 4G stream: {per_min / 1000:.0f} kB "
        f"per minute of live audio (the stream's messages are {sent_min / 1000:.0f} kB per minute "
        "before MQTT and TCP framing; the ADPCM audio alone is 492 kB). A day of three "
        "30-minute programmes whose clips are cached costs no audio bytes on the day (measured: "
        "see \"Daily programmes over 4G\")."),
        "",
        "### On the terminal, per second of live audio",
        "",
        (f"The receiver alone (firmware/live.py with the real decoder, verifier and hashlib), "
        f"{sec:.0f} s of a speech-like stream at volume 80 (the default) fed as fast as it "
        "takes it, one MicroPython "
        f"process (unix port, heap {DEFAULT_HEAP}); the bytes include reading each message "
        "(as MQTT hands the terminal a fresh bytes object per message) and the time is wall "
        "time on this shared machine:"),
        "",
        "| | per second of audio |",
        "|---|---:|",
        f"| CPU (one core) | {short['us'] / sec / 1000:.2f} ms ({short['us'] / sec / 10000:.2f} %) |",
        f"| bytes allocated | {short['bytes'] / sec:,.0f} B |",
        "",
        (f"Chunks played {short['played']}, silent {short['silent']}, refused {short['refused']}. "
        "On the ESP32 (estimates from docs/benchmarks.md \"Ed25519 verify\" and \"IMA ADPCM "
        "decode\"): two verifications per second, 124-186 ms, and 9-14 ms of decoding: about 15-20 % "
        "of one core, nearly all of it the batch signatures."),
        "",
        f"Heap over {cost['seconds'] / 60:.0f} minutes of stream (gc.mem_alloc() after a "
        "collection, every tenth of the run): " + ", ".join(
            f"{k // 2} s: {a / 1024:.1f} KB" for k, a in heap) + ".",
    ]
    if fl is not None:
        lines += [
            "",
            f"### {fl['count']} terminals on one stream",
            "",
            (f"`cx emu fleet --count {fl['count']}` (default heap each, all on this machine's 2 "
             f"cores, online in {fl['online_s']:.0f} s), one stream to the county: "
             f"{fl['receipts']} terminals reported its end, {fl['whole']} played it whole "
             f"(`ended`, at most two chunks a second silent); chunks played per terminal "
             f"{fl['chunks'][0] if fl['chunks'] else 0}..{fl['chunks'][-1] if fl['chunks'] else 0}. "
             f"Spread of the start of playback between the first and the last terminal: "
             + (f"{fl['start_spread_ms']:.0f} ms" if fl["start_spread_ms"] is not None
                else "not measured") + f" ({fl['starts']} starts seen)."),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20, help="length of each timed stream")
    ap.add_argument("--long-min", type=float, default=30, help="minutes of the heap run")
    ap.add_argument("--fleet", type=int, default=50, help="terminals on one stream (0: skip)")
    ap.add_argument("--latency", type=int, default=150,
                    help="one-way delay (ms) of the emulated 4G network for a third stream (0: skip)")
    ap.add_argument("--jitter", type=int, default=100, help="plus up to this many ms (uniform)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cx-bench-live-") as tmp:
        print("(b) the receiver's cost", flush=True)
        short = receiver_cost(1, Path(tmp))
        cost = receiver_cost(args.long_min, Path(tmp))
    print("(a) mouth-to-horn over IP and 4G", flush=True)
    e2e = end_to_end(args.seconds, args.latency, args.jitter)
    fl = None
    if args.fleet:
        print(f"(c) {args.fleet} terminals on one stream", flush=True)
        fl = fleet_stream(args.fleet, 10)
    md = report(e2e, cost, short, (load0, os.getloadavg()[0]), fl)
    print(md)
    if not args.no_write:
        write_section(TITLE, md)
        print(f"wrote {TITLE!r} to docs/benchmarks.md")


if __name__ == "__main__":
    main()
