"""Ingestion, the service's hot path: one batch of checked messages into history, device rows,
receipts, fault events, states and bad-message counters, and the alarms they open or close."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.ingest import (
    Ack,
    Bad,
    DailyReceipt,
    Fault,
    Heartbeat,
    Ignored,
    OtaEvent,
    ReceiptMsg,
    Record,
    State,
)
from fleet.model import AlarmKind, BadKind
from fleet.store.alarms import AlarmRules
from fleet.store.daily import insert_daily
from fleet.store.ota import apply_ota
from fleet.store.transaction import Transaction


@dataclass
class IngestStats:
    heartbeats: int = 0
    duplicates: int = 0
    receipts: int = 0
    daily: int = 0
    """Daily-broadcast receipts (schedules, programmes, live announcements) stored."""
    states: int = 0
    faults: int = 0
    acks: int = 0
    ota: int = 0
    bad: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0


class Ingestion(AlarmRules):
    """`ingest`: a batch in one transaction, idempotent under redelivery."""

    def _unknown(self, tx: Transaction, ids: set[str]) -> set[str]:
        missing = sorted(ids - self._known)
        if missing:
            marks = ",".join("?" * len(missing))
            self._known.update(r[0] for r in tx.execute(
                f"SELECT id FROM devices WHERE id IN ({marks})", missing))
        return {i for i in ids if i not in self._known}

    def ingest(self, records: Sequence[Record], now: float | None = None) -> IngestStats:
        """Store one batch of checked messages (in arrival order) in one transaction: history,
        device rows, receipts, fault events, states, counters, and the alarms they open or close.
        Idempotent under redelivery: a heartbeat or receipt already stored changes nothing."""
        now = time.time() if now is None else now
        st = IngestStats()
        with self.transaction() as tx:
            ids = {r.device for r in records if not isinstance(r, (Bad, Ignored))}
            unknown = self._unknown(tx, ids)
            bad: Counter[tuple[str, str, str]] = Counter()
            good: list[Record] = []
            for r in records:
                if isinstance(r, Bad):
                    bad[(r.kind.value, r.device, r.topic)] += 1
                elif isinstance(r, Ignored):
                    continue
                elif r.device in unknown:
                    bad[(BadKind.UNKNOWN_DEVICE.value, r.device, _topic_of(r))] += 1
                else:
                    good.append(r)
            if bad:
                st.bad = sum(bad.values())
                tx.executemany("INSERT INTO bad_messages (kind, device, topic, count, last_at) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, device, topic) DO "
                               "UPDATE SET count = bad_messages.count + excluded.count, "
                               "last_at = excluded.last_at",
                               sorted((k, d, t, n, now) for (k, d, t), n in bad.items()))
            changed = self._apply_device_messages(tx, good, st, now)
            self._apply_receipts(tx, [r for r in good if isinstance(r, ReceiptMsg)], st, now)
            st.daily = insert_daily(tx, [r for r in good if isinstance(r, DailyReceipt)])
            acks = [r for r in good if isinstance(r, Ack)]
            st.acks = len(acks)
            events = [r for r in good if isinstance(r, OtaEvent)]
            st.ota = len(events)
            apply_ota(tx, acks, events, [r for r in good if isinstance(r, Heartbeat)], now)
            if changed:
                opened, closed = self.reconcile_alarms(tx, now, sorted(changed))
                st.alarms_opened += opened
                st.alarms_closed += closed
        return st

    def _apply_device_messages(self, tx: Transaction, good: list[Record], st: IngestStats,
                               now: float) -> set[str]:
        """Apply heartbeats, states and faults; returns the devices whose alarm inputs may have
        changed (the only ones `reconcile_alarms` needs to look at; the sweep looks at all)."""
        hbs = [r for r in good if isinstance(r, Heartbeat)]
        new = tx.dialect.insert_heartbeats(tx.cursor, hbs)
        fresh = {id(h) for h, is_new in zip(hbs, new, strict=True) if is_new}
        st.heartbeats = len(fresh)
        st.duplicates = len(hbs) - len(fresh)
        # Per device: its latest new heartbeat, then the states and faults that came after it.
        per_dev: dict[str, list[Record]] = defaultdict(list)
        for r in good:
            if isinstance(r, Heartbeat):
                if id(r) in fresh:
                    per_dev[r.device] = [r]
            elif isinstance(r, Fault) and r.fault == "storage":
                # an event, not a condition a later heartbeat restates: never superseded
                st.faults += 1
                self._event_alarm(tx, r.device, AlarmKind.STORAGE, r.detail, now, st)
            elif isinstance(r, Fault) and r.fault == "recovery":
                # the button held through boot (docs/web.md): an alarm when it starts; its end
                # (a normal restart 15 min later) changes nothing, the admin acknowledges it
                st.faults += 1
                if r.active:
                    self._event_alarm(tx, r.device, AlarmKind.RECOVERY,
                                      "recovery mode (button held through boot)", now, st)
            elif isinstance(r, (State, Fault)):
                per_dev[r.device].append(r)
        if not per_dev:
            return set()
        # Alarm inputs before this batch: a device whose only news is a heartbeat that leaves
        # them as they were needs no reconciliation.
        cond, params = tx.dialect.id_in("id", sorted(per_dev))
        before = {r[0]: r[1:] for r in tx.execute(
            f"SELECT id, state, state_reason, line, supply, link, clock, link_since FROM "
                 f"devices WHERE {cond}", params)}
        changed: set[str] = set()
        rows = []
        cut_4g = now - self.on_4g_after
        for dev in sorted(per_dev):
            recs = per_dev[dev]
            first = recs[0]
            if isinstance(first, Heartbeat):
                rows.append(first)
            if len(recs) > 1 or not isinstance(first, Heartbeat) or dev not in before:
                changed.add(dev)
                continue
            state, reason, line, supply, link, clock, link_since = before[dev]
            b = first.body
            after = ("online", None, *(old if b.get(k) is None else b[k] for k, old in
                                       (("line", line), ("supply", supply), ("link", link),
                                        ("clock", clock))))
            if after != (state, reason, line, supply, link, clock):
                changed.add(dev)
            elif link == "4g" and link_since is not None and link_since <= cut_4g:
                changed.add(dev)  # the on_4g threshold may have passed since the last sweep
        tx.dialect.update_from_heartbeats(tx.cursor, rows)
        for dev in sorted(per_dev):
            for r in per_dev[dev]:
                if isinstance(r, State):
                    st.states += 1
                    if r.online:
                        tx.execute(_ONLINE_UPDATE, (r.received_at, r.received_at,
                                                    r.received_at, r.device, r.received_at))
                    else:
                        tx.execute(_OFFLINE_UPDATE, (r.received_at, r.device, r.received_at))
                elif isinstance(r, Fault):
                    st.faults += 1
                    tx.execute(_FAULT_UPDATES[(r.fault, r.active)], (r.device, r.t))
        self.trim_history(tx, self._due_for_trim([h.device for h in hbs if id(h) in fresh]))
        return changed

    def _due_for_trim(self, devices: list[str]) -> list[str]:
        """Of the devices that just got these new heartbeats, those to trim now: each one the
        first time this store sees it, then every `_trim_slack` heartbeats."""
        since = self._since_trim
        due = set()
        for dev in devices:
            n = since.get(dev)
            if n is None or n + 1 >= self._trim_slack:
                due.add(dev)
                since[dev] = 0
            else:
                since[dev] = n + 1
        return sorted(due)

    def trim_history(self, tx: Transaction, devices: list[str]) -> None:
        """Keep the last `history_keep` heartbeats of each of `devices` (each dialect has its
        fastest way)."""
        if devices:
            tx.dialect.trim(tx.cursor, devices, self.history_keep)

    def _apply_receipts(self, tx: Transaction, receipts: list[ReceiptMsg], st: IngestStats,
                        now: float) -> None:
        new = tx.dialect.insert_each(
            tx.cursor, "INSERT INTO receipts (alert, kid, device, status, reason, t, "
                       "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(r.alert or "", r.kid or "", r.device, r.status, r.reason or "", r.t, r.received_at)
             for r in receipts])
        st.receipts = sum(new)
        for r, is_new in zip(receipts, new, strict=True):
            if not is_new or r.status != "rejected":
                continue
            detail = (f"{r.reason or 'rejected'} ("
                      + (f"alert {r.alert}" if r.alert else "alert id not given")
                      + (f", key {r.kid})" if r.kid else ", no key named)"))
            self._event_alarm(tx, r.device, AlarmKind.REJECTED, detail, now, st)

    def _event_alarm(self, tx: Transaction, device: str, kind: AlarmKind, detail: str, now: float,
                     st: IngestStats) -> None:
        """Open an alarm of an EVENT_KINDS kind, or count one more on the one still open."""
        opened = tx.execute("INSERT INTO alarms (device, kind, state, detail, count, "
                            "opened_at) VALUES (?, ?, 'open', ?, 1, ?) ON CONFLICT DO "
                            "NOTHING", (device, kind.value, detail, now))
        if opened.rowcount == 1:
            st.alarms_opened += 1
        else:
            tx.execute("UPDATE alarms SET count = count + 1, detail = ? WHERE device = ? "
                       "AND kind = ? AND state <> 'closed'", (detail, device, kind.value))


# The retained `online` restarts the silence timer; it never overrides a later offline.
_ONLINE_UPDATE = (
    "UPDATE devices SET seen_at = ?, due_at = ? + 3 * COALESCE(hb_s, 60), "
    "state_since = CASE WHEN state = 'online' THEN state_since ELSE ? END, "
    "state = 'online', state_reason = NULL WHERE id = ? AND COALESCE(seen_at, 0) <= ?")

# The last will: offline at once, unless a heartbeat received later was already applied.
_OFFLINE_UPDATE = (
    "UPDATE devices SET state = 'offline', state_since = ?, state_reason = 'will' "
    "WHERE id = ? AND state <> 'offline' AND COALESCE(last_hb_at, 0) <= ?")


def _fault_sql(assignment: str) -> str:
    # A fault event older (terminal time) than the last heartbeat applied is stale.
    return f"UPDATE devices SET {assignment} WHERE id = ? AND ? >= COALESCE(last_t, 0)"


_FAULT_UPDATES: dict[tuple[str, bool], str] = {
    ("line_open", True): _fault_sql("line = 'open'"),
    ("line_open", False): _fault_sql("line = CASE WHEN line = 'open' THEN 'ok' ELSE line END"),
    ("line_short", True): _fault_sql("line = 'short'"),
    ("line_short", False): _fault_sql("line = CASE WHEN line = 'short' THEN 'ok' ELSE line END"),
    ("mains_lost", True): _fault_sql(
        "supply = CASE WHEN supply = 'low' THEN 'low' ELSE 'battery' END"),
    ("mains_lost", False): _fault_sql("supply = 'mains'"),
    ("battery_low", True): _fault_sql("supply = 'low'"),
    ("battery_low", False): _fault_sql(
        "supply = CASE WHEN supply = 'low' THEN 'battery' ELSE supply END"),
    ("clock_unsynced", True): _fault_sql("clock = 'unsynced'"),
    ("clock_unsynced", False): _fault_sql("clock = 'synced'"),
}


def _topic_of(r: Record) -> str:
    if isinstance(r, Heartbeat):
        return "hb"
    if isinstance(r, (State, Ignored)):
        return "state"
    if isinstance(r, Ack):
        return "ack"
    if isinstance(r, OtaEvent):
        return "event"
    return "event"
