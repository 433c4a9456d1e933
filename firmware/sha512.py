# SHA-512 (FIPS 180-4) in MicroPython: the ESP32 port's hashlib has no sha512, Ed25519 needs it.
#
# The compression is viper (native) code over 32-bit halves in preallocated buffers, so hashing
# allocates nothing per block: a hash costs its object, its state (one 204-byte bytearray) and
# the digest (64 bytes), whatever the message's length, and update() allocates nothing. (On
# Python ints every 64-bit word was a heap-allocated big int on the ESP32, 31-bit small ints.)
# The methods stay tiny on purpose: MicroPython puts the frame of a function with more than 11
# words of locals and stack on the heap, ~150 bytes a call; the work is in _update and _digest.
#
# The native source is firmware/sha512_native.py's _NATIVE, compiled here at import by the
# running port, then that module is dropped (see there why: an OTA release cannot carry native
# code). scripts/check-device builds it with mpy-cross -march=xtensawin, which also refuses a
# constant that is no small int on a 32-bit port (0xFFFFFFFF is one only on 64-bit ports).
#
# One source, two word sizes. Viper's int and uint are machine words: 32 bits on the ESP32, 64 on
# the emulator (unix x86-64). The source is correct on both, step by step, because
#   - a 64-bit word is two 32-bit halves, high first; a ptr32 load gives those 32 bits on both
#     (zero-extended on x64), a ptr32 store keeps the low 32 bits on both;
#   - every half is a uint: >> is a logical shift and < an unsigned compare on both (as an int, a
#     half with bit 31 set is negative on the ESP32 only, and >> would sign-extend it there);
#   - a value is shifted right or compared only while it is exactly 32 bits: just loaded, or
#     masked with m = 0xFFFF << 16 | 0xFFFF. A left shift or a sum may leave bits 32..63 on x64;
#     through ^ | & + they never reach bits 0..31, and the mask (a no-op on the ESP32) drops them
#     before anything could read them;
#   - a carry is "the masked low sum is below its first operand", that operand being exact too;
#   - no shift is by 32 or more (what that gives differs between machines).
# tests/test_sha512_mpy.py proves it: it runs _NATIVE on a model of viper's 32-bit machine over
# the FIPS examples and hashlib's digests, checks the model's 64-bit twin against the real x64
# viper, and shows that a dropped uint breaks only the 32-bit machine, a dropped mask only x64.
#
# _W (the message schedule), _D and _T (digest scratch) are shared: the native code never yields,
# and the firmware hashes on its one asyncio thread. Baseline: bench/sha512_plain.py.

import binascii
import sys

import sha512_native as _src
from micropython import const

_BLOCK = const(128)
_ST = const(204)  # st: the state (16 halves), the pending block, its fill, the byte count (2 halves)

_ns: dict = {"_W": bytearray(640), "_D": bytearray(64), "_T": bytearray(2 * _BLOCK)}
exec(_src._NATIVE, _ns)  # noqa: S102  (our own source, see sha512_native.py)
_update = _ns["_update"]
_digest = _ns["_digest"]
_D = _ns["_D"]
_K = _ns["_K"] = bytearray(binascii.unhexlify(_src.K))
_ns["_swap"](_K, 160)
_IV = bytearray(binascii.unhexlify(_src.IV) + bytes(_ST - 64))
_ns["_swap"](_IV, 16)
del _src
sys.modules.pop("sha512_native", None)


class SHA512:
    digest_size = 64
    block_size = _BLOCK

    def __init__(self, data=None):
        self._st = bytearray(_IV)
        if data is not None:
            _update(self._st, data)

    def update(self, data):
        _update(self._st, data)

    def digest(self):
        # Pads a copy, so update() may continue afterwards (like hashlib).
        _digest(self._st)
        return bytes(_D)

    def hexdigest(self):
        return binascii.hexlify(self.digest()).decode()


def sha512(data=b""):
    return SHA512(data).digest()
