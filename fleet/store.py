"""The fleet store: registry, heartbeat history, receipts, alarms, bad-message counters and alert
records behind one narrow interface. One schema, numbered migrations and the same SQL on SQLite
(a file path, the default) and PostgreSQL (`postgresql://…`); only `_Dialect` differs.

Concurrency: every write is one transaction; several service instances may share a PostgreSQL
database (row updates are guarded by arrival time, alarm inserts by a partial unique index, so
sweeps and batches are idempotent). SQLite serialises writers (BEGIN IMMEDIATE, WAL).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import StoreError, StoreUnavailable, UnknownAlarm, UnknownDevice
from fleet.ingest import (
    Ack,
    Bad,
    Fault,
    Heartbeat,
    Ignored,
    ReceiptMsg,
    Record,
    State,
)
from fleet.model import (
    EVENT_KINDS,
    FAULT_KINDS,
    Alarm,
    AlarmKind,
    AlertRecord,
    BadCount,
    BadKind,
    Device,
    DeviceState,
    Receipt,
    Report,
    Target,
    TownReport,
)

HISTORY_KEEP = 100
TRIM_SLACK_DIV = 10
"""A device's history is trimmed back to `history_keep` once it has `history_keep // 10` new
heartbeats (from this instance) since its last trim, not at every heartbeat: the bound is
`history_keep` plus less than a tenth, per instance, and trimming costs a tenth."""
"""Heartbeats kept per device; older ones are deleted in the transaction that adds new ones."""
ON_4G_AFTER = 3600.0
"""Seconds on the 4G fallback before an `on_4g` alarm opens (`--on-4g-after`)."""
OFFLINE_AFTER = 3
"""Heartbeat intervals of silence before a device is offline."""
DEFAULT_HB_S = 60
"""Interval assumed for a device that never said (fleet-protocol.md default on IP)."""

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
_REGION_RE = re.compile(r"\d{12}\Z")
_PREFIX_RE = re.compile(r"\d{0,12}\Z")

# ---------------------------------------------------------------------------------- schema
# Written once for both databases: `{pk}` is the only word that differs. Times are epoch
# seconds (DOUBLE PRECISION); ids and codes are TEXT; JSON bodies are TEXT.

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "registry, history, receipts, alarms, bad messages, alerts", [
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            region TEXT NOT NULL,
            town TEXT NOT NULL,
            profile TEXT NOT NULL,
            provisioned_at DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL,
            state_since DOUBLE PRECISION,
            state_reason TEXT,
            version TEXT,
            last_hb TEXT,
            last_hb_at DOUBLE PRECISION,
            last_t BIGINT,
            seen_at DOUBLE PRECISION,
            due_at DOUBLE PRECISION,
            link TEXT,
            link_since DOUBLE PRECISION,
            line TEXT,
            supply TEXT,
            clock TEXT,
            hb_s INTEGER,
            first_seen DOUBLE PRECISION)""",
        "CREATE INDEX devices_region ON devices (region)",
        "CREATE INDEX devices_due ON devices (state, due_at)",
        """CREATE TABLE heartbeats (
            seq {pk},
            device TEXT NOT NULL,
            t BIGINT NOT NULL,
            up BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL)""",
        # Redelivery after a crash (QoS 1) must not count a heartbeat twice.
        "CREATE UNIQUE INDEX heartbeats_once ON heartbeats (device, t, up)",
        "CREATE INDEX heartbeats_device ON heartbeats (device, seq)",
        """CREATE TABLE receipts (
            seq {pk},
            alert TEXT NOT NULL,
            kid TEXT NOT NULL,
            device TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            t BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL)""",
        "CREATE UNIQUE INDEX receipts_once ON receipts (device, alert, kid, status, reason, t)",
        "CREATE INDEX receipts_alert ON receipts (alert, kid)",
        """CREATE TABLE alarms (
            id {pk},
            device TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            count INTEGER NOT NULL,
            opened_at DOUBLE PRECISION NOT NULL,
            acked_at DOUBLE PRECISION,
            closed_at DOUBLE PRECISION)""",
        # At most one open-or-acked alarm per (device, kind), whoever tries to open it.
        "CREATE UNIQUE INDEX alarms_active ON alarms (device, kind) WHERE state <> 'closed'",
        "CREATE INDEX alarms_state ON alarms (state)",
        """CREATE TABLE bad_messages (
            kind TEXT NOT NULL,
            device TEXT NOT NULL,
            topic TEXT NOT NULL,
            count BIGINT NOT NULL,
            last_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, device, topic))""",
        """CREATE TABLE alerts (
            id TEXT NOT NULL,
            kid TEXT NOT NULL,
            regions TEXT NOT NULL,
            published_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (id, kid))""",
        """CREATE TABLE alert_targets (
            alert TEXT NOT NULL,
            kid TEXT NOT NULL,
            device TEXT NOT NULL,
            region TEXT NOT NULL,
            PRIMARY KEY (alert, kid, device))""",
    ]),
]

