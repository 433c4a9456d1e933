"""Sending an alert: refuse a signer every terminal would reject, publish the envelope QoS 1 to
each of its topics and wait for every PUBACK (alerts.md §1, §6; `cx alert send`: cx/alert.py).

Errors: `SignerError` (`OutOfScope` for a region outside the key's scope), `PublishRefused` for a
broker that took the login but refused a topic, and tools/mqttsession.py's `SessionError` tree
(`BrokerUnavailable`, `ConnectRefused`, `NotAuthorized`) for a broker that is not reached or
refuses the login.
"""

from __future__ import annotations

from typing import Any

from tools.envelope import KeyPair, region_prefix, scope_covers, signer_problem
from tools.mqttsession import BrokerAuth, Session, not_authorized

DEFAULT_TIMEOUT = 10.0  # s: connect + every PUBACK
LOGIN_HINT = "check --cred (the dispatcher.cred of 'cx fleet broker-config')"


class SignerError(ValueError):
    """A key every terminal would refuse to believe: no private key, not for alerts, a bad,
    foreign or expired certificate."""


class OutOfScope(SignerError):
    """A region the key may not alert (outside its scope)."""


class PublishRefused(Exception):
    """The broker took the login but refused the alert on some topics."""

    def __init__(self, message: str, refused: list[tuple[str, Any]]) -> None:
        super().__init__(message)
        self.refused = refused
        self.not_authorized = any(not_authorized(rc) for _, rc in refused)
        """True when a refusal is "not authorized" (a credential problem, not a broker one)."""


def check_signer(key: KeyPair, regions: list[str], now: int) -> None:
    """Refuse what every terminal would reject: out of scope, bad or expired certificate."""
    why = signer_problem(key, "alert", "alerts", now)
    if why is not None:
        raise SignerError(why)
    for r in regions:
        if not scope_covers(key.scope, region_prefix(r)):
            raise OutOfScope(f"region {r} lies outside key {key.kid}'s scope "
                             f"{','.join(key.scope)}")


def publish(envelope: str, topics: list[str], host: str, port: int,
            timeout: float = DEFAULT_TIMEOUT, auth: BrokerAuth | None = None, *,
            retain: bool = False, what: str = "alert") -> None:
    """Publish QoS 1 to every topic and wait for each PUBACK (tools/mqttsession.py); `retain`
    for a schedule (broadcast.md §4), `what` it is in messages. Raises the session's errors when
    the broker is not reached or refuses the login, PublishRefused when it refuses a topic."""
    with Session(host, port, auth, name=f"cx-{what}", timeout=timeout,
                 login_hint=LOGIN_HINT) as s:
        refused = s.publish(topics, envelope, retain=retain)
    if refused:
        sent = len(topics) - len(refused)
        raise PublishRefused(f"broker {s.where} refused the {what} on "
                             f"{', '.join(t for t, _ in refused)}: {refused[0][1]} ({s.user}; "
                             f"only the dispatcher credential may publish {what}s)"
                             + (f"; {sent} other topic(s) were sent" if sent else ""), refused)
