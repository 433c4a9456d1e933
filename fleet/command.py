"""Commands to one terminal: publish on `eb/dev/<id>/cmd` with a fresh cid, wait for the
matching acknowledgement on `eb/dev/<id>/ack` (docs/fleet-protocol.md, "Commands")."""

from __future__ import annotations

import json
import secrets
from typing import Any

from fleet.errors import (
    BrokerUnavailable,
    CommandError,
    CommandRefused,
    CommandTimeout,
    NotAuthorized,
)
from tools import mqttsession as session
from tools.mqttsession import NOT_AUTHORIZED, BrokerAuth, Session, not_authorized

__all__ = ["CHECK_CRED", "NOT_AUTHORIZED", "OPS", "BrokerAuth", "new_cid", "send_command"]

OPS = ("status", "volume", "profile", "selftest", "reboot", "set")
"""Operations the agent knows; anything else gets `unknown_op` back from the terminal."""


def new_cid() -> str:
    return "c-" + secrets.token_hex(6)


CHECK_CRED = "check --cred (the fleet.cred of 'cx fleet broker-config'; default $CX_FLEET_CRED)"


def send_command(host: str, port: int, device: str, op: str, args: dict[str, Any] | None = None,
                 *, wait: float = 10.0, cid: str | None = None,
                 auth: BrokerAuth | None = None) -> dict[str, Any]:
    """Send one command and return the terminal's acknowledgement (a dict with `ok: true`).
    Raises BrokerUnavailable, NotAuthorized (login, subscription or publish refused),
    CommandTimeout, CommandError (publish refused otherwise) or CommandRefused (`ok: false`).
    One tools/mqttsession.py session: MQTT 5, so that a command the ACL denies is refused in its
    PUBACK rather than dropped (it looked like a terminal that does not answer)."""
    cid = cid or new_cid()
    ack_topic, cmd_topic = f"eb/dev/{device}/ack", f"eb/dev/{device}/cmd"

    def match(data: bytes) -> dict[str, Any] | None:
        try:
            ack = json.loads(data)
        except ValueError:
            return None
        return ack if isinstance(ack, dict) and ack.get("cid") == cid else None

    payload = json.dumps({"cid": cid, "op": op, "args": args or {}}, separators=(",", ":"))
    try:
        with Session(host, port, auth, name="cx-cmd", timeout=max(wait, 1.0),
                     login_hint=CHECK_CRED) as s:
            s.subscribe(ack_topic, match)
            refused = s.publish([cmd_topic], payload)
            ack = None if refused else s.wait_reply()
    except session.NotAuthorized as e:
        raise NotAuthorized(str(e)) from None
    except session.BrokerUnavailable as e:
        raise BrokerUnavailable(str(e)) from None
    if refused:
        rc = refused[0][1]
        text = f"broker {s.where} refused the command on {cmd_topic} ({s.user}): {rc}"
        if not_authorized(rc):
            raise NotAuthorized(f"{text}; {device} never got it, only the fleet user may send "
                                f"commands: {CHECK_CRED}")
        raise CommandError(text)
    if ack is None:
        raise CommandTimeout(f"no acknowledgement from {device} within {wait:g} s "
                             f"(cid {cid}); is it online?")
    if ack.get("ok") is not True:
        raise CommandRefused(ack)
    return ack
