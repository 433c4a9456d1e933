"""tools/adpcm.py: the IMA ADPCM block format of live announcements, on the host (CPython).

audioop (deprecated since 3.11, gone in 3.13) is the independent reference where it exists: its
lin2adpcm/adpcm2lin are the same IMA/DVI reference coder, packing the first sample in the high
nibble, so its bytes are ours with the nibbles swapped. Without it those tests are skipped; the
hand-worked block below still pins the arithmetic.
"""

from __future__ import annotations

import math
import random
import struct
import sys
import warnings
import wave
from array import array

import pytest

from tools import adpcm

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13+
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is gone (Python 3.13+)")


def pcm(samples) -> bytes:
    a = array("h", samples)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def unpcm(b: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(b) // 2}h", b))


def clamp(v: float) -> int:
    return max(-32768, min(32767, round(v)))


def signals() -> dict[str, list[int]]:
    rnd = random.Random(13)
    n = adpcm.RATE  # one second each
    sweep, ph = [], 0.0
    for i in range(n):
        ph += 2 * math.pi * (50 + 7950 * i / n) / adpcm.RATE
        sweep.append(clamp(30000 * math.sin(ph)))
    return {
        "silence": [0] * n,
        "sweep": sweep,
        "noise": [rnd.randint(-32768, 32767) for _ in range(n)],
        "quiet_noise": [clamp(rnd.gauss(0, 300)) for _ in range(n)],
        "square": [32767 if (i // 40) % 2 else -32768 for i in range(n)],  # 200 Hz, full scale
        "speech": adpcm.speech_like(n),
    }


def test_tables_are_ima():
    assert len(adpcm.STEPS) == 89 and adpcm.STEPS[0] == 7 and adpcm.STEPS[-1] == 32767
    assert adpcm.STEPS[44] == 494 and list(adpcm.STEPS) == sorted(set(adpcm.STEPS))
    assert adpcm.INDEX == (-1, -1, -1, -1, 2, 4, 6, 8) * 2
    assert (adpcm.BLOCK_SAMPLES, adpcm.BLOCK_BYTES, adpcm.HEADER_BYTES) == (320, 164, 4)


def test_a_block_worked_by_hand():
    # header: predictor -2 (FE FF), index 0, reserved 0; codes: 7 then 0, then 8 (-), 15 (-)
    block = bytes([0xFE, 0xFF, 0, 0, 0x07, 0xF8]) + bytes(158)
    s = adpcm.decode_samples(block)
    # 7: step 7, 7/8 + 7 + 7/2 + 7/4 = 0 + 7 + 3 + 1 = 11 -> 9, index 8 (step 16)
    # 0: 16 >> 3 = 2 -> 11, index 7 (step 14)
    # 8: 14 >> 3 = 1, negative -> 10, index 6 (step 13)
    # 15: 1 + 13 + 6 + 3 = 23, negative -> -13, index 14 (step 28)
    assert s[:4] == [9, 11, 10, -13]
    assert adpcm.decode_block(block)[:8] == struct.pack("<4h", 9, 11, 10, -13)
    assert len(s) == 320 and len(adpcm.decode_block(block)) == 640


def test_header_is_the_state_and_low_nibble_first():
    enc = adpcm.Encoder(1234, 17)
    b = enc.block([1234 + 100 * (i % 7) for i in range(320)])
    assert len(b) == 164 and b[:4] == struct.pack("<hBB", 1234, 17, 0)
    state = (enc.predictor, enc.index)
    assert state[0] == adpcm.decode_samples(b)[-1]  # the encoder tracks the decoder exactly
    b2 = enc.block([-5] * 320)
    assert b2[:4] == struct.pack("<hBB", *state, 0)  # the next header: the state after b
    # byte 4's low nibble is sample 0: 0x07 is +11 then +2, 0x70 is +0 then +11
    assert adpcm.decode_samples(bytes([0, 0, 0, 0, 0x07]) + bytes(159))[:2] == [11, 13]
    assert adpcm.decode_samples(bytes([0, 0, 0, 0, 0x70]) + bytes(159))[:2] == [0, 11]


@needs_audioop
@pytest.mark.parametrize("name", list(signals()))
def test_encoder_and_decoder_match_audioop(name):
    s = signals()[name]
    data = pcm(s)
    blocks = adpcm.encode(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref, _ = audioop.lin2adpcm(data, 2, (s[0], 0))
        ref_pcm, _ = audioop.adpcm2lin(ref, 2, (s[0], 0))
    swapped = bytes((x >> 4) | ((x & 15) << 4) for x in ref)
    assert b"".join(b[4:] for b in blocks) == swapped
    assert adpcm.decode(blocks) == ref_pcm


@needs_audioop
def test_decoder_matches_audioop_on_random_blocks():
    rnd = random.Random(7)
    for _ in range(300):
        pred, index = rnd.randint(-32768, 32767), rnd.randint(0, 88)
        codes = bytes(rnd.randrange(256) for _ in range(160))
        block = struct.pack("<hBB", pred, index, 0) + codes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            swapped = bytes((x >> 4) | ((x & 15) << 4) for x in codes)
            ref, _ = audioop.adpcm2lin(swapped, 2, (pred, index))
        assert adpcm.decode_block(block) == ref


def test_a_lost_or_damaged_block_does_not_reach_the_next():
    s = signals()["speech"]
    blocks = adpcm.encode(pcm(s))
    whole = adpcm.decode(blocks)
    for k in (3, 20, 40):
        damaged = list(blocks)
        damaged[k] = damaged[k][:4] + bytes(255 - x for x in damaged[k][4:])
        out = adpcm.decode(damaged)
        assert out[:640 * k] == whole[:640 * k]
        assert out[640 * k:640 * (k + 1)] != whole[640 * k:640 * (k + 1)]
        assert out[640 * (k + 1):] == whole[640 * (k + 1):]
        without = adpcm.decode(blocks[:k] + blocks[k + 1:])
        assert without == whole[:640 * k] + whole[640 * (k + 1):]


@pytest.mark.parametrize("n", [0, 1, 4, 163, 165, 328])
def test_wrong_length_is_refused(n):
    with pytest.raises(adpcm.AdpcmError) as e:
        adpcm.decode_block(bytes(n))
    assert e.value.reason == "block_length" and f"{n} bytes" in str(e.value)


@pytest.mark.parametrize("index", [89, 90, 127, 255])
def test_bad_step_index_is_refused(index):
    with pytest.raises(adpcm.AdpcmError) as e:
        adpcm.decode_samples(bytes([0, 0, index, 0]) + bytes(160))
    assert e.value.reason == "step_index"
    adpcm.check(bytes([0, 0, 88, 0]) + bytes(160))  # 88 is the last good one


def test_reserved_byte_must_be_zero():
    with pytest.raises(adpcm.AdpcmError) as e:
        adpcm.decode_block(bytes([0, 0, 0, 1]) + bytes(160))
    assert e.value.reason == "reserved"


def test_encoder_pads_the_last_block_with_its_last_sample():
    s = [i * 10 for i in range(321)]
    blocks = adpcm.encode(pcm(s))
    assert len(blocks) == 2
    assert adpcm.encode(b"") == []
    tail = adpcm.decode_samples(blocks[1])
    assert abs(tail[-1] - 3200) < 40  # settles on the last sample, no step to silence


def test_encoder_refuses_what_is_not_int16_or_not_a_block():
    with pytest.raises(ValueError):
        adpcm.Encoder().block([0] * 319)
    with pytest.raises(ValueError):
        adpcm.Encoder().block([32768] + [0] * 319)
    with pytest.raises(ValueError):
        adpcm.Encoder(0, 89)
    with pytest.raises(ValueError):
        adpcm.encode(b"\0\0\0")


def test_quality():
    sig = signals()
    snr = {k: adpcm.snr_db(v, unpcm(adpcm.decode(adpcm.encode(pcm(v))))) for k, v in sig.items()}
    assert snr["silence"] == math.inf  # exact zeros
    assert snr["speech"] > 17  # 18.7 dB measured (docs/benchmarks.md)
    assert snr["sweep"] > 15 and snr["quiet_noise"] > 8 and snr["square"] > 5


def test_cli_round_trip(tmp_path):
    s = signals()["speech"][:4000]
    src = tmp_path / "in.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm(s))
    assert adpcm._main(["encode", str(src), str(tmp_path / "a.adpcm")]) == 0
    raw = (tmp_path / "a.adpcm").read_bytes()
    assert len(raw) == 13 * 164  # 4000 samples: 12.5 blocks, padded
    assert adpcm._main(["decode", str(tmp_path / "a.adpcm"), str(tmp_path / "out.wav")]) == 0
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 13 * 320
        assert w.readframes(w.getnframes()) == adpcm.decode(adpcm.split(raw))
    (tmp_path / "bad.adpcm").write_bytes(raw[:-1])
    assert adpcm._main(["decode", str(tmp_path / "bad.adpcm"), str(tmp_path / "x.wav")]) == 1
