"""A store transaction: statements in the shared SQL (`?` placeholders) on one cursor, committed
together or not at all; a database error leaves it as StoreUnavailable or StoreError."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from fleet.errors import StoreError, StoreUnavailable
from fleet.store.dialects import Dialect, one_line


class Transaction:
    """What `Store.transaction()` yields: run statements written once for both databases."""

    __slots__ = ("cursor", "dialect")

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the cursor (`fetchone`, `fetchall`, `rowcount`, rows)."""
        self.cursor.execute(self.dialect.q(sql), params)
        return self.cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per row (none: nothing)."""
        if rows:
            self.cursor.executemany(self.dialect.q(sql), rows)


@contextmanager
def transaction(conn: Any, dialect: Dialect, where: str, write: bool = True
                ) -> Iterator[Transaction]:
    """One transaction on `conn`, committed when the block ends, rolled back when it raises.
    `write`: take the write lock at once (SQLite's BEGIN IMMEDIATE)."""
    try:
        if write:
            dialect.begin(conn)
        yield Transaction(conn.cursor(), dialect)
        conn.commit()
    except BaseException as e:
        with suppress(Exception):  # the connection may be gone already
            conn.rollback()
        if isinstance(e, dialect.transient):
            raise StoreUnavailable(f"database {where}: {one_line(e)}") from e
        if isinstance(e, dialect.errors):
            raise StoreError(f"database {where}: {one_line(e)}") from e
        raise
