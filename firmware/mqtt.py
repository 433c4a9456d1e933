# MQTT 3.1.1 over any asyncio stream (IP or 4G): reconnect, keep-alive, offline queue (alerts.md §6).
import asyncio
import gc
from time import ticks_diff, ticks_ms

import evlog
from backoff import Backoff
from micropython import const

# Packet types (MQTT 3.1.1 §2.2.1), high nibble of the first byte.
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x62)  # §3.6.1: PUBREL carries fixed flags 0b0010
_PUBCOMP = const(0x70)
_SUBSCRIBE = const(0x82)  # §3.8.1: SUBSCRIBE carries fixed flags 0b0010
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)

# Largest inbound payload held. alerts.md: envelopes are at most 8192 bytes; the rest is
# headroom. A larger PUBLISH is read through the fixed buffer, dropped and acknowledged
# (on_oversize), so a lying or hostile length never makes us allocate.
MAX_PACKET = const(16384)
# Fixed buffer for packet headers, topics and small control packets. Each payload is read
# into a buffer of exactly its size, which the application receives (a bytearray).
_RX_BUF = const(1024)
# Outbound header (and whole packet when it fits) is built here.
_TX_BUF = const(512)
# Limits on time, so a stalled transport is noticed even when keep-alive is off.
_CONNECT_MS = const(15000)  # transport open + CONNACK
_WRITE_MS = const(15000)  # one drain()
_STABLE_MS = const(10000)  # a connection that lived this long resets the backoff
_QOS2_IDS = const(8)  # inbound QoS 2 ids remembered until PUBREL

# Pending QoS 1 message states.
_QUEUED = const(0)
_RESEND = const(1)  # sent on an earlier connection: resend with DUP (§4.4)
_SENT = const(2)
_ACK_SLICE_MS = const(100)  # longest a missed PUBACK pulse can delay publish() returning
_ACKED = const(3)
_DROPPED = const(4)

_CONNACK_REASON = ("ok", "bad_protocol", "id_rejected", "server_unavailable", "bad_credentials",
                   "not_authorized")

_PING = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


