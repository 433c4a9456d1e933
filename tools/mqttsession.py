"""One short MQTT 5 session of a host tool: connect (with a login and TLS when given), publish
QoS 1 and wait for each PUBACK, wait for a reply on a topic; the broker's refusals as exceptions.
Used by `cx alert send` (tools/alertsend.py) and by fleet commands (fleet/command.py).

MQTT 5, because only its PUBACK says "Not authorized": under 3.1.1 Mosquitto acknowledges a
publish its ACL denies and drops it, so a wrong credential would look sent (decisions.md).

The exceptions, in one place (fleet/errors.py subclasses BrokerUnavailable and NotAuthorized
into its FleetError tree; fleet/ may import tools/, never the other way round):

    SessionError                anything this module raises on purpose
    ├── BadCredential           a credential or CA file that cannot be used
    ├── BrokerUnavailable       unreachable, silent (no CONNACK, SUBACK or PUBACK in time)
    │   └── ConnectRefused      the broker answered the CONNECT with a failure, not a login one
    └── NotAuthorized           the broker refused the login, a subscription or a publish
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

NOT_AUTHORIZED = (134, 135)
"""MQTT 5 reason codes "Bad user name or password" and "Not authorized" (paho maps the 3.1.1
CONNACK refusals 4 and 5 onto them)."""
MAX_KEEPALIVE = 65535  # s: the CONNECT field is 16 bits


class SessionError(Exception):
    """Base of every error this module raises on purpose (one line, says what to do)."""


class BadCredential(SessionError):
    """A credential file that is missing or not {"user": …, "password": …}, or no CA file."""


class BrokerUnavailable(SessionError):
    """The broker cannot be reached, or did not answer in time: retrying may help."""


class ConnectRefused(BrokerUnavailable):
    """The broker answered the CONNECT with a failure other than a refused login."""


class NotAuthorized(SessionError):
    """The broker refused the login (wrong user or password, no credential) or, by its ACL, a
    subscription or a publish: fix the credential, retrying will not help (`cx` exit 4)."""


def not_authorized(rc: Any) -> bool:
    """Is this reason code (CONNACK, SUBACK, PUBACK) a refusal by login or ACL?"""
    return bool(rc.is_failure) and rc.value in NOT_AUTHORIZED


@dataclass(frozen=True)
class BrokerAuth:
    """How a host tool logs in to a broker with ACLs: a user and password (a `.cred` file that
    `cx fleet broker-config` writes), and a CA file for a TLS listener."""

    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    @classmethod
    def from_files(cls, cred: str | None, cafile: str | None = None) -> BrokerAuth | None:
        """None when neither is given; BadCredential when a file cannot be used."""
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
                raise BadCredential(f"cannot read the credential {cred}: {e.strerror}") from None
            except (ValueError, KeyError, TypeError):
                raise BadCredential(f"credential {cred} is not {{\"user\": …, \"password\": …}}"
                                    ) from None
        if cafile is not None and not Path(cafile).is_file():
            raise BadCredential(f"no CA file {cafile}")
        return cls(user, password, cafile)

    def apply(self, client: mqtt.Client) -> None:
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.cafile is not None:
            client.tls_set(ca_certs=self.cafile)


class Session:
    """One connection, used once: `with Session(…) as s: s.publish(…)`. Every wait shares one
    deadline, `timeout` seconds from the connect. `login_hint` ends a refused login's message
    (which credential to check)."""

    def __init__(self, host: str, port: int, auth: BrokerAuth | None, *, name: str,
                 timeout: float, login_hint: str) -> None:
        self.host, self.port, self.auth = host, port, auth
        self.timeout = timeout
        self.login_hint = login_hint
        self.where = f"{host}:{port}"
        self.user = f"user {auth.username}" if auth is not None and auth.username else "no user"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"{name}-{secrets.token_hex(4)}",
                                   protocol=mqtt.MQTTv5)
        self._client.connect_timeout = timeout
        self._connected, self._subscribed = threading.Event(), threading.Event()
        self._replied = threading.Event()
        self._connack: Any = None
        self._suback: Any = None
        self._acks: dict[int, Any] = {}
        self._match: Callable[[bytes], Any] | None = None
        self._reply: Any = None
        self._deadline = time.monotonic() + timeout
        self._started = False
        c = self._client
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        if auth is not None:
            auth.apply(c)

    # ---- paho thread

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connack = rc
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _m: Any, rcs: list[Any], _p: Any) -> None:
        self._suback = rcs[0] if rcs else None
        self._subscribed.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._acks[mid] = rc

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._match is None or self._replied.is_set():
            return
        reply = self._match(bytes(msg.payload))
        if reply is not None:
            self._reply = reply
            self._replied.set()

    # ---- the caller's thread

    def _left(self) -> float:
        return max(0.05, self._deadline - time.monotonic())

    def connect(self) -> None:
        """Connect and wait for the CONNACK: BrokerUnavailable, NotAuthorized, ConnectRefused."""
        keepalive = min(MAX_KEEPALIVE, max(10, int(self.timeout) * 2))
        try:
            self._client.connect(self.host, self.port, keepalive=keepalive)
        except OSError as e:
            raise BrokerUnavailable(f"broker {self.where} is unreachable: {e.strerror or e}"
                                    ) from None
        self._deadline = time.monotonic() + self.timeout
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(self._left()):
            raise BrokerUnavailable(f"broker {self.where} is unreachable: no CONNACK within "
                                    f"{self.timeout:g} s")
        rc = self._connack
        if not_authorized(rc):
            raise NotAuthorized(f"broker {self.where} refused the login ({self.user}): {rc}; "
                                f"{self.login_hint}")
        if rc.is_failure:
            raise ConnectRefused(f"broker {self.where} refused the connection: {rc}")

    def subscribe(self, topic: str, match: Callable[[bytes], Any]) -> None:
        """Subscribe QoS 1 before anything is sent; the first message for which match(payload)
        is not None is the reply (`wait_reply`). A refused subscription: NotAuthorized, or
        BrokerUnavailable (Mosquitto 2.0 grants it anyway; other brokers may not)."""
        self._match = match
        self._client.subscribe(topic, 1)
        if not self._subscribed.wait(self._left()):
            raise BrokerUnavailable(f"broker {self.where} did not confirm the subscription")
        sub = self._suback
        if sub is None or sub.is_failure:
            text = (f"broker {self.where} refused the subscription to {topic}: {sub} "
                    f"({self.user}); nothing was sent")
            if sub is not None and not_authorized(sub):
                raise NotAuthorized(f"{text}; {self.login_hint}")
            raise BrokerUnavailable(text)

    def publish(self, topics: list[str], payload: str | bytes, *, retain: bool = False
                ) -> list[tuple[str, Any]]:
        """Publish QoS 1 (`retain`: retained) to every topic and wait for each PUBACK
        (BrokerUnavailable when one does not come in time); the (topic, reason code) of those
        the broker refused."""
        infos = [self._client.publish(t, payload, qos=1, retain=retain) for t in topics]
        for topic, info in zip(topics, infos, strict=True):
            try:
                info.wait_for_publish(self._left())
            except (RuntimeError, ValueError) as e:
                raise BrokerUnavailable(f"broker {self.where} is unreachable: {e}") from None
            if not info.is_published():
                raise BrokerUnavailable(f"broker {self.where} is unreachable: no PUBACK for "
                                        f"{topic} within {self.timeout:g} s")
        return [(t, self._acks[i.mid]) for t, i in zip(topics, infos, strict=True)
                if i.mid in self._acks and self._acks[i.mid].is_failure]

    def fire(self, topics: list[str], payload: str | bytes) -> None:
        """Publish QoS 0 to every topic, waiting for nothing (a live chunk: late is lost)."""
        for t in topics:
            self._client.publish(t, payload, qos=0)

    def wait_reply(self) -> Any:
        """The reply `subscribe` asked for, or None when the deadline passes first."""
        return self._reply if self._replied.wait(self._left()) else None

    def close(self) -> None:
        self._client.disconnect()
        if self._started:
            self._client.loop_stop()

    def __enter__(self) -> Self:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()
