"""Link: failover time (IP cut -> connected over 4G) and the 4G cost of an idle terminal.

(a) Failover, one terminal (`cx emu run`, firmware defaults but `link_hysteresis_s` lowered so
    it comes back to IP between cuts): N times, once it has been on IP for --on-ip seconds,
    `cx emu ctl DIR link ip down` (host time noted), then the time until its next `link` "4g"
    event in hw/events.jsonl (written by the terminal, same host clock). The terminal's log
    (flash/log.jsonl, same clock) splits it: cut -> `disconnect` (reason probe_timeout) is
    detection; then the MQTT client's backoff pause; then `link_mode` 4g -> `connect` is the
    TCP open through the modem and CONNECT/CONNACK. The emulated modem's counters
    (`modem status` bytes_up/bytes_down) around each failover give the reconnect cost.
    Then `link ip up` and wait for "ip" again.
(b) Idle on 4G, a second terminal (all firmware defaults): IP cut, connected over 4G, a
    settling period, then `modem status` read before and after --idle-min minutes with no
    alerts. The broker's own log (mosquitto -v) counts the MQTT packets of that terminal in the
    window, so the counters' delta splits into MQTT keep-alive and anything else.
    (b) runs in a thread alongside (a): both terminals idle most of the time.

    .venv/bin/python bench/bench_link.py [--cuts 20] [--idle-min 10] [--no-write]
    .venv/bin/python bench/bench_link.py --from-json FILE   # write the section from a saved run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, write_section

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from bench_latency import bench_rig
from rig import Term

TITLE = "Link: failover and 4G cost"
FAIL_ID = "T341122100201-01"
IDLE_ID = "T341122100201-02"
# Firmware defaults (firmware/config.py DEFAULTS) this benchmark relies on; it sets none of them.
DEFAULTS = {"ip_probe_ms": 1500, "keepalive": 60, "keepalive_4g": 240, "reconnect_max_ms": 10000}
HDR_PER_SEGMENT = 52  # IPv4 (20) + TCP (20) + timestamps option (12): docs/link.md
SEGMENTS_PER_PING = 4  # PINGREQ, PINGRESP and an ACK for each


def modem(t: Term) -> dict[str, Any]:
    return json.loads(t.ctl("modem", "status"))


def wait_link(t: Term, value: str, timeout: float, since: int) -> dict[str, Any]:
    return t.wait_event(lambda e: e["dev"] == "link" and e["value"] == value, timeout, since)


def last_link(t: Term) -> dict[str, Any] | None:
    ls = [e for e in t.events() if e["dev"] == "link"]
    return ls[-1] if ls else None


def log_between(t: Term, t0: float, t1: float) -> list[dict[str, Any]]:
    return [e for e in t.log() if t0 <= e.get("t", 0) <= t1]


def first(entries: list[dict[str, Any]], ev: str, **kw: Any) -> dict[str, Any] | None:
    for e in entries:
        if e.get("ev") == ev and all(e.get(k) == v for k, v in kw.items()):
            return e
    return None


def git_rev() -> str:
    """The commit the firmware came from, and whether firmware/ or agent/ differed from it."""
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    dirty = git("status", "--short", "--", "firmware", "agent", "hardware")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted firmware changes" if dirty else "")


def fw_defaults() -> dict[str, int]:
    """The integer defaults of firmware/config.py (read as text: it is MicroPython code)."""
    text = (ROOT / "firmware" / "config.py").read_text()
    return {k: int(v) for k, v in re.findall(r'"(\w+)": (\d+),', text)}


# --- (a) failover ----------------------------------------------------------------------------


def failover(t: Term, broker_log: Path, cuts: int, on_ip: float) -> list[dict[str, Any]]:
    out = []
    rng = random.Random(1)
    for i in range(cuts):
        # on IP, and for long enough: past the hysteresis (no failback penalty) and past the MQTT
        # client's 10 s "stable connection" mark (backoff back at its minimum)
        e = last_link(t)
        if e is None or e["value"] != "ip":
            raise SystemExit(f"cut {i + 1}: terminal not on IP ({e})")
        # plus up to 2 s at random: the IP probe's 1.5-1.9 s ping cycle is locked to the connect,
        # so a fixed dwell would always cut at the same point of it and bias detection
        time.sleep(max(0.0, on_ip + rng.uniform(0, 2) - (time.time() - e["t"])))
        n = len(t.events())
        s0 = modem(t)
        off = broker_log.stat().st_size
        cut = time.time()
        assert t.ctl("link", "ip", "down") == "ok"
        on4g = wait_link(t, "4g", 30, n)
        time.sleep(3)  # subscriptions (if any) and their SUBACKs through the modem
        s1 = modem(t)
        off1 = broker_log.stat().st_size
        # from the broker's side: only what came after the new (4G) connection
        seg = read_from(broker_log, off)
        k = seg.find(f" as {t.id} ")
        pk = broker_packets(seg[seg.rfind("\n", 0, k) + 1 :] if k >= 0 else seg, t.id)
        n = len(t.events())
        assert t.ctl("link", "ip", "up") == "ok"
        up = time.time()
        onip = wait_link(t, "ip", 180, n)
        time.sleep(2)
        s2 = modem(t)
        pk_back = broker_packets(read_from(broker_log, off1), t.id)
        back4g = pk_back["publish"]
        lg = log_between(t, cut - 0.5, on4g["t"] + 0.5)
        disc = first(lg, "disconnect")
        mode = first(lg, "link_mode", mode="4g")
        conn = first(lg, "connect")
        r = {
            "cut": cut,
            "total": on4g["t"] - cut,
            "detect": disc["t"] - cut if disc else None,
            "reason": disc.get("reason") if disc else None,
            "backoff": mode["t"] - disc["t"] if disc and mode else None,
            "open4g": conn["t"] - mode["t"] if conn and mode else None,
            "session_present": conn.get("session_present") if conn else None,
            "up": s1["bytes_up"] - s0["bytes_up"],
            "down": s1["bytes_down"] - s0["bytes_down"],
            "mqtt": pk,
            "back_up": s2["bytes_up"] - s1["bytes_up"],
            "back_down": s2["bytes_down"] - s1["bytes_down"],
            "back_publish": back4g,
            "failback": onip["t"] - up,
            "log": [e["ev"] + (f"({e['reason']})" if "reason" in e else "") for e in lg],
        }
        out.append(r)
        print(f"  cut {i + 1:2}/{cuts}: 4G after {r['total']:.2f} s (detect "
              f"{r['detect'] if r['detect'] is None else round(r['detect'], 2)} s, "
              f"{r['reason']}); connect cost {r['up']}+{r['down']} B; back on IP "
              f"{r['failback']:.1f} s after ip up", flush=True)
    return out


# --- (b) idle on 4G --------------------------------------------------------------------------


PUB_RE = re.compile(r"(Received|Sending) PUBLISH (?:from|to) (\S+) \(d\d, q(\d), r\d, m\d+, "
                    r"'([^']*)', \.\.\. \((\d+) bytes\)\)")
PKT_RE = re.compile(r"(Received|Sending) (\w+) (?:from|to) (\S+?)[ ,]")
FIXED = {"PINGREQ": 2, "PINGRESP": 2, "CONNACK": 4, "PUBACK": 4, "DISCONNECT": 2}


def publish_size(topic: str, qos: int, n: int) -> int:
    rl = 2 + len(topic.encode()) + (2 if qos else 0) + n
    return 1 + (1 if rl < 128 else 2 if rl < 16384 else 3) + rl


def broker_packets(text: str, cid: str) -> dict[str, Any]:
    """MQTT packets mosquitto -v logged to or from client `cid`, with their sizes where the log
    tells them (CONNECT and SUBSCRIBE sizes it does not: they stay in "unsized")."""
    out: dict[str, Any] = {"counts": {}, "up": 0, "down": 0, "unsized": [], "publish": []}
    for line in text.splitlines():
        m = PUB_RE.search(line + " ")
        if m and m.group(2) == cid:
            size = publish_size(m.group(4), int(m.group(3)), int(m.group(5)))
            d = "up" if m.group(1) == "Received" else "down"
            out[d] += size
            out["publish"].append({"dir": d, "topic": m.group(4), "qos": int(m.group(3)),
                                   "payload": int(m.group(5)), "bytes": size,
                                   "t": int(line.split(":", 1)[0])})
            k = f"{m.group(1).lower()} PUBLISH {m.group(4).rsplit('/', 1)[-1]}"
            out["counts"][k] = out["counts"].get(k, 0) + 1
            continue
        m = PKT_RE.search(line + " ")
        if m and m.group(3) == cid and m.group(2) != "PUBLISH":
            k = f"{m.group(1).lower()} {m.group(2)}"
            out["counts"][k] = out["counts"].get(k, 0) + 1
            if m.group(2) in FIXED:
                out["up" if m.group(1) == "Received" else "down"] += FIXED[m.group(2)]
            else:
                out["unsized"].append(k)
        elif "connected from" in line and line.rstrip().split(" as ")[-1].split(" ")[0] == cid:
            out["counts"]["received CONNECT"] = out["counts"].get("received CONNECT", 0) + 1
            out["unsized"].append("received CONNECT")
    return out


def read_from(path: Path, off: int) -> str:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read().decode(errors="replace")


def idle(t: Term, broker_log: Path, settle: float, idle_s: float, res: dict[str, Any]) -> None:
    try:
        time.sleep(3)
        n = len(t.events())
        s0 = modem(t)
        cut = time.time()
        t.ctl("link", "ip", "down")
        on4g = wait_link(t, "4g", 30, n)
        res["failover"] = on4g["t"] - cut
        time.sleep(3)
        s1 = modem(t)
        res["connect_up"] = s1["bytes_up"] - s0["bytes_up"]
        res["connect_down"] = s1["bytes_down"] - s0["bytes_down"]
        lg = log_between(t, cut - 0.5, on4g["t"] + 0.5)
        conn = first(lg, "connect")
        res["session_present"] = conn.get("session_present") if conn else None
        off0 = broker_log.stat().st_size
        print(f"  idle terminal on 4G after {res['failover']:.2f} s; settling {settle:.0f} s",
              flush=True)
        time.sleep(max(0.0, settle - 3))
        a = modem(t)
        ta = time.time()
        off = broker_log.stat().st_size
        log_n = len(t.log())
        print(f"  idle window: {idle_s / 60:.1f} min from {time.strftime('%H:%M:%S')}", flush=True)
        time.sleep(idle_s)
        b = modem(t)
        tb = time.time()
        res.update(
            ta=ta,
            tb=tb,
            seconds=tb - ta,
            settle_up=a["bytes_up"] - s1["bytes_up"],
            settle_down=a["bytes_down"] - s1["bytes_down"],
            settle_mqtt=broker_packets(read_from(broker_log, off0)[: off - off0], t.id),
            up=b["bytes_up"] - a["bytes_up"],
            down=b["bytes_down"] - a["bytes_down"],
            at_commands=b["commands"] - a["commands"],
            state_after=b["state"],
            mqtt=broker_packets(read_from(broker_log, off), t.id),
            all_mqtt=broker_packets(broker_log.read_text(errors="replace"), t.id),
            links=[e["value"] for e in t.events() if e["dev"] == "link" and ta <= e["t"] <= tb],
            log_events=[e["ev"] for e in t.log()[log_n:]],
        )
        ml = t.dir / "hw" / "modem.log"
        res["modem_log"] = [ln for ln in (ml.read_text().splitlines() if ml.exists() else [])
                            if ta <= float(ln.split(" ", 1)[0] or 0) <= tb]
    except Exception as e:  # reported by the main thread
        res["error"] = repr(e)
    finally:
        res["done"] = True


# --- report -----------------------------------------------------------------------------------


def summarise(data: dict[str, Any]) -> str:
    cuts = data["cuts"]
    tot = [c["total"] for c in cuts]
    med, mx, mn = statistics.median(tot), max(tot), min(tot)
    det = [c["detect"] for c in cuts if c["detect"] is not None]
    bo = [c["backoff"] for c in cuts if c["backoff"] is not None]
    op = [c["open4g"] for c in cuts if c["open4g"] is not None]
    reasons = sorted({str(c["reason"]) for c in cuts})
    sess = sorted({str(c["session_present"]) for c in cuts})
    ups = sorted({c["up"] for c in cuts})
    downs = sorted({c["down"] for c in cuts})
    bups = sorted({c["back_up"] for c in cuts})
    bdowns = sorted({c["back_down"] for c in cuts})
    fb = [c["failback"] for c in cuts]
    idle_r = data["idle"]
    h = data["hysteresis"]

    def row(name: str, xs: list[float], ms: bool = False) -> str:
        if not xs:
            return f"| {name} | n/a | n/a | n/a |"
        if ms:
            return (f"| {name} | {statistics.median(xs) * 1000:.0f} ms | {min(xs) * 1000:.0f} ms"
                    f" | {max(xs) * 1000:.0f} ms |")
        return (f"| {name} | {statistics.median(xs):.2f} s | {min(xs):.2f} s"
                f" | {max(xs):.2f} s |")

    def ok(b: bool) -> str:
        return "met" if b else "**not met**"

    seq = " → ".join(cuts[0]["log"]) if cuts else ""
    out = f"""
