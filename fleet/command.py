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

from fleet.errors import (
    BrokerUnavailable,
    CommandError,
    CommandRefused,
    CommandTimeout,
    FleetError,
    NotAuthorized,
)

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


NOT_AUTHORIZED = (134, 135)
"""MQTT 5 reason codes "Bad user name or password" and "Not authorized" (as tools/alertcli.py)."""

CHECK_CRED = "check --cred (the fleet.cred of 'cx fleet broker-config'; default $CX_FLEET_CRED)"


def send_command(host: str, port: int, device: str, op: str, args: dict[str, Any] | None = None,
                 *, wait: float = 10.0, cid: str | None = None,
                 auth: BrokerAuth | None = None) -> dict[str, Any]:
    """Send one command and return the terminal's acknowledgement (a dict with `ok: true`).
    Raises BrokerUnavailable, NotAuthorized (login, subscription or publish refused),
    CommandTimeout, CommandError (publish refused otherwise) or CommandRefused (`ok: false`).

    MQTT 5, because only its PUBACK says "Not authorized": under 3.1.1 Mosquitto acknowledges a
    command its ACL denies and drops it, which looked like a terminal that does not answer."""
    cid = cid or new_cid()
    where = f"{host}:{port}"
    user = f"user {auth.username}" if auth is not None and auth.username else "no user"
    ack_topic, cmd_topic = f"eb/dev/{device}/ack", f"eb/dev/{device}/cmd"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cx-cmd-" + secrets.token_hex(4),
                         protocol=mqtt.MQTTv5)
    connected, subscribed, settled = threading.Event(), threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        out["rc"] = rc
        connected.set()
        if not rc.is_failure:
            c.subscribe(ack_topic, 1)

    def on_subscribe(_c: Any, _u: Any, _m: Any, rcs: list[Any], _p: Any) -> None:
        out["suback"] = rcs[0] if rcs else None
        subscribed.set()

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        if rc.is_failure:  # a refused command: no acknowledgement will come
            out["puback"] = rc
            settled.set()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(ack, dict) and ack.get("cid") == cid:
            out["ack"] = ack
            settled.set()

    if auth is not None:
        auth.apply(client)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
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
        rc = out["rc"]
        if rc.is_failure and rc.value in NOT_AUTHORIZED:
            raise NotAuthorized(f"broker {where} refused the login ({user}): {rc}; {CHECK_CRED}")
        if rc.is_failure:
            raise BrokerUnavailable(f"broker {where} refused the connection: {rc}")
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise BrokerUnavailable(f"broker {where} did not confirm the subscription")
        sub = out["suback"]
        if sub is None or sub.is_failure:  # Mosquitto 2.0 grants it; other brokers may not
            text = f"broker {where} refused the subscription to {ack_topic}: {sub} ({user})"
            if sub is not None and sub.value in NOT_AUTHORIZED:
                raise NotAuthorized(f"{text}; nothing was sent; {CHECK_CRED}")
            raise BrokerUnavailable(f"{text}; nothing was sent")
        payload = json.dumps({"cid": cid, "op": op, "args": args or {}}, separators=(",", ":"))
        client.publish(cmd_topic, payload, qos=1)
        if not settled.wait(max(0.1, deadline - time.monotonic())):
            raise CommandTimeout(f"no acknowledgement from {device} within {wait:g} s "
                                 f"(cid {cid}); is it online?")
    finally:
        client.disconnect()
        client.loop_stop()
    if "puback" in out:
        rc = out["puback"]
        text = f"broker {where} refused the command on {cmd_topic} ({user}): {rc}"
        if rc.value in NOT_AUTHORIZED:
            raise NotAuthorized(f"{text}; {device} never got it, only the fleet user may send "
                                f"commands: {CHECK_CRED}")
        raise CommandError(text)
    ack: dict[str, Any] = out["ack"]
    if ack.get("ok") is not True:
        raise CommandRefused(ack)
    return ack
