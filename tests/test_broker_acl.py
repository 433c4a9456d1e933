"""The generated Mosquitto security, against the real broker: what a stolen terminal credential
cannot do, and what the dispatcher and the fleet service can (fleet/brokercfg.py)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aclbroker import AclBroker
from paho.mqtt.enums import CallbackAPIVersion
from rig import Term

from fleet.brokercfg import check_password, conf_text, hash_password
from fleet.provision import Device

A = Device("T341122100201-01", "341122100201")
B = Device("T341122100202-01", "341122100202")  # same town as A, another village
QUIET = 0.5  # how long "nothing arrives" is watched, after a later message proved delivery


class Conn:
    """A paho client that records CONNACK and messages."""

    def __init__(self, port: int, user: str | None, password: str | None,
                 client_id: str = "", clean: bool = True) -> None:
        self.msgs: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.rc: Any = None
        self._connected = threading.Event()
        self._subs = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *_a: self._subs.set()
        self.c.on_message = lambda _c, _u, m: self.msgs.put((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self._connected.wait(5), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.rc = rc
        self._connected.set()

    @property
    def ok(self) -> bool:
        return not self.rc.is_failure

    def sub(self, *topics: str) -> None:
        self._subs.clear()
        self.c.subscribe([(t, 1) for t in topics])
        assert self._subs.wait(5)

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, 1).wait_for_publish(5)

    def until(self, payload: bytes, timeout: float = 5) -> list[tuple[str, bytes]]:
        """Messages up to and including the first with `payload`, then QUIET more seconds."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while not got or got[-1][1] != payload:
            got.append(self.msgs.get(timeout=max(0.01, deadline - time.monotonic())))
        time.sleep(QUIET)
        while not self.msgs.empty():
            got.append(self.msgs.get())
        return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("acl")
    net = AclBroker(tmp, [A, B])
    port, service_port, broker, cfg = net.port, net.service_port, net.broker, net.config

    def service(name: str) -> Conn:
        cred = json.loads((tmp / "conf" / f"{name}.cred").read_text())
        c = Conn(service_port, cred["user"], cred["password"], f"cx-{name}-test")
        assert c.ok, c.rc
        return c

    def device(d: Device, **kw: Any) -> Conn:
        c = Conn(port, d.id, cfg(d)["mqtt"]["password"], kw.pop("client_id", d.id), **kw)
        assert c.ok, c.rc
        return c

    ns = type("Fleet", (), {})()
    ns.tmp, ns.port, ns.broker, ns.cfg = tmp, port, broker, cfg
    ns.service, ns.device = service, device
    yield ns
    broker.stop()


def test_device_cannot_publish_an_alert(fleet: Any) -> None:
    a, b, disp = fleet.device(A), fleet.device(B), fleet.service("dispatcher")
    b.sub("eb/alert/34", "eb/alert/3411")
    a.pub("eb/alert/34", b"forged")
    a.pub("eb/alert/3411", b"forged")
    disp.pub("eb/alert/34", b"real")
    assert b.until(b"real") == [("eb/alert/34", b"real")]
    for c in (a, b, disp):
        c.close()


def test_device_cannot_publish_as_another_device_but_can_as_itself(fleet: Any) -> None:
    a, svc = fleet.device(A), fleet.service("fleet")
    svc.sub("$share/fleet/eb/dev/+/hb", "$share/fleet/eb/dev/+/state")
    a.pub(f"eb/dev/{B.id}/hb", b"spoof")
    a.pub(f"eb/dev/{B.id}/state", b"offline")
    a.pub(f"eb/dev/{A.id}/hb", b"own")
    assert svc.until(b"own") == [(f"eb/dev/{A.id}/hb", b"own")]
    a.close()
    svc.close()