`python bench/bench_link.py` reproduces it ({len(cuts)} cuts, {idle_r.get('seconds', 0) / 60:.1f}
min idle). Terminals run by `cx emu run` (IP through the emulator's cuttable proxy, 4G through the
emulated SIM7600 on a pty bridging to loopback TCP), a private Mosquitto on loopback. Times are
host `time.time()`: the benchmark's before `link ip down`, the terminal's on its `link` events and
log lines (same clock).

Firmware: {data.get('firmware', 'unknown')} (working tree at the start of the run).

**Machine: 2 cores, shared with other engineers, whose test runs may overlap this one** (1-min
load average {data['load_before']:.1f} before, {data['load_after']:.1f} at the end). The two
terminals below ran at the same time: (b)'s idled on 4G while (a)'s was cut and restored.

### (a) Failover: IP cut → connected over 4G, {len(cuts)} cuts

Firmware defaults (`ip_probe_ms` 1500, `keepalive` 60, `keepalive_4g` 240,
`reconnect_max_ms` 10000) except `link_hysteresis_s` {h} (default 60), only so the terminal comes
back to IP between cuts in seconds. The hysteresis governs failback, never failover: losing the IP
connection moves the terminal to 4G at once (`firmware/link.py`). Each cut comes after the
terminal had been on IP for {data['on_ip']:.0f} s plus 0–2 s at random (so cuts fall at random
points of the probe's ping cycle); the time runs from the `link ip down` command to
the terminal's `link` "4g" event (connected: CONNACK received over the modem).

| failover | median | min | max | target |
|---|---:|---:|---:|---|
| IP cut → `link` "4g" | {med:.2f} s | {mn:.2f} s | {mx:.2f} s | median ≤ 5 s: {ok(med <= 5)}; max ≤ 10 s: {ok(mx <= 10)} |

How it splits, from the terminal's log:

| part | median | min | max |
|---|---:|---:|---:|
{row("detection: cut → `disconnect` (" + ", ".join(reasons) + ")", det)}
{row("MQTT reconnect backoff: `disconnect` → `link_mode` 4g", bo)}
{row("over 4G: `link_mode` 4g → `connect` (CIPOPEN, CONNECT/CONNACK)", op, ms=True)}

Detection is the IP probe: a PINGREQ after 1.5 s without a byte from the broker, dead after 3 s
of silence, checked every 375 ms. Since the broker last spoke between 0 and 1.5 s before the cut,
detection lands roughly 1.5 to 3.4 s after it. The backoff is the MQTT client's first pause
(0.25–0.5 s after a connection that lived ≥ 10 s). The 4G part is milliseconds only because the
emulated module has no radio: the bearer is already open (the driver brings it up at boot), and
the model's TCP open and the MQTT round trip go to loopback. A real SIM7600 adds the TCP
handshake and the CONNECT/CONNACK round trip over LTE (two RTTs, typically 0.1–0.5 s) and the
UART at 115200 baud, which still leaves the median well inside 5 s; a bearer that has to be
re-opened (PDP activation) can take several seconds more. Log sequence of cut 1: {seq}.

Back on IP after `link ip up` (hysteresis {h} s, IP tried every 5 s): median
{statistics.median(fb):.1f} s, max {max(fb):.1f} s.
"""
    # reconnect cost
    hb_back = [x for c in cuts for x in c.get("back_publish", []) if x["topic"].endswith("/hb")]
    n_hb_back = sum(1 for c in cuts if any(x["topic"].endswith("/hb")
                                           for x in c.get("back_publish", [])))
    back_txt = (f"in {n_hb_back} of the {len(cuts)} stays a fleet-agent heartbeat "
                f"({', '.join(sorted({str(x['bytes']) for x in hb_back}))} bytes) fell due, "
                f"the timer started on IP (`hb_s` 60) running out on 4G"
                if hb_back else "no packet")
    mq = [c.get("mqtt") for c in cuts if c.get("mqtt")]
    parts = ""
    if mq:
        m0 = mq[0]
        other_up = m0["up"]
        conn_up = cuts[0]["up"] - other_up
        pubs = "; ".join(f"PUBLISH `{x['topic']}` q{x['qos']} {x['payload']}-byte payload = "
                         f"{x['bytes']} bytes ({x['dir']})" for x in m0["publish"]) or "none"
        parts = (f"Cut 1, packet by packet from the broker's log: CONNECT {conn_up} bytes (the "
                 f"counter's rest: mosquitto does not log its size; it carries the client id, "
                 f"keep-alive 240 and, since the fleet agent, a will on `…/state`); "
                 f"{pubs}; the broker's replies "
                 f"({', '.join(k for k in m0['counts'] if k.startswith('sending'))}) "
                 f"{m0['down']} bytes. Packets seen: {m0['counts']}.")
    out += f"""
### Reconnect cost over 4G

Measured by the emulated modem (TCP payload through `AT+CIPSEND` / `AT+CIPRXGET`) from just
before each cut to 3 s after the `link` "4g" event: **{', '.join(map(str, ups))} bytes up,
{', '.join(map(str, downs))} bytes down** per failover over the {len(cuts)} cuts
(`session_present` {', '.join(sess)}). {parts}

No SUBSCRIBE: the broker kept the session, and the client resubscribes only after a CONNACK
without one (or the first of a boot). A reconnect that has to subscribe (the five region
prefixes and `…/cmd`) would add 147 bytes of SUBSCRIBE and 30 of SUBACK (computed, not
measured here). From 3 s after the failover to 2 s after the return to IP (about
{statistics.median(fb):.0f} s on 4G) the modem carried {', '.join(map(str, bups))} bytes up and
{', '.join(map(str, bdowns))} down (distinct values over the cuts): {back_txt}. The return to IP
itself costs no 4G bytes: the client drops the 4G connection without a DISCONNECT. With TCP/IP headers (handshake, each data segment and its ACK, the close: about
12 segments of ~52 bytes) one reconnect is roughly 0.7 KB on the 4G bill, an estimate.
"""
    if "error" in idle_r or "up" not in idle_r:
        out += f"\n### (b) Idle cost on 4G\n\nNot measured: {idle_r.get('error', 'no result')}\n"
        return out
    fw = data.get("fw_defaults", {})
    ka4 = fw.get("keepalive_4g", 240)
    hb4 = fw.get("hb_4g_s")
    secs = idle_r["seconds"]
    up, down = idle_r["up"], idle_r["down"]
    mq = idle_r["mqtt"]
    c = mq["counts"]
    preq, presp = c.get("received PINGREQ", 0), c.get("sending PINGRESP", 0)
    hbs = [x for x in mq["publish"] if x["topic"].endswith("/hb")]
    hb_bytes = sum(x["bytes"] for x in hbs)
    other_mqtt_up = mq["up"] - 2 * preq - sum(x["bytes"] for x in hbs if x["dir"] == "up")
    other_mqtt_down = mq["down"] - 2 * presp
    rest_up, rest_down = up - mq["up"], down - mq["down"]
    all_hb = [x for x in idle_r["all_mqtt"]["publish"] if x["topic"].endswith("/hb")]
    hb_size = max((x["bytes"] for x in all_hb), default=0)
    sm = idle_r.get("settle_mqtt", {"counts": {}, "publish": []})
    settle_hb = [x for x in sm["publish"] if x["topic"].endswith("/hb")]
    ev_counts: dict[str, int] = {}
    for e in idle_r["log_events"]:
        ev_counts[e] = ev_counts.get(e, 0) + 1
    evs = ", ".join(f"`{k}` ×{v}" for k, v in sorted(ev_counts.items())) or "none"
    mlog = idle_r["modem_log"]
    per_h = (up + down) * 3600 / secs
    ex = max(preq, 1)
    hdr = (preq * SEGMENTS_PER_PING + len(hbs) * 2) * HDR_PER_SEGMENT
    # steady state: one ping exchange per keep-alive, one heartbeat per hb_4g_s
    ping_h = 3600 / ka4
    ping_cost = ping_h * (4 + SEGMENTS_PER_PING * HDR_PER_SEGMENT)
    hb_h = 3600 / hb4 if hb4 else 0
    hb_cost = hb_h * (hb_size + 2 * HDR_PER_SEGMENT)
    steady = ping_cost + hb_cost
    out += f"""
### (b) Idle cost on 4G

A second terminal with every firmware default (`keepalive_4g` {ka4} s, heartbeat on 4G
`hb_4g_s` {hb4} s, hysteresis 60 s): IP cut, on 4G after {idle_r['failover']:.1f} s, then
{data['settle']:.0f} s to settle, then the modem counters read before and after
{secs / 60:.1f} min with no alerts (IP stayed cut; `link` events in the window:
{idle_r['links'] or 'none'}). The broker's log (`mosquitto -v`) names every MQTT packet of the
terminal, which splits the counters.

| in the {secs / 60:.1f}-min window | bytes up | bytes down |
|---|---:|---:|
| modem counters (TCP payload) | {up} | {down} |
| MQTT keep-alive: {preq} PINGREQ, {presp} PINGRESP (2 bytes each) | {2 * preq} | {2 * presp} |
| fleet-agent heartbeats (`…/hb`, QoS 0): {len(hbs)} | {hb_bytes} | 0 |
| other MQTT | {other_mqtt_up} | {other_mqtt_down} |
| not MQTT (counters − all of the above) | {rest_up} | {rest_down} |

MQTT packets of the terminal in the window: {c or 'none'}. Terminal log lines in the window:
{evs}. Modem model log lines in the window: {len(mlog)}{': ' + '; '.join(mlog[:5]) if mlog else ''}.
Nothing else crosses the modem: the modem driver's own traffic (`AT+CEREG?`/`AT+CSQ` every 30 s,
`CIPRXGET` polls) is UART only ({idle_r['at_commands']} AT commands in the window, no network
bytes), and the link manager's IP checks go over the (cut) IP line.

