"""Alarm rules: the conditions that open and close alarms, the offline sweep, and reading and
acknowledging alarms (`cx fleet alarms`, `cx fleet ack`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.errors import UnknownAlarm
from fleet.model import EVENT_KINDS, Alarm, AlarmKind
from fleet.store.core import Core
from fleet.store.transaction import Transaction

# Alarm conditions over a `devices d` row: (condition SQL, detail SQL). `on_4g` takes one
# parameter (the time before which the link must have switched to 4G).
CONDITIONS: dict[AlarmKind, tuple[str, str]] = {
    AlarmKind.OFFLINE: ("d.state = 'offline'",
                        ("CASE WHEN d.state_reason = 'will' THEN 'last will' "
                         "ELSE 'no heartbeat for 3 intervals' END")),
    AlarmKind.LINE: ("COALESCE(d.line, '') IN ('open', 'short')", "'line ' || d.line"),
    AlarmKind.POWER: ("COALESCE(d.supply, '') IN ('battery', 'low')",
                      ("CASE WHEN d.supply = 'low' THEN 'battery low' ELSE 'mains lost' END")),
    AlarmKind.ON_4G: ("COALESCE(d.link, '') = '4g' AND d.link_since <= ?", "'on 4G'"),
    AlarmKind.CLOCK_UNSYNCED: ("COALESCE(d.clock, '') = 'unsynced'", "'clock unsynced'"),
}

ALARM_COLS = "id, device, kind, state, detail, count, opened_at, acked_at, closed_at"


@dataclass
class SweepStats:
    went_offline: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0


class AlarmRules(Core):
    """Alarms: opened and closed by set-based rules, safe from any instance at any time."""

    def reconcile_alarms(self, tx: Transaction, now: float, devices: list[str] | None
                         ) -> tuple[int, int]:
        """Open the alarms whose condition holds and close those whose condition cleared, for
        `devices` (None: all). Set-based and idempotent: safe from any instance at any time."""
        opened = closed = 0
        flt = ""
        fparams: list[Any] = []
        if devices is not None:
            cond_ids, fparams = tx.dialect.id_in("d.id", devices)
            flt = f" AND {cond_ids}"
        for kind, (cond, detail) in CONDITIONS.items():
            cparams: list[Any] = [now - self.on_4g_after] if "?" in cond else []
            c = tx.execute(f"INSERT INTO alarms (device, kind, state, detail, count, opened_at) "
                           f"SELECT d.id, ?, 'open', {detail}, 1, ? FROM devices d WHERE {cond}"
                           f"{flt} AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.device = d.id "
                           f"AND a.kind = ? AND a.state <> 'closed') ON CONFLICT DO NOTHING",
                           [kind.value, now, *cparams, *fparams, kind.value])
            opened += max(c.rowcount, 0)
            c = tx.execute(f"UPDATE alarms SET state = 'closed', closed_at = ? WHERE kind = ? "
                           f"AND state <> 'closed' AND device IN (SELECT d.id FROM devices d "
                           f"WHERE NOT ({cond}){flt})",
                           [now, kind.value, *cparams, *fparams])
            closed += max(c.rowcount, 0)
            if kind in (AlarmKind.LINE, AlarmKind.POWER, AlarmKind.OFFLINE):
                tx.execute(f"UPDATE alarms SET detail = (SELECT {detail} FROM devices d WHERE "
                           f"d.id = alarms.device) WHERE kind = ? AND state <> 'closed' AND "
                           f"EXISTS (SELECT 1 FROM devices d WHERE d.id = alarms.device AND "
                           f"{cond} AND {detail} <> alarms.detail{flt})",
                           [kind.value, *cparams, *fparams])
        return opened, closed

    def sweep(self, now: float | None = None) -> SweepStats:
        """Mark devices silent for 3 intervals offline and reconcile every alarm (on_4g is
        time-based). Idempotent: any number of instances may sweep at any time."""
        now = time.time() if now is None else now
        st = SweepStats()
        with self.transaction() as tx:
            c = tx.execute("UPDATE devices SET state = 'offline', state_since = ?, "
                           "state_reason = 'silent' WHERE state = 'online' AND due_at < ?",
                           (now, now))
            st.went_offline = max(c.rowcount, 0)
            st.alarms_opened, st.alarms_closed = self.reconcile_alarms(tx, now, None)
        return st

    def alarms(self, *, active: bool = False, device: str | None = None,
               kind: str | None = None, limit: int | None = None) -> list[Alarm]:
        """Alarms newest first; `active`: only open or acknowledged ones."""
        sql = f"SELECT {ALARM_COLS} FROM alarms WHERE 1 = 1"
        params: list[Any] = []
        if active:
            sql += " AND state <> 'closed'"
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.transaction(write=False) as tx:
            return [_alarm(r) for r in tx.execute(sql, params).fetchall()]

    def ack_alarm(self, alarm_id: int, now: float | None = None) -> Alarm:
        """open → acked. A `rejected`, `storage` or `recovery` alarm (EVENT_KINDS) has no
        condition that clears, so acknowledging it closes it. Acknowledging an acknowledged or
        closed alarm changes nothing."""
        now = time.time() if now is None else now
        ev = tuple(k.value for k in EVENT_KINDS)
        marks = ", ".join("?" * len(ev))
        with self.transaction() as tx:
            tx.execute(f"UPDATE alarms SET acked_at = ?, state = CASE WHEN kind IN ({marks}) "
                       f"THEN 'closed' ELSE 'acked' END, closed_at = CASE WHEN kind IN "
                       f"({marks}) THEN ? ELSE closed_at END WHERE id = ? AND state = 'open'",
                       (now, *ev, *ev, now, alarm_id))
            row = tx.execute(f"SELECT {ALARM_COLS} FROM alarms WHERE id = ?",
                             (alarm_id,)).fetchone()
        if row is None:
            raise UnknownAlarm(alarm_id)
        return _alarm(row)


def _alarm(row: Sequence[Any]) -> Alarm:
    aid, device, kind, state, detail, count, opened, acked, closed = row
    return Alarm(int(aid), device, kind, state, detail, int(count), opened, acked, closed)
