"""The fleet service against emulated terminals running the real firmware and agent, through the
real broker (issue 4): registry, offline and line alarms, commands, delivery reports."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rig import CX, Rig

from fleet.sim import ServeProcess
from fleet.store import Store


@pytest.fixture
def fleet(tmp_path: Path, broker):
    r = Rig(tmp_path, broker)
    db = str(tmp_path / "fleet.sqlite")
    store = Store.open(db)
    svc = ServeProcess(db, broker.address, "t", str(tmp_path / "serve.log"))
    svc.wait_for("connected to broker")
    yield r, db, store, svc
    svc.stop()
    store.close()
    r.close()


def cx(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *args], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "CX_FLEET_DB": db})


def until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def devices(db: str) -> dict[str, dict[str, Any]]:
    r = cx("fleet", "devices", "--json", db=db)
    assert r.returncode == 0, r.stderr
    return {d["id"]: d for d in json.loads(r.stdout)}


def alarms(db: str) -> list[dict[str, Any]]:
    r = cx("fleet", "alarms", "--json", db=db)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_terminals_appear_go_offline_and_come_back(fleet) -> None:
    rig, db, store, _ = fleet
    store.upsert_device("T341122100201-01", "341122100201")
    t = rig.terminal("t1", hb_s=2)
    until(lambda: devices(db).get(t.id, {}).get("version"), 20, "a heartbeat stored")
    d = devices(db)[t.id]
    assert d["state"] == "online"
    assert d["version"] == "0.1.0" and d["link"] == "ip"
    t.stop()  # the emulator stops: its terminal goes silent (a clean stop sends no will)
    stopped = time.monotonic()
    until(lambda: any(a["device"] == t.id and a["kind"] == "offline" and a["state"] == "open"
                      for a in alarms(db)), 20, "offline alarm")
    assert time.monotonic() - stopped <= 3 * 2 + 4
    t.start()
    until(lambda: any(a["device"] == t.id and a["kind"] == "offline" and a["state"] == "closed"
                      for a in alarms(db)), 30, "offline alarm closed")


def test_line_fault_alarm_raised_and_closed_by_the_terminal(fleet) -> None:
    rig, db, store, _ = fleet
    store.upsert_device("T341122100201-01", "341122100201")
    t = rig.terminal("t1", hb_s=2, hold_ms=200)
    t.ctl("adc", "line_ma", "2")
    p = rig.send_alert(kind="test", level=4, tone="chime")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 20)
    until(lambda: any(a["kind"] == "line" and a["state"] == "open" for a in alarms(db)), 15,
          "line alarm")
    t.ctl("adc", "line_ma", "450")
    r = cx("fleet", "cmd", t.id, "selftest", "--broker", rig.broker.address, "--json", db=db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["result"]["line"] == "ok"
    until(lambda: any(a["kind"] == "line" and a["state"] == "closed" for a in alarms(db)), 15,
          "line alarm closed")


def test_alert_status_reports_done_and_silent_per_town(fleet, tmp_path: Path) -> None:
    rig, db, store, _ = fleet
    codes = ["341122100201", "341122100202", "341122100203", "341122200101", "341122200102"]
    terms = []
    for i, code in enumerate(codes):
        store.upsert_device(f"T{code}-01", code)
        terms.append(rig.terminal(f"t{i}", tid=f"T{code}-01", region=code, hold_ms=200))
    terms[4].stop()  # one terminal is down when the alert goes out
    key = tmp_path / "county.json"
    from tools.keys import save_keyfile

    save_keyfile(key, rig.issuer)
    r = cx("alert", "send", "--key", str(key), "--regions", "341122000000", "--kind", "test",
           "--broker", rig.broker.address, "--json", db=db)
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent["targets"] == 5
    aid = sent["id"]
    until(lambda: sum(1 for x in rig.rx.items if x.get("alert") == aid and x["status"] == "done")
          == 4, 30, "4 done")
    time.sleep(1)
    r = cx("alert", "status", aid, "--json", db=db)
    s = json.loads(r.stdout)
    assert r.returncode == 1, "not every target is done"
    assert s["counts"] == {"done": 4, "silent": 1}
    assert s["towns"] == {"341122100": {"done": 3}, "341122200": {"done": 1, "silent": 1}}
    lat = s["latency_ms"]
    assert lat["n"] == 4 and 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    human = cx("alert", "status", aid, db=db).stdout
    assert "T341122200102-01" in human and "silent" in human
