"""Daily-broadcast receipts in the store (broadcast.md §4, §7): what terminals said of each
schedule, programme and live announcement (`Ingestion.ingest` writes them; `cx broadcast status`
reads them). One row per receipt; a redelivered one changes nothing (the unique index).

About two rows per terminal per programme and day (playing, done): a county of 2,200
terminals with 3 programmes a day adds ~15,000 a day, so fleet/store/retention.py deletes each
`daily_days` (90) after it arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fleet.ingest import DailyReceipt
from fleet.store.core import Core
from fleet.store.transaction import Transaction

_INSERT = ("INSERT INTO daily_receipts (kind, name, kid, device, status, reason, t, day, start, "
           "area, version, chunks, silent, refused, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
           "?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


@dataclass(frozen=True)
class DailyRow:
    """One stored daily receipt, with the town of the terminal that sent it."""

    kind: str
    name: str | None
    kid: str | None
    device: str
    town: str
    status: str
    reason: str | None
    t: int
    date: str | None
    start: str | None
    chunks: int | None
    silent: int | None
    refused: int | None
    received_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def insert_daily(tx: Transaction, receipts: Sequence[DailyReceipt]) -> int:
    """Store `receipts` (their devices known); returns how many were new."""
    new = tx.dialect.insert_each(tx.cursor, _INSERT, [
        (r.kind, r.name or "", r.kid or "", r.device, r.status, r.reason or "", r.t,
         r.date or "", r.start or "", r.area, r.version, r.chunks, r.silent, r.refused,
         r.received_at) for r in receipts])
    return sum(new)


class DailyRecords(Core):
    """Reading the daily-broadcast receipts."""

    def daily_receipts(self, kind: str, name: str, date: str | None = None) -> list[DailyRow]:
        """The receipts of programme or live stream `name` (`kind` "programme" or "live"), of
        local date `date` only when given, in arrival order."""
        sql = ("SELECT r.kind, r.name, r.kid, r.device, d.town, d.region, r.status, r.reason, "
               "r.t, r.day, r.start, r.chunks, r.silent, r.refused, r.received_at FROM "
               "daily_receipts r LEFT JOIN devices d ON d.id = r.device WHERE r.kind = ? AND "
               "r.name = ?")
        params: list[Any] = [kind, name]
        if date is not None:
            sql += " AND r.day = ?"
            params.append(date)
        with self.transaction(write=False) as tx:
            rows = tx.execute(sql + " ORDER BY r.seq", params).fetchall()
        return [DailyRow(k, n or None, kid or None, dev, town or (region or "")[:9] or "-", st,
                         reason or None, int(t), day or None, start or None,
                         _int(chunks), _int(silent), _int(refused), float(at))
                for (k, n, kid, dev, town, region, st, reason, t, day, start, chunks, silent,
                     refused, at) in rows]

    def daily_dates(self, kind: str, name: str) -> list[str]:
        """The local dates the receipts of programme `name` name, oldest first."""
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT DISTINCT day FROM daily_receipts WHERE kind = ? AND "
                              "name = ? AND day <> '' ORDER BY day", (kind, name)).fetchall()
        return [r[0] for r in rows]


def _int(v: Any) -> int | None:
    return None if v is None else int(v)
