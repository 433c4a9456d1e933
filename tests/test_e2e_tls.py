"""MQTT over TLS end to end: an emulated terminal given the broker's CA (as `cx fleet provision
--tls-ca` writes it) connects to Mosquitto's TLS listener over IP and over 4G and sounds a signed
alert; given another CA it refuses the broker, says why, and keeps running (docs/link.md "TLS")."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rig import Rig, Term
from tlscerts import Ca, tls_listener

from tools.broker import Broker, free_port

FAST = {"hold_ms": 200, "link_hysteresis_s": 8, "reconnect_max_ms": 2000}


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, ca: Ca):
    d = tmp_path_factory.mktemp("tlsbroker")
    cert, key = ca.server(d)  # names 127.0.0.1, the host the terminals dial
    b = Broker(d, extra_conf=tls_listener(tls_port := free_port(), cert, key))
    b.tls_port = tls_port  # type: ignore[attr-defined]
    yield b
    b.stop()


@pytest.fixture
def rig(tmp_path: Path, tls_broker):
    r = Rig(tmp_path, tls_broker)  # receipts and alerts travel over the plain listener
    yield r
    r.close()


def tls_terminal(rig: Rig, name: str, ca_der: bytes, wait: bool = True) -> Term:
    """A terminal whose config asks for TLS on the broker's TLS port, its CA beside the config."""
    d = rig.tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.der").write_bytes(ca_der)
    cfg = rig.config(**FAST)
    cfg["mqtt"].update(port=rig.broker.tls_port, tls=True, ca="ca.der")
    t = rig.adopt(Term(d, cfg))
    if wait:
        t.wait_online()
    return t


def tls_connections(broker: Broker) -> int:
    log = (Path(broker.conf).parent / "mosquitto.log").read_text(errors="replace")
    return log.count(f"on port {broker.tls_port}")  # type: ignore[attr-defined]


def test_terminal_with_tls_config_connects_over_tls_and_sounds_signed_alert(rig: Rig, ca: Ca) -> None:
    before = tls_connections(rig.broker)
    t = tls_terminal(rig, "t1", ca.der())
    assert tls_connections(rig.broker) > before, "the terminal came in on the TLS listener"
    assert (t.dir / "flash" / "ca.der").read_bytes() == ca.der(), "the emulator flashed the CA"
    p = rig.send_alert(level=2, tone="siren")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)
    assert rig.rx.statuses(p["id"]) == ["accepted", "playing", "done"]
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 10)  # after the hold time
    assert [e["value"] for e in t.events() if e["dev"] == "amp"] == [1, 0]
    assert not [e for e in t.log() if e["ev"] == "tls_fail"]


def test_tls_over_4g_when_ip_is_cut(rig: Rig, ca: Ca) -> None:
    t = tls_terminal(rig, "t1", ca.der())
    n = len(t.events())
    t.ctl("link", "ip", "down")
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "4g", 30, n)
    p = rig.send_alert(level=1, tone="alarm")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)
    assert json.loads(t.ctl("modem", "status"))["bytes_down"] > 0, "it came over the modem"
    assert not [e for e in t.log() if e["ev"] == "tls_fail"]


def test_terminal_given_wrong_ca_refuses_broker_and_keeps_trying(rig: Rig) -> None:
    t = tls_terminal(rig, "t1", Ca.make("not the broker's ca").der(), wait=False)
    deadline = time.monotonic() + 30
    fails: list[dict] = []
    while time.monotonic() < deadline:
        fails = [e for e in t.log() if e["ev"] == "tls_fail"]
        if len(fails) >= 3 and {f["path"] for f in fails} >= {"ip", "4g"}:
            break
        time.sleep(0.2)
    assert len(fails) >= 3, f"retries with the reason logged; log: {t.log()[-10:]}"
    assert {f["reason"] for f in fails} == {"cert_untrusted"}
    assert {f["path"] for f in fails} >= {"ip", "4g"}, "both paths tried, both refused"
    p = rig.send_alert(level=1, tone="alarm")
    time.sleep(2)
    assert rig.rx.for_alert(p["id"]) == [], "no receipt: the terminal never got the alert"
    assert not [e for e in t.events() if e["dev"] == "amp" and e["value"] == 1]
    assert not [e for e in t.events() if e["dev"] == "link" and e["value"] != "none"]
    assert t.proc is not None and t.proc.poll() is None, "still running"
    assert not [e for e in t.log() if e["ev"] == "boot"][1:], "never restarted"
    later = len([e for e in t.log() if e["ev"] == "tls_fail"])
    time.sleep(3)
    assert len([e for e in t.log() if e["ev"] == "tls_fail"]) > later, "still trying"


def test_unreadable_ca_file_is_a_fault_never_plain_mqtt(rig: Rig) -> None:
    t = tls_terminal(rig, "t1", b"-----BEGIN CERTIFICATE-----\ngarbage\n", wait=False)
    t.wait_event(lambda e: e["dev"] == "led" and e["value"] == "fault", 15)
    fault = [e for e in t.log() if e["ev"] == "fault"]
    assert fault and fault[-1]["reason"] == "tls_ca_invalid" and fault[-1]["file"] == "ca.der"
    time.sleep(2)
    assert [e for e in t.events() if e["dev"] in ("amp", "link")] == []
    assert t.proc is not None and t.proc.poll() is None
    assert "Traceback" not in t.console()
