# GF(2**255 - 19) for Ed25519 on the ESP32: 20 limbs of 13 bits in a preallocated array, native code.
#
# A field element is 20 unsigned 13-bit limbs, value sum(l[i] << 13*i), kept "loose": every limb
# < 2**13 + 2**3 after any operation here (inputs may be up to LOOSE = 12287 and still be safe), so
# the value is below 2**260 and only congruent mod p. Elements live in slots of one array('H') (_M,
# 20 halfwords a slot, 40 bytes); no operation allocates. Arithmetic is a small interpreter, run(prog, pc,
# end, e): 4-byte instructions (op, d, a, b) on slot numbers, an operand >= 128 meaning slot
# e + (operand - 128), so one program serves every table entry. ops: MUL d = a*b, SQR d = a**(2**b),
# ADD d = a+b, SUB d = a-b. One native call runs a whole point doubling or addition: on the ESP32
# a call into native code costs as much as several field additions.
#
# Why 32-bit words are enough (the ESP32's viper ints; x86-64 viper ints are 64-bit):
# - MUL/SQR form the 39 product columns c_k = sum a_i*b_j (i+j = k) folding column k+20 into limb
#   k (2**260 = 608 mod p): per limb k, h gathers column k+20 plus the carry of column k+19, l gathers
#   column k, 608*(h & 0x1FFF) and the carry of limb k-1. With limbs <= LOOSE a column is at most
#   20 * 12287**2 = 3.02e9, l at most 3.03e9 < 2**32; each carry is a right shift by 13. The last
#   carries fold as 608 (out of limb 19) and 608**2 (out of column 39) into limb 0, two carry steps
#   leave limbs 0-1 < 2**13 and limb 2 < 2**13 + 5.
# - ADD/SUB: a_i + b_i, or a_i + B_i - b_i with B = 64p written as limbs 23360, 24573 (x 18),
#   16381 (each >= LOOSE, so no limb goes negative), plus the carry: below 2**16 on any machine;
#   the carry out of limb 19 folds in as 608. Unrolled, on pointers to the three slots.
# - Only a right shift (a carry) or a comparison can see bits above 31; +, -, * and & give the
#   same low 32 bits whatever the word size, and a store into the 16-bit array keeps 16 bits. So
#   in MUL/SQR, where a value can pass 2**32 if a bound is wrong, every value is masked with w
#   before it is shifted: w = _W = 0xFFFFFFFF makes x86-64 compute bit for bit what the ESP32
#   computes, whatever the operands (ADD/SUB values cannot pass 2**17). word(64) drops the mask;
#   tests/test_crypto_mpy.py runs the RFC 8032 vectors in both modes, operands at LOOSE (all
#   columns grow with every limb, so that is the worst case) which must agree, exactly, and
#   operands above it, where x86-64 in 32-bit mode must match a model of a 32-bit machine and a
#   copy of the source with one mask dropped must not.
#
# The native code is fe25519_native.py's _NATIVE, compiled here at import by the running port and
# then dropped, as sha512.py does: an OTA release is compiled without -march for every board, and
# mpy-cross refuses a viper decorator then; scripts/check-device builds it with -march=xtensawin.
# When that cannot be placed (MemoryError: the ESP32 keeps native code in IRAM, a few tens of KB
# shared with the port), fe25519_small.py's loops compute the same thing in a few KB, slower;
# FAST says which one runs.

import sys
from array import array

import fe25519_native as _src

NSLOT = 120  # slots in _M: constants, temporaries, the key's and the base point's tables (4.8 KB)
LOOSE = 12287  # largest limb an operand may carry (see above)
MUL = 0
SQR = 1
ADD = 2
SUB = 3

_M = array("H", bytes(NSLOT * 40))
_W = 0xFFFFFFFF


def word(bits):
    """Mask carries to 32 bits (the ESP32, the default) or, for tests, let a 64-bit host keep all."""
    _ns["_W"] = 0xFFFFFFFF if bits == 32 else -1


def put(slot, x):
    """Store the int x (0 <= x < 2**260) into slot, as limbs. Python ints: setup and tests only."""
    o = slot * 20
    for i in range(20):
        _M[o + i] = x & 0x1FFF
        x >>= 13


def get(slot):
    """The value of slot (not reduced mod p). Setup and tests only."""
    o = slot * 20
    x = 0
    for i in range(19, -1, -1):
        x = (x << 13) | _M[o + i]
    return x


_ns: dict = {"_M": _M, "_W": _W}
try:
    exec(_src._NATIVE, _ns)  # noqa: S102  (our own source, see above)
    FAST = True
except MemoryError:  # no room for 26 KB of native code (IRAM on the ESP32): the compact loops
    del _src
    sys.modules.pop("fe25519_native", None)
    import fe25519_small as _src

    exec(_src._NATIVE, _ns)  # noqa: S102
    FAST = False
run = _ns["run"]
del _src
sys.modules.pop("fe25519_native", None)  # its 20 KB source string goes with it
sys.modules.pop("fe25519_small", None)
