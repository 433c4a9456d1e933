"""`cx fleet serve`: MQTT ingestion into the store, alarm rules, the periodic offline sweep.

Two processes, so that receiving never waits for the database nor for the interpreter lock the
writer holds while it parses and stores:

- the receiver (this process): paho's network thread only queues what arrives; the broker
  thread connects (and after a failure or a lost connection connects again, with backoff, saying
  so in the log); the forwarding thread (the caller of `run`) cuts the queue into batches and
  sends them to the writer down a pipe; the reply thread takes the writer's "stored" replies and
  only then acknowledges the batch's QoS 1 messages (manual acknowledgement). A batch stays here
  until it is stored, so a writer that dies is restarted and given the batches it had not
  confirmed again.
- the writer (a child process, fleet/writer.py): parses, stores each batch in one transaction,
  commits, replies; sweeps for silent devices; prunes old records (fleet/store/retention.py). If
  the database is unreachable it keeps the batch and retries with backoff; nothing is confirmed,
  so nothing is acknowledged, and the broker holds the unacknowledged rest of the session.

The two talk through a pipe in the messages of fleet/pipe.py; retries back off as fleet/retry.py
says.

State lives in the database: any number of instances share the load through `$share/fleet/…`
and all of them may sweep.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet import pipe, retry, writer
from fleet.command import CHECK_CRED, NOT_AUTHORIZED, BrokerAuth
from fleet.store import ON_4G_AFTER, retention

SHARE_GROUP = "fleet"
TOPICS = tuple(f"$share/{SHARE_GROUP}/eb/dev/+/{kind}" for kind in ("hb", "state", "event", "ack"))
BATCH_SIZE = 200
"""Messages the receiver sends the writer at once at most."""
BATCH_WAIT = 0.05
"""Seconds a batch waits to fill before it is sent anyway."""
MAX_INFLIGHT = 16
"""Batches sent to the writer and not yet confirmed; beyond this the receiver holds the rest."""
SWEEP_EVERY = 2.0
"""Seconds between offline/on_4g sweeps (each instance; the sweep is idempotent)."""
MAX_PENDING = 200_000
"""Messages held in memory while the database is down; beyond this, QoS 0 heartbeats are
dropped (and counted) — QoS 1 messages are never dropped, the broker bounds them per session."""
KEEPALIVE = 30
"""Seconds of the MQTT keep-alive; also how long a broker that accepted the TCP connection may
take to answer the MQTT login before the attempt counts as failed (paho)."""
STOP_WAIT = 30.0
"""Seconds a stopping service waits for the writer to store what had arrived."""

_ctx = mp.get_context("spawn")  # never fork a process that runs paho's thread


def default_instance() -> str:
    return socket.gethostname() or "fleet"


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
    writer_restarts: int = 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# An item as queued by paho's thread: (connection generation, mid, qos, topic, payload, time).
_Item = tuple[int, int, int, str, bytes | bytearray, float]


@dataclass
class _Batch:
    n: int
    items: list[_Item]


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
        self._q: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._gen = 0
        self.connected = threading.Event()
        # Batches sent to the writer, not confirmed yet (in order), and their lock.
        self._inflight: dict[int, _Batch] = {}
        self._cv = threading.Condition()
        self._next_n = 0
        self._writer: Any = None
        self._conn: Connection | None = None
        self._writer_gone = threading.Event()
        self._writer_stopped = threading.Event()
        # paho does not reconnect by itself: the broker thread does, to log each failure with
        # its reason and to back off with jitter.
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"cx-fleet-{self.instance}",
                                   clean_session=False, manual_ack=True,
                                   reconnect_on_failure=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        if auth is not None:
            auth.apply(self._client)
        self._was_connected = False
        self._outage = retry.Outage(self.log)
        self._failure: str | None = None  # why this connection was not accepted (paho thread)
        self._lost: str | None = None  # why this connection, once accepted, ended (paho thread)
        self._connected_at = 0.0
        self._ended = threading.Event()  # this connection is over (or the service stops)
        self._closing = threading.Event()
        self._broker: threading.Thread | None = None

    @property
    def where(self) -> str:
        """The broker's address as the log writes it: HOST:PORT ([HOST]:PORT for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def log(self, text: str) -> None:
        self._log_fn(f"cx fleet serve [{self.instance}]: {text}")

    # ---- paho thread: queue only

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:  # the broker thread logs it with the retry (the broker hangs up)
            if rc.value in NOT_AUTHORIZED:
                user = f"user {client.username}" if client.username else "no user"
                self._failure = (f"broker {self.where} refused the login ({user}): {rc}; "
                                 f"{CHECK_CRED}")
            else:
                self._failure = f"broker {self.where} refused the connection: {rc}"
            return
        self._gen += 1
        client.subscribe([(t, 1) for t in TOPICS])
        self._was_connected = True
        self._connected_at = time.monotonic()
        self.connected.set()
        self.log(f"connected to broker {self.where} "
                 f"(session {'kept' if flags.session_present else 'new'}){self._outage.ended()}")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if self._was_connected:
            # paho names a connection that simply closed (EOF, reset) "Unspecified error"
            self._lost = "closed by the broker or the network" if rc == 128 else str(rc)
        elif self._failure is None and rc == 141:  # "Keep alive timeout": nothing came back
            self._failure = (f"broker {self.where} accepted the connection but did not answer "
                             f"the MQTT login within {KEEPALIVE} s")
        elif self._failure is None:
            why = "a TLS listener? then give --cafile" if rc == 128 else str(rc)
            self._failure = (f"broker {self.where} closed the connection before answering the "
                             f"login ({why})")
        self._was_connected = False
        self._ended.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.totals.received += 1
        if msg.qos == 0 and self._q.qsize() >= MAX_PENDING:
            self.totals.dropped += 1
            return
        self._q.put((self._gen, msg.mid, msg.qos, msg.topic, msg.payload, time.time()))

    # ---- forwarding thread

    def run(self, stop: threading.Event) -> None:
        """Start the writer, connect (retrying broker and database), store and acknowledge
        until `stop`."""
        self._start_writer(resend=False)
        self._broker = threading.Thread(target=self._broker_main, name="cx-fleet-broker",
                                        daemon=True)
        self._broker.start()
        try:
            while not stop.is_set():
                if self._writer_gone.is_set():
                    self._restart_writer(stop)
                    continue
                with self._cv:
                    if len(self._inflight) >= MAX_INFLIGHT:
                        self._cv.wait(0.2)
                        continue
                items = self._take(0.2)
                if items:
                    self._send(items)
            self._finish()
        finally:
            self._closing.set()
            self._ended.set()
            # (a connection attempt in progress ends within paho's connect timeout)
            self._broker.join(2 * self._client.connect_timeout + 5)
            self._end_writer()

    # ---- broker thread

    def _broker_main(self) -> None:
        """Connect; let paho's thread run the connection until it ends; log why it failed or
        ended and connect again after `backoff`; until the service stops."""
        client, outage = self._client, self._outage
        flaps = 0  # connections in a row lost within the last BACKOFF step of being made
        while not self._closing.is_set():
            self._ended.clear()
            self._failure = self._lost = None
            try:
                client.connect(self.host, self.port, keepalive=KEEPALIVE)
            except (OSError, ValueError) as e:  # refused, unreachable, DNS, TLS, bad host name
                self._failure = f"cannot reach broker {self.where}: {retry.why(e)}"
            else:
                client.loop_start()
                while not self._ended.wait(0.5) and not self._closing.is_set():
                    pass
                if self._closing.is_set():
                    break
                client.loop_stop()
            if self._lost is not None:
                # A connection that keeps being dropped soon after it was made (another
                # instance with this client id, a broker limit) backs off like a failure.
                held = time.monotonic() - self._connected_at
                flaps = flaps + 1 if held < retry.BACKOFF[-1] else 0
                wait = retry.backoff(flaps - 1 if flaps else 0)
                self.log(f"lost the connection to broker {self.where} after {retry.span(held)} "
                         f"({self._lost}); reconnecting in {wait:.1f} s")
            else:
                wait = retry.backoff(outage.attempts)
                outage.failed(self._failure or f"broker {self.where}: no connection", wait)
            self._closing.wait(wait)
        self._was_connected = False  # our own DISCONNECT is not "lost the connection"
        client.disconnect()
        client.loop_stop()

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

    def _send(self, items: list[_Item]) -> None:
        with self._cv:
            self._next_n += 1
            b = _Batch(self._next_n, items)
            self._inflight[b.n] = b
        self._post(_batch_msg(b))

    def _post(self, msg: pipe.Message) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send(msg)
        except (OSError, ValueError):
            self._writer_gone.set()  # the reply thread says why; the batch stays in flight

    def _finish(self) -> None:
        """Stopping: hand the writer what already arrived, let it store and confirm, then let
        it go. What it cannot store in time stays with the broker (not acknowledged)."""
        leftovers = self._take(0.0, everything=True)
        for k in range(0, len(leftovers), self.batch_size):
            self._send(leftovers[k:k + self.batch_size])
        self._post(pipe.stop())
        deadline = time.monotonic() + STOP_WAIT
        while (not self._writer_stopped.is_set() and not self._writer_gone.is_set()
               and time.monotonic() < deadline):
            self._writer_stopped.wait(0.1)
        with self._cv:
            left = sum(len(b.items) for b in self._inflight.values())
        if left:
            self.log(f"{left} messages not stored; they stay with the broker (not acknowledged)")

    # ---- the writer process and the reply thread

    def _start_writer(self, resend: bool) -> None:
        here, there = _ctx.Pipe(duplex=True)
        self._writer = _ctx.Process(
            target=writer.main, name=f"cx-fleet-writer-{self.instance}", daemon=True,
            args=(there, self.db, self.instance, self.sweep_every, self.on_4g_after,
                  retention.SERVE))
        self._writer.start()
        there.close()
        self._conn = here
        self._writer_gone.clear()
        self._writer_stopped.clear()
        threading.Thread(target=self._replies, args=(here,), name="cx-fleet-replies",
                         daemon=True).start()
        if resend:
            with self._cv:
                again = [self._inflight[n] for n in sorted(self._inflight)]
            for b in again:
                self._post(_batch_msg(b))

    def _restart_writer(self, stop: threading.Event) -> None:
        self._end_writer()
        self.totals.writer_restarts += 1
        with self._cv:
            held = sum(len(b.items) for b in self._inflight.values())
        code = self._writer.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else \
            f"ended (exit code {code})"
        self.log(f"the writer process {how}; restarting it with the {held} messages it had not "
                 f"stored")
        stop.wait(retry.backoff(self.totals.writer_restarts - 1))
        if not stop.is_set():
            self._start_writer(resend=True)

    def _end_writer(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._writer is not None:
            self._writer.join(5)
            if self._writer.is_alive():
                self._writer.kill()
                self._writer.join()

    def _replies(self, conn: Connection) -> None:
        try:
            while True:
                msg = conn.recv()
                kind = msg[0]
                if kind is pipe.Kind.STORED:
                    self._stored(msg[1], msg[2])
                elif kind is pipe.Kind.SWEEP:
                    t = self.totals
                    t.went_offline += msg[1]
                    t.alarms_opened += msg[2]
                    t.alarms_closed += msg[3]
                elif kind is pipe.Kind.LOG:
                    self.log(msg[1])
                elif kind is pipe.Kind.STOPPED:
                    self._writer_stopped.set()
                    return
        except (EOFError, OSError):
            # (a reply thread of a writer already replaced says nothing about the new one)
            if conn is self._conn and not self._writer_stopped.is_set():
                self._writer_gone.set()

    def _stored(self, ns: list[int], st: dict[str, int]) -> None:
        # An acknowledgement belongs to the connection the message came on: after a reconnect
        # the broker redelivers those (stored already: the store ignores the duplicate). None
        # while that connection is down: between connections this thread would write it itself,
        # onto the socket the broker thread may be connecting.
        gen = self._gen if self.connected.is_set() else -1
        t = self.totals
        with self._cv:
            done = [self._inflight.pop(n) for n in ns if n in self._inflight]
            self._cv.notify_all()
        for b in done:
            for g, mid, qos, *_ in b.items:
                if qos > 0 and g == gen:
                    self._client.ack(mid, qos)
                    t.acked += 1
            t.stored += len(b.items)
        t.heartbeats += st["heartbeats"]
        t.duplicates += st["duplicates"]
        t.receipts += st["receipts"]
        t.bad += st["bad"]
        t.alarms_opened += st["alarms_opened"]
        t.alarms_closed += st["alarms_closed"]


def _batch_msg(b: _Batch) -> pipe.Message:
    """What the writer gets: the batch number, (topic, payload, received_at) of each message,
    and whether any of them waits for an acknowledgement."""
    return pipe.batch(b.n, [(i[3], i[4], i[5]) for i in b.items], any(i[2] for i in b.items))
