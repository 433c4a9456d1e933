"""cunxiang fleet service: ingestion, registry, alarms, reports and device commands.

Public surface: `Store` (the database behind one interface, SQLite or PostgreSQL), `Service`
(`cx fleet serve`), `send_command`, the records and enums of `fleet.model`, and the exception
tree of `fleet.errors`. The command line on top of it is `cx/fleet.py`.
"""

from fleet.command import send_command
from fleet.errors import (
    BrokerUnavailable,
    CommandError,
    CommandRefused,
    CommandTimeout,
    FleetError,
    NotAuthorized,
    StoreError,
    StoreUnavailable,
    UnknownAlarm,
    UnknownDevice,
)
from fleet.model import (
    Alarm,
    AlarmKind,
    AlarmState,
    AlertRecord,
    BadKind,
    Device,
    DeviceState,
    Receipt,
    Report,
    Target,
)
from fleet.service import Service
from fleet.store import Store, region_prefix

__all__ = [
    "Alarm", "AlarmKind", "AlarmState", "AlertRecord", "BadKind", "BrokerUnavailable",
    "CommandError", "CommandRefused", "CommandTimeout", "Device", "DeviceState", "FleetError",
    "NotAuthorized", "Receipt", "Report", "Service", "Store", "StoreError", "StoreUnavailable", "Target",
    "UnknownAlarm", "UnknownDevice", "region_prefix", "send_command",
]
