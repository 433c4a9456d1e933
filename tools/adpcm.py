"""IMA ADPCM for live announcements (issue 13): 16 kHz mono int16 PCM in self-contained blocks.

The codec is the standard IMA/DVI ADPCM (IMA Recommended Practices for Enhancing Digital Audio
Compatibility in Multimedia Systems, 1992; the reference encoder and decoder of Jack Jansen's
adpcm.c, which CPython's audioop also follows): 4 bits per sample, the 89-entry step table
`STEPS`, the 16-entry index table `INDEX`. The terminal decodes it with firmware/adpcm.py
(native code, the same output bit for bit); docs/broadcast.md "Live audio: IMA ADPCM blocks".

Block format (`BLOCK_BYTES` = 164 bytes, `BLOCK_SAMPLES` = 320 samples = 20 ms at 16 kHz):

    offset  size  field
    0       2     predictor: int16, little-endian (two's complement), the decoder's starting
                  predicted sample
    2       1     step index: 0..88 (a block with 89..255 is refused, never decoded)
    3       1     reserved: 0 (a block with anything else is refused)
    4       160   320 samples as 4-bit codes: byte 4 + k holds sample 2k in its low nibble
                  (bits 0-3) and sample 2k + 1 in its high nibble (bits 4-7), as in IMA/DVI WAV

The header is the coder's state before the block's first sample: the decoder starts every block
from it, so a lost block never corrupts the next. The header carries no sample of its own (IMA
WAV's header predictor is also the block's first output sample; here all 320 outputs come from
codes, so a block is one 20 ms chunk of the player, firmware/tones.py CHUNK). The encoder writes
its running state into each header, so a receiver that loses nothing decodes exactly what a
continuous IMA decoder would. A block is exactly 164 bytes: anything shorter or longer is
refused (`AdpcmError`, reason "block_length"). Decoded samples are little-endian int16, 640
bytes per block. The last block of a stream is padded with its last sample (no click).

Bitrate: 164 bytes per 20 ms = 8,200 B/s (65.6 kbit/s), 492,000 bytes per minute, before the
stream's own framing (signature batches, chunk numbers: see docs/broadcast.md).

    python -m tools.adpcm encode IN.wav OUT.adpcm    (16 kHz mono 16-bit WAV -> blocks)
    python -m tools.adpcm decode IN.adpcm OUT.wav    (blocks -> WAV)
"""

from __future__ import annotations

import argparse
import struct
import sys
import wave
from array import array
from collections.abc import Iterable, Iterator

RATE = 16000  # samples per second
BLOCK_SAMPLES = 320  # 20 ms
HEADER_BYTES = 4
BLOCK_BYTES = HEADER_BYTES + BLOCK_SAMPLES // 2  # 164
MAX_INDEX = 88

STEPS = (
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408,
    449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066,
    2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630,
    9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794,
    32767,
)
INDEX = (-1, -1, -1, -1, 2, 4, 6, 8, -1, -1, -1, -1, 2, 4, 6, 8)

assert len(STEPS) == MAX_INDEX + 1


class AdpcmError(ValueError):
    """A block that is not one of ours: reason is "block_length", "step_index" or "reserved"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _clamp(v: int) -> int:
    return max(-32768, min(v, 32767))


class Encoder:
    """A stream's encoder: 320 samples in, one block out, the state carried from block to block."""

    def __init__(self, predictor: int = 0, index: int = 0) -> None:
        if not -32768 <= predictor <= 32767 or not 0 <= index <= MAX_INDEX:
            raise ValueError("predictor must be an int16 and index 0..88")
        self.predictor = predictor
        self.index = index

    def block(self, samples: Iterable[int]) -> bytes:
        """Encode exactly BLOCK_SAMPLES int16 samples (the reference IMA encoder)."""
        s = list(samples)
        if len(s) != BLOCK_SAMPLES:
            raise ValueError(f"a block is {BLOCK_SAMPLES} samples, got {len(s)}")
        out = bytearray(BLOCK_BYTES)
        struct.pack_into("<hBB", out, 0, self.predictor, self.index, 0)
        pred, index = self.predictor, self.index
        for n, x in enumerate(s):
            if not -32768 <= x <= 32767:
                raise ValueError(f"sample {n} is no int16: {x}")
            step = STEPS[index]
            diff = x - pred
            code = 0
            if diff < 0:
                code = 8
                diff = -diff
            vpdiff = step >> 3
            if diff >= step:
                code |= 4
                diff -= step
                vpdiff += step
            step >>= 1
            if diff >= step:
                code |= 2
                diff -= step
                vpdiff += step
            step >>= 1
            if diff >= step:
                code |= 1
                vpdiff += step
            pred = _clamp(pred - vpdiff if code & 8 else pred + vpdiff)
            index = min(max(index + INDEX[code], 0), MAX_INDEX)
            if n & 1:
                out[HEADER_BYTES + (n >> 1)] |= code << 4
            else:
                out[HEADER_BYTES + (n >> 1)] = code
        self.predictor, self.index = pred, index
        return bytes(out)


