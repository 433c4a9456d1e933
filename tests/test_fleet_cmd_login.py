"""`cx fleet cmd` and `cx fleet serve` log in to a broker with the ACLs of
`cx fleet broker-config`: the fleet credential's command reaches a terminal and is acknowledged;
a wrong password, no credential, or another user's command is refused at once in one line with
exit 4 (real Mosquitto, cx as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aclbroker import AclBroker
from caphelp import CX, refused

from fleet.command import BrokerAuth
from fleet.provision import Device
from fleet.sim import FakeTerminal, ServeProcess

A = Device("T341122100201-01", "341122100201")  # the terminal commanded
B = Device("T341122100202-01", "341122100202")  # its credential is stolen
NOT_AUTHORIZED = 4
WAIT = 60  # --wait of the refused commands: a refusal must not sit it out


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("cmdlogin")
    acl = AclBroker(tmp, [A, B])
    password = acl.password

    (tmp / "device.cred").write_text(json.dumps({"user": B.id, "password": password(B)}))
    (tmp / "wrong.cred").write_text(json.dumps({"user": "fleet", "password": "wrong"}))
    terminal = FakeTerminal("127.0.0.1", acl.port, A.id, auth=BrokerAuth(A.id, password(A)))
    ns = type("Net", (), {})()
    ns.tmp, ns.terminal = tmp, terminal
    ns.services, ns.terminals = acl.services, acl.terminals
    yield ns
    terminal.close()
    acl.stop()


def cmd(net: Any, *words: str, cred: str | None = "conf/fleet.cred",
        broker: str | None = None) -> subprocess.CompletedProcess[str]:
    """`cx fleet cmd WORDS… --broker … --cred …` in the test's folder (its fleet.sqlite knows A
    and B), no login from the environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CX_FLEET_DB", "CX_FLEET_CRED", "CX_BROKER")}
    login = [] if cred is None else ["--cred", cred]
    return subprocess.run([CX, "fleet", "cmd", *words, "--broker", broker or net.services,
                           *login], capture_output=True, text=True, timeout=WAIT * 2,
                          check=False, cwd=net.tmp, env=env)


def test_fleet_credential_command_is_acknowledged_by_the_terminal(net: Any) -> None:
    r = cmd(net, A.id, "volume", "volume=70", "--json")
    assert r.returncode == 0, r.stderr
    ack = json.loads(r.stdout)
    assert ack["ok"] is True and ack["result"] == {"volume": 70}
    assert {"cid": ack["cid"], "op": "volume", "args": {"volume": 70}} in net.terminal.commands


@pytest.mark.parametrize("cred, user", [("wrong.cred", "user fleet"), (None, "no user")])
def test_refused_login_is_one_line_with_exit_4(net: Any, cred: str | None, user: str) -> None:
    r = cmd(net, A.id, "status", "--wait", str(WAIT), cred=cred)
    refused(r, NOT_AUTHORIZED, f"refused the login ({user}): Not authorized; check --cred")


@pytest.mark.parametrize("listener", ["services", "terminals"])
def test_device_credential_command_for_another_device_is_refused_at_once(
        net: Any, listener: str) -> None:
    before = len(net.terminal.commands)
    started = time.monotonic()
    r = cmd(net, A.id, "reboot", "--wait", str(WAIT), cred="device.cred",
            broker=getattr(net, listener))
    refused(r, NOT_AUTHORIZED, f"refused the command on eb/dev/{A.id}/cmd (user {B.id}): "
                               "Not authorized")
    assert "only the fleet user may send commands" in r.stderr
    assert time.monotonic() - started < WAIT / 2, "waited for the acknowledgement"
    # The broker dropped it: the next genuine command is the only one the terminal gets.
    ok = cmd(net, A.id, "status", "--json")
    assert ok.returncode == 0, ok.stderr
    assert [c["op"] for c in net.terminal.commands[before:]] == ["status"]


def test_serve_names_the_user_when_the_broker_refuses_its_login(net: Any) -> None:
    serve = ServeProcess(str(net.tmp / "serve.sqlite"), net.services, "t1",
                         str(net.tmp / "serve.log"), "--cred", str(net.tmp / "wrong.cred"))
    try:
        serve.wait_for("refused the login (user fleet): Not authorized; check --cred")
    finally:
        out = serve.stop()
    assert "Traceback" not in out, out