The settling minute after the failover carried {idle_r.get('settle_up', '?')} bytes up and
{idle_r.get('settle_down', '?')} down, {len(settle_hb)} heartbeat(s)
({', '.join(str(x['bytes']) for x in settle_hb) or '-'} bytes). A heartbeat timer started on IP
(`hb_s` 60) runs out on 4G, so the first heartbeat after a failover comes within a minute; from
then on they come every `hb_4g_s` ±10 %.
A {hb4}-s heartbeat period is longer than a {secs / 60:.0f}-min window, so the window holds
0 or 1 of them: scaling the window alone to an hour gives {per_h:.0f} bytes/hour of payload
(+ ~{hdr * 3600 / secs:.0f} of headers) and misstates the heartbeat share either way. The
hourly figure below therefore adds up the measured packets at their periods.

| per hour, steady state on 4G | MQTT payload | TCP/IP headers (**estimate**) | total |
|---|---:|---:|---:|
| keep-alive: {ping_h:.0f} PINGREQ/PINGRESP exchanges (every {ka4} s; {ex} seen in {secs:.0f} s) | {ping_h * 4:.0f} | {ping_h * SEGMENTS_PER_PING * HDR_PER_SEGMENT:.0f} ({SEGMENTS_PER_PING} segments × {HDR_PER_SEGMENT}) | {ping_cost:.0f} |
| heartbeats: {hb_h:.0f} × {hb_size} bytes (the largest seen; every {hb4} s) | {hb_h * hb_size:.0f} | {hb_h * 2 * HDR_PER_SEGMENT:.0f} (2 segments × {HDR_PER_SEGMENT}) | {hb_cost:.0f} |
| **total** | {ping_h * 4 + hb_h * hb_size:.0f} | {ping_h * SEGMENTS_PER_PING * HDR_PER_SEGMENT + hb_h * 2 * HDR_PER_SEGMENT:.0f} | **{steady:.0f} bytes ≈ {steady / 1024:.1f} KB/hour** |

