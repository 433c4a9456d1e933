"""Retention: what the fleet store forgets, and when (docs/admin.md "Retention", decisions.md).

- An alert's record (`alerts`, `alert_targets`) goes once it was published more than
  `alerts_days` ago and none of its receipts arrived since then; its receipts go with it. A
  receipt of an alert nobody recorded here (sent by the province, or unreadable) goes when it is
  older than `alerts_days`. So a delivery report is never left with half its receipts, and no
  receipt outlives its alert's record.
- A closed alarm goes `alarms_days` after it closed. Open and acknowledged alarms never go.
- A bad-message counter goes when nothing was counted on it for `bad_days`.
- A daily-broadcast receipt (`daily_receipts`: schedule, programme and live receipts, read by
  `cx broadcast status`) goes `daily_days` after it arrived, each on its own: they are the
  evidence that the morning programme played, worth a season, not the year an alert's is.
- Heartbeat history is already bounded (the last 100 per device, `Store.ingest`).

`prune` is set-based and idempotent, in short transactions of at most `BATCH` rows, so any
number of `cx fleet serve` instances may run it at any time next to ingestion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fleet.errors import StoreError, StoreUnavailable
from fleet.store import Store
from fleet.store.transaction import Transaction

DAY = 86400.0
ALERTS_DAYS = 365.0
"""Alert records and receipts: a year, for the annual review of every warning sent."""
ALARMS_DAYS = 90.0
"""Closed alarms: a season of maintenance history per terminal."""
BAD_DAYS = 90.0
"""Bad-message counters silent that long."""
DAILY_DAYS = 90.0
"""Daily-broadcast receipts: a season of "did the 7 o'clock programme play" per terminal. Not
the year of alerts: no annual review asks for them, and they are the bulk of the store (a
county's 2,200 terminals send ~15,000 a day)."""
BATCH = 5000
"""Rows deleted per transaction: a writer waits at most one such batch for the store."""
SERVE_EVERY = 3600.0
"""Seconds between the runs of `cx fleet serve` (`maybe_prune`)."""
SERVE_BUDGET = 20
"""Batches per table in one run of `maybe_prune`; a backlog (the first run on an old database)
is worked off in the following runs, `BACKLOG_EVERY` apart, never in one long stall."""
BACKLOG_EVERY = 10.0


@dataclass(frozen=True)
class Policy:
    """Ages in days; None keeps that kind forever."""

    alerts_days: float | None = ALERTS_DAYS
    alarms_days: float | None = ALARMS_DAYS
    bad_days: float | None = BAD_DAYS
    daily_days: float | None = DAILY_DAYS

    def __post_init__(self) -> None:
        for name, days in asdict(self).items():
            if days is not None and not days > 0:
                raise ValueError(f"{name}: a number of days above 0, or None to keep forever")


DEFAULT = Policy()


@dataclass
class PruneStats:
    """Rows deleted (or, in a dry run, that would be) per table; `more`: a budget ran out."""

    alerts: int = 0
    alert_targets: int = 0
    receipts: int = 0
    alarms: int = 0
    bad_messages: int = 0
    daily_receipts: int = 0
    dry_run: bool = False
    more: bool = False

    @property
    def total(self) -> int:
        return (self.alerts + self.alert_targets + self.receipts + self.alarms
                + self.bad_messages + self.daily_receipts)

    def tables(self) -> dict[str, int]:
        return {"alerts": self.alerts, "alert_targets": self.alert_targets,
                "receipts": self.receipts, "alarms": self.alarms,
                "bad_messages": self.bad_messages, "daily_receipts": self.daily_receipts}


# An alert record that may go: old, and no receipt of it arrived since the cutoff. `a` is the
# alerts row; two parameters, the cutoff twice.
_OLD_ALERT = ("a.published_at < ? AND NOT EXISTS (SELECT 1 FROM receipts n WHERE n.alert = a.id "
              "AND n.kid = a.kid AND n.received_at >= ?)")
# A receipt with no alert record (sent from elsewhere, or unreadable) that may go: one parameter.
_OLD_ORPHAN = ("r.received_at < ? AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = r.alert "
               "AND a.kid = r.kid)")
_OLD_ALARM = "state = 'closed' AND closed_at < ?"


def prune(store: Store, policy: Policy = DEFAULT, now: float | None = None, *,
          dry_run: bool = False, budget: int | None = None) -> PruneStats:
    """Delete what `policy` lets go as of `now` (or only count it: `dry_run`). `budget`: at most
    that many transactions per table (None: until done); `more` says whether some was left."""
    now = time.time() if now is None else now
    st = PruneStats(dry_run=dry_run)
    if policy.alerts_days is not None:
        cut = now - policy.alerts_days * DAY
        _alerts(store, cut, st, dry_run, budget)
        orphans, more = _batched(
            store, "receipts r", "seq", _OLD_ORPHAN, [cut], dry_run, budget,
            # Receipts arrive in seq order: the old ones lie below the first recent one, and
            # looking only there keeps each batch a primary-key range instead of a table scan.
            bound=("SELECT seq FROM receipts WHERE received_at >= ? ORDER BY seq LIMIT 1",
                   [cut]))
        st.receipts += orphans
        st.more |= more
    if policy.alarms_days is not None:
        st.alarms, more = _batched(store, "alarms a", "id", _OLD_ALARM,
                                   [now - policy.alarms_days * DAY], dry_run, budget)
        st.more |= more
    if policy.bad_days is not None:
        cut = now - policy.bad_days * DAY
        with store.transaction(write=not dry_run) as tx:  # a few hundred rows at most
            if dry_run:
                st.bad_messages = _count(tx, "bad_messages", "last_at < ?", [cut])
            else:
                st.bad_messages = max(0, tx.execute(
                    "DELETE FROM bad_messages WHERE last_at < ?", [cut]).rowcount)
    if policy.daily_days is not None:
        cut = now - policy.daily_days * DAY
        st.daily_receipts, more = _batched(
            store, "daily_receipts r", "seq", "r.received_at < ?", [cut], dry_run, budget,
            bound=("SELECT seq FROM daily_receipts WHERE received_at >= ? ORDER BY seq LIMIT 1",
                   [cut]))  # in seq order too, as receipts: a primary-key range per batch
        st.more |= more
    return st


def _count(tx: Transaction, table: str, cond: str, params: list[Any]) -> int:
    return int(tx.execute(f"SELECT COUNT(*) FROM {table} WHERE {cond}", params).fetchone()[0])


_PER_ALERT = (("alert_targets", "alert = ? AND kid = ?"), ("receipts", "alert = ? AND kid = ?"),
              ("alerts", "id = ? AND kid = ?"))


def _alerts(store: Store, cut: float, st: PruneStats, dry_run: bool, budget: int | None) -> None:
    """Old alert records with their targets and receipts: one alert per transaction (at most
    a county's terminals in targets and a few receipts each), so a report is all or nothing."""
    if dry_run:
        with store.transaction(write=False) as tx:
            old = tx.execute(f"SELECT a.id, a.kid FROM alerts a WHERE {_OLD_ALERT}",
                             [cut, cut]).fetchall()
            for alert, kid in old:
                for table, cond in _PER_ALERT:
                    n = _count(tx, table, cond, [alert, kid])
                    setattr(st, table, getattr(st, table) + n)
        return
    rounds = 0
    while True:
        if budget is not None and rounds >= budget:
            with store.transaction(write=False) as tx:
                st.more |= tx.execute(f"SELECT 1 FROM alerts a WHERE {_OLD_ALERT} LIMIT 1",
                                      [cut, cut]).fetchone() is not None
            return
        rounds += 1
        with store.transaction() as tx:
            row = tx.execute(f"SELECT a.id, a.kid FROM alerts a WHERE {_OLD_ALERT} "
                             f"ORDER BY a.published_at LIMIT 1", [cut, cut]).fetchone()
            if row is None:
                return
            for table, cond in _PER_ALERT:
                n = max(0, tx.execute(f"DELETE FROM {table} WHERE {cond}", row).rowcount)
                setattr(st, table, getattr(st, table) + n)


def _batched(store: Store, table: str, key: str, cond: str, params: list[Any], dry_run: bool,
             budget: int | None, bound: tuple[str, list[Any]] | None = None) -> tuple[int, bool]:
    """Delete the rows of `table` ("name alias") matching `cond`, `BATCH` at a time by primary
    key `key`, each batch its own transaction; in a dry run count them. Returns (rows, whether
    some are left). `bound`: a query for the first key that cannot match (every older row lies
    below it)."""
    name, alias = table.split()
    rows = rounds = 0
    while True:
        with store.transaction(write=not dry_run) as tx:
            where, args = cond, list(params)
            if bound is not None:
                first = tx.execute(bound[0], bound[1]).fetchone()
                if first is not None:
                    where, args = f"{alias}.{key} < ? AND {cond}", [first[0], *params]
            if dry_run:
                return _count(tx, table, where, args), False
            n = max(0, tx.execute(
                f"DELETE FROM {name} WHERE {key} IN (SELECT {alias}.{key} FROM {table} "
                f"WHERE {where} ORDER BY {alias}.{key} LIMIT ?)", [*args, BATCH]).rowcount)
        rows += n
        rounds += 1
        if n < BATCH:
            return rows, False
        if budget is not None and rounds >= budget:
            return rows, True


# ---------------------------------------------------------------------------------- serve

@dataclass
class Schedule:
    """What `cx fleet serve` applies (`configure`): the policy (None: never prune) and how often."""

    policy: Policy | None = DEFAULT
    every: float = SERVE_EVERY


SERVE = Schedule()
_next_run: dict[str, float] = {}  # per database: the monotonic time of its next run


def configure(policy: Policy | None, every: float = SERVE_EVERY) -> None:
    """Set what `maybe_prune` applies (`cx fleet serve --keep-* / --prune-every`)."""
    SERVE.policy, SERVE.every = policy, every


def maybe_prune(store: Store, log: Callable[[str], Any] | None = None) -> PruneStats | None:
    """The hook of `cx fleet serve`'s loop: prune with the configured policy at most once per
    `SERVE.every` seconds per database and `SERVE_BUDGET` transactions per table, so ingestion
    never waits long; a run that left a backlog comes back after `BACKLOG_EVERY` seconds. Logs a
    line when it deleted something. A StoreUnavailable propagates (the service reconnects); any
    other StoreError is logged and tried again at the next run."""
    policy, every = SERVE.policy, SERVE.every
    if policy is None:
        return None
    mono = time.monotonic()
    if mono < _next_run.get(store.where, 0.0):
        return None
    _next_run[store.where] = mono + every
    try:
        st = prune(store, policy, budget=SERVE_BUDGET)
    except StoreUnavailable:
        raise
    except StoreError as e:
        if log is not None:
            log(f"retention: {e}; trying again in {every:g} s")
        return None
    if st.more:
        _next_run[store.where] = mono + BACKLOG_EVERY
    if st.total and log is not None:
        log("retention: deleted " + ", ".join(f"{n} {t}" for t, n in st.tables().items() if n)
            + (" (more to go)" if st.more else ""))
    return st
