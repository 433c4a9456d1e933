# Ed25519 signature verification (RFC 8032 §5.1.7) for alerts.md §1-2, in native code that does
# not allocate: the field is fe25519.py (20 limbs of 13 bits, 32-bit safe, see its header).
#
# - extended twisted Edwards coordinates (X:Y:Z:T), no inversion per addition (Hisil-Wong-
#   Carter-Dawson 2008, a = -1); T only when an addition follows;
# - one shared doubling chain for [S]B + [k](-A) (Straus): width-5 wNAF for the key (8 odd
#   multiples of -A, built per call), width-6 wNAF for the base point (16 affine odd multiples,
#   built once by precompute()); the digits are computed natively from the scalar's bytes;
# - each point operation is one program of fe25519.run (one native call; a doubling and the
#   addition after it one call), so one verification is about 300 native calls and a handful of
#   Python objects (the hash, k mod L: ~1.4 KB);
# - a single inversion at the end, to encode the result and compare it with R byte for byte.
#
# Checks: lengths, S < L (malleability), A and R with y >= p, A not on the curve or x = 0 with
# the sign bit set, and A of small order (its 8 points: [8]A is the identity): [k]A then takes at
# most 8 values, and anyone can make R = [S]B - [k]A hold (docs/verify.md). Cofactorless:
# encode([S]B - [k]A) == R; an R that is no canonical encoding never equals an encoded point.

from array import array

from fe25519 import _M, ADD, MUL, SQR, SUB, put, run
from sha512 import SHA512

_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
_P = 2**255 - 19
_LB = _L.to_bytes(32, "little")

# slots of fe25519._M (20 limbs each)
_ZERO, _ONE, _D, _D2, _SQRTM1 = 0, 1, 2, 3, 4  # 5: fe25519_small's scratch
_XF, _YF = 6, 7  # affine result
_X, _Y, _Z, _T = 8, 9, 10, 11  # the accumulator
_A, _B, _C, _DD, _E, _F, _G, _H = 12, 13, 14, 15, 16, 17, 18, 19
_T0, _T1, _T2, _T3 = 20, 21, 22, 23  # the exponentiation chain
_YA, _XA, _YY, _U, _V, _V3, _W7, _PW, _CK, _C1, _C2, _ZI = range(24, 36)
_Q2 = 36  # 2P in cached form while a table is built (4 slots)
_TA = 40  # 8 odd multiples of -A, cached (Y+X, Y-X, 2Z, 2dT): 32 slots
_TB = 72  # 16 odd multiples of B, affine cached (y+x, y-x, 2dxy): 48 slots, to 119
_R = 128  # operand relative to run()'s e

_code = bytearray()


def _sec(*ins):
    start = len(_code)
    for i in ins:
        _code.extend(bytes(i))
    return start, len(_code)


_r0, _r1, _r2, _r3 = _R, _R + 1, _R + 2, _R + 3
# dbl-2008-hwcd with a = -1, signs of E, F, G, H flipped (same X3, Y3, Z3, T3); T3 = TMUL
_DBLI = ((SQR, _A, _X, 1), (SQR, _B, _Y, 1), (SQR, _C, _Z, 1), (ADD, _C, _C, _C),
         (ADD, _H, _A, _B), (ADD, _E, _X, _Y), (SQR, _E, _E, 1), (SUB, _E, _H, _E),
         (SUB, _G, _A, _B), (ADD, _F, _G, _C),
         (MUL, _X, _E, _F), (MUL, _Y, _G, _H), (MUL, _Z, _F, _G))
_TMULI = (MUL, _T, _E, _H)
_DBL = _sec(*_DBLI)
_TMUL = _sec(_TMULI)


def _add(neg, affine, *pre):
    # add-2008-hwcd-3 with a cached point at e: (Y+X, Y-X, 2Z, 2dT) or affine (y+x, y-x, 2dxy);
    # neg adds its negative: Y+X and Y-X swap, 2dT changes sign (F and G swap)
    p, m = (_r1, _r0) if neg else (_r0, _r1)
    d = (ADD, _DD, _Z, _Z) if affine else (MUL, _DD, _Z, _r2)
    return _sec(*pre, (SUB, _A, _Y, _X), (MUL, _A, _A, m), (ADD, _B, _Y, _X), (MUL, _B, _B, p),
                (MUL, _C, _T, _r2 if affine else _r3), d, (SUB, _E, _B, _A),
                (ADD if neg else SUB, _F, _DD, _C), (SUB if neg else ADD, _G, _DD, _C),
                (ADD, _H, _B, _A), (MUL, _X, _E, _F), (MUL, _Y, _G, _H), (MUL, _Z, _F, _G))


