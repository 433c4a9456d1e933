# MQTT 3.1.1 on one asyncio stream: the packets (encoding, framing, reading) and the transport's
# buffers, limits and counters. mqtt.py's client (session, offline queue, supervisor, keep-alive)
# is built on this; it supplies _drop (link lost), _on_puback and _deliver.
import asyncio
import gc
from time import ticks_ms

import evlog
from micropython import const

# Packet types (MQTT 3.1.1 §2.2.1), high nibble of the first byte.
_CONNECT = const(0x10)
CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PUBREC = const(0x50)
_PUBREL = const(0x62)  # §3.6.1: PUBREL carries fixed flags 0b0010
_PUBCOMP = const(0x70)
_SUBSCRIBE = const(0x82)  # §3.8.1: SUBSCRIBE carries fixed flags 0b0010
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)

# Largest inbound payload held. alerts.md: envelopes are at most 8192 bytes; the fleet's `ota`
# command carries a manifest of up to 16384 (ota.md §1, limits.MAX_MANIFEST) plus its cid and
# base URL (at most 512), so 2 KB above that. A larger PUBLISH is read through the fixed buffer,
# dropped and acknowledged (on_oversize), so a lying or hostile length never makes us allocate.
MAX_PACKET = const(18432)
# Fixed buffer for packet headers, topics and small control packets. Each payload is read
# into a buffer of exactly its size, which the application receives (a bytearray).
_RX_BUF = const(1024)
# Outbound header (and whole packet when it fits) is built here.
_TX_BUF = const(512)
TOPIC_MAX = const(_TX_BUF - 16)  # longest topic publish() takes: its header must fit _TX_BUF
# Limits on time, so a stalled transport is noticed even when keep-alive is off.
WRITE_MS = const(15000)  # one drain()
_QOS2_IDS = const(8)  # inbound QoS 2 ids remembered until PUBREL

CONNACK_REASON = ("ok", "bad_protocol", "id_rejected", "server_unavailable", "bad_credentials",
                  "not_authorized")

PING = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class MQTTError(Exception):
    """Protocol or transport failure; .reason is a short code that goes to the log."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Wire:
    """One connection's packets: the fixed buffers, the write lock, the reader that frames and
    checks every inbound packet, the senders. The subclass decides what a packet means and
    supplies _drop(reason, epoch=0) (the link is lost), _next_pid() (a free packet id) and
    _on_puback(pid); they are not declared here, where each would cost heap for nothing (the
    type checker is told at each call)."""

    # From the first byte of an inbound packet to its last (8 KB over a slow 4G link).
    packet_timeout_ms = 20000

    def on_message(self, topic, payload, retain):
        """Replaced by the application: called for every inbound PUBLISH."""

    def on_oversize(self, topic, length):
        """Replaced by the application: a PUBLISH payload too large to hold (over MAX_PACKET,
        or no memory for it) was read, discarded and acknowledged."""

    def __init__(self, log):
        self._logf = log
        self.connected = False
        self.stats = {"connects": 0, "disconnects": 0, "rx": 0, "tx": 0, "dropped": 0,
                      "bytes_in": 0, "bytes_out": 0, "errors": 0}
        self._q2 = []  # inbound QoS 2 ids awaiting PUBREL
        self._rbuf = bytearray(_RX_BUF)
        self._rmv = memoryview(self._rbuf)
        self._tbuf = bytearray(_TX_BUF)
        self._tmv = memoryview(self._tbuf)
        self._ack = bytearray(4)
        self._lock = asyncio.Lock()
        self._r = self._w = self._readinto = None
        self._epoch = 0
        self._rx_ms = self._tx_ms = 0
        self._pkt_ms = None

    # --- transport -----------------------------------------------------------------------

    def receiving(self):
        """An inbound packet has begun and is not yet read whole (it may be an alert)."""
        return self._pkt_ms is not None

    def _attach(self, r, w):
        """A new connection's streams; its epoch tells stale drops from current ones."""
        self._r, self._w = r, w
        self._readinto = getattr(r, "readinto", None)
        self._epoch += 1

    def _close(self):
        w, self._w, self._r, self._readinto = self._w, None, None, None
        if w is not None:
            try:
                w.close()
            except Exception:
                pass
            # MicroPython's Stream.close() does nothing: the socket is closed by wait_closed().
            asyncio.create_task(_wait_closed(w))

    # --- outbound ----------------------------------------------------------------------

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
        pid = self._next_pid()  # pyright: ignore[reportAttributeAccessIssue]
        b[i] = pid >> 8
        b[i + 1] = pid & 0xFF
        b[i + 2] = len(t) >> 8
        b[i + 3] = len(t) & 0xFF
        i += 4
        b[i:i + len(t)] = t
        i += len(t)
        b[i] = qos
        return await self._put(self._tmv[:i + 1])

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
            await asyncio.wait_for_ms(w.drain(), WRITE_MS)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self._drop("write_timeout", ep)  # pyright: ignore[reportAttributeAccessIssue]
            return False
        except Exception as ex:
            self._drop("write_error:" + str(ex), ep)  # pyright: ignore[reportAttributeAccessIssue]
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
            self._drop("no_memory")  # pyright: ignore[reportAttributeAccessIssue]
        except MQTTError as ex:
            if ex.reason != "eof":
                self._error("read", ex)
            self._drop(ex.reason)  # pyright: ignore[reportAttributeAccessIssue]
        except Exception as ex:
            self._drop("read_error:" + str(ex))  # pyright: ignore[reportAttributeAccessIssue]

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
                self._on_puback((b[0] << 8) | b[1])  # pyright: ignore[reportAttributeAccessIssue]
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

    # --- logging -----------------------------------------------------------------------

    def _error(self, where, ex):
        self.stats["errors"] += 1
        reason = ex.reason if isinstance(ex, MQTTError) else "%s:%s" % (type(ex).__name__, ex)
        self._log("error", where=where, reason=reason)

    def _log(self, event, **fields):
        evlog.call(self._logf, event, **fields)


def connect_packet(client_id, keepalive, clean, will, user, password):
    """CONNECT (§3.1) as bytes."""

    def s(x):
        if isinstance(x, str):
            x = x.encode()
        return len(x).to_bytes(2, "big") + x

    flags = 0 if not clean else 0x02
    body = b"\x00\x04MQTT\x04"
    tail = s(client_id)
    if will:
        wt, wp, wq, wr = will
        flags |= 0x04 | (wq << 3) | (0x20 if wr else 0)
        tail += s(wt) + s(wp)
    if user is not None:
        flags |= 0x80
        tail += s(user)
        if password is not None:
            flags |= 0x40
            tail += s(password)
    body += bytes((flags,)) + keepalive.to_bytes(2, "big") + tail
    return bytes((_CONNECT,)) + _varint(len(body)) + body


async def _wait_closed(w):
    try:
        await asyncio.wait_for_ms(w.wait_closed(), WRITE_MS)
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
