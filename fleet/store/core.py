"""The store's connection: open (and migrate), close, transactions; what every part of `Store`
(registry, ingestion, alarms, reports, alert records) builds on."""

from __future__ import annotations

from contextlib import AbstractContextManager, suppress
from typing import Any, Self

from fleet.store import schema
from fleet.store.dialects import Dialect, dialect
from fleet.store.limits import HISTORY_KEEP, ON_4G_AFTER, TRIM_SLACK_DIV
from fleet.store.transaction import Transaction, transaction


class Core:
    """The fleet database. `Store.open(url)` connects and migrates; one Store per thread."""

    def __init__(self, dialect: Dialect, conn: Any, *, on_4g_after: float = ON_4G_AFTER,
                 history_keep: int = HISTORY_KEEP) -> None:
        self._d = dialect
        self._conn = conn
        self.on_4g_after = on_4g_after
        self.history_keep = history_keep
        self._known: set[str] = set()  # device ids known to be registered
        self._trim_slack = max(1, history_keep // TRIM_SLACK_DIV)
        self._since_trim: dict[str, int] = {}

    @classmethod
    def open(cls, url: str, *, create: bool = True, on_4g_after: float = ON_4G_AFTER,
             history_keep: int = HISTORY_KEEP) -> Self:
        """Connect and bring the schema up to date. `create=False`: a missing SQLite file is an
        error instead of a new empty database (read-only CLI commands)."""
        d = dialect(url, create)
        store = cls(d, d.connect(), on_4g_after=on_4g_after, history_keep=history_keep)
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

    def transaction(self, write: bool = True) -> AbstractContextManager[Transaction]:
        """`with store.transaction() as tx: tx.execute(sql, params)`: statements in the shared
        SQL, committed together; `write=False` for reading only."""
        return transaction(self._conn, self._d, self.where, write)

    def migrate(self) -> int:
        """Apply the migrations not applied yet; returns the schema version."""
        with self.transaction() as tx:
            return schema.migrate(tx)
