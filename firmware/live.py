# Live announcements (docs/broadcast.md §7, docs/decisions.md "Live announcements"): a signed
# stream header, IMA ADPCM chunks of 20 ms, and every `batch` chunks a signed list of the
# chunks' hashes. A chunk reaches the speaker only when a verified batch names its hash; a
# chunk that is missing or late when its turn comes is 20 ms of silence, never noise: the last
# signed sample fades to 0 over its first 4 ms (FADE), and the next block fades in over its own
# first 4 ms, so neither edge of a gap is a step (a click).
import asyncio
import binascii
import hashlib
import time

import adpcm
import b64
import ed25519
import region
import trust
from arbiter import tier
from clip import _gain
from limits import MAX_ENVELOPE, MAX_FUTURE, MAX_REGIONS, VOLUME_MAX
from micropython import const
from player import ramp_down
from ring import Ring
from trust import Reject

CHUNK = const(1)  # first byte of a chunk message; a JWS starts with "e" ("eyJ")
TAG = const(8)  # bytes of SHA-256(stream id) that name a chunk's stream
HASH = const(16)  # bytes of a chunk's SHA-256 in a batch
CHUNK_BYTES = const(177)  # 1 + TAG + 4 (sequence, big-endian) + adpcm.BLOCK_BYTES
MAX_LIFE = const(14400)  # s: a stream's expires <= issued + 4 h
MAX_BATCH = const(50)
JITTER_MS = const(150)  # a chunk whose hash is not known yet is waited for this long
LEAD_4G = const(18)  # over 4G the stream starts with this many blocks of silence (360 ms): with
# JITTER_MS, a batch may come 510 ms later than the first one did (150 ms over IP)
STALL_MS = const(3000)  # no chunk for this long: the stream has ended
MAX_HELD = const(120)  # chunks held (2.4 s): beyond, the oldest unplayed go
MAX_STREAMS = const(2)
FADE = const(64)  # samples (4 ms): a gap's edges fade out and in, never a step (a click)


def _fade_in(b, n):
    # the first n samples of b (int16 little-endian) from 0 up to their own level in a straight
    # line: the first block after a gap, or of the stream. |s * n| < 2**30; no allocation.
    for i in range(n):
        j = 2 * i
        s = b[j] | (b[j + 1] << 8)
        if s & 0x8000:
            s -= 0x10000
        s = s * i // n
        b[j] = s & 0xFF
        b[j + 1] = (s >> 8) & 0xFF


def _ip():
    return "ip"


def tag_of(sid):
    return hashlib.sha256(sid.encode()).digest()[:TAG]


class Stream:
    def __init__(self, p, kid, pub, scope, path=_ip):
        self.p = p
        self.id = p["id"]
        self.kid = kid
        self.pub = pub
        self.scope = scope
        self.tag = tag_of(self.id)
        self.batch = p["batch"]
        self.hashes = {}  # seq -> 16-byte hash from a verified batch
        self.chunks = {}  # seq -> chunk bytes as received (checked when played)
        self.last = None  # the last sequence number, once the end batch verified
        self.next = 0  # the sequence number to play next
        self.rx_ms = time.ticks_ms()
        self.played = self.silent = self.refused = 0
        self.why = None  # how it ended: "ended" or "stalled"
        self.item = None  # type: _Item | None  # its arbiter item, once taken
        self.path = path  # () -> the link in use: "4g" lengthens the jitter buffer

    def take(self, seq, msg):
        # Up to two candidates per number: a forged chunk that arrives first cannot shut the
        # genuine one out (the batch's hash picks); a third is dropped, as a repeat is.
        if seq < self.next:
            return  # played already
        c = self.chunks.get(seq)
        if c is None:
            if len(self.chunks) >= MAX_HELD:
                self.chunks.pop(min(self.chunks))
            self.chunks[seq] = [msg]
        elif len(c) < 2 and msg not in c:
            c.append(msg)
        else:
            return
        self.rx_ms = time.ticks_ms()

    async def play(self, out, volume, buf, blank):
        """Write the stream to out until its end marker or a stall; returns why it ended. buf:
        the decode buffer (640 bytes, a memoryview); blank: 640 zero bytes. Over 4G (the link
        in use when its first batch has verified) the jitter buffer is LEAD_4G blocks longer."""
        g = _gain(volume)
        fade = bytearray(len(blank))  # a gap's first 20 ms: a fade (rewritten), then zeros
        quiet = True  # the output's last sample is 0: the next block fades in
        if self.hashes:  # it waited behind a warning: from the newest batch on, not the past
            self.next = max(self.next, max(self.hashes) + 1 - self.batch)
        while self.next not in self.hashes:  # the first batch, or a stall before it
            if self._stalled():
                return "stalled"
            await asyncio.sleep_ms(10)
        if self.path() == "4g":
            # Written, not waited: the output plays these zeros in real time while chunks and
            # batches keep coming in (Live.take), so the horn runs that much behind the sender.
            for _ in range(LEAD_4G):
                await out.write(blank)
        while True:
            seq = self.next
            why = "ended" if self.last is not None and seq > self.last else \
                "stalled" if self._stalled() else None
            if why is not None:
                if not quiet and ramp_down(fade, getattr(out, "last", 0), FADE):
                    await out.write(fade)  # never stop on a step either
                return why
            t0 = time.ticks_ms()
            while seq not in self.hashes and time.ticks_diff(time.ticks_ms(), t0) < JITTER_MS:
                await asyncio.sleep_ms(10)
            got = self.chunks.pop(seq, ())
            h = self.hashes.pop(seq, None)
            self.next = seq + 1
            msg = None
            for m in got:
                if h is not None and hashlib.sha256(m).digest()[:HASH] == h:
                    msg = m
            if msg is not None:
                try:
                    adpcm.decode(memoryview(msg)[1 + TAG + 4:], buf)
                    if g != 0x8000:
                        adpcm.scale(buf, len(buf), g)  # the volume, as a clip's (clip.py): native
                    if quiet:
                        _fade_in(buf, FADE)
                    await out.write(buf)
                    quiet = False
                    self.played += 1
                    continue
                except adpcm.AdpcmError:
                    pass
            if got and msg is None:
                self.refused += 1  # no candidate has the signed hash (or none was signed)
            self.silent += 1
            # the last signed sample down to 0 over FADE, then zeros: never a step
            v = not quiet and ramp_down(fade, getattr(out, "last", 0), FADE)
            await out.write(fade if v else blank)
            quiet = True

    def _stalled(self):
        return time.ticks_diff(time.ticks_ms(), self.rx_ms) > STALL_MS


