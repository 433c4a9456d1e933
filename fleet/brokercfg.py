"""Mosquitto 2 security for the fleet: password hashes, the ACL file and the listener config.

Who may do what (ARCHITECTURE.md "Security model", docs/provisioning.md):

- a terminal (MQTT user = its id) writes only `eb/dev/<id>/{hb,state,event,ack}` and reads only
  `eb/dev/<id>/cmd` and its five `eb/alert/<prefix>`, `eb/daily/<prefix>` and `eb/live/<prefix>`
  topics (alerts.md §6, broadcast.md §4, §7);
- the dispatcher user alone writes `eb/alert/#`, `eb/daily/#` and `eb/live/#` (`cx broadcast`);
- the fleet user alone writes `eb/dev/+/cmd`, and reads `eb/dev/#` (also through
  `$share/fleet/…`: Mosquitto checks a shared subscription against its underlying topic).

Terminal listeners force the client id to the username (`use_username_as_clientid`), so one
device's credential cannot take over another device's session by connecting with its id. The
services' listener does not: several `cx fleet serve` instances share the fleet user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tools.regions import ID_RE, REGION_RE, prefixes

PBKDF2_ITERATIONS = 101
"""Mosquitto 2's default (`mosquitto_passwd -H sha512-pbkdf2`). Low, but every password here is
a 192-bit random token from `secrets`, so no iteration count is what protects it."""
SALT_BYTES = 12
"""What mosquitto_passwd uses; the broker accepts any salt length."""
PASSWORD_BYTES = 24
"""Random bytes per generated password (32 URL-safe characters)."""

# ID_RE (tools/regions.py): device ids and MQTT users never hold `/`, `+`, `#` or spaces, so `%u`
# in an ACL pattern is safe. A terminal reads the five eb/alert/<prefix> and eb/daily/<prefix> of
# its code (alerts.md §6, broadcast.md §4).
DEVICE_WRITES = ("hb", "state", "event", "ack")
"""fleet-protocol.md: what a terminal publishes under eb/dev/<id>/ (never its own cmd)."""

DEFAULT_DISPATCHER = "dispatcher"
DEFAULT_FLEET = "fleet"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_SERVICE_LISTEN = "127.0.0.1:1884"


class BrokerConfigError(ValueError):
    """Input that cannot make a safe broker config (one line, says what to fix)."""


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto's `$7$` PBKDF2-SHA512 line part: `$7$<iterations>$<b64 salt>$<b64 hash>`."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def check_password(password: str, hashed: str) -> bool:
    """True when `hashed` (a `$7$` string) is the hash of `password`."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, want)


def is_hash(text: object) -> bool:
    return isinstance(text, str) and re.fullmatch(r"\$7\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+",
                                                  text) is not None


@dataclass(frozen=True)
class DeviceCred:
    """What the broker needs of one terminal: its hash and its region (for the alert ACL)."""

    id: str
    region: str
    hash: str


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str
    ca: str | None = None


def check_users(devices: Mapping[str, DeviceCred], dispatcher: str, fleet: str) -> None:
    for name, what in ((dispatcher, "--dispatcher-user"), (fleet, "--fleet-user")):
        if not ID_RE.match(name):
            raise BrokerConfigError(f"{what} {name!r}: 1..64 of A-Z a-z 0-9 . _ : -")
        if name in devices:
            # The device pattern grants every user eb/dev/%u/…: a device named like a service
            # would share its user and its rights.
            raise BrokerConfigError(f"a device is called {name!r}, the {what[2:]}: "
                                    f"rename one of them")
    if dispatcher == fleet:
        raise BrokerConfigError("the dispatcher and fleet users must differ")
    for d in devices.values():
        if not ID_RE.match(d.id) or not REGION_RE.match(d.region) or not is_hash(d.hash):
            raise BrokerConfigError(f"credentials entry {d.id!r} is damaged (id, region or "
                                    f"hash): provision it again with --force")


def passwd_text(hashes: Mapping[str, str]) -> str:
    return "".join(f"{user}:{h}\n" for user, h in sorted(hashes.items()))


def acl_text(devices: Mapping[str, DeviceCred], dispatcher: str, fleet: str) -> str:
    lines = [
        "# Generated by `cx fleet broker-config`; edit the inputs, not this file.",
        "# Patterns apply to every user; %u is the MQTT username (a terminal's id).",
        *(f"pattern write eb/dev/%u/{t}" for t in DEVICE_WRITES),
        "pattern read eb/dev/%u/cmd",
        "",
        f"user {dispatcher}",
        "topic write eb/alert/#",
        "topic write eb/daily/#",
        "topic write eb/live/#",
        "",
        f"user {fleet}",
        "topic read eb/dev/#",
        "topic write eb/dev/+/cmd",
    ]
    for d in sorted(devices.values(), key=lambda d: d.id):
        lines += ["", f"user {d.id}", *(f"topic read eb/{kind}/{p}" for kind in ("alert", "daily", "live")
                                         for p in prefixes(d.region))]
    return "\n".join(lines) + "\n"


def _listener(port: int, bind: str | None) -> str:
    return f"listener {port}" + (f" {bind}" if bind else "")


def conf_text(confdir: Path, *, port: int | None = DEFAULT_PORT, bind: str | None = None,
              tls: Tls | None = None, tls_port: int = DEFAULT_TLS_PORT,
              service: tuple[str, int] | None = None) -> str:
    """The mosquitto.conf part for the fleet: include it from the main config (or conf.d/)."""
    d = confdir.resolve()
    out = [
        "# Generated by `cx fleet broker-config` (docs/provisioning.md).",
        "# One password file and ACL for every listener: no listener is ever anonymous.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {d / 'passwd'}",
        f"acl_file {d / 'acl'}",
    ]
    if port:
        out += ["", "# Terminals, plain MQTT. The client id becomes the username: a device cannot",
                "# take over another device's session by connecting with its id.",
                _listener(port, bind), "use_username_as_clientid true"]
    if tls is not None:
        out += ["", "# Terminals over TLS.", _listener(tls_port, bind),
                "use_username_as_clientid true", f"certfile {Path(tls.cert).resolve()}",
                f"keyfile {Path(tls.key).resolve()}"]
        if tls.ca:
            out.append(f"cafile {Path(tls.ca).resolve()}")
        out.append("tls_version tlsv1.2")
    if service is not None:
        out += ["", "# Fleet service and dispatcher: several `cx fleet serve` instances share one",
                "# user with their own client ids. Keep it on an address terminals cannot reach.",
                _listener(service[1], service[0] or None)]
    return "\n".join(out) + "\n"
