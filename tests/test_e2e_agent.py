"""The fleet agent inside the firmware, through the emulator and the real broker
(docs/fleet-protocol.md): heartbeats, retained state and will, faults, commands."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from rig import Rig


class Listener:
    """Everything terminals publish outside alerts: hb, state, event, ack."""

    def __init__(self, host: str, port: int) -> None:
        self.msgs: list[tuple[str, Any, bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"agent-rx-{id(self)}")
        self.c.on_message = self._on
        self.c.connect(host, port)
        for t in ("hb", "state", "event", "ack"):
            self.c.subscribe(f"eb/dev/+/{t}", 1)
        self.c.loop_start()
        time.sleep(0.2)

    def _on(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        try:
            body: Any = json.loads(m.payload)
        except ValueError:
            body = m.payload.decode(errors="replace")
        with self.cond:
            self.msgs.append((m.topic, body, bool(m.retain)))
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 20, start: int = 0) -> tuple[str, Any, bool]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.msgs[start:]:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matching in {timeout}s; last {self.msgs[-6:]}")
                self.cond.wait(left)

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def rig(tmp_path: Path, broker):
    r = Rig(tmp_path, broker)
    r.lis = Listener(broker.host, broker.port)  # type: ignore[attr-defined]
    yield r
    r.lis.stop()  # type: ignore[attr-defined]
    r.close()


def cmd(rig: Rig, t, op: str, timeout: float = 20, **args: Any) -> dict:
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    cid = f"c{time.monotonic_ns()}"
    n = len(lis.msgs)
    rig.pub.publish(f"eb/dev/{t.id}/cmd", json.dumps({"cid": cid, "op": op, "args": args}), 1)
    _, ack, _ = lis.wait(lambda m: m[0].endswith("/ack") and isinstance(m[1], dict)
                         and m[1].get("cid") == cid, timeout, n)
    return ack


def test_heartbeat_carries_the_protocol_fields(rig: Rig) -> None:
    t = rig.terminal("t1", hb_s=2)
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    _, hb, _ = lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/hb")
    assert hb["id"] == t.id and hb["v"] == "0.1.0" and hb["reset"] == "power"
    assert hb["link"] == "ip" and hb["clock"] == "synced" and hb["hb_s"] == 2
    assert hb["supply"] == "mains" and hb["line"] == "unknown" and hb["amp"] == 0
    assert isinstance(hb["heap"], int) and hb["g4"] == [0, 0]
    n = len(lis.msgs)
    lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/hb", 5, n)  # the next one within ~2 s


def test_a_path_change_is_in_a_heartbeat_at_once_both_ways(rig: Rig) -> None:
    t = rig.terminal("t1", hb_s=600, hb_4g_s=900, link_hysteresis_s=8, reconnect_max_ms=2000)
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/hb" and m[1]["link"] == "ip")
    n = len(lis.msgs)
    t.ctl("link", "ip", "down")
    _, hb, _ = lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/hb", 30, n)
    assert hb["link"] == "4g", "the first heartbeat after the cut says 4g (not after 600 s)"
    n = len(lis.msgs)
    t.ctl("link", "ip", "up")  # back to IP after the hysteresis: said at once again
    _, hb, _ = lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/hb", 60, n)
    assert hb["link"] == "ip"


def test_state_is_retained_online_and_the_will_says_offline(rig: Rig) -> None:
    t = rig.terminal("t1")
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/state" and m[1] == "online")
    n = len(lis.msgs)
    t.ctl("power-cut")  # the broker notices the dead connection and publishes the will
    lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/state" and m[1] == "offline", 200, n)
    lis.wait(lambda m: m[0] == f"eb/dev/{t.id}/state" and m[1] == "online", 30, n)


def test_line_fault_raised_while_playing_and_cleared(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200)
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    t.ctl("adc", "line_ma", "3")  # a cut speaker cable: almost no current while playing
    p = rig.send_alert(kind="test", level=4, tone="chime")
    _, ev, _ = lis.wait(lambda m: m[0].endswith("/event") and m[1].get("fault") == "line_open")
    assert ev["active"] is True and ev["value"] == 3
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 20)
    t.ctl("adc", "line_ma", "450")
    ack = cmd(rig, t, "selftest")
    assert ack["ok"] and ack["result"]["line"] == "ok"
    _, ev, _ = lis.wait(lambda m: m[0].endswith("/event") and m[1].get("fault") == "line_open"
                        and m[1]["active"] is False)


def test_mains_lost_is_reported_at_once(rig: Rig) -> None:
    t = rig.terminal("t1")
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    t.ctl("adc", "supply_mv", "12400")
    _, ev, _ = lis.wait(lambda m: m[0].endswith("/event") and m[1].get("fault") == "mains_lost",
                        10)
    assert ev["active"] is True
    lis.wait(lambda m: m[0].endswith("/hb") and m[1]["supply"] == "battery", 10)
    t.ctl("adc", "supply_mv", "11000")
    lis.wait(lambda m: m[0].endswith("/event") and m[1].get("fault") == "battery_low", 10)


def test_commands_are_acknowledged_and_bad_ones_rejected(rig: Rig) -> None:
    t = rig.terminal("t1")
    assert cmd(rig, t, "status")["result"]["id"] == t.id
    assert cmd(rig, t, "volume", volume=60)["result"] == {"volume": 60}
    ack = cmd(rig, t, "set", key="hb_s", value=30)
    assert ack["ok"] and ack["result"] == {"hb_s": 30}
    assert json.loads((t.dir / "flash" / "config.json").read_text())["hb_s"] == 30
    assert cmd(rig, t, "set", key="wdt_ms", value=1)["error"] == "bad_args"
    assert cmd(rig, t, "volume", volume=101)["error"] == "bad_args"
    assert cmd(rig, t, "dance")["error"] == "unknown_op"
    assert cmd(rig, t, "profile", profile="column")["ok"]
    lis: Listener = rig.lis  # type: ignore[attr-defined]
    n = len(lis.msgs)
    rig.pub.publish(f"eb/dev/{t.id}/cmd", b"{not json", 1)
    _, ack, _ = lis.wait(lambda m: m[0].endswith("/ack") and m[1].get("error") == "bad_json", 10, n)
    assert ack["cid"] is None and ack["ok"] is False
    rig.pub.publish(f"eb/dev/{t.id}/cmd", json.dumps({"op": "status"}), 1)
    lis.wait(lambda m: m[0].endswith("/ack") and m[1].get("error") == "no_cid", 10, n)
    assert cmd(rig, t, "status")["ok"], "still responsive"
    assert "Traceback" not in t.console()


def test_reboot_command_reboots_with_reset_cause(rig: Rig) -> None:
    t = rig.terminal("t1")
    n = len(t.events())
    assert cmd(rig, t, "reboot")["ok"]
    e = t.wait_event(lambda e: e["dev"] == "boot", 20, n)
    assert e["value"]["cause"] == "reset"
    t.wait_online(since=n)