_ADDP = _add(0, 0)
# the main loop's steps, one native call each: doubling + addition of -A's or B's multiple, and
# the second addition when both digits are nonzero
_DADDP, _DADDN = _add(0, 0, *_DBLI, _TMULI), _add(1, 0, *_DBLI, _TMULI)
_DADDBP, _DADDBN = _add(0, 1, *_DBLI, _TMULI), _add(1, 1, *_DBLI, _TMULI)
_TADDBP, _TADDBN = _add(0, 1, _TMULI), _add(1, 1, _TMULI)
_CACHE = _sec((ADD, _r0, _Y, _X), (SUB, _r1, _Y, _X), (ADD, _r2, _Z, _Z), (MUL, _r3, _T, _D2))
_AFF = _sec((ADD, _r0, _YF, _XF), (SUB, _r1, _YF, _XF), (MUL, _r2, _XF, _YF),
            (MUL, _r2, _r2, _D2))
_SETP = _sec((ADD, _X, _XA, _ZERO), (ADD, _Y, _YA, _ZERO), (ADD, _Z, _ONE, _ZERO),
             (MUL, _T, _XA, _YA))
_INIT = _sec((ADD, _X, _ZERO, _ZERO), (ADD, _Y, _ONE, _ZERO), (ADD, _Z, _ONE, _ZERO))
# z = slot e to the power 2**250 - 1 (ref10's chain), then to p - 2 (inverse) or 2**252 - 3
_CHAIN = ((SQR, _T0, _r0, 1), (SQR, _T1, _T0, 2), (MUL, _T1, _r0, _T1), (MUL, _T0, _T0, _T1),
          (SQR, _T2, _T0, 1), (MUL, _T1, _T1, _T2), (SQR, _T2, _T1, 5), (MUL, _T1, _T2, _T1),
          (SQR, _T2, _T1, 10), (MUL, _T2, _T2, _T1), (SQR, _T3, _T2, 20), (MUL, _T2, _T3, _T2),
          (SQR, _T2, _T2, 10), (MUL, _T1, _T2, _T1), (SQR, _T2, _T1, 50), (MUL, _T2, _T2, _T1),
          (SQR, _T3, _T2, 100), (MUL, _T2, _T3, _T2), (SQR, _T2, _T2, 50), (MUL, _T1, _T2, _T1))
_INV = _sec(*_CHAIN, (SQR, _T1, _T1, 5), (MUL, _ZI, _T1, _T0))
_POW = _sec(*_CHAIN, (SQR, _T1, _T1, 2), (MUL, _PW, _T1, _r0))
# RFC 8032 §5.1.3: u = y^2 - 1, v = dy^2 + 1, x = u v^3 (u v^7)^((p-5)/8), then v x^2 = +-u?
_DEC1 = _sec((SQR, _YY, _YA, 1), (SUB, _U, _YY, _ONE), (MUL, _V, _YY, _D), (ADD, _V, _V, _ONE),
             (SQR, _V3, _V, 1), (MUL, _V3, _V3, _V), (SQR, _W7, _V3, 1), (MUL, _W7, _W7, _V),
             (MUL, _W7, _W7, _U))
_DEC2 = _sec((MUL, _XA, _U, _V3), (MUL, _XA, _XA, _PW), (SQR, _CK, _XA, 1),
             (MUL, _CK, _CK, _V), (SUB, _C1, _CK, _U), (ADD, _C2, _CK, _U))
_ROOT = _sec((MUL, _XA, _XA, _SQRTM1))
_NEGX = _sec((SUB, _XA, _ZERO, _XA))
_FIN = _sec((MUL, _XF, _X, _ZI), (MUL, _YF, _Y, _ZI))
_PROG = _code  # every program, one bytearray

