"""What differs between SQLite and PostgreSQL (connecting, placeholders, batched writes); the
rest of the store's SQL is shared. The only place that knows which database it talks to."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleet.errors import StoreError, StoreUnavailable
from fleet.ingest import Heartbeat
from fleet.store.limits import OFFLINE_AFTER


def one_line(e: BaseException) -> str:
    """A database error for a one-line message."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


class Dialect:
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
            [(h.device, h.t, h.up, h.received_at, hb_body(h)) for h in hbs])

    def update_from_heartbeats(self, cur: Any, hbs: list[Heartbeat]) -> None:
        """The devices' rows from their latest heartbeat (at most one per device)."""
        if hbs:
            cur.executemany(self.q(_HB_UPDATE), [_hb_row(h) for h in hbs])

    def trim(self, cur: Any, devices: list[str], keep: int) -> None:
        """Keep the last `keep` heartbeats of each of `devices` (one statement per device: no
        round trips on SQLite)."""
        cur.executemany(self.q(
            "DELETE FROM heartbeats WHERE device = ? AND seq < (SELECT MIN(seq) FROM (SELECT seq "
            "FROM heartbeats WHERE device = ? ORDER BY seq DESC LIMIT ?) k)"),
            [(dev, dev, keep) for dev in devices])

    def id_in(self, col: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
        """`col` is one of `ids`: an SQL condition and its parameters."""
        return f"{col} IN ({','.join('?' * len(ids))})", list(ids)

    def describe(self) -> str:
        raise NotImplementedError


class SQLite(Dialect):
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
                                   f"{one_line(e)}") from None
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


class Postgres(Dialect):
    name = "postgresql"
    pk = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        import psycopg  # only when a PostgreSQL URL is given: SQLite needs no driver

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
                                   f"{one_line(e)}") from None

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
        cur.execute(_PG_HB_INSERT, ([h.device for h in hbs], [h.t for h in hbs],
                                    [h.up for h in hbs], [h.received_at for h in hbs],
                                    [hb_body(h) for h in hbs]))
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
            for col, val in zip(cols, (h.device, b.get("v"), hb_body(h), at, h.t,
                                       at + OFFLINE_AFTER * h.hb_s, b.get("link"), b.get("line"),
                                       b.get("supply"), b.get("clock"), h.hb_s), strict=True):
                col.append(val)
        cur.execute(_PG_HB_UPDATE, cols)

    def trim(self, cur: Any, devices: list[str], keep: int) -> None:
        """Keep the last `keep` heartbeats of each of `devices`: one statement for the batch."""
        cur.execute(self.q(
            "DELETE FROM heartbeats h USING (SELECT d.dev, (SELECT seq FROM heartbeats WHERE "
            "device = d.dev ORDER BY seq DESC OFFSET ? LIMIT 1) AS cut FROM unnest(?::text[]) "
            "AS d(dev)) c WHERE h.device = c.dev AND h.seq <= c.cut"), (keep, devices))

    def describe(self) -> str:
        # Never print a password that may sit in the URL.
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.url)


def dialect(url: str, create: bool) -> Dialect:
    """The dialect of a database URL: `postgresql://…`, `sqlite:///path` or a file path."""
    if url.startswith(("postgresql://", "postgres://")):
        return Postgres(url)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") - 1:]
    elif "://" in url:
        raise StoreError(f"unsupported database {url!r}: give a file path or postgresql://…")
    return SQLite(url, create)


# ---------------------------------------------------------------------------------- heartbeats

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

# PostgreSQL: a batch's heartbeats in one statement each, the rows as arrays (unnest), instead of
# a statement per heartbeat (psycopg's per-row work was most of the writer's time). The same
# rules as the statement above. %b: arrays sent in binary (the text form escapes every quote of
# the JSON bodies, slower than the statements it replaces).
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


def hb_body(h: Heartbeat) -> str:
    """The heartbeat as stored: the checked payload text as received (encoded only when the
    record was built in code)."""
    return h.raw or json.dumps(h.body, separators=(",", ":"))


def _hb_row(h: Heartbeat) -> tuple[Any, ...]:
    b = h.body
    at = h.received_at
    link = b.get("link")
    return (b.get("v"), hb_body(h), at, h.t, at,
            at + OFFLINE_AFTER * h.hb_s, at, link, at, link, b.get("line"), b.get("supply"),
            b.get("clock"), h.hb_s, at, h.device, at)
