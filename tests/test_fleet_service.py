"""`cx fleet serve` on SQLite with a real Mosquitto and fake terminals speaking
docs/fleet-protocol.md; everything read back through the `cx fleet` CLI as an admin would."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from rig import CX

from fleet import retry
from fleet.service import Service
from fleet.sim import FakeTerminal, ServeProcess, heartbeat
from fleet.store import Store
from tools.broker import Broker, free_port

IDS = ["T341122100201-01", "T341122100202-01", "T341122200101-01"]


def cx(*args: str, db: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--db", str(db)] if db is not None else []
    return subprocess.run([CX, "fleet", *args, *extra], capture_output=True, text=True,
                          timeout=60, check=False)


def cx_json(*args: str, db: Path | str) -> Any:
    r = cx(*args, "--json", db=db)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(pred: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Fleet:
    def __init__(self, broker: Any, tmp: Path) -> None:
        self.broker = broker
        self.db = tmp / "fleet.sqlite"
        store = Store.open(str(self.db))
        for i in IDS:
            store.upsert_device(i, i[1:13], "horn")
        store.close()
        self.serve = ServeProcess(str(self.db), broker.address, "t1", str(tmp / "serve.log"),
                                  "--sweep-every", "0.3")
        self.serve.wait_for("connected to broker")
        self.terminals: list[FakeTerminal] = []

    def terminal(self, device: str, hb_s: int = 60, **kw: Any) -> FakeTerminal:
        t = FakeTerminal(self.broker.host, self.broker.port, device, hb_s=hb_s, **kw)
        self.terminals.append(t)
        return t

    def alarms(self, device: str, kind: str) -> list[dict[str, Any]]:
        return [a for a in cx_json("alarms", db=self.db)
                if a["device"] == device and a["kind"] == kind]

    def active(self, device: str, kind: str) -> dict[str, Any] | None:
        found = [a for a in self.alarms(device, kind) if a["state"] != "closed"]
        return found[0] if found else None

    def device(self, device: str) -> dict[str, Any]:
        return cx_json("show", device, db=self.db)["device"]

    def close(self) -> str:
        for t in self.terminals:
            t.close()
        return self.serve.stop()


@pytest.fixture
def fleet(broker: Any, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(broker, tmp_path)
    yield f
    out = f.close()
    assert "Traceback" not in out, out


def raw_publish(broker: Any, items: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub")
    c.connect(broker.host, broker.port)
    c.loop_start()
    for topic, payload in items:
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_heartbeats_from_terminals_appear_in_cx_fleet_devices(fleet: Fleet) -> None:
    for i in IDS:
        fleet.terminal(i).heartbeat(v="0.2.0", link="4g" if i == IDS[2] else "ip")

    def online() -> list[dict[str, Any]]:
        ds = cx_json("devices", "--state", "online", db=fleet.db)
        return ds if len(ds) == 3 else []

    ds = wait_until(online, what="three terminals online")
    assert {d["id"] for d in ds} == set(IDS)
    assert all(d["version"] == "0.2.0" and d["last_hb"]["hb_s"] == 60 for d in ds)
    town = cx_json("devices", "--region", "341122100", db=fleet.db)
    assert [d["id"] for d in town] == IDS[:2]
    table = cx("devices", db=fleet.db)
    assert table.returncode == 0 and IDS[0] in table.stdout and "online" in table.stdout
    show = cx("show", IDS[2], db=fleet.db)
    assert "4g" in show.stdout and '"v":"0.2.0"' in show.stdout
    rep = cx_json("report", db=fleet.db)["towns"]
    assert [(t["town"], t["terminals"], t["online"], t["on_4g"]) for t in rep] == [
        ("341122100", 2, 2, 0), ("341122200", 1, 1, 1)]
    assert rep[0]["versions"] == {"0.2.0": 2}


def test_silent_terminal_raises_offline_alarm_within_3_intervals_and_closes_when_back(
        fleet: Fleet) -> None:
    t = fleet.terminal(IDS[0], hb_s=1)
    t.start_heartbeats()
    wait_until(lambda: fleet.device(IDS[0])["state"] == "online", what="online")
    t.stop_heartbeats()
    silent_since = time.monotonic()
    alarm = wait_until(lambda: fleet.active(IDS[0], "offline"), timeout=12, what="offline alarm")
    took = time.monotonic() - silent_since
    # three 1 s intervals after the last heartbeat (sent up to 1 s before the silence began),
    # then the sweep: not before 2 s, and a few seconds later at most (the sweep and the writer
    # share this machine's two cores with the rest of the suite)
    assert 3 * 1 - 1 <= took <= 3 * 1 + 3, f"offline alarm after {took:.1f} s"
    assert alarm["state"] == "open" and "no heartbeat" in alarm["detail"]
    assert fleet.device(IDS[0])["state"] == "offline"
    assert [d["id"] for d in cx_json("devices", "--state", "offline", db=fleet.db)] == [IDS[0]]

    t.start_heartbeats()
    wait_until(lambda: fleet.active(IDS[0], "offline") is None, what="offline alarm closed")
    closed = fleet.alarms(IDS[0], "offline")
    assert len(closed) == 1 and closed[0]["state"] == "closed" and closed[0]["closed_at"]
    assert fleet.device(IDS[0])["state"] == "online"


def test_last_will_offline_raises_the_alarm_at_once(fleet: Fleet) -> None:
    t = fleet.terminal(IDS[1], hb_s=60)
    t.heartbeat()
    wait_until(lambda: fleet.device(IDS[1])["state"] == "online", what="online")
    t.die()
    died = time.monotonic()
    alarm = wait_until(lambda: fleet.active(IDS[1], "offline"), timeout=30, what="offline alarm")
    # "at once": from the broker's last will, not the sweep after three missed heartbeats (180 s)
    assert time.monotonic() - died < 30
    assert alarm["detail"] == "last will"


def test_line_fault_raises_a_line_alarm_and_its_clearance_closes_it(fleet: Fleet) -> None:
    t = fleet.terminal(IDS[0])
    t.heartbeat(line="open", line_ma=2)
    alarm = wait_until(lambda: fleet.active(IDS[0], "line"), what="line alarm")
    assert alarm["detail"] == "line open"
    assert [d["id"] for d in cx_json("devices", "--state", "fault", db=fleet.db)] == [IDS[0]]
    t.heartbeat(line="ok", line_ma=300)
    wait_until(lambda: fleet.active(IDS[0], "line") is None, what="line alarm closed")

    # The same through fault events, sent at once, not only in the next heartbeat.
    t.fault("line_short", True)
    assert wait_until(lambda: fleet.active(IDS[0], "line"))["detail"] == "line short"
    t.fault("mains_lost", True)
    assert wait_until(lambda: fleet.active(IDS[0], "power"))["detail"] == "mains lost"
    t.fault("battery_low", True)
    wait_until(lambda: (fleet.active(IDS[0], "power") or {}).get("detail") == "battery low",
               what="power detail battery low")
    t.fault("line_short", False)
    t.fault("mains_lost", False)
    wait_until(lambda: fleet.active(IDS[0], "line") is None and
               fleet.active(IDS[0], "power") is None, what="line and power closed")
    assert len(fleet.alarms(IDS[0], "line")) == 2


def test_rejected_receipt_raises_an_alarm_that_ack_closes(fleet: Fleet) -> None:
    t = fleet.terminal(IDS[0])
    t.event({"alert": "A-1", "kid": "cty-1", "status": "accepted", "reason": None, "t": 1})
    t.event({"alert": "A-2", "kid": "evil", "status": "rejected", "reason": "bad_signature",
             "t": 2})
    alarm = wait_until(lambda: fleet.active(IDS[0], "rejected"), what="rejected alarm")
    assert "bad_signature" in alarm["detail"]
    r = cx("ack", str(alarm["id"]), db=fleet.db)
    assert r.returncode == 0 and "closed" in r.stdout
    assert fleet.active(IDS[0], "rejected") is None
    store = Store.open(str(fleet.db))
    assert [(x.alert, x.status) for x in store.receipts(device=IDS[0])] == [
        ("A-1", "accepted"), ("A-2", "rejected")]
    store.close()


def test_bad_messages_are_counted_shown_in_report_and_the_service_keeps_running(
        fleet: Fleet) -> None:
    good, other = IDS[0], IDS[1]
    raw_publish(fleet.broker, [
        (f"eb/dev/{good}/hb", b"\xff not json"),
        (f"eb/dev/{good}/hb", json.dumps({"id": good, "t": "yesterday"}).encode()),
        (f"eb/dev/{good}/hb", json.dumps({"id": other, "t": 5, "hb_s": 60}).encode()),
        ("eb/dev/T999999999999-99/hb", json.dumps({"id": "T999999999999-99", "t": 5}).encode()),
        (f"eb/dev/{good}/event", b"{"),
        (f"eb/dev/{good}/event", json.dumps({"status": "exploded", "t": 1}).encode()),
        # well-formed, but no terminal sends it (alerts.md §6): an acceptance with a reason
        (f"eb/dev/{good}/event", json.dumps({"alert": "A-9", "kid": "cty-1", "status": "accepted",
                                             "reason": "bad_signature", "t": 1}).encode()),
        (f"eb/dev/{good}/hb", b"[" * 10000),
    ])
    fleet.terminal(other).heartbeat()
    wait_until(lambda: fleet.device(other)["state"] == "online", what="good heartbeat stored")

    def counts() -> dict[tuple[str, str, str], int]:
        bad = cx_json("report", db=fleet.db)["bad"]
        return {(b["kind"], b["device"], b["topic"]): b["count"] for b in bad}

    want = {("not_json", good, "hb"): 1, ("wrong_types", good, "hb"): 1,
            ("spoofed_id", good, "hb"): 1, ("unknown_device", "T999999999999-99", "hb"): 1,
            ("not_json", good, "event"): 1, ("wrong_types", good, "event"): 2,
            ("too_large", good, "hb"): 1}
    wait_until(lambda: counts() == want, what=f"bad counters {want}")
    assert fleet.device(good)["last_hb"] is None  # nothing of the spoof stored as the device
    assert cx_json("show", good, db=fleet.db)["device"]["alarms"] == []
    store = Store.open(str(fleet.db))
    assert store.receipts(device=good) == []
    store.close()
    table = cx("report", db=fleet.db).stdout
    assert "spoofed_id" in table and "unknown_device" in table
    assert fleet.serve.proc.poll() is None


def test_cx_fleet_cmd_round_trip_with_a_terminal_that_acks(fleet: Fleet) -> None:
    fleet.terminal(IDS[0])
    r = cx("cmd", IDS[0], "volume", "volume=80", "--broker", fleet.broker.address, "--json",
           db=fleet.db)
    assert r.returncode == 0, r.stderr
    ack = json.loads(r.stdout)
    assert ack["ok"] is True and ack["result"] == {"volume": 80} and ack["cid"].startswith("c-")

    r = cx("cmd", IDS[0], "status", "--broker", fleet.broker.address, db=fleet.db)
    assert r.returncode == 0 and f'"id": "{IDS[0]}"' in r.stdout

    r = cx("cmd", IDS[0], "volume", "volume=500", "--broker", fleet.broker.address, db=fleet.db)
    assert r.returncode == 1
    assert r.stderr.strip() == f"cx: error: {IDS[0]} refused volume: bad_args"

    fleet.terminal(IDS[1], answer_commands=False)
    r = cx("cmd", IDS[1], "selftest", "--broker", fleet.broker.address, "--wait", "1",
           db=fleet.db)
    assert r.returncode == 1 and "no acknowledgement" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_line_with_meaningful_exit_codes(fleet: Fleet, tmp_path: Path) -> None:
    r = cx("show", "T000000000000-00", db=fleet.db)
    assert (r.returncode, r.stderr.strip()) == (1, "cx: error: unknown device 'T000000000000-00'")
    r = cx("devices", db=tmp_path / "missing.sqlite")
    assert r.returncode == 3 and r.stderr.startswith("cx: error: no fleet database")
    r = cx("alarms", db="postgresql://fleet@127.0.0.1:1/fleet")
    assert r.returncode == 3 and "unreachable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cx("ack", "999", db=fleet.db)
    assert (r.returncode, r.stderr.strip()) == (1, "cx: error: unknown alarm 999")
    r = cx("cmd", "T000000000000-00", "status", "--broker", fleet.broker.address, db=fleet.db)
    assert r.returncode == 1 and "unknown device" in r.stderr


def test_a_writer_process_that_dies_is_restarted_and_nothing_is_lost(fleet: Fleet) -> None:
    """The service stores through a child process; if it is killed mid-stream (out of memory,
    a bug), the receiver starts another and hands it every batch not confirmed stored."""
    fleet.serve.wait_for("storing into")
    pid = fleet.serve.proc.pid

    def writers() -> list[str]:  # (the other child is multiprocessing's resource tracker)
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]

    kids = writers()
    assert len(kids) == 1, kids

    def hbs(t0: int) -> list[tuple[str, bytes]]:
        return [(f"eb/dev/{d}/hb", json.dumps(heartbeat(d, t0 + k, hb_s=60)).encode())
                for k in range(30) for d in IDS]

    raw_publish(fleet.broker, hbs(1000))
    subprocess.run(["kill", "-KILL", kids[0]], check=True)
    raw_publish(fleet.broker, hbs(2000))
    out = fleet.serve.wait_for("restarting it with the", timeout=15)
    fleet.serve.wait_for("storing into", count=2)

    def stored() -> int:
        s = Store.open(str(fleet.db), create=False)
        try:
            return s.history_count()
        finally:
            s.close()

    wait_until(lambda: stored() == 180, timeout=20, what="all 180 heartbeats stored")
    assert "Traceback" not in out
    new = writers()
    assert len(new) == 1 and new != kids


# ---- the broker: unreachable, reached, lost (each said in one line with its address)


def lines_with(out: str, needle: str) -> list[str]:
    return [x for x in out.splitlines() if needle in x]


def test_an_unreachable_broker_is_logged_at_once_and_connecting_later_is_logged_too(
        tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    store = Store.open(str(db))
    store.upsert_device(IDS[0], IDS[0][1:13], "horn")
    store.close()
    port = free_port()  # nobody listens there (yet)
    where = f"127.0.0.1:{port}"
    serve = ServeProcess(str(db), where, "t1", str(tmp_path / "serve.log"))
    broker = None
    try:
        out = serve.wait_for(f"cannot reach broker {where}: connection refused", timeout=10)
        first = lines_with(out, "cannot reach broker")[0]
        assert re.search(r"connection refused; retrying in \d+\.\d s$", first), first
        # retried, each failure one line saying which attempt and the next wait
        out = serve.wait_for("cannot reach broker", count=2)
        assert re.search(rf"{where}: connection refused; attempt 2 in [\d.]+ s, retrying in "
                         r"[\d.]+ s$", lines_with(out, "cannot reach broker")[1])

        broker = Broker(tmp_path / "broker", port=port)
        out = serve.wait_for(f"connected to broker {where}", timeout=20)
        line = lines_with(out, "connected to broker")[0]
        assert re.search(r"\(session new\) after \d+ failed attempts in [\d.]+ s$", line), line
        # and it really receives: a heartbeat sent now is stored
        t = FakeTerminal(broker.host, broker.port, IDS[0])
        t.heartbeat(v="0.2.0")
        wait_until(lambda: cx_json("show", IDS[0], db=db)["device"]["state"] == "online",
                   what="heartbeat stored after the late connection")
        t.close()
    finally:
        out = serve.stop()
        if broker is not None:
            broker.stop()
    assert "Traceback" not in out, out


def test_a_lost_broker_is_logged_with_its_address_and_the_service_comes_back(
        fleet: Fleet, tmp_path: Path) -> None:
    b = fleet.broker
    b.stop()
    out = fleet.serve.wait_for(f"lost the connection to broker {b.address}")
    assert re.search(r"after [\d.]+ (s|min|h) \(closed by the broker or the network\); "
                     r"reconnecting in [\d.]+ s$", lines_with(out, "lost the connection")[0])
    fleet.serve.wait_for(f"cannot reach broker {b.address}: connection refused")
    again = Broker(tmp_path / "broker-again", port=b.port)
    try:
        fleet.serve.wait_for(f"connected to broker {b.address}", count=2, timeout=20)
        t = FakeTerminal(again.host, again.port, IDS[1])
        t.heartbeat()
        wait_until(lambda: fleet.device(IDS[1])["state"] == "online",
                   what="heartbeat stored after the reconnection")
        t.close()
    finally:
        fleet.terminals.clear()
        out = fleet.serve.stop()
        again.stop()
    assert "Traceback" not in out, out


def test_a_long_outage_is_logged_at_each_attempt_only_until_the_backoff_stops_growing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Once the retries wait the longest step, the same failure is logged every REPEAT_EVERY
    (here shortened) instead of at each attempt; the attempt count still says how many."""
    monkeypatch.setattr(retry, "BACKOFF", (0.02, 0.05))
    monkeypatch.setattr(retry, "REPEAT_EVERY", 0.6)
    lines: list[str] = []
    port = free_port()
    svc = Service(str(tmp_path / "fleet.sqlite"), "127.0.0.1", port, instance="quiet",
                  log=lines.append)
    stop = threading.Event()
    runner = threading.Thread(target=svc.run, args=(stop,))
    runner.start()
    try:
        def attempts() -> int:
            said = [x for x in lines if "cannot reach broker" in x]
            m = re.search(r"attempt (\d+) in", said[-1]) if said else None
            return int(m.group(1)) if m else 0

        wait_until(lambda: attempts() >= 30, timeout=30, what="30 attempts")
    finally:
        stop.set()
        runner.join(30)
    said = [x for x in lines if "cannot reach broker" in x]
    assert "; retrying in" in said[0] and "logged every" not in said[0]
    assert "logged every 0.01 min while unchanged" in said[1]  # the second wait is the longest
    assert len(said) < attempts() / 3, said
