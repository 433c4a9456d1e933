"""Daily programmes over 4G (docs/broadcast.md §1-§4): what a terminal on 4G only costs, in bytes
the emulated modem counts, for a day of scheduled programmes whose clips it has cached.

One emulated terminal (`cx emu run`, default heap), a private Mosquitto on loopback (`-v`: its
log names every MQTT packet), a county key with use `daily` in the terminal's trust. Its IP line
is cut first (`cx emu ctl DIR link ip down`, then the `link` "4g" event), so everything after goes
over the emulated SIM7600; its clock runs at an offset (CX_CLOCK_OFFSET, as
tests/test_e2e_daily.py) so that local 07:00 comes --lead seconds after it starts.

(a) One-time cost: one county schedule, signed and published retained to eb/daily/341122 (as the
    tests do), with three programmes on one 30-second clip (16 kHz mono 16-bit WAV, 960,044
    bytes, under the 1 MiB clip limit; `clip_cache_bytes` raised to hold it), served over HTTP
    (tests/test_e2e_playback.py ClipServer). The modem's bytes_up/bytes_down from just before the
    publish to the clip appearing in DIR/flash/clips/: the schedule's delivery, its receipt and
    the clip's prefetch.
(b) Each programme's play: the clip repeats to fill `duration` (--durations, default 60, 120 and
    240 s: 30-minute ones would take 90 minutes); the counters from 15 s before its start to 1 s
    after its `done` receipt. The broker's log splits each window into the programme's receipts
    (playing, done), keep-alive and heartbeats; what is beyond idle must not grow with the length.
(c) Idle: a window as long as the longest programme with nothing scheduled, in the same run, and
    the idle rate over every stretch of the run without a programme (after the clip was cached);
    the heartbeat interval on 4G is shortened (--hb-4g, default 120 s; production 900 s,
    firmware/config.py) so those stretches hold several heartbeats.
Then the day of three 30-minute programmes is computed from these measurements: idle bytes per day
at the production keep-alive and heartbeat intervals + 3 x the per-programme extra (+ the
one-time cost when the clip changes every day), against streaming the same 90 minutes live (the
per-minute 4G figure read from docs/benchmarks.md "Live announcements").

    .venv/bin/python bench/bench_daily.py [--durations 60,120,240] [--lead 75] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import bench_rig
from bench_link import HDR_PER_SEGMENT, broker_packets, read_from
from report import REPORT, ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rig import Term
from test_e2e_playback import ClipServer, wav_bytes

from tools.emu.run import DEFAULT_HEAP
from tools.envelope import b64e, pub_bytes, sign_jws

TITLE = "Daily programmes over 4G"
TZ = 8 * 3600
CLIP_S = 30.0
CACHE = 4 * 1048576  # clip_cache_bytes for the run (default 1 MiB would hold the clip, barely)
DAY_PROGRAMMES = 3
DAY_MINUTES = 30
PROD_KEEPALIVE_4G = 240  # firmware/config.py DEFAULTS (the run keeps it)
PROD_HB_4G = 900  # firmware/config.py DEFAULTS (the run shortens it)
AREA = "341122000000"
KID = "county-341122-daily-bench"
MSS = 1448  # for the header estimate only


def modem(t: Term) -> dict[str, Any]:
    return json.loads(t.ctl("modem", "status"))


def snap(t: Term, blog: Path) -> dict[str, Any]:
    m = modem(t)
    return {"t": time.time(), "up": m["bytes_up"], "down": m["bytes_down"],
            "off": blog.stat().st_size}


def between(a: dict[str, Any], b: dict[str, Any], blog: Path, cid: str) -> dict[str, Any]:
    """Counters and the terminal's MQTT packets (split by kind) from snapshot a to b."""
    pk = broker_packets(read_from(blog, a["off"])[: b["off"] - a["off"]], cid)
    c = pk["counts"]
    split = {"ping": [2 * c.get("received PINGREQ", 0), 2 * c.get("sending PINGRESP", 0)],
             "hb": [0, 0], "receipt": [0, 0], "schedule": [0, 0]}
    hbs, receipts = [], []
    for p in pk["publish"]:
        d = 0 if p["dir"] == "up" else 1
        if p["topic"].endswith("/hb"):
            split["hb"][d] += p["bytes"]
            hbs.append(p["bytes"])
        elif p["topic"].endswith("/event"):
            split["receipt"][d] += p["bytes"]
            receipts.append(p["bytes"])
        elif p["topic"].startswith("eb/daily/"):
            split["schedule"][d] += p["bytes"]
    # a QoS-1 PUBLISH is answered by a 4-byte PUBACK: the broker's to the terminal's receipts,
    # the terminal's to the schedule (broker_packets counts PUBACKs in its totals, not per topic)
    q1 = [p for p in pk["publish"] if p["qos"]]
    split["receipt"][1] += 4 * sum(1 for p in q1 if p["dir"] == "up" and p["topic"].endswith("/event"))
    split["schedule"][0] += 4 * sum(1 for p in q1 if p["dir"] == "down"
                                    and p["topic"].startswith("eb/daily/"))
    return {"seconds": b["t"] - a["t"], "up": b["up"] - a["up"], "down": b["down"] - a["down"],
            "split": split, "hbs": hbs, "receipts": receipts, "counts": c,
            "mqtt": [pk["up"], pk["down"]], "unsized": pk["unsized"]}


