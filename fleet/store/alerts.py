"""Alert records: what was published, to which region, the devices it targeted, and the
receipts they sent back (`cx alert send`, `cx alert status`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from fleet.errors import StoreError
from fleet.model import AlertRecord, Receipt, Target
from fleet.store.core import Core
from tools.regions import REGION_RE
from tools.regions import prefix as region_prefix


class AlertRecords(Core):
    """Alerts as published and resolved against the registry (alerts.md §3)."""

    def record_alert(self, alert_id: str, kid: str, regions: Sequence[str],
                     published_at: float | None = None) -> list[Target]:
        """Remember an alert as published and resolve its targets from the registry (every
        device whose region is covered by one of `regions`, alerts.md §3). Recording the same
        (id, kid) again keeps the first publish time and adds newly covered devices."""
        published_at = time.time() if published_at is None else published_at
        for code in regions:
            if not REGION_RE.match(code):
                raise StoreError(f"bad region {code!r}: 12 digits")
        prefixes = sorted({region_prefix(c) for c in regions})
        with self.transaction() as tx:
            tx.execute("INSERT INTO alerts (id, kid, regions, published_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT DO NOTHING",
                       (alert_id, kid, json.dumps(list(regions)), published_at))
            like = " OR ".join("region LIKE ?" for _ in prefixes)
            rows = tx.execute(f"SELECT id, region, town FROM devices WHERE {like} ORDER BY id",
                              [p + "%" for p in prefixes]).fetchall()
            tx.executemany("INSERT INTO alert_targets (alert, kid, device, region) VALUES "
                           "(?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           [(alert_id, kid, d, reg) for d, reg, _ in rows])
        return [Target(d, reg, town) for d, reg, town in rows]

    def alert_record(self, alert_id: str, kid: str | None = None) -> AlertRecord | None:
        """The recorded alert (the latest published one when several issuers used the id)."""
        sql = ("SELECT a.id, a.kid, a.regions, a.published_at, (SELECT COUNT(*) FROM "
               "alert_targets t WHERE t.alert = a.id AND t.kid = a.kid) FROM alerts a "
               "WHERE a.id = ?")
        params: list[Any] = [alert_id]
        if kid is not None:
            sql += " AND a.kid = ?"
            params.append(kid)
        with self.transaction(write=False) as tx:
            row = tx.execute(sql + " ORDER BY a.published_at DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        return AlertRecord(row[0], row[1], json.loads(row[2]), row[3], int(row[4]))

    def alert_targets(self, alert_id: str, kid: str | None = None) -> list[Target]:
        """The devices the alert was sent to, as resolved when it was recorded."""
        sql = ("SELECT t.device, t.region, d.town FROM alert_targets t LEFT JOIN devices d ON "
               "d.id = t.device WHERE t.alert = ?")
        params: list[Any] = [alert_id]
        if kid is not None:
            sql += " AND t.kid = ?"
            params.append(kid)
        with self.transaction(write=False) as tx:
            rows = tx.execute(sql + " ORDER BY t.device", params).fetchall()
        return [Target(dev, reg, town or reg[:9]) for dev, reg, town in rows]

    def receipts(self, alert_id: str | None = None, kid: str | None = None,
                 device: str | None = None) -> list[Receipt]:
        """Receipts in arrival order; `alert_id` None with no filter returns them all."""
        sql = ("SELECT alert, kid, device, status, reason, t, received_at FROM receipts "
               "WHERE 1 = 1")
        params: list[Any] = []
        for col, val in (("alert", alert_id), ("kid", kid), ("device", device)):
            if val is not None:
                sql += f" AND {col} = ?"
                params.append(val)
        with self.transaction(write=False) as tx:
            rows = tx.execute(sql + " ORDER BY seq", params).fetchall()
        return [Receipt(a or None, k or None, d, s, r or None, int(t), at)
                for a, k, d, s, r, t, at in rows]
