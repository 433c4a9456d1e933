"""Fleet vocabulary: device states, alarm kinds and states, bad-message kinds, and the records
the store returns. Values are the strings stored in the database and printed by `--json`."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class DeviceState(enum.StrEnum):
    NEW = "new"
    """Provisioned, never heard from: no offline alarm until its first heartbeat."""
    ONLINE = "online"
    """A heartbeat (or the retained `online` state) within 3 heartbeat intervals."""
    OFFLINE = "offline"
    """Silent for 3 intervals, or the broker published its last will."""


class AlarmKind(enum.StrEnum):
    OFFLINE = "offline"
    """No heartbeat for 3 × hb_s, or the last will `offline`; closes when heartbeats return."""
    LINE = "line"
    """Speaker line open or shorted (heartbeat `line` or a `line_*` fault event)."""
    POWER = "power"
    """Mains lost (on battery) or battery low."""
    ON_4G = "on_4g"
    """On the 4G fallback longer than the threshold (default 1 h): the IP line needs a look."""
    REJECTED = "rejected"
    """The terminal rejected an alert (bad signature, unknown key…): may be an attack."""
    CLOCK_UNSYNCED = "clock_unsynced"
    """No NTP or network time since boot: expiry checks run on a persisted clock."""
    STORAGE = "storage"
    """A file on the terminal's flash was found damaged and dropped or repaired (a `storage`
    fault event: seen store, clock, config, clip cache). Nothing clears it by itself: the admin
    acknowledges it, which closes it. `seen.json: lost` means an alert already played may play
    once more if it is delivered again before it expires (docs/firmware.md "Files on flash")."""
    RECOVERY = "recovery"
    """Someone held the terminal's button through a boot: recovery mode for 15 min, where the
    local page resets its password and network settings without the old password (docs/web.md
    "Recovery mode"). Expected when a technician is on site, else a reason to look; the admin's
    acknowledgement closes it."""


#: Alarm kinds that put a device in the `fault` state of `cx fleet devices --state fault`.
FAULT_KINDS = (AlarmKind.LINE, AlarmKind.POWER, AlarmKind.ON_4G, AlarmKind.CLOCK_UNSYNCED,
               AlarmKind.STORAGE)
#: Alarm kinds with no condition that clears them: acknowledging one closes it.
EVENT_KINDS = (AlarmKind.REJECTED, AlarmKind.STORAGE, AlarmKind.RECOVERY)


class AlarmState(enum.StrEnum):
    OPEN = "open"
    """Raised, nobody has looked at it yet."""
    ACKED = "acked"
    """An admin acknowledged it; still active until its condition clears."""
    CLOSED = "closed"
    """The condition cleared (or, for `rejected`, an admin acknowledged it)."""


class BadKind(enum.StrEnum):
    NOT_JSON = "not_json"
    """The payload is not UTF-8 JSON (or not the expected JSON shape at all)."""
    WRONG_TYPES = "wrong_types"
    """JSON, but a field is missing, of the wrong type or out of range."""
    UNKNOWN_DEVICE = "unknown_device"
    """The topic's device id is not in the registry (not provisioned)."""
    SPOOFED_ID = "spoofed_id"
    """The payload's `id` differs from the id in the topic."""
    TOO_LARGE = "too_large"
    """The payload is larger than the fleet accepts for its topic."""


@dataclass(frozen=True)
class Device:
    id: str
    region: str
    town: str
    profile: str
    state: str
    state_since: float | None = None
    state_reason: str | None = None
    version: str | None = None
    link: str | None = None
    link_since: float | None = None
    line: str | None = None
    supply: str | None = None
    clock: str | None = None
    hb_s: int | None = None
    last_hb: dict[str, Any] | None = None
    last_hb_at: float | None = None
    first_seen: float | None = None
    provisioned_at: float | None = None
    alarms: list[str] = field(default_factory=list)
    """Kinds of its open or acknowledged alarms."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alarm:
    id: int
    device: str
    kind: str
    state: str
    detail: str
    count: int
    opened_at: float
    acked_at: float | None
    closed_at: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Receipt:
    alert: str | None
    kid: str | None
    device: str
    status: str
    reason: str | None
    t: int
    received_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    device: str
    region: str
    town: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TownReport:
    town: str
    terminals: int
    online: int
    offline: int
    faults: int
    on_4g: int
    versions: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BadCount:
    kind: str
    device: str
    topic: str
    count: int
    last_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    towns: list[TownReport]
    bad: list[BadCount]

    def to_json(self) -> dict[str, Any]:
        return {"towns": [t.to_json() for t in self.towns], "bad": [b.to_json() for b in self.bad]}


@dataclass(frozen=True)
class AlertRecord:
    id: str
    kid: str
    regions: list[str]
    published_at: float
    targets: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