Target ≤ 20 KB/hour: {ok(steady <= 20 * 1024)} (≈ {steady * 24 / 1024:.0f} KB/day,
{steady * 24 * 30 / 1024 / 1024:.1f} MB/month, before the carrier's own LTE overhead, which is
not modelled). The header column is an estimate: the emulated modem bridges TCP payload, not
packets (IPv4 20 + TCP 20 + timestamps 12 bytes per segment, as docs/link.md counts).
"""
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=20, help="IP cuts in (a)")
    ap.add_argument("--hysteresis", type=int, default=5, help="link_hysteresis_s in (a)")
    ap.add_argument("--on-ip", type=float, default=15, help="s on IP before each cut")
    ap.add_argument("--idle-min", type=float, default=10, help="idle window in (b), minutes")
    ap.add_argument("--settle", type=float, default=60, help="s on 4G before the idle window")
    ap.add_argument("--json", type=Path, help="also save the raw results here")
    ap.add_argument("--from-json", type=Path, help="write the section from saved results")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = run(args)
    md = summarise(data)
    print(md)
    if args.no_write:
        return
    write_section(TITLE, md)
    print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    rev = git_rev()
    idle_r: dict[str, Any] = {}
    with bench_rig("cx-bench-link-") as (_tmp, broker, rig):
        blog = broker.conf.parent / "mosquitto.log"
        ft = rig.terminal("failover", tid=FAIL_ID, link_hysteresis_s=args.hysteresis)
        it = rig.terminal("idle", tid=IDLE_ID)
        th = threading.Thread(target=idle, daemon=True,
                              args=(it, broker.conf.parent / "mosquitto.log", args.settle,
                                    args.idle_min * 60, idle_r))
        th.start()
        print(f"(a) {args.cuts} IP cuts, hysteresis {args.hysteresis} s", flush=True)
        cuts = failover(ft, blog, args.cuts, args.on_ip)
        print("(a) done; waiting for (b)", flush=True)
        while not idle_r.get("done"):
            time.sleep(1)
        load_after = os.getloadavg()[0]
        if "error" in idle_r:
            print(f"(b) failed: {idle_r['error']}", file=sys.stderr)
    data = {"cuts": cuts, "idle": idle_r, "hysteresis": args.hysteresis, "on_ip": args.on_ip,
            "settle": args.settle, "load_before": load_before, "load_after": load_after,
            "firmware": rev, "fw_defaults": fw_defaults()}
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    return data


if __name__ == "__main__":
    main()