# Alarm conditions over a `devices d` row: (condition SQL, detail SQL). `on_4g` takes one
# parameter (the time before which the link must have switched to 4G).
_CONDITIONS: dict[AlarmKind, tuple[str, str]] = {
    AlarmKind.OFFLINE: ("d.state = 'offline'",
                        ("CASE WHEN d.state_reason = 'will' THEN 'last will' "
                         "ELSE 'no heartbeat for 3 intervals' END")),
    AlarmKind.LINE: ("COALESCE(d.line, '') IN ('open', 'short')", "'line ' || d.line"),
    AlarmKind.POWER: ("COALESCE(d.supply, '') IN ('battery', 'low')",
                      ("CASE WHEN d.supply = 'low' THEN 'battery low' ELSE 'mains lost' END")),
    AlarmKind.ON_4G: ("COALESCE(d.link, '') = '4g' AND d.link_since <= ?", "'on 4G'"),
    AlarmKind.CLOCK_UNSYNCED: ("COALESCE(d.clock, '') = 'unsynced'", "'clock unsynced'"),
}

_DEVICE_COLS = ("id, region, town, profile, state, state_since, state_reason, version, link, "
                "link_since, line, supply, clock, hb_s, last_hb, last_hb_at, first_seen, "
                "provisioned_at")
_ALARM_COLS = "id, device, kind, state, detail, count, opened_at, acked_at, closed_at"


def region_prefix(code: str) -> str:
    """alerts.md §3: the 12-digit code without its trailing all-zero groups."""
    for cut in (9, 6, 4, 2):
        if code[cut:].strip("0"):
            break
        code = code[:cut]
    return code


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# ---------------------------------------------------------------------------------- dialects