def test_device_cannot_read_another_devices_commands_nor_write_commands(fleet: Any) -> None:
    a, b, svc = fleet.device(A), fleet.device(B), fleet.service("fleet")
    a.sub(f"eb/dev/{B.id}/cmd", "eb/dev/+/cmd", "eb/dev/#")  # all granted; delivery filtered
    b.sub(f"eb/dev/{B.id}/cmd")
    svc.sub("eb/dev/+/cmd")
    a.pub(f"eb/dev/{B.id}/cmd", b"forged for B")
    a.pub(f"eb/dev/{A.id}/cmd", b"forged for A")
    svc.pub(f"eb/dev/{B.id}/cmd", b"for B")
    svc.pub(f"eb/dev/{A.id}/cmd", b"for A")
    assert a.until(b"for A") == [(f"eb/dev/{A.id}/cmd", b"for A")]
    assert b.until(b"for B") == [(f"eb/dev/{B.id}/cmd", b"for B")]
    assert [p for _, p in svc.until(b"for A")] == [b"for B", b"for A"]
    for c in (a, b, svc):
        c.close()


def test_device_reads_exactly_its_five_alert_prefixes(fleet: Any) -> None:
    a, disp = fleet.device(A), fleet.service("dispatcher")
    a.sub("eb/alert/#")
    mine = ["34", "3411", "341122", "341122100", "341122100201"]
    for p in ["35", "3412", "341122100202", *mine]:
        disp.pub(f"eb/alert/{p}", p.encode())
    a.pub("eb/alert/341122100201", b"end")  # the device cannot end it: only the dispatcher can
    disp.pub("eb/alert/341122100201", b"end")
    got = a.until(b"end")
    assert [t for t, _ in got] == [f"eb/alert/{p}" for p in mine] + ["eb/alert/341122100201"]
    a.close()
    disp.close()


@pytest.mark.parametrize("user,password", [
    (A.id, "wrong"), (A.id, None), ("T-unknown", "x"), (None, None), ("fleet", "wrong"),
], ids=["wrong-password", "no-password", "unknown-user", "anonymous", "wrong-service-password"])
def test_bad_credentials_are_refused(fleet: Any, user: str | None, password: str | None) -> None:
    c = Conn(fleet.port, user, password, "probe")
    assert c.rc.is_failure and c.rc.getName() == "Not authorized"
    c.close()


def test_another_devices_client_id_does_not_take_over_its_session(fleet: Any) -> None:
    b = fleet.device(B, clean=False)
    b.sub(f"eb/dev/{B.id}/cmd")
    a = fleet.device(A, client_id=B.id, clean=False)  # the broker makes it A's own id
    svc = fleet.service("fleet")
    svc.pub(f"eb/dev/{B.id}/cmd", b"for B")
    assert b.until(b"for B") == [(f"eb/dev/{B.id}/cmd", b"for B")]
    assert b.c.is_connected() and a.msgs.empty()
    for c in (a, b, svc):
        c.close()


def test_our_hashes_and_mosquitto_passwd_agree(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "u", "s3cret"], check=True)
    theirs = f.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert check_password("s3cret", theirs) and not check_password("s3cres", theirs)
    ours = hash_password("s3cret")
    assert check_password("s3cret", ours) and ours != hash_password("s3cret")  # fresh salt


def test_tls_listener_is_configured_when_certificates_are_given(tmp_path: Path) -> None:
    from fleet.brokercfg import Tls

    text = conf_text(tmp_path, port=1883, tls=Tls("c.pem", "k.pem", "ca.pem"),
                     service=("10.0.0.5", 1884))
    tls = text[text.index("listener 8883"):].split("\n\n")[0].splitlines()
    assert tls[1:] == ["use_username_as_clientid true", f"certfile {Path('c.pem').resolve()}",
                       f"keyfile {Path('k.pem').resolve()}", f"cafile {Path('ca.pem').resolve()}",
                       "tls_version tlsv1.2"]
    assert "allow_anonymous false" in text and "allow_anonymous true" not in text
    assert "listener 1884 10.0.0.5" in text


def test_emulated_terminal_runs_on_its_provisioned_config(fleet: Any) -> None:
    svc = fleet.service("fleet")
    svc.sub("$share/fleet/eb/dev/+/state")
    term = Term(fleet.tmp / "emu", fleet.cfg(A))
    try:
        topic, payload = svc.msgs.get(timeout=30)
        assert (topic, payload) == (f"eb/dev/{A.id}/state", b"online")
    finally:
        term.stop()
        svc.close()
