"""A rollout to the real terminal: an emulated terminal (the agent's own OTA code) on the real
broker, a release of this checkout built and signed, `cx ota upload`'s checks and copy, `cx fleet
serve` storing the terminal's acknowledgement, reports and heartbeats, and the engine with its
file server. The target goes pending → confirmed on what the terminal itself says, and the
terminal sounds an alert on the new version."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from otafleet import until
from otahelp import boots, build, sounds, terminal
from rig import Term

from fleet import ota
from fleet.ota_engine import Engine
from fleet.ota_http import FileServer
from fleet.sim import ServeProcess
from fleet.store import Store
from tools.envelope import KeyPair

CX = str(Path(sys.executable).parent / "cx")


def cx(*args: str) -> str:
    r = subprocess.run([CX, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"cx {' '.join(args)}: {r.stderr}{r.stdout}"
    return r.stdout


def test_a_rollout_updates_an_emulated_terminal(rig: Any, ota_key: KeyPair,
                                                tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    db = str(tmp_path / "fleet.sqlite")
    store = Store.open(db)
    store.upsert_device(t.id, t.cfg["region"])
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    files = tmp_path / "files"
    files.mkdir()
    release = ota.read_release(rel)
    ota.copy_files(rel, release, files)
    store.add_release(release)
    http = FileServer(files, "127.0.0.1", 0).start()
    serve = ServeProcess(db, rig.broker.address, "e2e", str(tmp_path / "serve.log"))
    logs: list[str] = []
    stop = threading.Event()
    engine = Engine(db, rig.broker.host, rig.broker.port, f"http://127.0.0.1:{http.port}",
                    instance="e2e", every=0.1, ack_timeout=30, log=logs.append)
    th = threading.Thread(target=engine.run, args=(stop,), daemon=True)
    try:
        serve.wait_for("connected to broker")
        until(lambda: store.device(t.id).state == "online", 30, "the terminal online")
        assert store.create_rollout("0.2.0", [100], soak=0, max_parallel=1) == 1
        th.start()
        until(lambda: store.rollout("0.2.0").state == "done", 120,
              f"rollout done: {store.targets('0.2.0')} {logs}")
        (target,) = store.targets("0.2.0")
        assert (target["state"], target["sends"], target["reason"]) == ("confirmed", 1, None)
        assert [b["version"] for b in boots(t)][-1] == "0.2.0"
        until(lambda: store.device(t.id).version == "0.2.0", 90, "a heartbeat of 0.2.0")
        assert http.served == len(release.shas())  # a factory image holds none of the .mpy
        sounds(rig, t)
        out = serve.text()
        assert "wrong_types" not in out
        assert store.bad_counts() == []  # every report and acknowledgement was understood
    finally:
        stop.set()
        th.join(10)
        serve.stop()
        http.stop()
        store.close()


def test_a_crashing_release_rolled_out_to_10_terminals_stops_after_its_first_wave(
        rig: Any, ota_key: KeyPair, tmp_path: Path) -> None:
    """The county admin's commands as typed: `cx ota upload`, `cx ota serve` (file server and
    engine as a child), `cx ota rollout --waves 10%,50%,100%`, `cx ota status`. Wave 1 is one
    terminal; its trial crashes, it rolls back by itself, the rollout aborts, and the nine others
    never hear of the release. Every terminal then sounds a warning on the factory version."""
    terms = [rig.adopt(Term(rig.tmp / f"t{i}", rig.config(
        tid=f"T341122100201-{i:02d}", trust=[rig.root.anchor(), ota_key.anchor()],
        ota_trial_s=30))) for i in range(1, 11)]
    for t in terms:  # all ten boot at once; each then answers a probe on its alert topics
        t.wait_online(60)
    db = str(tmp_path / "fleet.sqlite")
    store = Store.open(db)
    for t in terms:
        store.upsert_device(t.id, t.cfg["region"])
    rel = tmp_path / "crash"
    build(rel, ota_key, "0.2.0", replace={"terminal.py": "raise RuntimeError('boom')\n"})
    files = tmp_path / "files"
    cx("ota", "upload", "--db", db, "--store", str(files), str(rel))
    serve = ServeProcess(db, rig.broker.address, "e2e", str(tmp_path / "serve.log"))
    log = open(tmp_path / "ota-serve.log", "wb")
    engine = subprocess.Popen([CX, "ota", "serve", "--db", db, "--store", str(files),
                               "--broker", rig.broker.address, "--http", "127.0.0.1:0",
                               "--instance", "e2e", "--every", "0.2", "--ack-timeout", "30"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        serve.wait_for("connected to broker")
        until(lambda: all(store.device(t.id).state == "online" for t in terms), 60,
              "ten terminals online")
        out = cx("ota", "rollout", "--db", db, "--waves", "10%,50%,100%", "--soak", "0",
                 "--abort-at", "0.2", "0.2.0")
        assert "0.2.0" in out
        until(lambda: store.rollout("0.2.0").state == "aborted", 240,
              f"rollout aborted: {store.targets('0.2.0')}")
        targets = {x["device"]: x for x in store.targets("0.2.0")}
        first = [d for d, x in targets.items() if x["wave"] == 0]  # waves count from 0 here
        assert len(first) == 1, targets
        (bad,) = first
        assert (targets[bad]["state"], targets[bad]["reason"]) == ("rolled_back", "crash")
        rest = [d for d in targets if d != bad]
        assert len(rest) == 9
        assert all(targets[d]["sends"] == 0 and targets[d]["state"] == "pending" for d in rest)
        status = cx("ota", "status", "--db", db, "0.2.0")
        assert "aborted" in status and "crash" in status, status
        by_id = {t.id: t for t in terms}
        vs = [b["version"] for b in boots(by_id[bad])]
        assert vs[-1] == "0.1.0" and "0.2.0" not in vs
        for d in rest:  # nothing reached them: no refusal, no staging, one boot
            fl = by_id[d].dir / "flash"
            assert not (fl / "stage").exists(), d
            assert [b["version"] for b in boots(by_id[d])] == ["0.1.0"], d
        # every terminal still sounds a warning (the crashed one first had to come back)
        rig.wait_answering(bad, by_id[bad].cfg["region"])
        p = rig.send_alert(kind="test", level=4, tone="chime")
        for t in terms:
            rig.rx.wait(lambda r, t=t: r.get("alert") == p["id"] and r["_dev"] == t.id
                        and r["status"] == "done", 60)
        assert store.bad_counts() == []
    finally:
        engine.terminate()
        try:
            engine.wait(10)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()
        serve.stop()
        store.close()
