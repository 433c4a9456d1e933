# MQTT 3.1.1 over any asyncio stream (IP or 4G): reconnect, keep-alive, offline queue (alerts.md §6).
import asyncio
from time import ticks_diff, ticks_ms

from backoff import Backoff
from micropython import const
from mqttwire import (
    CONNACK,
    CONNACK_REASON,
    DISCONNECT,
    PING,
    TOPIC_MAX,
    WRITE_MS,
    MQTTError,
    Wire,
    connect_packet,
)

# Pending QoS 1 message states.
_QUEUED = const(0)
_RESEND = const(1)  # sent on an earlier connection: resend with DUP (§4.4)
_SENT = const(2)
_ACKED = const(3)
_DROPPED = const(4)
_ACK_SLICE_MS = const(100)  # longest a missed PUBACK pulse can delay publish() returning
_CONNECT_MS = const(15000)  # transport open + CONNACK
_STABLE_MS = const(10000)  # a connection that lived this long resets the backoff


class MQTTClient(Wire):
    """The session over mqttwire's packets: subscriptions kept across reconnects, the bounded
    QoS 1 offline queue (resent with DUP), the supervisor that reconnects with backoff through
    `connect`, keep-alive and the IP liveness probe. `up`/`down` tell the application."""

    # Tunable per instance. Waiting longer than this for a PUBACK declares the link dead
    # (the message stays pending and is resent with DUP after reconnect).
    puback_timeout_ms = 10000

    def __init__(self, client_id, connect, *, user=None, password=None, keepalive=60,
                 clean=False, will=None, queue_max=64, backoff_min_ms=500, backoff_max_ms=30000,
                 log=None):
        super().__init__(log)
        self.client_id = client_id
        self._open = connect
        self._user = user
        self._password = password
        self._ka_ms = keepalive * 1000
        self._keepalive = keepalive
        self._clean = clean
        self._will = will
        self._qmax = max(1, queue_max)
        self._backoff = Backoff(backoff_min_ms, max(backoff_min_ms, backoff_max_ms))
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()  # level-triggered: down is set whenever we are not connected
        self._subs = {}  # topic -> qos, resent after every CONNACK
        self._pending = []  # QoS 1 out: [pid, topic_bytes, payload, retain, state], oldest first
        self._pid = 0
        self._acked = asyncio.Event()  # pulsed on every PUBACK and on link loss
        self._lost = asyncio.Event()
        self._tasks = []
        self._sup = None
        self._stop = False
        self._ping_ms = 0
        self._subscribed = False  # the broker holds our subscriptions (since a CONNACK this boot)
        self._session = False  # the last CONNACK said the broker kept our session
        # Liveness probe for links where bytes are free (IP): PINGREQ after probe_ms of silence,
        # link declared dead after 2 * probe_ms without a byte. 0: keep-alive rules only.
        self.probe_ms = 0

    @property
    def dropped(self):  # QoS 1 messages evicted from the full queue; same as stats["dropped"]
        return self.stats["dropped"]

    @dropped.setter
    def dropped(self, n):
        self.stats["dropped"] = n

    # --- application API -------------------------------------------------------------

    def set_keepalive(self, seconds):
        """Keep-alive for the next CONNECT (the link manager picks it per path)."""
        self._keepalive = seconds
        self._ka_ms = seconds * 1000

    def kick(self, reason):
        """Drop the current connection now (the supervisor reconnects through `connect`)."""
        self._drop(reason)

    def subscribe(self, topic, qos=1):
        qos = 1 if qos else 0  # we never ask for QoS 2; inbound QoS 2 is still handled
        self._subs[topic] = qos
        if self.connected:
            asyncio.create_task(self._subscribe_now(topic, qos))

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send or queue a message. Returns True once delivered (QoS 0 written, QoS 1 acked),
        False if it was dropped (QoS 0 offline) or left pending for a later connection."""
        if qos not in (0, 1):
            raise ValueError("qos")
        if isinstance(payload, str):
            payload = payload.encode()
        t = topic.encode()
        if len(t) > TOPIC_MAX:
            raise ValueError("topic")
        if not qos:
            if not self.connected:
                return False
            async with self._lock:
                return await self._send_publish(t, payload, 0, retain, 0, False)
        e = [self._next_pid(), t, payload, retain, _QUEUED]
        if len(self._pending) >= self._qmax:
            self._pending.pop(0)[4] = _DROPPED  # alerts.md §6: oldest dropped and counted
            self.stats["dropped"] += 1
        self._pending.append(e)
        if not self.connected:
            return False
        await self._flush()
        t0 = ticks_ms()
        while e[4] == _SENT and self.connected:
            left = self.puback_timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                self._drop("puback_timeout")
                break
            # In slices: wait_for runs the wait in a new task, which a PUBACK pulsed before
            # that task first runs would miss; the state is re-checked after each slice.
            try:
                await asyncio.wait_for_ms(self._acked.wait(), min(left, _ACK_SLICE_MS))
            except asyncio.TimeoutError:
                pass
        return e[4] == _ACKED

    async def run(self):
        self._stop = False
        self._sup = asyncio.create_task(self._supervise())
        try:
            await self._sup
        except asyncio.CancelledError:
            if not self._stop:  # our caller was cancelled, not deinit()
                self.deinit()
                raise

    def deinit(self):
        self._stop = True
        w = self._w
        if self.connected and w is not None:
            try:
                w.write(DISCONNECT)  # best effort: a clean goodbye keeps the will quiet
            except Exception:
                pass
            self._drop("deinit")
        self._cancel_tasks()
        if self._sup is not None and self._sup is not asyncio.current_task():
            self._sup.cancel()
            self._sup = None
        self._close()

    # --- supervisor ------------------------------------------------------------------

    async def _supervise(self):
        b = self._backoff
        b.reset()
        while not self._stop:
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                self._close()
                self._error("connect", ex)
            else:
                t0 = ticks_ms()
                self._lost.clear()
                self._tasks = [asyncio.create_task(self._reader()),
                               asyncio.create_task(self._watchdog())]
                await self._online()
                await self._lost.wait()
                self._cancel_tasks()
                self._close()
                if ticks_diff(ticks_ms(), t0) >= _STABLE_MS:
                    b.reset()
            if self._stop:
                break
            await asyncio.sleep_ms(b.next_ms())

    async def _connect(self):
        r, w = await asyncio.wait_for_ms(self._open(), _CONNECT_MS)
        self._attach(r, w)
        p = connect_packet(self.client_id, self._keepalive, self._clean, self._will, self._user,
                           self._password)
        w.write(p)
        await asyncio.wait_for_ms(w.drain(), WRITE_MS)
        self.stats["bytes_out"] += len(p)
        mv = self._rmv[:4]
        await asyncio.wait_for_ms(self._recv(mv), _CONNECT_MS)
        b = self._rbuf
        if b[0] != CONNACK or b[1] != 2:
            raise MQTTError("bad_connack")
        if b[3]:
            rc = b[3]
            raise MQTTError("connack_" + (CONNACK_REASON[rc] if rc < 6 else str(rc)))
        now = ticks_ms()
        self._rx_ms = self._tx_ms = self._ping_ms = now
        self._pkt_ms = None
        self.stats["connects"] += 1
        self._session = bool(b[2] & 1)
        self._log("connect", session_present=self._session)

    async def _online(self):
        for e in self._pending:
            if e[4] == _SENT:
                e[4] = _RESEND
        self.connected = True
        async with self._lock:
            # A kept session still holds what we subscribed since boot: resubscribing would only
            # spend metered bytes. The first CONNACK of a boot always resubscribes (the config,
            # and so the topics, may have changed since the session was made).
            if not (self._session and self._subscribed):
                for topic in self._subs:
                    if not await self._send_subscribe(topic, self._subs[topic]):
                        return
                self._subscribed = True
        # `up` only once the subscriptions are on the wire: whoever is told we are up (the
        # link LED, an operator, a test) may expect alerts to reach us from then on.
        self.down.clear()
        self.up.set()
        # Take the write lock before any task woken by `up` runs, so the backlog goes out
        # before what the application publishes in reaction.
        async with self._lock:
            await self._flush_locked()

    def _drop(self, reason, epoch=0):
        if not self.connected or (epoch and epoch != self._epoch):
            return
        self.connected = False
        self.up.clear()
        self.down.set()
        self.stats["disconnects"] += 1
        self._log("disconnect", reason=reason)
        self._lost.set()
        self._pulse()

    def _cancel_tasks(self):
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        self._tasks = []

    def _pulse(self):
        # MicroPython's Event.set() queues every current waiter, so set+clear is a broadcast.
        self._acked.set()
        self._acked.clear()

    # --- keep-alive and stall detection ----------------------------------------------

    async def _watchdog(self):
        ka = self._ka_ms
        tick = min(1000, ka // 4) if ka else 1000
        while True:
            probe = self.probe_ms
            await asyncio.sleep_ms(min(tick, probe // 4) if probe else tick)
            now = ticks_ms()
            if self._pkt_ms is not None and ticks_diff(now, self._pkt_ms) > self.packet_timeout_ms:
                self._drop("read_timeout")
                return
            if probe:
                quiet = ticks_diff(now, self._rx_ms)
                if quiet >= 2 * probe:
                    self._drop("probe_timeout")
                    return
                if quiet >= probe and ticks_diff(now, self._ping_ms) >= probe:
                    self._ping_ms = now
                    async with self._lock:
                        await self._put(PING)
                    continue
            if not ka:
                continue
            quiet = ticks_diff(now, self._rx_ms)
            if quiet >= ka * 3 // 2:
                self._drop("ping_timeout")  # no PINGRESP nor anything else in 1.5 keepalive
                return
            if ((ticks_diff(now, self._tx_ms) >= ka or quiet >= ka)
                    and ticks_diff(now, self._ping_ms) >= ka // 2):
                self._ping_ms = now
                async with self._lock:
                    await self._put(PING)

    # --- outbound ----------------------------------------------------------------------

    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            for e in self._pending:
                if e[0] == self._pid:
                    break
            else:
                return self._pid

    async def _flush(self):
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self):
        for e in self._pending[:]:
            if not self.connected:
                return
            st = e[4]
            if st == _QUEUED or st == _RESEND:
                e[4] = _SENT
                if not await self._send_publish(e[1], e[2], 1, e[3], e[0], st == _RESEND):
                    return

    async def _subscribe_now(self, topic, qos):
        async with self._lock:
            if self.connected:
                await self._send_subscribe(topic, qos)

    def _on_puback(self, pid):
        for e in self._pending:
            if e[0] == pid:
                if e[4] == _SENT or e[4] == _RESEND:
                    self._pending.remove(e)
                    e[4] = _ACKED
                    self._pulse()
                return
