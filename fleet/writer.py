"""The writer process of `cx fleet serve`: parses what the receiver (fleet/service.py) sends down
the pipe (fleet/pipe.py), stores each batch in one transaction, commits and replies; sweeps for
silent devices; prunes old records (fleet/store/retention.py). If the database is unreachable it
keeps the batches and retries with backoff; nothing is confirmed, so nothing is acknowledged.
"""

from __future__ import annotations

import signal
import time
from dataclasses import fields
from multiprocessing.connection import Connection

from fleet import pipe, retry
from fleet.errors import StoreError, StoreUnavailable
from fleet.ingest import Bad, parse
from fleet.model import BadKind
from fleet.store import IngestStats, Store, retention

TX_MAX = 1000
"""Messages the writer stores in one transaction at most: batches that queued up while it was
busy are stored together (fewer commits under load, the same 50 ms batches when quiet)."""
TX_MAX_ACKED = 200
"""The same for transactions holding QoS 1 messages: the broker sends a subscriber only so many
unacknowledged ones (max_inflight_messages), so their acknowledgements must not wait for a big
transaction or the receiver starves."""

Pending = list[tuple[int, list[pipe.Entry], bool]]
"""Batches the writer holds: (batch number, [(topic, payload, received_at)], acked)."""


class Writer:
    """The writer process's loop (see the module docstring)."""

    def __init__(self, conn: Connection, db: str, instance: str, sweep_every: float,
                 on_4g_after: float) -> None:
        self.conn, self.db, self.instance = conn, db, instance
        self.sweep_every, self.on_4g_after = sweep_every, on_4g_after
        self.store: Store | None = None
        self.stopping = False

    def log(self, text: str) -> None:
        self.conn.send(pipe.log(text))

    def run(self) -> None:
        pending: Pending = []
        attempt = 0
        next_sweep = 0.0
        while True:
            if self.store is None:
                wait = retry.backoff(attempt)
                self.store = self._open(wait)
                if self.store is None:
                    if self.stopping:
                        return  # the database is away: the receiver keeps the batches
                    until = time.monotonic() + wait
                    attempt += 1
                    while not self.stopping and time.monotonic() < until:
                        self._read(pending, until - time.monotonic())
                    continue
                attempt = 0
            store = self.store
            if not pending:
                if self.stopping:
                    return
                self._read(pending, max(0.0, next_sweep - time.monotonic()))
            try:
                while pending:
                    k, n, limit = 0, 0, TX_MAX
                    while k < len(pending) and n < limit:
                        n += len(pending[k][1])
                        if pending[k][2]:
                            limit = TX_MAX_ACKED
                        k += 1
                    self._store(store, pending[:k])
                    del pending[:k]
                    self._read(pending, 0)
                if time.monotonic() >= next_sweep and not self.stopping:
                    sw = store.sweep()
                    if sw.went_offline or sw.alarms_opened or sw.alarms_closed:
                        self.conn.send(pipe.sweep(sw.went_offline, sw.alarms_opened,
                                                  sw.alarms_closed))
                    next_sweep = time.monotonic() + self.sweep_every
                    retention.maybe_prune(store, self.log)
            except StoreUnavailable as e:
                held = sum(len(p[1]) for p in pending)
                self.log(f"{e}; {held} messages held, not acknowledged; reconnecting")
                store.close()
                self.store = None

    def _open(self, wait: float) -> Store | None:
        try:
            store = Store.open(self.db, on_4g_after=self.on_4g_after)
        except StoreError as e:
            self.log(f"{e}; retrying in {wait:.1f} s")
            return None
        self.log(f"storing into {store.backend} {store.where}")
        return store

    def _read(self, pending: Pending, wait: float) -> None:
        """Add what the receiver sent to `pending`: wait up to `wait` for a first message, then
        take all that is queued (the receiver bounds it: MAX_INFLIGHT batches)."""
        timeout: float | None = max(0.0, wait)
        while not self.stopping and self.conn.poll(timeout):
            timeout = 0
            msg = self.conn.recv()
            if msg[0] is pipe.Kind.STOP:
                self.stopping = True
            else:
                pending.append((msg[1], msg[2], msg[3]))

    def _store(self, store: Store, pending: Pending) -> None:
        flat = [m for p in pending for m in p[1]]
        records = [parse(topic, payload, t) for topic, payload, t in flat]
        try:
            st = store.ingest(records)
        except StoreUnavailable:
            raise
        except StoreError as e:
            # Something in this batch the database refuses: store one by one, and count the
            # message that cannot be stored as bad instead of blocking the stream on it.
            self.log(f"{e}; storing the batch one by one")
            st = IngestStats()
            for rec, (topic, _p, t) in zip(records, flat, strict=True):
                try:
                    one = store.ingest([rec])
                except StoreUnavailable:
                    raise
                except StoreError:
                    one = store.ingest([Bad(BadKind.WRONG_TYPES, getattr(rec, "device", ""),
                                                 topic.split("/")[-1], t)])
                _add(st, one)
        self.conn.send(pipe.stored([p[0] for p in pending],
                                   {f.name: getattr(st, f.name) for f in fields(st)}))


def main(conn: Connection, db: str, instance: str, sweep_every: float,
         on_4g_after: float, prune: retention.Schedule) -> None:
    """The writer process (started by the receiver, `Service`)."""
    # Ctrl-C and SIGTERM go to the receiver, which stops the writer in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    retention.configure(prune.policy, prune.every)  # a new process: as `cx fleet serve` set it
    w = Writer(conn, db, instance, sweep_every, on_4g_after)
    try:
        w.run()
        conn.send(pipe.stopped())
    except (EOFError, OSError):
        pass  # the receiver is gone: what was not confirmed is not acknowledged either
    finally:
        if w.store is not None:
            w.store.close()


def _add(total: IngestStats, one: IngestStats) -> None:
    for name in vars(total):
        setattr(total, name, getattr(total, name) + getattr(one, name))
