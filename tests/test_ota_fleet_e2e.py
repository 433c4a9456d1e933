"""A rollout to the real terminal: an emulated terminal (the agent's own OTA code) on the real
broker, a release of this checkout built and signed, `cx ota upload`'s checks and copy, `cx fleet
serve` storing the terminal's acknowledgement, reports and heartbeats, and the engine with its
file server. The target goes pending → confirmed on what the terminal itself says, and the
terminal sounds an alert on the new version."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from otafleet import until
from otahelp import boots, build, sounds, terminal

from fleet import ota
from fleet.ota_engine import Engine
from fleet.ota_http import FileServer
from fleet.sim import ServeProcess
from fleet.store import Store
from tools.envelope import KeyPair


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