_NATIVE = """
# every value here stays below 2**21: 32-bit and 64-bit words compute the same
@micropython.viper
def _freeze(s: int) -> int:
    # slot s reduced in place to its canonical value < p; returns parity | (nonzero << 1)
    M = ptr16(_M)
    o = s * 20
    r = 0
    while r < 5:
        c = 0
        if r >= 3:
            c = int(M[o + 19]) >> 8
            M[o + 19] = int(M[o + 19]) & 0xFF
            c *= 19
        i = 0
        while i < 20:
            v = int(M[o + i]) + c
            M[o + i] = v & 0x1FFF
            c = v >> 13
            i += 1
        M[o] = int(M[o]) + 608 * c
        r += 1
    c = 19
    i = 0
    while i < 19:
        c = (int(M[o + i]) + c) >> 13
        i += 1
    if (int(M[o + 19]) + c) >> 8:
        c = 19
        i = 0
        while i < 20:
            v = int(M[o + i]) + c
            M[o + i] = v & 0x1FFF
            c = v >> 13
            i += 1
        M[o + 19] = int(M[o + 19]) & 0xFF
    nz = 0
    i = 0
    while i < 20:
        nz |= int(M[o + i])
        i += 1
    if nz:
        nz = 2
    return (int(M[o]) & 1) | nz

@micropython.viper
def _pack(s: int, out: ptr8):
    M = ptr16(_M)
    o = s * 20
    acc = 0
    n = 0
    j = 0
    i = 0
    while i < 20:
        acc |= int(M[o + i]) << n
        n += 13
        while n >= 8 and j < 32:
            out[j] = acc & 0xFF
            acc >>= 8
            n -= 8
            j += 1
        i += 1

@micropython.viper
def _unpack(s: int, src: ptr8):
    # 32 bytes, little-endian, bit 255 dropped
    M = ptr16(_M)
    o = s * 20
    acc = 0
    n = 0
    j = 0
    i = 0
    while i < 20:
        while n < 13 and j < 32:
            acc |= int(src[j]) << n
            n += 8
            j += 1
        M[o + i] = acc & 0x1FFF
        acc >>= 13
        n -= 13
        i += 1
    M[o + 19] = int(M[o + 19]) & 0xFF

@micropython.viper
def _wnaf(k: ptr8, off: int, w: int, out: ptr8) -> int:
    # width-w NAF digits of the 32-byte scalar at k[off:] into out (int8, little-endian);
    # returns the highest nonzero position + 1
    full = 1 << w
    mask = full - 1
    half = full >> 1
    i = 0
    carry = 0
    top = 0
    while i < 262:
        j = i >> 3
        x = 0
        if j < 32:
            x = int(k[off + j])
        if j < 31:
            x |= int(k[off + j + 1]) << 8
        x = (x >> (i & 7)) & mask
        if (x & 1) == carry:
            out[i] = 0
            i += 1
            continue
        x += carry
        carry = 0
        if x >= half:
            x -= full
            carry = 1
        out[i] = x & 0xFF
        top = i + 1
        n = 1
        while n < w:
            out[i + n] = 0
            n += 1
        i += w
    return top
"""

_ns: dict = {"_M": _M}
exec(_NATIVE, _ns)  # noqa: S102  (a 3 KB source, kept: fe25519_native.py holds the big one)
_freeze = _ns["_freeze"]
_pack = _ns["_pack"]
_unpack = _ns["_unpack"]
_wnaf = _ns["_wnaf"]
del _ns

_run = run  # bench/bench_verify.py swaps in a counting wrapper
_NA = array("b", bytes(272))  # wNAF digits of k and S
_NB = array("b", bytes(272))
_OUT = bytearray(32)
_ready = False


