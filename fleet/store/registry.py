"""The device registry: provisioning devices (`cx fleet provision`) and reading them back with
their active alarms and heartbeat history (`cx fleet devices`, `cx fleet device`)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from fleet.errors import StoreError, UnknownDevice
from fleet.model import FAULT_KINDS, Device, DeviceState
from fleet.store.core import Core
from tools.regions import ID_RE, PREFIX_RE, REGION_RE

DEVICE_COLS = ("id, region, town, profile, state, state_since, state_reason, version, link, "
               "link_since, line, supply, clock, hb_s, last_hb, last_hb_at, first_seen, "
               "provisioned_at")


class Registry(Core):
    """Devices: who is registered, where, and what they last said."""

    def upsert_device(self, device_id: str, region: str, profile: str = "horn", *,
                      now: float | None = None) -> None:
        """Add a device to the registry, or change its region and profile."""
        self.upsert_devices([(device_id, region, profile)], now=now)

    def upsert_devices(self, rows: Iterable[tuple[str, str, str]], *,
                       now: float | None = None) -> int:
        """Many `(id, region, profile)` in one transaction; returns how many."""
        now = time.time() if now is None else now
        checked = []
        for device_id, region, profile in rows:
            if not ID_RE.match(device_id):
                raise StoreError(f"bad device id {device_id!r}: 1..64 of A-Z a-z 0-9 . _ : -")
            if not REGION_RE.match(region):
                raise StoreError(f"bad region {region!r} for {device_id}: 12 digits")
            checked.append((device_id, region, region[:9], profile, now, DeviceState.NEW.value))
        with self.transaction() as tx:
            tx.executemany("INSERT INTO devices (id, region, town, profile, provisioned_at, "
                           "state) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                           "region = excluded.region, town = excluded.town, "
                           "profile = excluded.profile", checked)
        self._known.update(r[0] for r in checked)
        return len(checked)

    def device(self, device_id: str) -> Device:
        with self.transaction(write=False) as tx:
            row = tx.execute(f"SELECT {DEVICE_COLS} FROM devices WHERE id = ?",
                             (device_id,)).fetchone()
            if row is None:
                raise UnknownDevice(device_id)
            kinds = [r[0] for r in tx.execute(
                "SELECT kind FROM alarms WHERE device = ? AND state <> 'closed' ORDER BY "
                     "kind", (device_id,))]
        return device_row(row, kinds)

    def devices(self, region: str | None = None, state: str | None = None) -> list[Device]:
        """Devices whose region starts with `region`, in a state (`online`, `offline`, `new`,
        or `fault`: an active line, power, on_4g or clock alarm), ordered by id."""
        where, params = region_filter(region)
        with self.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {DEVICE_COLS} FROM devices d WHERE 1 = 1{where} "
                              "ORDER BY id", params).fetchall()
            active: dict[str, list[str]] = defaultdict(list)
            for dev, kind in tx.execute(f"SELECT a.device, a.kind FROM alarms a JOIN devices d "
                                        f"ON d.id = a.device WHERE a.state <> 'closed'{where} "
                                        "ORDER BY a.kind", params):
                active[dev].append(kind)
        out = [device_row(r, active.get(r[0], [])) for r in rows]
        if state == "fault":
            return [d for d in out if any(k in FAULT_KINDS for k in d.alarms)]
        if state:
            return [d for d in out if d.state == state]
        return out

    def history(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The device's latest heartbeats, newest first, each with `received_at`."""
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT body, received_at FROM heartbeats WHERE device = ? "
                              "ORDER BY seq DESC LIMIT ?", (device_id, limit)).fetchall()
        return [{**json.loads(body), "received_at": at} for body, at in rows]

    def history_count(self, device_id: str | None = None) -> int:
        """Heartbeats held (for one device or all)."""
        with self.transaction(write=False) as tx:
            if device_id is None:
                return int(tx.execute("SELECT COUNT(*) FROM heartbeats").fetchone()[0])
            return int(tx.execute("SELECT COUNT(*) FROM heartbeats WHERE device = ?",
                                  (device_id,)).fetchone()[0])


def region_filter(region: str | None) -> tuple[str, list[Any]]:
    """`d.region` starts with `region` (None or empty: every device): SQL and parameters."""
    if not region:
        return "", []
    if not PREFIX_RE.match(region):
        raise StoreError(f"bad region prefix {region!r}: up to 12 digits")
    return " AND d.region LIKE ?", [region + "%"]


def device_row(row: Sequence[Any], alarms: list[str]) -> Device:
    (did, region, town, profile, state, since, reason, version, link, link_since, line, supply,
     clock, hb_s, last_hb, last_hb_at, first_seen, provisioned_at) = row
    return Device(did, region, town, profile, state, since, reason, version, link, link_since,
                  line, supply, clock, hb_s, json.loads(last_hb) if last_hb else None, last_hb_at,
                  first_seen, provisioned_at, alarms)