class MQTTError(Exception):
    """Protocol or transport failure; .reason is a short code that goes to the log."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class MQTTClient:
    # Tunable per instance. Waiting longer than this for a PUBACK declares the link dead
    # (the message stays pending and is resent with DUP after reconnect).
    puback_timeout_ms = 10000
    # From the first byte of an inbound packet to its last (8 KB over a slow 4G link).
    packet_timeout_ms = 20000

    def on_message(self, topic, payload, retain):
        """Replaced by the application: called for every inbound PUBLISH."""

    def on_oversize(self, topic, length):
        """Replaced by the application: a PUBLISH payload too large to hold (over MAX_PACKET,
        or no memory for it) was read, discarded and acknowledged."""

    def __init__(self, client_id, connect, *, user=None, password=None, keepalive=60,
                 clean=False, will=None, queue_max=64, backoff_min_ms=500, backoff_max_ms=30000,
                 log=None):
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
        self._logf = log
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()  # level-triggered: down is set whenever we are not connected
        self.connected = False
        self.stats = {"connects": 0, "disconnects": 0, "rx": 0, "tx": 0, "dropped": 0,
                      "bytes_in": 0, "bytes_out": 0, "errors": 0}
        self._subs = {}  # topic -> qos, resent after every CONNACK
        self._pending = []  # QoS 1 out: [pid, topic_bytes, payload, retain, state], oldest first
        self._q2 = []  # inbound QoS 2 ids awaiting PUBREL
        self._pid = 0
        self._rbuf = bytearray(_RX_BUF)
        self._rmv = memoryview(self._rbuf)
        self._tbuf = bytearray(_TX_BUF)
        self._tmv = memoryview(self._tbuf)
        self._ack = bytearray(4)
        self._lock = asyncio.Lock()
        self._acked = asyncio.Event()  # pulsed on every PUBACK and on link loss
        self._lost = asyncio.Event()
        self._r = self._w = self._readinto = None
        self._epoch = 0
        self._tasks = []
        self._sup = None
        self._stop = False
        self._rx_ms = self._tx_ms = self._ping_ms = 0
        self._pkt_ms = None
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
        if len(t) > _TX_BUF - 16:
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
                w.write(_DISCONNECT)  # best effort: a clean goodbye keeps the will quiet
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
        self._r, self._w = r, w
        self._readinto = getattr(r, "readinto", None)
        self._epoch += 1
        p = self._connect_packet()
        w.write(p)
        await asyncio.wait_for_ms(w.drain(), _WRITE_MS)
        self.stats["bytes_out"] += len(p)
        mv = self._rmv[:4]
        await asyncio.wait_for_ms(self._recv(mv), _CONNECT_MS)
        b = self._rbuf
        if b[0] != _CONNACK or b[1] != 2:
            raise MQTTError("bad_connack")
        if b[3]:
            rc = b[3]
            raise MQTTError("connack_" + (_CONNACK_REASON[rc] if rc < 6 else str(rc)))
        now = ticks_ms()
        self._rx_ms = self._tx_ms = self._ping_ms = now
        self._pkt_ms = None
        self.stats["connects"] += 1
        self._session = bool(b[2] & 1)
        self._log("connect", session_present=self._session)

    def _connect_packet(self):
        def s(x):
            if isinstance(x, str):
                x = x.encode()
            return len(x).to_bytes(2, "big") + x

        flags = 0 if not self._clean else 0x02
        body = b"\x00\x04MQTT\x04"
        tail = s(self.client_id)
        if self._will:
            wt, wp, wq, wr = self._will
            flags |= 0x04 | (wq << 3) | (0x20 if wr else 0)
            tail += s(wt) + s(wp)
        if self._user is not None:
            flags |= 0x80
            tail += s(self._user)
            if self._password is not None:
                flags |= 0x40
                tail += s(self._password)
        body += bytes((flags,)) + self._keepalive.to_bytes(2, "big") + tail
        return bytes((_CONNECT,)) + _varint(len(body)) + body

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

    def _close(self):
        w, self._w, self._r, self._readinto = self._w, None, None, None
        if w is not None:
            try:
                w.close()
            except Exception:
                pass
            # MicroPython's Stream.close() does nothing: the socket is closed by wait_closed().
            asyncio.create_task(_wait_closed(w))

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
                        await self._put(_PING)
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
                    await self._put(_PING)

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

    async def _send_publish(self, topic, payload, qos, retain, pid, dup):
        # Caller holds the lock. Header (and the payload when it fits) go out of _tbuf.
        vh = 2 + len(topic) + (2 if qos else 0)
        rl = vh + len(payload)
        b = self._tbuf
        b[0] = _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
        i = _put_varint(b, 1, rl)
        if i + vh > _TX_BUF:
            self._error("publish", MQTTError("topic_too_long"))
            return False
        b[i] = len(topic) >> 8
        b[i + 1] = len(topic) & 0xFF
        i += 2
        b[i:i + len(topic)] = topic
        i += len(topic)
        if qos:
            b[i] = pid >> 8
            b[i + 1] = pid & 0xFF
            i += 2
        if i + len(payload) <= _TX_BUF:
            b[i:i + len(payload)] = payload
            ok = await self._put(self._tmv[:i + len(payload)])
        else:
            ok = await self._put(self._tmv[:i], payload)
        if ok:
            self.stats["tx"] += 1
        return ok

    async def _send_subscribe(self, topic, qos):
        t = topic.encode()
        b = self._tbuf
        b[0] = _SUBSCRIBE
        i = _put_varint(b, 1, 2 + 2 + len(t) + 1)
        if i + 5 + len(t) > _TX_BUF:
            self._error("subscribe", MQTTError("topic_too_long"))
            return True
        pid = self._next_pid()
        b[i] = pid >> 8
        b[i + 1] = pid & 0xFF
        b[i + 2] = len(t) >> 8
        b[i + 3] = len(t) & 0xFF
        i += 4
        b[i:i + len(t)] = t
        i += len(t)
        b[i] = qos
        return await self._put(self._tmv[:i + 1])

    async def _subscribe_now(self, topic, qos):
        async with self._lock:
            if self.connected:
                await self._send_subscribe(topic, qos)

    async def _send_ack(self, kind, pid):
        a = self._ack
        a[0] = kind
        a[1] = 2
        a[2] = pid >> 8
        a[3] = pid & 0xFF
        async with self._lock:
            await self._put(a)

    async def _put(self, buf, buf2=None):
        # Caller holds the lock; the buffers may be reused once this returns.
        w, ep = self._w, self._epoch
        if w is None or not self.connected:
            return False
        try:
            w.write(buf)
            n = len(buf)
            if buf2 is not None:
                w.write(buf2)
                n += len(buf2)
            await asyncio.wait_for_ms(w.drain(), _WRITE_MS)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self._drop("write_timeout", ep)
            return False
        except Exception as ex:
            self._drop("write_error:" + str(ex), ep)
            return False
        self.stats["bytes_out"] += n
        self._tx_ms = ticks_ms()
        return True

    # --- inbound -----------------------------------------------------------------------

    async def _recv(self, mv):
        # Fill mv exactly from the transport; EOF mid-way is an error, never a short packet.
        n = len(mv)
        i = 0
        ri = self._readinto
        r = self._r
        if r is None:
            raise MQTTError("not_connected")
        while i < n:
            if ri is not None:
                k = await ri(mv[i:])
            else:
                d = await r.read(n - i)
                k = len(d) if d else 0
                mv[i:i + k] = d
            if k is None:
                continue
            if not k:
                raise MQTTError("eof")
            i += k
        self.stats["bytes_in"] += n

    async def _reader(self):
        try:
            while True:
                await self._packet()
        except asyncio.CancelledError:
            raise
        except MemoryError:
            self._error("read", MQTTError("no_memory"))
            self._drop("no_memory")
        except MQTTError as ex:
            if ex.reason != "eof":
                self._error("read", ex)
            self._drop(ex.reason)
        except Exception as ex:
            self._drop("read_error:" + str(ex))

    async def _packet(self):
        one = self._rmv[:1]
        await self._recv(one)
        self._pkt_ms = ticks_ms()
        kind = self._rbuf[0]
        # Remaining length (§2.2.3): at most 4 bytes of 7 bits each.
        rl = 0
        for i in range(4):
            await self._recv(one)
            d = self._rbuf[0]
            rl |= (d & 0x7F) << (7 * i)
            if not d & 0x80:
                break
        else:
            raise MQTTError("len_malformed")
        t = kind & 0xF0
        if t == _PUBLISH:
            await self._publish_in(kind, rl)
        elif rl > 4:
            raise MQTTError("bad_packet")  # we send one topic per SUBSCRIBE: acks are 2-3 bytes
        else:
            b = self._rbuf
            await self._recv(self._rmv[:rl])
            self._done_packet()
            if t == _PUBACK:
                if rl != 2:
                    raise MQTTError("bad_puback")
                self._on_puback((b[0] << 8) | b[1])
            elif t == _SUBACK:
                if rl < 3:
                    raise MQTTError("bad_suback")
                if b[2] == 0x80:
                    self._error("subscribe", MQTTError("suback_refused"))
            elif t == _PUBREL & 0xF0:
                if rl != 2:
                    raise MQTTError("bad_pubrel")
                pid = (b[0] << 8) | b[1]
                if pid in self._q2:
                    self._q2.remove(pid)
                await self._send_ack(_PUBCOMP, pid)
            elif t == _PINGRESP or t == _UNSUBACK or t == _PUBCOMP or t == _PUBREC:
                pass  # PUBREC/PUBCOMP: we never publish QoS 2
            else:
                raise MQTTError("unexpected_packet")

    def _done_packet(self):
        self._pkt_ms = None
        self._rx_ms = ticks_ms()

    async def _publish_in(self, kind, rl):
        # Topic and packet id go through the fixed buffer; the payload is read straight into
        # its own buffer, which is what the application receives: no second copy of an 8 KB
        # alert. A payload we cannot hold is skipped, acknowledged and reported (on_oversize):
        # dropping the link instead would have the broker resend it after every reconnect
        # (persistent session) and leave the terminal deaf to all that follows.
        qos = (kind >> 1) & 3
        if qos == 3:
            raise MQTTError("bad_qos")
        b = self._rbuf
        if rl < 2:
            raise MQTTError("bad_publish")
        await self._recv(self._rmv[:2])
        tl = (b[0] << 8) | b[1]
        vh = tl + (2 if qos else 0)
        if 2 + vh > rl:
            raise MQTTError("bad_topic_len")
        if vh > _RX_BUF:
            raise MQTTError("topic_too_long")
        await self._recv(self._rmv[:vh])
        try:
            topic = str(self._rmv[:tl], "utf-8")
        except Exception:
            raise MQTTError("bad_topic_utf8")
        pid = (b[tl] << 8) | b[tl + 1] if qos else 0
        n = rl - 2 - vh
        payload = None
        if n <= MAX_PACKET:
            try:
                payload = bytearray(n)
            except MemoryError:
                gc.collect()
                try:
                    payload = bytearray(n)
                except MemoryError:
                    pass
        if payload is None:
            self._error("read", MQTTError("len_too_large" if n > MAX_PACKET else "no_memory"))
            await self._skip(n)
        else:
            await self._recv(memoryview(payload))
        self._done_packet()
        self.stats["rx"] += 1
        if payload is None:
            try:
                self.on_oversize(topic, n)
            except Exception as ex:
                self._error("on_oversize", ex)
        elif qos == 2 and pid in self._q2:
            pass  # duplicate before PUBREL: already delivered
        else:
            self._deliver(topic, payload, bool(kind & 1))
        if qos == 1:
            await self._send_ack(_PUBACK, pid)
        elif qos == 2:
            if pid not in self._q2:
                if len(self._q2) >= _QOS2_IDS:
                    self._q2.pop(0)
                self._q2.append(pid)
            await self._send_ack(_PUBREC, pid)

    async def _skip(self, n):
        while n:
            k = n if n < _RX_BUF else _RX_BUF
            await self._recv(self._rmv[:k])
            n -= k
            self._pkt_ms = ticks_ms()  # only a stall is a timeout, not a long body

    def _deliver(self, topic, payload, retain):
        cb = self.on_message
        if cb is None:
            return
        try:
            cb(topic, payload, retain)
        except Exception as ex:
            self._error("on_message", ex)

    def _on_puback(self, pid):
        for e in self._pending:
            if e[0] == pid:
                if e[4] == _SENT or e[4] == _RESEND:
                    self._pending.remove(e)
                    e[4] = _ACKED
                    self._pulse()
                return

    # --- logging -----------------------------------------------------------------------

    def _error(self, where, ex):
        self.stats["errors"] += 1
        reason = ex.reason if isinstance(ex, MQTTError) else "%s:%s" % (type(ex).__name__, ex)
        self._log("error", where=where, reason=reason)

    def _log(self, event, **fields):
        evlog.call(self._logf, event, **fields)


async def _wait_closed(w):
    try:
        await asyncio.wait_for_ms(w.wait_closed(), _WRITE_MS)
    except Exception:
        pass


def _varint(n):
    b = bytearray(4)
    return bytes(b[:_put_varint(b, 0, n)])


def _put_varint(b, i, n):
    # Remaining length (§2.2.3) into b at i; returns the index after it.
    while True:
        d = n & 0x7F
        n >>= 7
        b[i] = d | (0x80 if n else 0)
        i += 1
        if not n:
            return i