class _Item:
    # an arbiter item (arbiter.py: "live" ranks below alerts and tests, above programmes)
    def __init__(self, s, report):
        p = s.p
        self.s = s
        self.id = "live-" + s.id
        self.kid = s.kid
        self.scope = s.scope
        self.report = report
        self.preempted_by = None
        self.payload = {"id": self.id, "kind": "live", "level": 4, "issued": p["issued"],
                        "expires": p["expires"], "audio": {"live": s},
                        "volume": p.get("volume", 80), "repeat": 1}


class Live:
    """Stream headers verified by the rules of docs/broadcast.md §7 (the `daily` chain), their
    batches by the header's key, chunks held until played."""

    def __init__(self, anchors, my_region, seen, clock, arbiter, log, send_event, path=_ip):
        self.chain = trust.Chain(anchors, "daily", clock)
        self.path = path  # () -> the link in use: "ip", "4g" or "none" (the jitter buffer)
        self.region = my_region
        self.seen = seen
        self.clock = clock
        self.arbiter = arbiter
        self.log = log
        self._send = send_event
        self.streams = {}  # tag -> Stream
        self.dropped = 0  # chunks and batches of no stream here, or refused
        self._q = Ring(8)
        self._ev = asyncio.Event()

    def take(self, msg):
        """One message from eb/live/<p>: a chunk (bytes from CHUNK on) or a JWS."""
        if len(msg) and msg[0] == CHUNK:
            s = self.streams.get(bytes(msg[1:1 + TAG])) if len(msg) == CHUNK_BYTES else None
            if s is None:
                self.dropped += 1
                return
            s.take(int.from_bytes(msg[1 + TAG:1 + TAG + 4], "big"), msg)
            return
        if self._q.put(msg):  # headers and batches: verified by task(), alerts first
            self.dropped += 1
        self._ev.set()

    async def task(self, pending):
        """Verify the headers and batches taken in, one at a time, never while an alert waits
        to be verified (pending(): intake.py)."""
        while True:
            if not len(self._q):
                self._ev.clear()
                await self._ev.wait()
                continue
            while pending():
                await asyncio.sleep_ms(5)
            msg = self._q.get()
            try:
                self._jws(msg)
            except MemoryError:
                self.dropped += 1
            except Exception as e:
                self.log("live_error", error=repr(e))
            await asyncio.sleep_ms(0)

    def _jws(self, msg):
        parts = trust.split(msg) if len(msg) <= MAX_ENVELOPE else None
        hdr = trust.json_obj(parts[1]) if parts is not None else None
        typ = hdr.get("typ") if hdr is not None else None
        if typ == "eb-live-batch":
            self._batch(parts, hdr)
        else:
            self._header(msg, parts, hdr)

    def _batch(self, parts, hdr):
        signing_input, _h, payload_b64, sig = parts
        s = None
        for x in self.streams.values():
            if x.kid == hdr.get("kid"):
                s = x
        if s is None or len(sig) != 64 or not ed25519.verify(s.pub, signing_input, sig):
            self.dropped += 1
            return
        p = trust.json_obj(b64.decode(payload_b64))
        if p is None or p.get("stream") != s.id or not trust.is_int(p.get("first")):
            self.dropped += 1
            return
        try:
            hs = b64.decode(p.get("h") or "")
        except b64.B64Error:
            hs = b""
        n = len(hs) // HASH
        if not 1 <= n <= s.batch or len(hs) != n * HASH:
            self.dropped += 1
            return
        first = p["first"]
        if not s.played and not s.silent and first > s.next:
            s.next = first  # joined during the stream: its first batch here starts it
        for i in range(n):
            if first + i >= s.next:
                s.hashes[first + i] = hs[i * HASH:(i + 1) * HASH]
        while len(s.hashes) > MAX_HELD:
            s.hashes.pop(min(s.hashes))
        if p.get("end") is True:
            s.last = first + n - 1

    def _header(self, env, parts, hdr):
        kid = sid = None
        try:
            if len(env) > MAX_ENVELOPE:
                raise Reject("rejected", "too_large")
            if parts is None or hdr is None:
                raise Reject("rejected", "malformed")
            if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-live":
                raise Reject("rejected", "bad_alg")
            kid = hdr.get("kid")
            if not trust.valid_kid(kid):
                kid = None
                raise Reject("rejected", "unknown_key")
            pub, scope = self.chain.signer(kid, hdr.get("crt"))
            signing_input, _h, payload_b64, sig = parts
            if len(sig) != 64 or not ed25519.verify(pub, signing_input, sig):
                raise Reject("rejected", "bad_signature")
            p = trust.json_obj(b64.decode(payload_b64))
            if p is None:
                raise Reject("rejected", "bad_field")
            sid = p.get("id") if trust.valid_id(p.get("id")) else None
            _fields(p)
            sid = p["id"]
            if not trust.in_scope(p["regions"], scope):
                raise Reject("rejected", "out_of_scope")
            now = self.clock.now()
            if self.clock.synced and p["issued"] > now + MAX_FUTURE:
                raise Reject("rejected", "not_yet_valid")
            if now >= p["expires"]:
                raise Reject("rejected", "expired")
            tag = tag_of(sid)
            if tag in self.streams or self.seen.has(kid, "live:" + sid, now):
                return  # the header again (it is repeated for late joiners): nothing to say
            mine = False
            for r in p["regions"]:
                if region.covers(r, self.region):
                    mine = True
            if not mine:
                raise Reject("ignored", "not_for_me")
            out = None
            if len(self.streams) >= MAX_STREAMS:
                out = self._displaced(tier(scope))
                if out is None:
                    raise Reject("ignored", "busy")
            s = Stream(p, kid, pub, scope, self.path)
            self.seen.add(kid, "live:" + sid, p["expires"], binascii.hexlify(s.tag).decode(),
                          now)
            if out is not None:  # its receipt first: `cancelled` `higher_tier`
                self.log("live_displaced", stream=out.id, by=sid)
                self.arbiter.stop(out.item, "higher_tier")
                self.streams.pop(out.tag, None)
            self.streams[tag] = s
            self._say(s.id, kid, "accepted", None)
            s.item = _Item(s, self._report)
            self.arbiter.submit(s.item)
        except Reject as r:
            self._say(sid, kid, r.status, r.reason)

    def _displaced(self, t):
        # The held stream a new one of tier t takes the place of (docs/broadcast.md §7): of those
        # of a lower tier than t, the lowest; of two there, the one not playing, then the one
        # issued earlier. None: the new one is `busy`.
        out = key = None
        cur = self.arbiter.current
        for s in self.streams.values():
            k = (tier(s.scope), s.item is not cur, -s.p["issued"])
            if k[0] > t and (key is None or k > key):
                out, key = s, k
        return out

    def _report(self, item, status, reason):
        s = item.s
        if status == "preempted":
            by = item.preempted_by
            if by is None or by.payload.get("kind") in ("alert", "test"):
                reason = "alert"
            else:  # a stream of the same tier issued later plays first (§5, alerts.md §5)
                reason = "newer" if tier(by.scope) == tier(item.scope) else "higher_tier"
        if status in ("done", "cancelled", "preempted"):
            self.streams.pop(s.tag, None)
            if status == "done" and reason is None:
                reason = s.why
        self._say(s.id, s.kid, status, reason, s if status != "playing" else None)

    def _say(self, sid, kid, status, reason, s=None):
        ev = {"live": sid, "kid": kid, "status": status, "reason": reason, "t": self.clock.now()}
        if s is not None:
            ev["chunks"] = s.played
            ev["silent"] = s.silent
            ev["refused"] = s.refused
        self.log("live_" + status, stream=sid, reason=reason)
        self._send(ev)



def _fields(p):
    bad = Reject("rejected", "bad_field")
    if not trust.valid_id(p.get("id")):
        raise bad
    regions = p.get("regions")
    if not trust.str_list(regions, 1, MAX_REGIONS) or not all(region.valid_code(r) for r in regions):
        raise bad
    issued, expires = p.get("issued"), p.get("expires")
    if not trust.epoch(issued) or not trust.epoch(expires) or \
            not issued < expires <= issued + MAX_LIFE:
        raise bad
    if p.get("codec") != "ima-adpcm-16k" or p.get("chunk_ms") != 20:
        raise bad
    b = p.get("batch")
    if not trust.is_int(b) or not 1 <= b <= MAX_BATCH:
        raise bad
    v = p.get("volume")
    if v is not None and (not trust.is_int(v) or not 0 <= v <= VOLUME_MAX):
        raise bad
