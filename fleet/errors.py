"""The fleet's exception tree, in one place.

    FleetError                  anything the fleet library raises on purpose
    ├── StoreError              the store refused or failed an operation
    │   ├── StoreUnavailable    the database cannot be reached (retry later)
    │   ├── UnknownDevice       no device with that id in the registry
    │   └── UnknownAlarm        no alarm with that id
    ├── BrokerUnavailable       the MQTT broker cannot be reached or refused us
    ├── NotAuthorized           the broker refused the login, a subscription or a publish
    ├── ProvisionError          provisioning input or output refused (fleet/provision.py)
    └── CommandError            a device command failed
        ├── CommandTimeout      no acknowledgement within the wait
        └── CommandRefused      the terminal acknowledged with ok: false

BrokerUnavailable and NotAuthorized are also those of tools/mqttsession.py, the MQTT session
fleet commands share with `cx alert send`: fleet.command turns the session's into these.
"""

from __future__ import annotations

from typing import Any

from tools import mqttsession


class FleetError(Exception):
    """Base of every error the fleet library raises on purpose."""


class StoreError(FleetError):
    """The store refused or failed an operation."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (refused, missing, locked too long): retry later."""


class UnknownDevice(StoreError):
    """No device with that id in the registry (provision it with `cx fleet provision`)."""

    def __init__(self, device: str) -> None:
        super().__init__(f"unknown device {device!r}")
        self.device = device


class UnknownAlarm(StoreError):
    """No alarm with that id."""

    def __init__(self, alarm: int) -> None:
        super().__init__(f"unknown alarm {alarm}")
        self.alarm = alarm


class BrokerUnavailable(FleetError, mqttsession.BrokerUnavailable):
    """The MQTT broker cannot be reached, or refused the connection."""


class NotAuthorized(FleetError, mqttsession.NotAuthorized):
    """The broker refused the login (wrong user or password, no credential) or, by its ACL, the
    subscription or the publish: fix the credential, retrying will not help (`cx` exit 4)."""


class ProvisionError(FleetError):
    """Provisioning input or output refused: a bad device id, region, profile or CSV line, trust
    anchors or a CA certificate the terminal would refuse, a file that cannot be read or written.
    One line that says what to fix (`cx` exit 1)."""


class CommandError(FleetError):
    """A device command failed."""


class CommandTimeout(CommandError):
    """The terminal did not acknowledge within the wait."""


class CommandRefused(CommandError):
    """The terminal acknowledged with `ok: false`; `ack` is the acknowledgement."""

    def __init__(self, ack: dict[str, Any]) -> None:
        super().__init__(f"device refused the command: {ack.get('error')}")
        self.ack = ack
