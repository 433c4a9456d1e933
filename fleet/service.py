"""`cx fleet serve`: MQTT ingestion into the store, alarm rules, the periodic offline sweep.

Threads: paho's network loop only queues what arrives; one writer thread (the caller of `run`)
parses, stores a batch in one transaction, commits, and only then acknowledges the batch's
QoS 1 messages (manual acknowledgement), so nothing is acknowledged that is not stored. If the
database is unreachable the batch is kept and retried with backoff while the broker holds the
unacknowledged rest of the session. State lives in the database: any number of instances share
the load through `$share/fleet/…` and all of them may sweep.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.command import BrokerAuth
from fleet.errors import StoreError, StoreUnavailable
from fleet.ingest import Bad, parse
from fleet.model import BadKind
from fleet.store import ON_4G_AFTER, IngestStats, Store

SHARE_GROUP = "fleet"
TOPICS = tuple(f"$share/{SHARE_GROUP}/eb/dev/+/{kind}" for kind in ("hb", "state", "event", "ack"))
BATCH_SIZE = 200
"""Messages per transaction at most: one commit and one round of acknowledgements each."""
BATCH_WAIT = 0.05
"""Seconds a batch waits to fill before it is stored anyway."""
SWEEP_EVERY = 2.0
"""Seconds between offline/on_4g sweeps (each instance; the sweep is idempotent)."""
MAX_PENDING = 200_000
"""Messages held in memory while the database is down; beyond this, QoS 0 heartbeats are
dropped (and counted) — QoS 1 messages are never dropped, the broker bounds them per session."""
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds between database reconnection attempts."""


def default_instance() -> str:
    return socket.gethostname() or "fleet"


@dataclass
class _Item:
    gen: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float