def idle_of(w: dict[str, Any]) -> list[int]:
    """The idle traffic (keep-alive and heartbeats) the broker logged in a window."""
    s = w["split"]
    return [s["ping"][0] + s["hb"][0], s["ping"][1] + s["hb"][1]]


def sleep_until(host_t: float) -> None:
    while True:
        left = host_t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 1.0))


def schedule_env(priv: Ed25519PrivateKey, z: int, url: str, clip: bytes,
                 progs: list[tuple[str, str, int]]) -> str:
    def day(k: int) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(k * 86400))

    c = {"url": url, "sha256": hashlib.sha256(clip).hexdigest(), "bytes": len(clip)}
    p = {"id": "county-day", "area": AREA, "version": 1, "issued": int(time.time()),
         "tz": "+08:00", "from": day(z), "until": day(z + 1),
         "programmes": [{"id": pid, "title": "bench", "days": [1, 2, 3, 4, 5, 6, 7],
                         "start": start, "duration": dur, "audio": {"clip": c}}
                        for pid, start, dur in progs]}
    return sign_jws(priv, {"alg": "EdDSA", "typ": "eb-schedule", "kid": KID}, p)


def live_per_minute() -> tuple[float | None, str]:
    """kB per minute of live audio over 4G, as bench_live.py last wrote it."""
    try:
        text = REPORT.read_text()
    except OSError:
        return None, "docs/benchmarks.md not found"
    m = re.search(r"<!-- bench:Live announcements -->\n## Live announcements\n\n_([^,]+),", text)
    k = re.search(r"Downlink bytes the emulated modem counted during the 4G stream: ([\d.]+) kB "
                  r"per minute of live audio", text)
    if k is None:
        return None, "no per-minute figure in docs/benchmarks.md \"Live announcements\""
    return float(k.group(1)), (f"docs/benchmarks.md \"Live announcements\" → \"Over 4G\" "
                               f"(bench_live.py, {m.group(1) if m else 'undated'})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    durations = [int(x) for x in args.durations.split(",")]
    load0 = os.getloadavg()[0]
    t_run = time.monotonic()
    res: dict[str, Any] = {"durations": durations, "load0": load0, "hb_4g": args.hb_4g,
                           "before": args.before}
    with bench_rig("cx-bench-daily-") as (_tmp, broker, rig):
        blog = broker.conf.parent / "mosquitto.log"
        priv = Ed25519PrivateKey.generate()
        anchor = {"kid": KID, "pub": b64e(pub_bytes(priv)), "scope": ["341122"], "use": ["daily"]}
        local = time.time() + TZ
        seven = (local // 86400) * 86400 + 7 * 3600
        while seven - args.lead - local < 30:
            seven += 86400
        offset = seven - args.lead - local  # the terminal's clock minus the host's
        z = int(seven) // 86400
        seven_host = seven - TZ - offset  # host epoch of the terminal's local 07:00
        t = rig.terminal("t1", heap=DEFAULT_HEAP, env={"CX_CLOCK_OFFSET": repr(offset)},
                         trust=[rig.root.anchor(), anchor], clip_cache_bytes=CACHE,
                         hb_4g_s=args.hb_4g, hold_ms=200)
        print(f"terminal up; local 07:00 in {seven_host - time.time():.0f} s", flush=True)
        n = len(t.events())
        cut = time.time()
        assert t.ctl("link", "ip", "down") == "ok"
        on4g = t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "4g", 90, n)
        n = len(t.events())  # the link changes after the terminal is on 4G (none expected)
        rig.wait_answering(t.id, t.cfg["region"])
        res["failover_s"] = on4g["t"] - cut
        print(f"on 4G after {res['failover_s']:.1f} s", flush=True)
        time.sleep(3)

        # the programmes: starts on whole minutes from 07:00, a minute apart at least
        progs, rel = [], 0
        for i, d in enumerate(durations):
            progs.append((f"p{i + 1}", f"{7 + rel // 3600:02d}:{rel // 60 % 60:02d}", d, rel))
            rel = math.ceil((rel + d + 60) / 60) * 60
        clip = wav_bytes(CLIP_S, 440.0)
        res["clip_bytes"] = len(clip)
        sha = hashlib.sha256(clip).hexdigest()
        cached = t.dir / "flash" / "clips" / f"{sha}.wav"
        srv = ClipServer({"/day.wav": clip})
        try:
            env = schedule_env(priv, z, srv.url("/day.wav"), clip,
                               [(p, s, d) for p, s, d, _r in progs])
            res["envelope_bytes"] = len(env)
            s0 = snap(t, blog)
            rig.pub.publish("eb/daily/341122", env.encode(), qos=1,
                            retain=True).wait_for_publish(10)
            r = rig.rx.wait(lambda r: r.get("schedule") == "county-day", 60)
            assert (r["status"], r["reason"]) == ("accepted", None), r
            while not cached.exists():
                if time.time() > seven_host - 5:
                    fails = [e for e in t.log() if str(e.get("ev", "")).startswith(("clip", "programme_clip"))]
                    raise SystemExit(f"the clip was not cached 5 s before 07:00 (raise --lead): {fails[-5:]}")
                time.sleep(0.1)
            res["fetch_s"] = time.time() - s0["t"]
            time.sleep(1)
            s1 = snap(t, blog)
            res["one_time"] = between(s0, s1, blog, t.id)
            res["requests"] = list(srv.requests)
            print(f"(a) schedule + clip: {res['one_time']['down']:,} B down, "
                  f"{res['one_time']['up']:,} B up, cached after {res['fetch_s']:.1f} s", flush=True)
        finally:
            srv.stop()

        snaps = [s1]
        res["programmes"] = []
        for pid, start, d, rel in progs:
            sleep_until(seven_host + rel - args.before)
            a = snap(t, blog)
            snaps.append(a)
            name = f"county-day/{pid}"
            rig.rx.wait(lambda r, name=name: r.get("programme") == name
                        and r["status"] != "playing", d + 120)
            time.sleep(1)
            b = snap(t, blog)
            snaps.append(b)
            with rig.rx.cond:
                got = [(x["status"], x["reason"]) for x in rig.rx.items
                       if x.get("programme") == name]
            w = between(a, b, blog, t.id)
            w.update(id=pid, start=start, duration=d, receipts_seen=got)
            res["programmes"].append(w)
            print(f"(b) {pid} {start} {d} s: {w['down']} B down, {w['up']} B up, "
                  f"receipts {got}", flush=True)
            if got != [("playing", None), ("done", None)]:
                raise SystemExit(f"programme {name}: receipts {got}")
        time.sleep(5)
        a = snap(t, blog)
        idle_s = max(durations)
        print(f"(c) idle window {idle_s} s, then {args.idle_tail} s more", flush=True)
        time.sleep(idle_s)
        b = snap(t, blog)
        res["idle_window"] = between(a, b, blog, t.id)
        time.sleep(args.idle_tail)  # the stretch after the last receipt then outlasts keepalive_4g
        snaps.append(snap(t, blog))
        # every stretch without a programme, from the clip cached on (the last one holds the idle
        # window and the tail): snaps alternate end of a programme-free stretch, start of the next
        res["idle_all"] = [between(snaps[i], snaps[i + 1], blog, t.id)
                           for i in range(0, len(snaps) - 1, 2)]
        res["links"] = [e["value"] for e in t.events()[n:] if e["dev"] == "link"]
        res["plays"] = [e["value"]["source"] for e in t.events()
                        if e["dev"] == "audio" and e["value"]["state"] == "start"]
    res["load1"] = os.getloadavg()[0]
    res["run_s"] = time.monotonic() - t_run
    return res


def kb(n: float) -> str:
    return f"{n / 1000:,.1f} kB"


def report(res: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    o = res["one_time"]
    progs = res["programmes"]
    iw = res["idle_window"]
    idle_all = res["idle_all"]
    # idle: the rate over every stretch without a programme
    isec = sum(w["seconds"] for w in idle_all)
    iup, idown = sum(w["up"] for w in idle_all), sum(w["down"] for w in idle_all)
    pings = sum(w["counts"].get("received PINGREQ", 0) for w in idle_all)
    hbs = [b for w in idle_all for b in w["hbs"]]
    hb_mean = sum(hbs) / len(hbs) if hbs else 0.0
    # what the idle stretches carried beside keep-alive and heartbeats (should be nothing)
    other_up = iup - sum(idle_of(w)[0] for w in idle_all)
    other_down = idown - sum(idle_of(w)[1] for w in idle_all)
    ping_day = 86400 / PROD_KEEPALIVE_4G
    hb_day = 86400 / PROD_HB_4G
    # TCP/IP headers on top (estimate, as bench_link.py counts them): 4 segments per keep-alive
    # exchange (PINGREQ, PINGRESP, an ACK each), 2 per heartbeat, 4 per QoS-1 receipt
    hdr_day = (ping_day * 4 + hb_day * 2 + DAY_PROGRAMMES * 2 * 4) * HDR_PER_SEGMENT
    idle_day_up = ping_day * 2 + hb_day * hb_mean + other_up / isec * 86400
    idle_day_down = ping_day * 2 + other_down / isec * 86400
    idle_day = idle_day_up + idle_day_down
    measured_rate_day = (iup + idown) / isec * 86400  # at the run's hb interval, for comparison
    # per programme: the window's counters minus the idle packets the broker logged in it
    extra = [(w["up"] - idle_of(w)[0], w["down"] - idle_of(w)[1]) for w in progs]
    ex_mean = sum(u + d for u, d in extra) / len(extra)
    one_up, one_down = o["up"] - idle_of(o)[0], o["down"] - idle_of(o)[1]
    one = one_up + one_down  # keep-alive or a heartbeat that fell in the window is idle's
    clip_bytes = res["clip_bytes"]
    day_cached = idle_day + DAY_PROGRAMMES * ex_mean
    day_new = day_cached + one
    live_kb, live_src = live_per_minute()
    live_90 = live_kb * 1000 * DAY_PROGRAMMES * DAY_MINUTES if live_kb is not None else None
    http_down = o["down"] - o["split"]["schedule"][1] - o["split"]["receipt"][1] - o["split"]["ping"][1] - o["split"]["hb"][1]
    http_up = o["up"] - o["split"]["schedule"][0] - o["split"]["receipt"][0] - o["split"]["ping"][0] - o["split"]["hb"][0]
    day_new3 = day_new + (DAY_PROGRAMMES - 1) * (http_up + http_down)
    hdr_clip = (math.ceil(http_down / MSS) + math.ceil(http_down / MSS / 2)) * HDR_PER_SEGMENT
    figures = {"hdr_day": hdr_day, "one_time": one, "extra": ex_mean, "idle_day": idle_day, "day_cached": day_cached,
               "day_new": day_new, "live_90": live_90}

    rows = []
    for w, (eu, ed) in zip(progs, extra, strict=True):
        iu, idn = idle_of(w)
        s = w["split"]
        rows.append(
            f"| {w['id']} at {w['start']} | {w['duration']} s | {w['seconds']:.0f} s | "
            f"{w['up']:,} / {w['down']:,} | {s['ping'][0] // 2} ({s['ping'][0]}/{s['ping'][1]}) | "
            f"{len(w['hbs'])} ({s['hb'][0]}) | {iu:,} / {idn:,} | **{eu:,} / {ed:,}** | "
            f"{s['receipt'][0]} / {s['receipt'][1]} ({len(w['receipts'])} receipts) |")
    ws = iw["split"]
    rows.append(
        f"| idle window, nothing scheduled | – | {iw['seconds']:.0f} s | {iw['up']:,} / {iw['down']:,} | "
        f"{ws['ping'][0] // 2} ({ws['ping'][0]}/{ws['ping'][1]}) | {len(iw['hbs'])} ({ws['hb'][0]}) | "
        f"{idle_of(iw)[0]:,} / {idle_of(iw)[1]:,} | **{iw['up'] - idle_of(iw)[0]:,} / "
        f"{iw['down'] - idle_of(iw)[1]:,}** | {ws['receipt'][0]} / {ws['receipt'][1]} |")
    durs = ", ".join(str(d) for d in res["durations"])
    ex_list = ", ".join(f"{u + d:,}" for u, d in extra)
    grows = max(u + d for u, d in extra) - min(u + d for u, d in extra)
    sp = o["split"]
    lines = [
        ("`python bench/bench_daily.py` reproduces it (one run, "
         f"{res['run_s'] / 60:.1f} min). One emulated terminal (`cx emu run`, heap {DEFAULT_HEAP}, "
         f"`clip_cache_bytes` {CACHE}), a private Mosquitto on loopback (`-v`), a county key with "
         "use `daily` in the terminal's trust. The IP line was cut before anything else (on 4G "
         f"after {res['failover_s']:.1f} s), so the schedule, the clip and every receipt went over "
         "the emulated SIM7600; its clock ran at an offset (CX_CLOCK_OFFSET, as "
         "tests/test_e2e_daily.py) so that local 07:00 came minutes after it started. Bytes are the "
         "modem's counters (`cx emu ctl DIR modem status`: TCP payload, CIPSEND up and CIPRXGET "
         "down); the broker's log splits them into MQTT packets. **Machine: 2 cores, shared with "
         "other engineers' test runs** (1-min load average "
         f"{res['load0']:.1f} at the start, {res['load1']:.1f} at the end); byte counts do not "
         "depend on the load."),
        "",
        ("One signed county schedule (area 341122000000, published retained to eb/daily/341122, "
         f"{res['envelope_bytes']:,}-byte envelope) with three programmes at 07:00 and later, all "
         f"on one 30-second clip (16 kHz mono 16-bit WAV, {clip_bytes:,} bytes) repeated to fill "
         f"their `duration` ({durs} s). Each played to its end: receipts `playing` then `done`, "
         f"the clip from flash ({len(res['plays'])} `audio` starts, all `clip:`); no `link` change "
         f"once it was on 4G ({res['links'] or 'none'})."),
        "",
        "### (a) One-time: the schedule and the clip's prefetch (measured)",
        "",
        (f"From just before the publish to the clip appearing in flash/clips/ "
         f"({res['fetch_s']:.1f} s over the emulated modem, which has no radio: a real cell "
         f"takes longer): {o['down']:,} bytes down, {o['up']:,} up; without the keep-alive "
         f"and heartbeats that fell in the window, **{one_down:,} down, {one_up:,} up** "
         f"({kb(one)} in all). Of it: the retained schedule and the terminal's PUBACK "
         f"{sp['schedule'][1]:,} down / {sp['schedule'][0]} up; the `accepted` receipt "
         f"{sp['receipt'][0]} up / {sp['receipt'][1]} down (its PUBACK); the rest is the "
         f"clip's HTTP GET: {http_up:,} up, {http_down:,} down ({clip_bytes:,} of WAV plus the "
         f"response header). HTTP requests at the server: {res['requests']}. TCP/IP headers "
         f"are not in the counters: about {kb(hdr_clip)} more for the clip (**estimate**: "
         f"{HDR_PER_SEGMENT} bytes a segment, {MSS}-byte segments down and an ACK for every two)."),
        "",
        "### (b) Each programme, and an idle window of the same length (measured)",
        "",
        (f"From {res.get('before', 3):.0f} s before a programme's start to 1 s after its `done` receipt; "
         "the idle window (as long as the longest programme) comes 5 s after the last, with "
         "nothing scheduled. "
         "\"Idle packets\" are the keep-alive exchanges and fleet-agent heartbeats the broker "
         "logged in the window; \"beyond idle\" is the counters minus those."),
        "",
        ("| window | duration | measured over | bytes up / down (counters) | PINGREQ (up/down B) | "
         "heartbeats (up B) | idle packets up / down | beyond idle up / down | receipts up / down "
         "(MQTT, broker log) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        (f"Beyond idle, per programme of {durs} s: {ex_list} bytes (spread {grows} bytes): it "
         "does not grow with the length. It is the programme's two receipts (`playing`, `done`, "
         "QoS 1, each answered by a 4-byte PUBACK) and nothing else: the clip plays from flash. "
         f"Mean: **{ex_mean:,.0f} bytes per programme**, whatever its length."),
        "",
        "### (c) Idle rate (measured) and idle bytes per day (computed)",
        "",
        (f"Every stretch of the run without a programme after the clip was cached ({isec:.0f} s "
         f"in {len(idle_all)} stretches, the idle window included): {iup:,} bytes up, {idown:,} "
         f"down; {pings} keep-alive exchanges (4 bytes each, `keepalive_4g` {PROD_KEEPALIVE_4G} "
         f"s as in production), {len(hbs)} heartbeat(s) of {hb_mean:.0f} bytes on average "
         f"(MQTT size), {other_up} bytes up and {other_down} down of anything else. The run "
         f"sends heartbeats on 4G every `hb_4g_s` {res['hb_4g']} s (set in its config so these "
         f"stretches hold several); the production default is {PROD_HB_4G} s "
         "(firmware/config.py; the emulator's config leaves it at that unless told). At the run's "
         f"interval the measured rate is {kb(measured_rate_day)} a day."),
        "",
        (f"Computed at the production intervals from the measured packet sizes: "
         f"{ping_day:.0f} keep-alive exchanges ({ping_day * 4:,.0f} bytes) + {hb_day:.0f} "
         f"heartbeats × {hb_mean:.0f} bytes ({hb_day * hb_mean:,.0f}) + the rest at its measured "
         f"rate = **{kb(idle_day)} a day** of TCP payload ({idle_day_up:,.0f} up, "
         f"{idle_day_down:,.0f} down). (\"Link: failover and 4G cost\" → \"(b) Idle cost on 4G\" "
         "measures the same idle terminal over 10 minutes and adds a header estimate.)"),
        "",
        f"### The day: three {DAY_MINUTES}-minute programmes (computed from the above)",
        "",
        "| | bytes a day on 4G (TCP payload) |",
        "|---|---:|",
        f"| idle (keep-alive and heartbeats at production intervals) | {idle_day:,.0f} |",
        f"| 3 programmes × {ex_mean:,.0f} bytes beyond idle (their receipts) | {DAY_PROGRAMMES * ex_mean:,.0f} |",
        f"| **day, clip cached once** (the schedule and clip fetched on an earlier day) | **{day_cached:,.0f} ({kb(day_cached)})** |",
        (f"| (TCP/IP headers on top of that day, **estimate**: 4 segments per keep-alive exchange, "
         f"2 per heartbeat, 4 per receipt, {HDR_PER_SEGMENT} bytes each) | {hdr_day:,.0f} |"),
        f"| + the one-time cost, measured in (a): a new schedule and clip every day | {one:,.0f} |",
        f"| **day, a new clip every day** | **{day_new:,.0f} ({kb(day_new)})** |",
        f"| (three different new clips of this size every day: two more GETs, computed) | {day_new3:,.0f} ({kb(day_new3)}) |",
    ]
    if live_90 is not None:
        lines += [
            f"| streaming the same {DAY_PROGRAMMES * DAY_MINUTES} minutes live instead: {live_kb:.0f} kB a minute ({live_src}) | {live_90:,.0f} ({live_90 / 1e6:.1f} MB) |",
            "",
            (f"Measured: (a), (b), the idle stretches and the packet sizes. Computed: the per-day "
             f"idle (production intervals applied to the measured packets), the day's totals (a "
             f"{DAY_MINUTES}-minute programme costs what the {durs}-s ones did, since what it "
             f"adds is two receipts), and the live figure (a per-minute measurement × "
             f"{DAY_PROGRAMMES * DAY_MINUTES}). With the clip cached, the day's programmes cost "
             f"{DAY_PROGRAMMES * ex_mean / live_90 * 100:.4f} % of streaming them live; with a "
             f"new clip every day the day is {day_new / live_90 * 100:.1f} % of live."),
        ]
    else:
        lines += ["", f"Live comparison: {live_src}."]
    return "\n".join(lines) + "\n", figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="60,120,240", help="programme lengths, s")
    ap.add_argument("--lead", type=float, default=75,
                    help="s from the start until local 07:00 on the terminal's clock")
    ap.add_argument("--before", type=float, default=15,
                    help="a programme's window opens this many s before its start")
    ap.add_argument("--idle-tail", type=float, default=45,
                    help="idle s after the idle window (idle-rate stretch only)")
    ap.add_argument("--hb-4g", type=int, default=120, help="the run's hb_4g_s (production 900)")
    ap.add_argument("--json", type=Path, help="also save the raw measurements here")
    ap.add_argument("--from-json", type=Path, help="write the section from a saved run")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
    else:
        res = run(args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    md, fig = report(res)
    print(md)
    print(json.dumps({k: round(v) if v is not None else None for k, v in fig.items()}))
    if not args.no_write:
        write_section(TITLE, md)
        print(f"wrote {TITLE!r} to docs/benchmarks.md")


if __name__ == "__main__":
    main()