def _samples(pcm: bytes | bytearray | memoryview | array) -> array:
    if isinstance(pcm, array):
        if pcm.typecode != "h":
            raise ValueError("PCM arrays must be array('h')")
        return pcm
    b = bytes(pcm)
    if len(b) % 2:
        raise ValueError("16-bit PCM has an even number of bytes")
    a = array("h", b)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def encode(pcm: bytes | bytearray | memoryview | array, encoder: Encoder | None = None) -> list[bytes]:
    """Little-endian int16 PCM (or array('h')) to blocks; the last block padded with its last
    sample. A fresh encoder starts at predictor = the first sample, index 0."""
    s = _samples(pcm)
    if encoder is None:
        encoder = Encoder(s[0] if len(s) else 0, 0)
    blocks = []
    for i in range(0, len(s), BLOCK_SAMPLES):
        chunk = list(s[i:i + BLOCK_SAMPLES])
        chunk += [chunk[-1]] * (BLOCK_SAMPLES - len(chunk))
        blocks.append(encoder.block(chunk))
    return blocks


def check(block: bytes | bytearray | memoryview) -> None:
    """Refuse a block that is not one of ours (AdpcmError), as the terminal's decoder does."""
    if len(block) != BLOCK_BYTES:
        raise AdpcmError("block_length", f"{len(block)} bytes, a block is {BLOCK_BYTES}")
    if block[2] > MAX_INDEX:
        raise AdpcmError("step_index", f"{block[2]} > {MAX_INDEX}")
    if block[3] != 0:
        raise AdpcmError("reserved", f"byte 3 is {block[3]}, must be 0")


def decode_samples(block: bytes | bytearray | memoryview) -> list[int]:
    """One block to its 320 samples (ints), the reference IMA decoder from the block's header."""
    check(block)
    b = bytes(block)
    pred, index, _ = struct.unpack_from("<hBB", b, 0)
    out = []
    for k in range(HEADER_BYTES, BLOCK_BYTES):
        byte = b[k]
        for code in (byte & 15, byte >> 4):
            step = STEPS[index]
            vpdiff = step >> 3
            if code & 4:
                vpdiff += step
            if code & 2:
                vpdiff += step >> 1
            if code & 1:
                vpdiff += step >> 2
            pred = _clamp(pred - vpdiff if code & 8 else pred + vpdiff)
            index = min(max(index + INDEX[code], 0), MAX_INDEX)
            out.append(pred)
    return out


def decode_block(block: bytes | bytearray | memoryview) -> bytes:
    """One block to 640 bytes of little-endian int16 PCM."""
    a = array("h", decode_samples(block))
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def decode(blocks: Iterable[bytes]) -> bytes:
    """Blocks to little-endian int16 PCM."""
    return b"".join(decode_block(b) for b in blocks)


def split(data: bytes) -> Iterator[bytes]:
    """A file of concatenated blocks into blocks (a short tail is refused by the decoder)."""
    for i in range(0, len(data), BLOCK_BYTES):
        yield data[i:i + BLOCK_BYTES]


def snr_db(ref: Iterable[int], test: Iterable[int]) -> float:
    """Signal-to-noise ratio of test against ref, in dB (inf when they are equal)."""
    import math

    sig = err = 0
    for a, b in zip(ref, test, strict=True):
        sig += a * a
        err += (a - b) * (a - b)
    if err == 0:
        return math.inf
    if sig == 0:
        return -math.inf
    return 10 * math.log10(sig / err)


def speech_like(n: int, seed: int = 1) -> list[int]:
    """n samples of a speech-like test signal (no recording needed): voiced syllables of ~0.2 s
    (a gliding 90-240 Hz fundamental, its harmonics up to 5 kHz shaped by two moving formants,
    a raised-cosine envelope), some with a fricative (differenced noise), pauses between; peaks
    near -6 dBFS. Deterministic for a seed."""
    import math
    import random

    rnd = random.Random(seed)
    out = [0.0] * n
    t = 0
    while t < n:
        t += int(RATE * rnd.uniform(0.03, 0.12))  # a pause
        dur = int(RATE * rnd.uniform(0.12, 0.3))
        f0a, f0b = rnd.uniform(90, 240), rnd.uniform(90, 240)
        f1, f2 = rnd.uniform(300, 900), rnd.uniform(900, 2500)
        level = rnd.uniform(0.3, 1.0)
        fric = rnd.random() < 0.3
        phase = 0.0
        last = 0.0
        for k in range(min(dur, n - t)):
            env = level * 0.5 * (1 - math.cos(2 * math.pi * k / dur))
            f0 = f0a + (f0b - f0a) * k / dur
            phase += 2 * math.pi * f0 / RATE
            v = 0.0
            h = 1
            while h * f0 < 5000:
                f = h * f0
                amp = (1 / (1 + ((f - f1) / 150) ** 2) + 0.5 / (1 + ((f - f2) / 250) ** 2)
                       + 0.02) / h ** 0.5
                v += amp * math.sin(h * phase)
                h += 1
            if fric and k > dur // 2:
                w = rnd.gauss(0, 1)
                v += 0.6 * (w - last)
                last = w
            out[t + k] = env * v
        t += dur
    peak = max((abs(v) for v in out), default=0.0) or 1.0
    return [round(16000 * v / peak) for v in out]


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.adpcm",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("op", choices=("encode", "decode"))
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args(argv)
    try:
        if a.op == "encode":
            with wave.open(a.src, "rb") as w:
                if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
                    print(f"{a.src}: need a 16 kHz mono 16-bit WAV", file=sys.stderr)
                    return 2
                pcm = w.readframes(w.getnframes())
            with open(a.dst, "wb") as f:
                f.write(b"".join(encode(pcm)))
        else:
            with open(a.src, "rb") as f:
                pcm = decode(split(f.read()))
            with wave.open(a.dst, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm)
    except (OSError, wave.Error, AdpcmError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
