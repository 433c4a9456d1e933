# Live announcements' audio (issue 13): one IMA ADPCM block (164 bytes) into 20 ms of 16 kHz
# mono PCM (320 little-endian int16 samples, 640 bytes), the player's chunk (tones.py CHUNK).
#
# The format is tools/adpcm.py's (its docstring has it byte for byte; docs/broadcast.md "Live
# audio: IMA ADPCM blocks"): a 4-byte header (predictor int16 little-endian, step index 0..88,
# a reserved 0), then 160 bytes of 4-bit codes, low nibble first. Each block starts from its own
# header, so a lost block costs its 20 ms and nothing after it. decode() gives the samples the
# host's decoder gives, bit for bit (tests/test_adpcm_mpy.py).
#
# decode(block, out) writes into the caller's buffer and allocates nothing: the work is one call
# of native code (adpcm_native.py's _NATIVE, compiled here at import by the running port, then
# that module is dropped, as sha512.py does; scripts/check-device builds it for the ESP32). A
# block that is not one of ours is refused with AdpcmError, never decoded into noise:
#   "block_length"  not exactly 164 bytes (truncated or oversized)
#   "out_length"    the output buffer is shorter than 640 bytes
#   "step_index"    header byte 2 above 88 (the step table has 89 entries)
#   "reserved"      header byte 3 not 0
# Figures (ms of CPU per second of audio, here and estimated for the ESP32): docs/benchmarks.md
# "IMA ADPCM decode (MicroPython)". Baseline: bench/adpcm_plain.py.

import sys
from array import array

import adpcm_gain as _gsrc
import adpcm_native as _src
from micropython import const

RATE = const(16000)
BLOCK_SAMPLES = const(320)
BLOCK_BYTES = const(164)
PCM_BYTES = const(640)
_STEPS = const(89)  # step indexes 0..88



def _table():
    # _decode's table (adpcm_native.py): at 8 * index + code (0..7), the difference the code makes
    # (low 16 bits) and 8 * the next index (above), from the IMA step table.
    step = (
        7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60,
        66, 73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371,
        408, 449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707,
        1878, 2066, 2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132,
        7845, 8630, 9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623,
        27086, 29794, 32767,
    )
    tab = array("I", bytes(4 * 8 * _STEPS))
    for x in range(_STEPS):
        s = step[x]
        for c in range(8):
            d = s >> 3
            if c & 4:
                d += s
            if c & 2:
                d += s >> 1
            if c & 1:
                d += s >> 2
            n = x - 1 if c < 4 else x + 2 * (c - 3)
            n = 0 if n < 0 else 88 if n > 88 else n
            tab[8 * x + c] = (8 * n) << 16 | d
    return tab


_ns: dict = {"_TAB": _table()}
del _table  # its bytecode and the step table with it
exec(_src._NATIVE, _ns)  # noqa: S102  (our own source, see adpcm_native.py)
_decode = _ns["_decode"]
exec(_gsrc._NATIVE, _ns)  # noqa: S102  (our own source, see adpcm_gain.py)
_scale = _ns["_scale"]
del _src, _gsrc
sys.modules.pop("adpcm_native", None)
sys.modules.pop("adpcm_gain", None)

_REASONS = ("block_length", "out_length", "step_index", "reserved")


class AdpcmError(ValueError):
    """A block refused; reason is one of _REASONS (see above)."""

    def __init__(self, reason, detail=None):
        super().__init__(reason, detail)
        self.reason = reason


def decode(block, out):
    """Decode one 164-byte block into out (a bytearray or a writable memoryview, at least 640
    bytes: never bytes, the native code writes into it); returns 320, the samples written.
    Raises AdpcmError for a block that is not one of ours (out is then untouched)."""
    n = _decode(block, out)
    if n < 0:
        _refuse(n, block, out)
    return n


def scale(buf, n, g):
    """Samples in place: n bytes of buf (int16 little-endian, writable) times the Q15 gain g
    (0..0x8000, clip._gain), each s to (s * g) >> 15; native code, allocates nothing."""
    if _scale(buf, n, g) < 0:
        raise AdpcmError("out_length", len(buf))


def _refuse(n, block, out):
    reason = _REASONS[-1 - n]
    if n == -1:
        detail = len(block)
    elif n == -2:
        detail = len(out)
    else:
        detail = block[-1 - n]  # byte 2 (the step index) or 3 (reserved)
    raise AdpcmError(reason, detail)