def _setup():
    put(_ZERO, 0)
    put(_ONE, 1)
    d = -121665 * pow(121666, _P - 2, _P) % _P
    put(_D, d)
    put(_D2, 2 * d % _P)
    put(_SQRTM1, pow(2, (_P - 1) // 4, _P))


def precompute():
    """Build the base point's table now (16 entries, 16 inversions, once per boot); verify()
    builds it on first use otherwise. The tables live in fe25519's preallocated array."""
    global _ready
    if _ready:
        return
    _setup()
    r = _run
    by = 4 * pow(5, _P - 2, _P) % _P
    put(_XA, 0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A)
    put(_YA, by)
    _table(_TB, 3)
    for j in range(16):  # each entry to affine: one inversion
        r(_PROG, _INV[0], _INV[1], _Z)
        r(_PROG, _FIN[0], _FIN[1], 0)  # XF, YF = X/Z, Y/Z: [2j+1]B, affine
        r(_PROG, _AFF[0], _AFF[1], _TB + 3 * j)
        r(_PROG, _ADDP[0], _ADDP[1], _Q2)
        r(_PROG, _TMUL[0], _TMUL[1], 0)
    _ready = True


def _table(at, stride):
    # acc = P (from XA, YA); Q2 = 2P cached; for the key, the 8 odd multiples are cached at `at`;
    # for the base point (stride 3) the caller converts each multiple while acc walks on.
    r = _run
    r(_PROG, _SETP[0], _SETP[1], 0)
    r(_PROG, _DBL[0], _DBL[1], 0)
    r(_PROG, _TMUL[0], _TMUL[1], 0)
    r(_PROG, _CACHE[0], _CACHE[1], _Q2)
    r(_PROG, _SETP[0], _SETP[1], 0)
    if stride == 4:
        r(_PROG, _CACHE[0], _CACHE[1], at)
        for j in range(1, 8):
            r(_PROG, _ADDP[0], _ADDP[1], _Q2)
            r(_PROG, _TMUL[0], _TMUL[1], 0)
            r(_PROG, _CACHE[0], _CACHE[1], at + 4 * j)


def _above_p(b):
    # the 32-byte encoding b has y >= p (bit 255 is the sign): 2**255 - 19 .. 2**255 - 1
    if b[31] & 0x7F != 0x7F or b[0] < 0xED:
        return False
    for i in range(1, 31):
        if b[i] != 0xFF:
            return False
    return True


def _below_l(b):
    # S = sig[32:64] as a little-endian integer is < L
    lb = _LB
    for i in range(31, -1, -1):
        x = b[32 + i]
        if x != lb[i]:
            return x < lb[i]
    return False


def _decode(pub):
    # -A into XA, YA; False when pub is no point, or of small order
    r = _run
    if _above_p(pub):
        return False
    _unpack(_YA, pub)
    r(_PROG, _DEC1[0], _DEC1[1], 0)
    r(_PROG, _POW[0], _POW[1], _W7)
    r(_PROG, _DEC2[0], _DEC2[1], 0)
    if _freeze(_C1) >= 2:  # v x^2 != u
        if _freeze(_C2) >= 2:  # nor -u: no square root
            return False
        r(_PROG, _ROOT[0], _ROOT[1], 0)
    f = _freeze(_XA)
    sign = pub[31] >> 7
    if f < 2 and sign:
        return False  # x = 0 has no negative
    if f & 1 == sign:
        r(_PROG, _NEGX[0], _NEGX[1], 0)  # A has this x: -A has the other root
    r(_PROG, _SETP[0], _SETP[1], 0)
    for _ in range(3):
        r(_PROG, _DBL[0], _DBL[1], 0)
    return _freeze(_X) >= 2  # [8]A = O (X = 0): one of the 8 points of small order


def verify(pub, msg, sig):
    """True when sig (64 bytes) is pub's (32 bytes) Ed25519 signature of msg.

    Any bad input (wrong length or type, undecodable or small-order key, S >= L) gives False;
    the only exception that escapes is MemoryError, so a full heap is not logged as a forgery."""
    try:
        return _verify(pub, msg, sig)
    except MemoryError:
        raise  # not the input's fault: the caller must not report a forgery
    except Exception:
        return False


def _verify(pub, msg, sig):
    if len(pub) != 32 or len(sig) != 64:
        return False
    precompute()
    if _above_p(sig) or not _below_l(sig) or not _decode(pub):
        return False
    r = _run
    prog = _PROG
    _table(_TA, 4)
    h = SHA512(sig[:32])
    h.update(pub)
    h.update(msg)
    k = (int.from_bytes(h.digest(), "little") % _L).to_bytes(32, "little")
    na = _NA
    nb = _NB
    top = _wnaf(k, 0, 5, na)
    t = _wnaf(sig, 32, 6, nb)
    if t > top:
        top = t
    d0, d1 = _DBL
    r(prog, _INIT[0], _INIT[1], 0)
    for i in range(top - 1, -1, -1):
        da = na[i]
        db = nb[i]
        if da:
            if da > 0:
                r(prog, _DADDP[0], _DADDP[1], _TA + 2 * (da - 1))  # entry (da - 1) / 2, 4 slots
            else:
                r(prog, _DADDN[0], _DADDN[1], _TA + 2 * (-da - 1))
            if db > 0:
                r(prog, _TADDBP[0], _TADDBP[1], _TB + 3 * (db >> 1))
            elif db:
                r(prog, _TADDBN[0], _TADDBN[1], _TB + 3 * (-db >> 1))
        elif db > 0:
            r(prog, _DADDBP[0], _DADDBP[1], _TB + 3 * (db >> 1))
        elif db:
            r(prog, _DADDBN[0], _DADDBN[1], _TB + 3 * (-db >> 1))
        else:
            r(prog, d0, d1, 0)
    r(prog, _INV[0], _INV[1], _Z)
    r(prog, _FIN[0], _FIN[1], 0)
    x = _freeze(_XF) & 1
    _freeze(_YF)
    out = _OUT
    _pack(_YF, out)
    out[31] |= x << 7
    for i in range(32):
        if out[i] != sig[i]:
            return False
    return True