class _Dialect:
    """What differs between SQLite and PostgreSQL; the SQL itself is shared."""

    name = ""
    pk = ""
    for_update = ""
    transient: tuple[type[BaseException], ...] = ()
    errors: tuple[type[BaseException], ...] = ()

    def connect(self) -> Any:
        raise NotImplementedError

    def begin(self, conn: Any) -> None:
        """Start a write transaction (PostgreSQL starts one implicitly)."""

    def q(self, sql: str) -> str:
        return sql

    def migration_lock(self, cur: Any) -> None:
        """Serialise concurrent migrations of several instances."""

    def insert_each(self, cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Run an `INSERT … ON CONFLICT DO NOTHING` per row: which rows were new."""
        out = []
        for row in rows:
            cur.execute(self.q(sql), row)
            out.append(cur.rowcount == 1)
        return out

    def insert_heartbeats(self, cur: Any, hbs: list[Heartbeat]) -> list[bool]:
        """Store a batch's heartbeats in arrival order; which were new."""
        return self.insert_each(
            cur, "INSERT INTO heartbeats (device, t, up, received_at, body) VALUES (?, ?, ?, ?, "
                 "?) ON CONFLICT DO NOTHING",
            [(h.device, h.t, h.up, h.received_at, _hb_body(h)) for h in hbs])

    def update_from_heartbeats(self, cur: Any, hbs: list[Heartbeat]) -> None:
        """The devices' rows from their latest heartbeat (at most one per device)."""
        if hbs:
            cur.executemany(self.q(_HB_UPDATE), [_hb_row(h) for h in hbs])

    def id_in(self, col: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
        """`col` is one of `ids`: an SQL condition and its parameters."""
        return f"{col} IN ({','.join('?' * len(ids))})", list(ids)

    def describe(self) -> str:
        raise NotImplementedError


class _SQLite(_Dialect):
    name = "sqlite"
    pk = "INTEGER PRIMARY KEY"
    transient = (sqlite3.OperationalError,)
    errors = (sqlite3.Error,)

    def __init__(self, path: str, create: bool) -> None:
        self.path = path
        self.create = create

    def connect(self) -> Any:
        if not self.create and not os.path.exists(self.path):
            raise StoreUnavailable(f"no fleet database at {self.path} "
                                   "(start 'cx fleet serve' or give --db)")
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise StoreUnavailable(f"cannot create the fleet database {self.path}: "
                                   f"no folder {parent}")
        try:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot open the fleet database {self.path}: "
                                   f"{_one_line(e)}") from None
        return conn

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def insert_each(self, cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        # All rows in one executemany (the usual case: none stored before); only when some
        # were (a redelivery) undo it and find out row by row.
        if not rows:
            return []
        conn = cur.connection
        cur.execute("SAVEPOINT insert_each")
        before = conn.total_changes
        cur.executemany(sql, rows)
        if conn.total_changes - before == len(rows):
            cur.execute("RELEASE insert_each")
            return [True] * len(rows)
        cur.execute("ROLLBACK TO insert_each")
        cur.execute("RELEASE insert_each")
        return super().insert_each(cur, sql, rows)

    def describe(self) -> str:
        return self.path


class _Postgres(_Dialect):
    name = "postgresql"
    pk = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._psycopg = psycopg
        # Lost connections, refused connections, deadlocks and serialisation failures are all
        # OperationalError (or InterfaceError on a closed connection): retry.
        self.transient = (psycopg.OperationalError, psycopg.InterfaceError)
        self.errors = (psycopg.Error,)

    def connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, connect_timeout=5, autocommit=False)
        except self._psycopg.Error as e:
            raise StoreUnavailable(f"database {self.describe()} is unreachable: "
                                   f"{_one_line(e)}") from None

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def migration_lock(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(74230001)")

    def id_in(self, col: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
        # One array parameter: one plan whatever the number of ids.
        return f"{col} = ANY(?)", [list(ids)]

    def insert_each(self, cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        if not rows:
            return []
        cur.executemany(self.q(sql + " RETURNING 1"), rows, returning=True)
        out = []
        while True:
            out.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        return out

    def insert_heartbeats(self, cur: Any, hbs: list[Heartbeat]) -> list[bool]:
        """Insert `hbs`; which were new (a repeat of one in the same batch is not)."""
        if not hbs:
            return []
        cur.execute(_PG_HB_INSERT, ([h.device for h in hbs], [h.t for h in hbs], [h.up for h in hbs],
                                    [h.received_at for h in hbs], [_hb_body(h) for h in hbs]))
        inserted = {(d, t, up) for d, t, up in cur.fetchall()}
        out = []
        for h in hbs:
            key = (h.device, h.t, h.up)
            out.append(key in inserted)
            inserted.discard(key)
        return out


    def update_from_heartbeats(self, cur: Any, hbs: list[Heartbeat]) -> None:
        """The devices' rows from their latest heartbeat (at most one per device)."""
        if not hbs:
            return
        cols: list[list[Any]] = [[] for _ in range(11)]
        for h in hbs:
            b, at = h.body, h.received_at
            for col, val in zip(cols, (h.device, b.get("v"), _hb_body(h), at, h.t,
                                       at + OFFLINE_AFTER * h.hb_s, b.get("link"), b.get("line"),
                                       b.get("supply"), b.get("clock"), h.hb_s), strict=True):
                col.append(val)
        cur.execute(_PG_HB_UPDATE, cols)

    def describe(self) -> str:
        # Never print a password that may sit in the URL.
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.url)


def _dialect(url: str, create: bool) -> _Dialect:
    if url.startswith(("postgresql://", "postgres://")):
        return _Postgres(url)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") - 1:]
    elif "://" in url:
        raise StoreError(f"unsupported database {url!r}: give a file path or postgresql://…")
    return _SQLite(url, create)


# ---------------------------------------------------------------------------------- results


@dataclass
class IngestStats:
    heartbeats: int = 0
    duplicates: int = 0
    receipts: int = 0
    states: int = 0
    faults: int = 0
    acks: int = 0
    bad: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0


@dataclass
class SweepStats:
    went_offline: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0


# ---------------------------------------------------------------------------------- store


class Store:
    """The fleet database. `Store.open(url)` connects and migrates; one Store per thread."""

    def __init__(self, dialect: _Dialect, conn: Any, *, on_4g_after: float = ON_4G_AFTER,
                 history_keep: int = HISTORY_KEEP) -> None:
        self._d = dialect
        self._conn = conn
        self.on_4g_after = on_4g_after
        self.history_keep = history_keep
        self._known: set[str] = set()
        self._trim_slack = max(1, history_keep // TRIM_SLACK_DIV)
        self._since_trim: dict[str, int] = {}

    @classmethod
    def open(cls, url: str, *, create: bool = True, on_4g_after: float = ON_4G_AFTER,
             history_keep: int = HISTORY_KEEP) -> Store:
        """Connect and bring the schema up to date. `create=False`: a missing SQLite file is an
        error instead of a new empty database (read-only CLI commands)."""
        dialect = _dialect(url, create)
        store = cls(dialect, dialect.connect(), on_4g_after=on_4g_after,
                    history_keep=history_keep)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._d.name

    @property
    def where(self) -> str:
        """The database, for messages (passwords masked)."""
        return self._d.describe()

    def close(self) -> None:
        with suppress(Exception):
            self._conn.close()

    # ---- plumbing

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        try:
            if write:
                self._d.begin(self._conn)
            cur = self._conn.cursor()
            yield cur
            self._conn.commit()
        except BaseException as e:
            with suppress(Exception):  # the connection may be gone already
                self._conn.rollback()
            if isinstance(e, self._d.transient):
                raise StoreUnavailable(f"database {self.where}: {_one_line(e)}") from e
            if isinstance(e, self._d.errors):
                raise StoreError(f"database {self.where}: {_one_line(e)}") from e
            raise

    def _x(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._d.q(sql), params)
        return cur

    def _many(self, cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            cur.executemany(self._d.q(sql), rows)

    def migrate(self) -> int:
        """Apply the migrations not applied yet; returns the schema version."""
        with self._tx() as cur:
            self._d.migration_lock(cur)
            self._x(cur, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                         "KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            done = {r[0] for r in self._x(cur, "SELECT version FROM schema_migrations")}
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                for sql in statements:
                    self._x(cur, sql.replace("{pk}", self._d.pk))
                self._x(cur, "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (version, name, time.time()))
        return MIGRATIONS[-1][0]

    # ---- registry (`cx fleet provision`)

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
            if not _ID_RE.match(device_id):
                raise StoreError(f"bad device id {device_id!r}: 1..64 of A-Z a-z 0-9 . _ : -")
            if not _REGION_RE.match(region):
                raise StoreError(f"bad region {region!r} for {device_id}: 12 digits")
            checked.append((device_id, region, region[:9], profile, now, DeviceState.NEW.value))
        with self._tx() as cur:
            self._many(cur, "INSERT INTO devices (id, region, town, profile, provisioned_at, "
                            "state) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                            "region = excluded.region, town = excluded.town, "
                            "profile = excluded.profile", checked)
        self._known.update(r[0] for r in checked)
        return len(checked)

    # ---- ingestion (the service's hot path)

    def _unknown(self, cur: Any, ids: set[str]) -> set[str]:
        missing = sorted(ids - self._known)
        if missing:
            marks = ",".join("?" * len(missing))
            self._known.update(r[0] for r in self._x(
                cur, f"SELECT id FROM devices WHERE id IN ({marks})", missing))
        return {i for i in ids if i not in self._known}

    def ingest(self, records: Sequence[Record], now: float | None = None) -> IngestStats:
        """Store one batch of checked messages (in arrival order) in one transaction: history,
        device rows, receipts, fault events, states, counters, and the alarms they open or close.
        Idempotent under redelivery: a heartbeat or receipt already stored changes nothing."""
        now = time.time() if now is None else now
        st = IngestStats()
        with self._tx() as cur:
            ids = {r.device for r in records if not isinstance(r, (Bad, Ignored))}
            unknown = self._unknown(cur, ids)
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
                self._many(cur, "INSERT INTO bad_messages (kind, device, topic, count, last_at) "
                                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, device, topic) DO "
                                "UPDATE SET count = bad_messages.count + excluded.count, "
                                "last_at = excluded.last_at",
                           sorted((k, d, t, n, now) for (k, d, t), n in bad.items()))
            changed = self._apply_device_messages(cur, good, st, now)
            self._apply_receipts(cur, [r for r in good if isinstance(r, ReceiptMsg)], st, now)
            st.acks = sum(1 for r in good if isinstance(r, Ack))
            if changed:
                opened, closed = self._reconcile(cur, now, sorted(changed))
                st.alarms_opened += opened
                st.alarms_closed += closed
        return st

    def _apply_device_messages(self, cur: Any, good: list[Record], st: IngestStats,
                               now: float) -> set[str]:
        """Apply heartbeats, states and faults; returns the devices whose alarm inputs may have
        changed (the only ones `_reconcile` needs to look at; the sweep looks at all)."""
        hbs = [r for r in good if isinstance(r, Heartbeat)]
        new = self._d.insert_heartbeats(cur, hbs)
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
                self._event_alarm(cur, r.device, AlarmKind.STORAGE, r.detail, now, st)
            elif isinstance(r, (State, Fault)):
                per_dev[r.device].append(r)
        if not per_dev:
            return set()
        # Alarm inputs before this batch: a device whose only news is a heartbeat that leaves
        # them as they were needs no reconciliation.
        cond, params = self._d.id_in("id", sorted(per_dev))
        before = {r[0]: r[1:] for r in self._x(
            cur, f"SELECT id, state, state_reason, line, supply, link, clock, link_since FROM "
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
        self._d.update_from_heartbeats(cur, rows)
        for dev in sorted(per_dev):
            for r in per_dev[dev]:
                if isinstance(r, State):
                    st.states += 1
                    if r.online:
                        self._x(cur, _ONLINE_UPDATE, (r.received_at, r.received_at,
                                                      r.received_at, r.device, r.received_at))
                    else:
                        self._x(cur, _OFFLINE_UPDATE, (r.received_at, r.device, r.received_at))
                elif isinstance(r, Fault):
                    st.faults += 1
                    self._x(cur, _FAULT_UPDATES[(r.fault, r.active)], (r.device, r.t))
        self._trim(cur, self._due_for_trim([h.device for h in hbs if id(h) in fresh]))
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

    def _trim(self, cur: Any, devices: list[str]) -> None:
        """Keep the last `history_keep` heartbeats of each of `devices`: one statement for the
        batch on PostgreSQL, one per device on SQLite (no round trips there)."""
        if not devices:
            return
        keep = self.history_keep
        if self._d.name == "postgresql":
            self._x(cur, "DELETE FROM heartbeats h USING (SELECT d.dev, (SELECT seq FROM "
                         "heartbeats WHERE device = d.dev ORDER BY seq DESC OFFSET ? LIMIT 1) "
                         "AS cut FROM unnest(?::text[]) AS d(dev)) c WHERE h.device = c.dev "
                         "AND h.seq <= c.cut", (keep, devices))
            return
        self._many(cur, "DELETE FROM heartbeats WHERE device = ? AND seq < (SELECT MIN(seq) "
                        "FROM (SELECT seq FROM heartbeats WHERE device = ? ORDER BY seq DESC "
                        "LIMIT ?) k)", [(dev, dev, keep) for dev in devices])

    def _apply_receipts(self, cur: Any, receipts: list[ReceiptMsg], st: IngestStats,
                        now: float) -> None:
        new = self._d.insert_each(
            cur, "INSERT INTO receipts (alert, kid, device, status, reason, t, received_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(r.alert or "", r.kid or "", r.device, r.status, r.reason or "", r.t, r.received_at)
             for r in receipts])
        st.receipts = sum(new)
        for r, is_new in zip(receipts, new, strict=True):
            if not is_new or r.status != "rejected":
                continue
            detail = (f"{r.reason or 'rejected'} ("
                      + (f"alert {r.alert}" if r.alert else "alert id not given")
                      + (f", key {r.kid})" if r.kid else ", no key named)"))
            self._event_alarm(cur, r.device, AlarmKind.REJECTED, detail, now, st)

    def _event_alarm(self, cur: Any, device: str, kind: AlarmKind, detail: str, now: float,
                     st: IngestStats) -> None:
        """Open an alarm of an EVENT_KINDS kind, or count one more on the one still open."""
        opened = self._x(cur, "INSERT INTO alarms (device, kind, state, detail, count, "
                              "opened_at) VALUES (?, ?, 'open', ?, 1, ?) ON CONFLICT DO "
                              "NOTHING", (device, kind.value, detail, now))
        if opened.rowcount == 1:
            st.alarms_opened += 1
        else:
            self._x(cur, "UPDATE alarms SET count = count + 1, detail = ? WHERE device = ? "
                         "AND kind = ? AND state <> 'closed'", (detail, device, kind.value))

    def _reconcile(self, cur: Any, now: float, devices: list[str] | None) -> tuple[int, int]:
        """Open the alarms whose condition holds and close those whose condition cleared, for
        `devices` (None: all). Set-based and idempotent: safe from any instance at any time."""
        opened = closed = 0
        flt = ""
        fparams: list[Any] = []
        if devices is not None:
            cond_ids, fparams = self._d.id_in("d.id", devices)
            flt = f" AND {cond_ids}"
        for kind, (cond, detail) in _CONDITIONS.items():
            cparams: list[Any] = [now - self.on_4g_after] if "?" in cond else []
            c = self._x(cur, f"INSERT INTO alarms (device, kind, state, detail, count, opened_at) "
                             f"SELECT d.id, ?, 'open', {detail}, 1, ? FROM devices d WHERE {cond}"
                             f"{flt} AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.device = d.id "
                             f"AND a.kind = ? AND a.state <> 'closed') ON CONFLICT DO NOTHING",
                        [kind.value, now, *cparams, *fparams, kind.value])
            opened += max(c.rowcount, 0)
            c = self._x(cur, f"UPDATE alarms SET state = 'closed', closed_at = ? WHERE kind = ? "
                             f"AND state <> 'closed' AND device IN (SELECT d.id FROM devices d "
                             f"WHERE NOT ({cond}){flt})",
                        [now, kind.value, *cparams, *fparams])
            closed += max(c.rowcount, 0)
            if kind in (AlarmKind.LINE, AlarmKind.POWER, AlarmKind.OFFLINE):
                self._x(cur, f"UPDATE alarms SET detail = (SELECT {detail} FROM devices d WHERE "
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
        with self._tx() as cur:
            c = self._x(cur, "UPDATE devices SET state = 'offline', state_since = ?, "
                             "state_reason = 'silent' WHERE state = 'online' AND due_at < ?",
                        (now, now))
            st.went_offline = max(c.rowcount, 0)
            st.alarms_opened, st.alarms_closed = self._reconcile(cur, now, None)
        return st

    # ---- reading (CLI)

    def device(self, device_id: str) -> Device:
        with self._tx(write=False) as cur:
            row = self._x(cur, f"SELECT {_DEVICE_COLS} FROM devices WHERE id = ?",
                          (device_id,)).fetchone()
            if row is None:
                raise UnknownDevice(device_id)
            kinds = [r[0] for r in self._x(
                cur, "SELECT kind FROM alarms WHERE device = ? AND state <> 'closed' ORDER BY "
                     "kind", (device_id,))]
        return _device(row, kinds)

    def devices(self, region: str | None = None, state: str | None = None) -> list[Device]:
        """Devices whose region starts with `region`, in a state (`online`, `offline`, `new`,
        or `fault`: an active line, power, on_4g or clock alarm), ordered by id."""
        where, params = _region_filter(region)
        with self._tx(write=False) as cur:
            rows = self._x(cur, f"SELECT {_DEVICE_COLS} FROM devices d WHERE 1 = 1{where} "
                                "ORDER BY id", params).fetchall()
            active: dict[str, list[str]] = defaultdict(list)
            for dev, kind in self._x(cur, f"SELECT a.device, a.kind FROM alarms a JOIN devices d "
                                          f"ON d.id = a.device WHERE a.state <> 'closed'{where} "
                                          "ORDER BY a.kind", params):
                active[dev].append(kind)
        out = [_device(r, active.get(r[0], [])) for r in rows]
        if state == "fault":
            return [d for d in out if any(k in FAULT_KINDS for k in d.alarms)]
        if state:
            return [d for d in out if d.state == state]
        return out

    def history(self, device_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The device's latest heartbeats, newest first, each with `received_at`."""
        with self._tx(write=False) as cur:
            rows = self._x(cur, "SELECT body, received_at FROM heartbeats WHERE device = ? "
                                "ORDER BY seq DESC LIMIT ?", (device_id, limit)).fetchall()
        return [{**json.loads(body), "received_at": at} for body, at in rows]

    def history_count(self, device_id: str | None = None) -> int:
        """Heartbeats held (for one device or all)."""
        with self._tx(write=False) as cur:
            if device_id is None:
                return int(self._x(cur, "SELECT COUNT(*) FROM heartbeats").fetchone()[0])
            return int(self._x(cur, "SELECT COUNT(*) FROM heartbeats WHERE device = ?",
                               (device_id,)).fetchone()[0])

    def alarms(self, *, active: bool = False, device: str | None = None,
               kind: str | None = None, limit: int | None = None) -> list[Alarm]:
        """Alarms newest first; `active`: only open or acknowledged ones."""
        sql = f"SELECT {_ALARM_COLS} FROM alarms WHERE 1 = 1"
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
        with self._tx(write=False) as cur:
            return [_alarm(r) for r in self._x(cur, sql, params).fetchall()]

    def ack_alarm(self, alarm_id: int, now: float | None = None) -> Alarm:
        """open → acked. A `rejected` or `storage` alarm (EVENT_KINDS) has no condition that
        clears, so acknowledging it closes it. Acknowledging an acknowledged or closed alarm
        changes nothing."""
        now = time.time() if now is None else now
        ev = tuple(k.value for k in EVENT_KINDS)
        with self._tx() as cur:
            self._x(cur, "UPDATE alarms SET acked_at = ?, state = CASE WHEN kind IN (?, ?) THEN "
                         "'closed' ELSE 'acked' END, closed_at = CASE WHEN kind IN (?, ?) THEN ? "
                         "ELSE closed_at END WHERE id = ? AND state = 'open'",
                    (now, *ev, *ev, now, alarm_id))
            row = self._x(cur, f"SELECT {_ALARM_COLS} FROM alarms WHERE id = ?",
                          (alarm_id,)).fetchone()
        if row is None:
            raise UnknownAlarm(alarm_id)
        return _alarm(row)

    def bad_counts(self) -> list[BadCount]:
        with self._tx(write=False) as cur:
            rows = self._x(cur, "SELECT kind, device, topic, count, last_at FROM bad_messages "
                                "ORDER BY kind, device, topic").fetchall()
        return [BadCount(k, d, t, int(n), at) for k, d, t, n, at in rows]

    def report(self, region: str | None = None) -> Report:
        """Per town: terminals, online, offline, with a fault alarm, on 4G, firmware versions;
        and every bad-message counter."""
        devices = self.devices(region)
        towns: dict[str, list[Device]] = defaultdict(list)
        for d in devices:
            towns[d.town].append(d)
        out = []
        for town in sorted(towns):
            ds = towns[town]
            out.append(TownReport(
                town=town, terminals=len(ds),
                online=sum(d.state == DeviceState.ONLINE for d in ds),
                offline=sum(d.state == DeviceState.OFFLINE for d in ds),
                faults=sum(any(k in FAULT_KINDS for k in d.alarms) for d in ds),
                on_4g=sum(d.link == "4g" and d.state == DeviceState.ONLINE for d in ds),
                versions=dict(sorted(Counter(d.version or "-" for d in ds).items()))))
        return Report(out, self.bad_counts())

    # ---- alert records (`cx alert send`, `cx alert status`)

    def record_alert(self, alert_id: str, kid: str, regions: Sequence[str],
                     published_at: float | None = None) -> list[Target]:
        """Remember an alert as published and resolve its targets from the registry (every
        device whose region is covered by one of `regions`, alerts.md §3). Recording the same
        (id, kid) again keeps the first publish time and adds newly covered devices."""
        published_at = time.time() if published_at is None else published_at
        for code in regions:
            if not _REGION_RE.match(code):
                raise StoreError(f"bad region {code!r}: 12 digits")
        prefixes = sorted({region_prefix(c) for c in regions})
        with self._tx() as cur:
            self._x(cur, "INSERT INTO alerts (id, kid, regions, published_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT DO NOTHING",
                    (alert_id, kid, json.dumps(list(regions)), published_at))
            like = " OR ".join("region LIKE ?" for _ in prefixes)
            rows = self._x(cur, f"SELECT id, region, town FROM devices WHERE {like} ORDER BY id",
                           [p + "%" for p in prefixes]).fetchall()
            self._many(cur, "INSERT INTO alert_targets (alert, kid, device, region) VALUES "
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
        with self._tx(write=False) as cur:
            row = self._x(cur, sql + " ORDER BY a.published_at DESC LIMIT 1", params).fetchone()
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
        with self._tx(write=False) as cur:
            rows = self._x(cur, sql + " ORDER BY t.device", params).fetchall()
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
        with self._tx(write=False) as cur:
            rows = self._x(cur, sql + " ORDER BY seq", params).fetchall()
        return [Receipt(a or None, k or None, d, s, r or None, int(t), at)
                for a, k, d, s, r, t, at in rows]


# ---------------------------------------------------------------------------------- helpers

_HB_UPDATE = (
    "UPDATE devices SET version = COALESCE(CAST(? AS TEXT), version), last_hb = ?, "
    "last_hb_at = ?, last_t = ?, seen_at = ?, due_at = ?, "
    "state_since = CASE WHEN state = 'online' THEN state_since ELSE ? END, "
    "state = 'online', state_reason = NULL, "
    "link_since = CASE WHEN COALESCE(link, '') = COALESCE(CAST(? AS TEXT), link, '') "
    "THEN link_since ELSE ? END, "
    "link = COALESCE(CAST(? AS TEXT), link), line = COALESCE(CAST(? AS TEXT), line), "
    "supply = COALESCE(CAST(? AS TEXT), supply), clock = COALESCE(CAST(? AS TEXT), clock), "
    "hb_s = ?, first_seen = COALESCE(first_seen, ?) "
    "WHERE id = ? AND COALESCE(last_hb_at, 0) <= ?")

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


def _hb_body(h: Heartbeat) -> str:
    """The heartbeat as stored: the checked payload text as received (encoded only when the
    record was built in code)."""
    return h.raw or json.dumps(h.body, separators=(",", ":"))


# PostgreSQL: a batch's heartbeats in one statement each, the rows as arrays (unnest), instead of
# a statement per heartbeat (psycopg's per-row work was most of the writer's time). The same
# rules as the SQLite statements above. %b: arrays sent in binary (the text form escapes every
# quote of the JSON bodies, slower than the statements it replaces).
_PG_HB_INSERT = (
    "INSERT INTO heartbeats (device, t, up, received_at, body) SELECT device, t, up, at, body "
    "FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::float8[], %b::text[]) WITH "
    "ORDINALITY AS u(device, t, up, at, body, n) ORDER BY n ON CONFLICT DO NOTHING "
    "RETURNING device, t, up")
_PG_HB_UPDATE = (
    "UPDATE devices d SET version = COALESCE(u.version, d.version), last_hb = u.body, "
    "last_hb_at = u.at, last_t = u.t, seen_at = u.at, due_at = u.due, "
    "state_since = CASE WHEN d.state = 'online' THEN d.state_since ELSE u.at END, "
    "state = 'online', state_reason = NULL, "
    "link_since = CASE WHEN COALESCE(d.link, '') = COALESCE(u.link, d.link, '') "
    "THEN d.link_since ELSE u.at END, "
    "link = COALESCE(u.link, d.link), line = COALESCE(u.line, d.line), "
    "supply = COALESCE(u.supply, d.supply), clock = COALESCE(u.clock, d.clock), "
    "hb_s = u.hb_s, first_seen = COALESCE(d.first_seen, u.at) "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::float8[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::int[]) "
    "AS u(id, version, body, at, t, due, link, line, supply, clock, hb_s) "
    "WHERE d.id = u.id AND COALESCE(d.last_hb_at, 0) <= u.at")


def _hb_row(h: Heartbeat) -> tuple[Any, ...]:
    b = h.body
    at = h.received_at
    link = b.get("link")
    return (b.get("v"), _hb_body(h), at, h.t, at,
            at + OFFLINE_AFTER * h.hb_s, at, link, at, link, b.get("line"), b.get("supply"),
            b.get("clock"), h.hb_s, at, h.device, at)


def _topic_of(r: Record) -> str:
    if isinstance(r, Heartbeat):
        return "hb"
    if isinstance(r, (State, Ignored)):
        return "state"
    if isinstance(r, Ack):
        return "ack"
    return "event"


def _region_filter(region: str | None) -> tuple[str, list[Any]]:
    if not region:
        return "", []
    if not _PREFIX_RE.match(region):
        raise StoreError(f"bad region prefix {region!r}: up to 12 digits")
    return " AND d.region LIKE ?", [region + "%"]


def _device(row: Sequence[Any], alarms: list[str]) -> Device:
    (did, region, town, profile, state, since, reason, version, link, link_since, line, supply,
     clock, hb_s, last_hb, last_hb_at, first_seen, provisioned_at) = row
    return Device(did, region, town, profile, state, since, reason, version, link, link_since,
                  line, supply, clock, hb_s, json.loads(last_hb) if last_hb else None, last_hb_at,
                  first_seen, provisioned_at, alarms)


def _alarm(row: Sequence[Any]) -> Alarm:
    aid, device, kind, state, detail, count, opened, acked, closed = row
    return Alarm(int(aid), device, kind, state, detail, int(count), opened, acked, closed)