@dataclass
class Totals:
    """What one instance did since it started."""

    received: int = 0
    stored: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    receipts: int = 0
    bad: int = 0
    acked: int = 0
    dropped: int = 0
    alarms_opened: int = 0
    alarms_closed: int = 0
    went_offline: int = 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Service:
    """One ingestion instance. `run(stop)` blocks until `stop` is set."""

    def __init__(self, db: str, host: str, port: int, *, instance: str | None = None,
                 batch_size: int = BATCH_SIZE, batch_wait: float = BATCH_WAIT,
                 sweep_every: float = SWEEP_EVERY, on_4g_after: float = ON_4G_AFTER,
                 auth: BrokerAuth | None = None, log: Callable[[str], None] = _stderr) -> None:
        self.db = db
        self.host, self.port = host, port
        self.instance = instance or default_instance()
        self.batch_size, self.batch_wait = batch_size, batch_wait
        self.sweep_every, self.on_4g_after = sweep_every, on_4g_after
        self._log_fn = log
        self.totals = Totals()
        self._q: queue.Queue[_Item] = queue.Queue()
        self._gen = 0
        self._gen_lock = threading.Lock()
        self.connected = threading.Event()
        self.db_ready = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"cx-fleet-{self.instance}",
                                   clean_session=False, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 10)
        if auth is not None:
            auth.apply(self._client)
        self._was_connected = False

    def log(self, text: str) -> None:
        self._log_fn(f"cx fleet serve [{self.instance}]: {text}")

    # ---- paho thread: queue only

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.log(f"broker {self.host}:{self.port} refused the connection: {rc}")
            return
        with self._gen_lock:
            self._gen += 1
        client.subscribe([(t, 1) for t in TOPICS])
        self._was_connected = True
        self.connected.set()
        self.log(f"connected to broker {self.host}:{self.port} "
                 f"(session {'kept' if flags.session_present else 'new'})")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if self._was_connected:
            self.log(f"lost the broker ({rc}); reconnecting")
        self._was_connected = False

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.totals.received += 1
        if msg.qos == 0 and self._q.qsize() >= MAX_PENDING:
            self.totals.dropped += 1
            return
        self._q.put(_Item(self._gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time()))

    # ---- writer thread

    def run(self, stop: threading.Event) -> None:
        """Connect (retrying broker and database), store and acknowledge until `stop`."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        store: Store | None = None
        pending: list[_Item] = []
        attempt = 0
        next_sweep = 0.0
        try:
            while not stop.is_set():
                if store is None:
                    store = self._open_store(attempt)
                    if store is None:
                        stop.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                        attempt += 1
                        continue
                    attempt = 0
                if not pending:
                    pending = self._take(min(0.5, max(0.0, next_sweep - time.monotonic())))
                try:
                    if pending:
                        self._store(store, pending)
                        pending = []
                    if time.monotonic() >= next_sweep:
                        sw = store.sweep()
                        self.totals.went_offline += sw.went_offline
                        self.totals.alarms_opened += sw.alarms_opened
                        self.totals.alarms_closed += sw.alarms_closed
                        next_sweep = time.monotonic() + self.sweep_every
                except StoreUnavailable as e:
                    self.log(f"{e}; {len(pending)} messages held, not acknowledged; reconnecting")
                    self.db_ready.clear()
                    store.close()
                    store = None
            if store is not None:
                # Store what already arrived before leaving; the rest stays with the broker.
                try:
                    leftovers = pending + self._take(0.0, everything=True)
                    if leftovers:
                        self._store(store, leftovers)
                except StoreError as e:
                    self.log(f"{e}; unacknowledged messages stay with the broker")
        finally:
            self._was_connected = False  # our own DISCONNECT is not "lost the broker"
            self._client.disconnect()
            self._client.loop_stop()
            if store is not None:
                store.close()

    def _open_store(self, attempt: int) -> Store | None:
        try:
            store = Store.open(self.db, on_4g_after=self.on_4g_after)
        except StoreError as e:
            wait = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            self.log(f"{e}; retrying in {wait:g} s")
            return None
        self.log(f"storing into {store.backend} {store.where}")
        self.db_ready.set()
        return store

    def _take(self, first_wait: float, everything: bool = False) -> list[_Item]:
        """The next batch: wait up to `first_wait` for a first message, then up to `batch_wait`
        for the batch to fill."""
        batch: list[_Item] = []
        try:
            batch.append(self._q.get(timeout=first_wait) if first_wait > 0 else
                         self._q.get_nowait())
        except queue.Empty:
            return batch
        deadline = time.monotonic() + self.batch_wait
        limit = sys.maxsize if everything else self.batch_size
        while len(batch) < limit:
            try:
                left = deadline - time.monotonic()
                batch.append(self._q.get(timeout=left) if left > 0 and not everything else
                             self._q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _store(self, store: Store, items: list[_Item]) -> None:
        records = [parse(i.topic, i.payload, i.received_at) for i in items]
        try:
            st = store.ingest(records)
        except StoreUnavailable:
            raise
        except StoreError as e:
            # Something in this batch the database refuses: store one by one, and count the
            # message that cannot be stored as bad instead of blocking the stream on it.
            self.log(f"{e}; storing the batch one by one")
            st = IngestStats()
            for n, rec in enumerate(records):
                try:
                    one = store.ingest([rec])
                except StoreUnavailable:
                    raise
                except StoreError:
                    one = store.ingest([Bad(BadKind.WRONG_TYPES, getattr(rec, "device", ""),
                                            items[n].topic.split("/")[-1], items[n].received_at)])
                _add(st, one)
        self._ack(items)
        t = self.totals
        t.stored += len(items)
        t.heartbeats += st.heartbeats
        t.duplicates += st.duplicates
        t.receipts += st.receipts
        t.bad += st.bad
        t.alarms_opened += st.alarms_opened
        t.alarms_closed += st.alarms_closed

    def _ack(self, items: list[_Item]) -> None:
        # An acknowledgement belongs to the connection the message came on: after a reconnect
        # the broker redelivers those (stored already: the store ignores the duplicate).
        gen = self._gen
        for i in items:
            if i.qos > 0 and i.gen == gen:
                self._client.ack(i.mid, i.qos)
                self.totals.acked += 1


def _add(total: IngestStats, one: IngestStats) -> None:
    for name in vars(total):
        setattr(total, name, getattr(total, name) + getattr(one, name))

