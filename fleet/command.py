"""Commands to one terminal: publish on `eb/dev/<id>/cmd` with a fresh cid, wait for the
matching acknowledgement on `eb/dev/<id>/ack` (docs/fleet-protocol.md, "Commands")."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.errors import BrokerUnavailable, CommandRefused, CommandTimeout, FleetError

OPS = ("status", "volume", "profile", "selftest", "reboot", "set")
"""Operations the agent knows; anything else gets `unknown_op` back from the terminal."""


@dataclass(frozen=True)
class BrokerAuth:
    """How the fleet logs in to a broker with ACLs: a user and password (the `fleet.cred` file
    `cx fleet broker-config` writes), and a CA file for a TLS listener."""

    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    @classmethod
    def from_files(cls, cred: str | None, cafile: str | None = None) -> BrokerAuth | None:
        if cred is None and cafile is None:
            return None
        user = password = None
        if cred is not None:
            try:
                doc = json.loads(Path(cred).read_text(encoding="utf-8"))
                user, password = doc["user"], doc["password"]
                if not isinstance(user, str) or not isinstance(password, str):
                    raise TypeError
            except OSError as e:
                raise FleetError(f"cannot read the credential {cred}: {e.strerror}") from None
            except (ValueError, KeyError, TypeError):
                raise FleetError(f"credential {cred} is not {{\"user\": …, \"password\": …}}"
                                 ) from None
        if cafile is not None and not Path(cafile).is_file():
            raise FleetError(f"no CA file {cafile}")
        return cls(user, password, cafile)

    def apply(self, client: mqtt.Client) -> None:
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.cafile is not None:
            client.tls_set(ca_certs=self.cafile)


def new_cid() -> str:
    return "c-" + secrets.token_hex(6)


def send_command(host: str, port: int, device: str, op: str, args: dict[str, Any] | None = None,
                 *, wait: float = 10.0, cid: str | None = None,
                 auth: BrokerAuth | None = None) -> dict[str, Any]:
    """Send one command and return the terminal's acknowledgement (a dict with `ok: true`).
    Raises BrokerUnavailable, CommandTimeout, or CommandRefused (`ok: false`)."""
    cid = cid or new_cid()
    where = f"{host}:{port}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cx-cmd-" + secrets.token_hex(4))
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        out["rc"] = rc
        connected.set()
        if not rc.is_failure:
            c.subscribe(f"eb/dev/{device}/ack", 1)

    def on_subscribe(_c: Any, _u: Any, _m: Any, _rcs: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(ack, dict) and ack.get("cid") == cid:
            out["ack"] = ack
            answered.set()

    if auth is not None:
        auth.apply(client)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + max(wait, 1.0)
    try:
        client.connect(host, port, keepalive=max(10, int(wait) + 5))
    except OSError as e:
        raise BrokerUnavailable(f"broker {where} is unreachable: {e.strerror or e}") from None
    client.loop_start()
    try:
        if not connected.wait(max(0.1, deadline - time.monotonic())):
            raise BrokerUnavailable(f"broker {where} is unreachable: no CONNACK")
        if out["rc"].is_failure:
            raise BrokerUnavailable(f"broker {where} refused the connection: {out['rc']}")
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise BrokerUnavailable(f"broker {where} did not confirm the subscription")
        payload = json.dumps({"cid": cid, "op": op, "args": args or {}}, separators=(",", ":"))
        client.publish(f"eb/dev/{device}/cmd", payload, qos=1)
        if not answered.wait(max(0.1, deadline - time.monotonic())):
            raise CommandTimeout(f"no acknowledgement from {device} within {wait:g} s "
                                 f"(cid {cid}); is it online?")
    finally:
        client.disconnect()
        client.loop_stop()
    ack: dict[str, Any] = out["ack"]
    if ack.get("ok") is not True:
        raise CommandRefused(ack)
    return ack
