"""`cx demo`: a county in miniature. Starts Mosquitto, the county's fleet service (`cx fleet
serve` on a SQLite file), emulated terminals running the real firmware and fleet agent, sends a
signed flood warning and a forged one, cuts a village's IP line, and shows what each terminal
did and what the fleet service recorded (`cx alert status`, `cx fleet report`, alarms)."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cx.alert import publish
from cx.alert_status import record  # what `cx alert send --db` does
from cx.common import CliError, ExitCode, folder
from fleet.sim import ServeProcess
from fleet.store import Store
from tools.broker import Broker, BrokerError
from tools.emu.run import Terminal, flash
from tools.envelope import KeyPair, make_alert_payload, sign_alert, topics_for
from tools.keys import new_issuer

# (id, region code, profile): two village horns and the town's sound column
TERMINALS = [
    ("T341122100201-01", "341122100201", "horn"),
    ("T341122100202-01", "341122100202", "horn"),
    ("T341122100000-01", "341122100000", "column"),
    ("T341122200101-01", "341122200101", "horn"),  # another town: must stay silent
]


MARKER = ".cx-demo"  # in a folder the demo made: only such a folder is emptied on the next run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the whole chain on this machine: broker, terminals, alerts")
    p.add_argument("--dir", type=Path, default=Path("demo-run"),
                   help="working folder, recreated each run (default ./demo-run)")
    p.set_defaults(func=run)


class Watch:
    """Receipts from every terminal, printed as they arrive."""

    def __init__(self, broker: Broker, t0: float) -> None:
        self.t0 = t0
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cx-demo-watch")
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        self.c.subscribe("eb/dev/+/event", 1)
        self.c.loop_start()

    def _on(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        try:
            r = json.loads(m.payload)
        except ValueError:
            return
        r["dev"] = m.topic.split("/")[2]
        with self.lock:
            self.items.append(r)
        why = f" ({r['reason']})" if r.get("reason") else ""
        print(f"  {time.time() - self.t0:6.2f}s  receipt  {r['dev']}  {r['status']}{why}", flush=True)

    def count(self, aid: str, status: str) -> int:
        with self.lock:
            return sum(1 for r in self.items if r.get("alert") == aid and r["status"] == status)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _events(term: Terminal) -> list[dict[str, Any]]:
    p = term.hw / "events.jsonl"
    if not p.exists():
        return []
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _cx(*argv: str) -> None:
    """Run a `cx` command as an admin would type it, and show it with its output."""
    exe = str(Path(sys.executable).parent / "cx")
    print(f"$ cx {' '.join(argv)}", flush=True)
    r = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60, check=False)
    out = (r.stdout + r.stderr).rstrip()
    print("\n".join("  " + line for line in out.splitlines()) if out else "  (nothing)")


def run(args: argparse.Namespace) -> int:
    base: Path = args.dir.resolve()
    if base.is_dir():
        # Only a folder an earlier demo made (it holds the marker) is emptied: `--dir ~` must
        # never wipe someone's home.
        made = (base / MARKER).is_file() or ((base / "broker").is_dir()
                                              and (base / "fleet.sqlite").is_file())  # before 0.2
        if not made and any(base.iterdir()):
            raise CliError(f"--dir {args.dir} is a folder the demo did not make and it is not "
                           "empty: give a new or empty folder (the demo empties its folder on "
                           "every run)", ExitCode.USAGE)
        shutil.rmtree(base)
    elif base.exists():
        raise CliError(f"--dir {args.dir} is a file, not a folder: give a folder (recreated each "
                       "run)", ExitCode.USAGE)
    folder(base, "--dir")
    (base / MARKER).write_text("made by cx demo; the next cx demo run empties this folder\n")
    print(f"cx demo: working in {base}")
    try:
        broker = Broker(base / "broker")
    except BrokerError as e:
        raise CliError(str(e)) from None
    print(f"  broker: mosquitto on {broker.address}")
    now = int(time.time())
    root = KeyPair.generate("root", "prov-34-root-demo", ["34"], ["alert"])
    county = new_issuer(root, "county-341122-demo", ["341122"], ["alert"], now - 300, now + 86400)
    print(f"  keys: root {root.kid} (scope 34) certifies {county.kid} (scope 341122); "
          "made now, never saved")
    db = base / "fleet.sqlite"
    store = Store.open(str(db))
    try:
        store.upsert_devices(TERMINALS)  # what `cx fleet provision` does for each terminal
    finally:
        store.close()
    terms: list[Terminal] = []
    threads: list[threading.Thread] = []
    watch = None
    serve = ServeProcess(str(db), broker.address, "demo", str(base / "fleet-serve.log"),
                         cx=str(Path(sys.executable).parent / "cx"))
    try:
        serve.wait_for("storing into", 30)
        print(f"  fleet service: cx fleet serve into {db} (log: {base / 'fleet-serve.log'})")
        for tid, region, profile in TERMINALS:
            cfg = {"id": tid, "region": region, "profile": profile, "trust": [root.anchor()],
                   "mqtt": {"host": broker.host, "port": broker.port}}
            d = base / tid
            flash(d, cfg, reflash=True)
            term = Terminal(d, quiet=True)
            terms.append(term)
            th = threading.Thread(target=term.run, daemon=True)
            th.start()
            threads.append(th)
            print(f"  terminal {tid}: {profile}, region {region}, folder {d}")
        if not _wait(lambda: all(any(e["dev"] == "link" and e["value"] == "ip" for e in _events(t))
                                 for t in terms), 60):
            raise CliError("terminals did not come online within 60 s; see */hw/console.log")
        print("  all terminals online over IP\n")
        t0 = time.time()
        watch = Watch(broker, t0)
        time.sleep(0.3)

        p = make_alert_payload(regions=["341122100000"], kind="alert", level=1, tone="siren",
                               event="flood", expires_in=600, text="山洪预警：请立即转移到高处")
        env = sign_alert(county, p)
        print(f"1) county {county.kid} signs a level-1 flood warning for town 341122100 "
              f"({len(env)} bytes) and publishes it to {', '.join(topics_for(p))}")
        record(str(db), p["id"], county.kid, p["regions"], time.time())
        publish(env, topics_for(p), broker.host, broker.port)
        in_town = [t for t in terms if "341122100" in t.dir.name]
        if not _wait(lambda: watch is not None and watch.count(p["id"], "done") >= len(in_town), 40):
            raise CliError("the alert did not finish on every terminal in the town within 40 s")

        forged_p = dict(p, id=p["id"] + "-forged", text="forged")
        h, _, s = sign_alert(county, forged_p).split(".")
        body = base64.urlsafe_b64encode(json.dumps(dict(forged_p, level=1, regions=["340000000000"])
                                                   ).encode()).rstrip(b"=").decode()
        print("\n2) someone replays the county's signature over a province-wide payload")
        publish(f"{h}.{body}.{s}", ["eb/alert/34"], broker.host, broker.port)
        _wait(lambda: watch is not None and sum(1 for r in watch.items if r["status"] == "rejected")
              >= len(terms), 15)
        village = terms[0]
        n = len(_events(village))
        print(f"\n3) the village line of {village.dir.name} is cut (storm); it must find 4G by itself")
        village.control(["link", "ip", "down"])
        if not _wait(lambda: any(e["dev"] == "link" and e["value"] == "4g"
                                 for e in _events(village)[n:]), 20):
            raise CliError("the terminal did not fail over to 4G within 20 s")
        on4g = next(e for e in _events(village)[n:] if e["dev"] == "link" and e["value"] == "4g")
        print(f"  {on4g['t'] - t0:6.2f}s  {village.dir.name} link → 4g")
        p3 = make_alert_payload(regions=["341122100201"], kind="test", level=4, tone="chime",
                                expires_in=600)
        print(f"   the county sends a test to village 341122100201 ({p3['id']})")
        record(str(db), p3["id"], county.kid, p3["regions"], time.time())
        publish(sign_alert(county, p3), topics_for(p3), broker.host, broker.port)
        if not _wait(lambda: watch is not None and watch.count(p3["id"], "done") >= 1, 30):
            raise CliError("the test did not sound over 4G within 30 s")
        time.sleep(3)  # amplifiers go off after their hold time
        print("\nWhat each terminal did (from its hw/events.jsonl and hw/speaker.wav):")
        print(f"  {'terminal':18} {'link':5} {'amp on→off':>11} {'audio':12} {'seconds':>7}  "
              "receipts")
        for t in terms:
            ev = _events(t)
            amps = [e for e in ev if e["dev"] == "amp"]
            src = next((e["value"]["source"] for e in ev if e["dev"] == "audio"), "-")
            secs = _seconds(t.hw / "speaker.wav")
            span = f"{amps[1]['t'] - amps[0]['t']:.1f}s" if len(amps) >= 2 else "never"
            path = next((e["value"] for e in reversed(ev) if e["dev"] == "link"), "none")
            rs = [r["status"] + (f":{r['reason']}" if r.get("reason") else "")
                  for r in watch.items if r["dev"] == t.dir.name]
            print(f"  {t.dir.name:18} {path:5} {span:>11} {src:12} {secs:7.1f}  {' → '.join(rs)}")
        print(f"\nListen: {base}/<terminal>/hw/speaker.wav   Outputs: <terminal>/hw/events.jsonl")

        # The county admin's view: what the fleet service stored from the same traffic.
        _wait(lambda: _receipts(db, p["id"]) >= 2 * len(in_town), 10)
        print("\nWhat the county's fleet service recorded (the admin's commands):")
        rel = str(db)
        _cx("alert", "status", p["id"], "--db", rel)
        _cx("fleet", "report", "--db", rel)
        _cx("fleet", "alarms", "--open", "--db", rel)
        return 0
    finally:
        if watch is not None:
            watch.stop()
        for t in terms:
            t.stop()
        for th in threads:
            th.join(5)
        out = serve.stop()
        if "Traceback" in out:
            print(f"cx demo: the fleet service failed; see {base / 'fleet-serve.log'}",
                  file=sys.stderr)
        broker.stop()


def _receipts(db: Path, alert_id: str) -> int:
    store = Store.open(str(db))
    try:
        return len(store.receipts(alert_id))
    finally:
        store.close()


def _seconds(wav: Path) -> float:
    if not wav.exists():
        return 0.0
    with wave.open(str(wav), "rb") as w:
        return w.getnframes() / w.getframerate()
