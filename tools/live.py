"""Live announcements on the host (docs/broadcast.md §7; the design and its security argument in
docs/decisions.md "Live announcements"): the signed stream header, the 20 ms IMA ADPCM chunks and
every BATCH chunks a signed batch of their hashes, as the terminal's firmware/live.py takes them,
and the pacing that sends them in real time.

Messages, all on `eb/live/<p>` for the prefix `<p>` of each of the stream's regions:

- header: a JWS (alerts.md §1) with `typ` `eb-live`, signed by a key with use `daily`; payload
  `{"id", "regions", "issued", "expires" (at most 4 h later), "codec": "ima-adpcm-16k",
  "chunk_ms": 20, "batch": 25, "volume" (optional)}`; QoS 1, sent first and again every
  HEADER_EVERY_S for terminals that join late;
- chunk: bytes `0x01`, the first 8 bytes of SHA-256(stream id), the sequence number (uint32
  big-endian, from 0), one 164-byte ADPCM block (tools/adpcm.py): 177 bytes, QoS 0;
- batch: a JWS with `typ` `eb-live-batch` by the header's key; payload `{"stream": id, "first":
  the first chunk's number, "h": base64url of the first 16 bytes of each chunk's SHA-256 (of all
  177 bytes), "end": true on the last}`; QoS 1, right after its last chunk.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from tools import adpcm
from tools.envelope import KeyPair, b64e, region_prefix, sign_jws

CHUNK_TYPE = 1
TAG = 8
HASH = 16
BATCH = 25  # chunks per signed batch: 0.5 s
CHUNK_S = 0.02
HEADER_EVERY_S = 2.0
MAX_LIFE_S = 4 * 3600
PCM_BYTES = adpcm.BLOCK_SAMPLES * 2


def tag_of(sid: str) -> bytes:
    return hashlib.sha256(sid.encode()).digest()[:TAG]


def topics(regions: Iterable[str]) -> list[str]:
    out: list[str] = []
    for r in regions:
        t = f"eb/live/{region_prefix(r)}"
        if t not in out:
            out.append(t)
    return out


def _jws(key: KeyPair, typ: str, payload: dict[str, Any]) -> str:
    if key.priv is None:
        raise ValueError(f"key {key.kid} has no private key")
    hdr: dict[str, Any] = {"alg": "EdDSA", "typ": typ, "kid": key.kid}
    if key.crt:
        hdr["crt"] = key.crt
    return sign_jws(key.priv, hdr, payload)


def header(key: KeyPair, sid: str, regions: list[str], issued: int, expires: int,
           volume: int | None = None, batch: int = BATCH) -> str:
    p: dict[str, Any] = {"id": sid, "regions": regions, "issued": issued, "expires": expires,
                         "codec": "ima-adpcm-16k", "chunk_ms": 20, "batch": batch}
    if volume is not None:
        p["volume"] = volume
    return _jws(key, "eb-live", p)


def chunk(tag: bytes, seq: int, block: bytes) -> bytes:
    return bytes([CHUNK_TYPE]) + tag + struct.pack(">I", seq) + block


def batch(key: KeyPair, sid: str, first: int, chunks: list[bytes], end: bool = False) -> str:
    h = b"".join(hashlib.sha256(c).digest()[:HASH] for c in chunks)
    p: dict[str, Any] = {"stream": sid, "first": first, "h": b64e(h)}
    if end:
        p["end"] = True
    return _jws(key, "eb-live-batch", p)


def pcm_blocks(source: BinaryIO) -> Iterator[bytes]:
    """Raw 16 kHz mono int16 little-endian PCM from a stream, in 320-sample blocks (the last
    padded with silence)."""
    while True:
        data = source.read(PCM_BYTES)
        if not data:
            return
        while len(data) < PCM_BYTES:
            more = source.read(PCM_BYTES - len(data))
            if not more:
                data += bytes(PCM_BYTES - len(data))
            else:
                data += more
        yield data


def wav_blocks(path: str) -> Iterator[bytes]:
    """The PCM of a 16 kHz mono 16-bit WAV file, in blocks; ValueError for another format."""
    with wave.open(path, "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, adpcm.RATE):
            raise ValueError(f"{path}: a live announcement is 16 kHz mono 16-bit PCM; this is "
                             f"{w.getframerate()} Hz, {w.getnchannels()} channel(s), "
                             f"{8 * w.getsampwidth()}-bit")
        while True:
            data = w.readframes(adpcm.BLOCK_SAMPLES)
            if not data:
                return
            yield data + bytes(PCM_BYTES - len(data))


class Stream:
    """One live announcement: the messages to send, in order, with the time each is due (s from
    the start). Chunks are due at 20 ms apart; a batch right after its last chunk."""

    def __init__(self, key: KeyPair, regions: list[str], sid: str | None = None,
                 volume: int | None = None, life_s: int = MAX_LIFE_S, batch: int = BATCH,
                 now: float | None = None) -> None:
        t = int(time.time() if now is None else now)
        self.key = key
        self.id = sid or time.strftime("live-%Y%m%dT%H%M%SZ-", time.gmtime(t)) + secrets.token_hex(3)
        self.regions = regions
        self.batch = batch
        self.header = header(key, self.id, regions, t, t + min(life_s, MAX_LIFE_S), volume, batch)
        self.tag = tag_of(self.id)
        self.topics = topics(regions)

    def messages(self, blocks: Iterable[bytes]) -> Iterator[tuple[float, bytes | str, int]]:
        """(due, payload, qos) for every message of the stream."""
        enc = adpcm.Encoder()
        yield 0.0, self.header, 1
        pending: list[bytes] = []
        first = seq = 0
        next_header = HEADER_EVERY_S
        prev: bytes | None = None
        for pcm in blocks:
            if prev is not None:
                yield from self._one(prev, seq, pending)
                seq += 1
                if len(pending) == self.batch:
                    yield seq * CHUNK_S, batch(self.key, self.id, first, pending), 1
                    first, pending = seq, []
                if seq * CHUNK_S >= next_header:
                    yield seq * CHUNK_S, self.header, 1
                    next_header += HEADER_EVERY_S
            prev = enc.block(struct.unpack(f"<{adpcm.BLOCK_SAMPLES}h", pcm))
        if prev is not None:
            yield from self._one(prev, seq, pending)
            seq += 1
        yield seq * CHUNK_S, batch(self.key, self.id, first, pending, end=True), 1

    def _one(self, block: bytes, seq: int, pending: list[bytes]
             ) -> Iterator[tuple[float, bytes | str, int]]:
        c = chunk(self.tag, seq, block)
        pending.append(c)
        yield seq * CHUNK_S, c, 0


def send(messages: Iterable[tuple[float, bytes | str, int]],
         publish: Callable[[bytes | str, int], None], pace: bool = True,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """Publish each message at its due time (pace) or at once; the number sent."""
    t0 = clock()
    n = 0
    for due, payload, qos in messages:
        if pace:
            wait = t0 + due - clock()
            if wait > 0:
                sleep(wait)
        publish(payload, qos)
        n += 1
    return n
