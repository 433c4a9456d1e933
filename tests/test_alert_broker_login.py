"""`cx alert send` and `cx alert from-cap` log in to a broker with the ACLs of
`cx fleet broker-config`: the dispatcher credential sends, a terminal's credential and a wrong
password are refused in one line with exit 4, a broken credential file is a usage error (real
Mosquitto, cx as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aclbroker import AclBroker
from caphelp import CX, fresh, refused
from test_broker_acl import QUIET, Conn

from fleet.provision import Device
from tools.envelope import KeyPair, decode_jws, verify_jws
from tools.keys import new_issuer, save_keyfile

A = Device("T341122100201-01", "341122100201")  # listens
B = Device("T341122100202-01", "341122100202")  # its credential is stolen (a device's login
# takes its client id on the terminals' listener, so it must not be A's: it would push A off)
NOT_AUTHORIZED = 4


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("login")
    root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
    now = int(time.time())
    county = new_issuer(root, "cty-341122", ["341122"], ["alert"], now - 300, now + 86400)
    save_keyfile(tmp / "county.json", county)
    save_keyfile(tmp / "root.json", root)
    acl = AclBroker(tmp, [A, B], trust=[{"kid": root.kid, "pub": root.pub_b64, "scope": ["34"],
                                         "use": ["alert"]}])
    password = acl.password

    (tmp / "device.cred").write_text(json.dumps({"user": B.id, "password": password(B)}))
    (tmp / "wrong.cred").write_text(json.dumps({"user": "dispatcher", "password": "wrong"}))
    ns = type("Net", (), {})()
    ns.tmp, ns.county, ns.root, ns.device_password = tmp, county, root, password(A)
    ns.services, ns.terminals = acl.services, acl.terminals
    yield ns
    acl.stop()


def terminal(net: Any) -> Conn:
    """Terminal A on its own listener, subscribed to its county's alert topic."""
    c = Conn(int(net.terminals.rsplit(":", 1)[1]), A.id, net.device_password, A.id)
    assert c.ok, c.rc
    c.sub("eb/alert/341122")
    return c


def cx(net: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """cx in the test's folder, with no fleet store and no login from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("CX_FLEET_DB", "CX_ALERT_CRED")}
    return subprocess.run([CX, *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=net.tmp, env=env)


def send(net: Any, *flags: str, cred: str | None = "dispatcher") -> Any:
    login = [] if cred is None else ["--cred", str(net.tmp / "conf" / "dispatcher.cred")
                                     if cred == "dispatcher" else cred]
    return cx(net, "alert", "send", "--key", str(net.tmp / "county.json"), "--regions",
              "341122000000", "--kind", "test", *login, *flags)


def alert_id(envelope: bytes) -> str:
    return json.loads(decode_jws(envelope.decode())[1])["id"]


def test_dispatcher_credential_sends_an_alert_a_terminal_receives(net: Any) -> None:
    t = terminal(net)
    try:
        r = send(net, "--broker", net.services, "--json")
        assert r.returncode == 0, r.stderr
        sent = json.loads(r.stdout)
        topic, env = t.msgs.get(timeout=10)
        assert topic == "eb/alert/341122" and verify_jws(net.county.pub, env.decode())
        assert alert_id(env) == sent["id"]
    finally:
        t.close()


def test_terminal_credential_is_refused_and_nothing_reaches_terminals(net: Any) -> None:
    t = terminal(net)
    try:
        r = send(net, "--broker", net.terminals, cred=str(net.tmp / "device.cred"))
        refused(r, NOT_AUTHORIZED, "refused the alert on eb/alert/341122: Not authorized")
        assert f"user {B.id}" in r.stderr and "dispatcher" in r.stderr
        # A genuine alert sent afterwards is the first and only one to arrive: the broker
        # dropped the refused one.
        ok = send(net, "--broker", net.services, "--json")
        assert ok.returncode == 0, ok.stderr
        assert alert_id(t.msgs.get(timeout=10)[1]) == json.loads(ok.stdout)["id"]
        time.sleep(QUIET)
        assert t.msgs.empty()
    finally:
        t.close()


@pytest.mark.parametrize("which", ["wrong-password", "device-user-on-service-listener"])
def test_wrong_login_is_refused_in_one_line(net: Any, which: str) -> None:
    cred = net.tmp / ("wrong.cred" if which == "wrong-password" else "device.cred")
    r = send(net, "--broker", net.services, cred=str(cred))
    if which == "wrong-password":
        refused(r, NOT_AUTHORIZED, "refused the login (user dispatcher): Not authorized")
    else:  # a terminal's user exists, so the login works; its publish does not
        refused(r, NOT_AUTHORIZED, "Not authorized")


def test_no_credential_on_an_acl_broker_is_refused(net: Any) -> None:
    refused(send(net, "--broker", net.services, cred=None), NOT_AUTHORIZED,
            "refused the login (no user)")


def test_missing_or_broken_credential_file_is_a_usage_error(net: Any) -> None:
    refused(send(net, "--broker", net.services, cred=str(net.tmp / "nope.cred")), 2,
            "cannot read the credential")
    bad = net.tmp / "bad.cred"
    bad.write_text("user=dispatcher\n")
    refused(send(net, "--broker", net.services, cred=str(bad)), 2, "is not {\"user\"")
    refused(send(net, "--broker", net.services, "--cafile", str(net.tmp / "no-ca.pem")), 2,
            "no CA file")


def test_from_cap_logs_in_the_same_way(net: Any) -> None:
    cap = fresh("flood-alert.xml", net.tmp)
    t = terminal(net)
    try:
        def from_cap(cred: Path, where: str) -> Any:
            return cx(net, "alert", "from-cap", str(cap), "--key", str(net.tmp / "root.json"),
                      "--broker", where, "--cred", str(cred))

        refused(from_cap(net.tmp / "device.cred", net.terminals), NOT_AUTHORIZED,
                "Not authorized")
        r = from_cap(net.tmp / "conf" / "dispatcher.cred", net.services)
        assert r.returncode == 0, r.stderr
        topic, env = t.msgs.get(timeout=10)
        assert topic == "eb/alert/341122" and verify_jws(net.root.pub, env.decode())
        time.sleep(QUIET)
        assert t.msgs.empty()
    finally:
        t.close()
