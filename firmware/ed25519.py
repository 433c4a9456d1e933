# Ed25519 signature verification (RFC 8032 §5.1.7), pure MicroPython, for alerts.md §1-2.
#
# Speed comes from three things, all in plain ints mod p = 2**255 - 19:
# - extended twisted Edwards coordinates (X:Y:Z:T), so no inversion per addition
#   (Hisil-Wong-Carter-Dawson 2008, a = -1); T is only computed when an addition
#   follows, which saves a multiplication on most doublings;
# - one shared doubling chain for [S]B + [k](-A) (Straus), with width-5 wNAF for
#   the key's odd multiples (8 points, built per call) and width-6 wNAF for the
#   base point's (16 affine points, built once on first use and kept packed in 1.5 KB:
#   width 8's 64 points held 6 KB more for no verify time measurable side by side, issue 9);
# - a single inversion at the end, to encode the result and compare it with R.
#
# Verification is cofactorless: encode([S]B - [k]A) == R, byte for byte. An R
# that is not a canonical point encoding can never equal an encoded point, so it
# is rejected without being decoded. Small-order keys are not rejected (RFC 8032
# does not require it); the trust anchors are configured, not attacker-chosen.

from array import array

from micropython import const
from sha512 import SHA512

_P = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED)
_L = const(0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED)
_D = const(0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3)
_D2 = const(0x2406D9DC56DFFCE7198E80F2EEF3D13000E0149A8283B156EBD69B9426B2F159)
_SQRT_M1 = const(0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0)
_BX = const(0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A)
_BY = const(0x6666666666666666666666666666666666666666666666666666666666666658)
_Y_MASK = const((1 << 255) - 1)

_WA = const(5)   # wNAF width for the public key: 2**(5-2) = 8 odd multiples per call
_WB = const(6)   # wNAF width for the base point: 2**(6-2) = 16 cached odd multiples
_NB = const(16)  # entries in the base table, 2**(_WB-2)
_ENTRY = const(96)  # bytes per base-table entry: three 32-byte field elements

_ZEROS = bytes(256)  # wNAF digit positions: scalars are < 2**253
_base_table = None


def decode_point(b):
    """32-byte encoding -> affine (x, y), or None when it is not a valid point (RFC 8032 §5.1.3)."""
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= _Y_MASK
    if y >= _P:
        return None
    p = _P
    yy = y * y % p
    u = yy - 1
    v = (_D * yy + 1) % p
    v3 = v * v * v % p
    x = u * v3 * pow(u * v3 * v3 * v % p, (p - 5) >> 3, p) % p
    vxx = v * x * x % p
    if vxx != u % p:
        if vxx != -u % p:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def encode_point(x, y):
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _double(X, Y, Z):
    # dbl-2008-hwcd with a = -1; returns extended coordinates.
    p = _P
    A = X * X % p
    B = Y * Y % p
    C = Z * Z % p
    E = (X * Y % p) << 1
    G = B - A
    F = G - C - C
    H = -A - B
    return E * F % p, G * H % p, F * G % p, E * H % p


def _add(X, Y, Z, T, q):
    # add-2008-hwcd-3 with q in cached form (Y+X, Y-X, 2Z, 2dT).
    p = _P
    ypx, ymx, z2, t2d = q
    A = (Y - X) * ymx % p
    B = (Y + X) * ypx % p
    C = T * t2d % p
    D = Z * z2 % p
    E = B - A
    F = D - C
    G = D + C
    H = B + A
    return E * F % p, G * H % p, F * G % p, E * H % p


def _odd_multiples(X, Y, Z, T, n):
    # [1]P, [3]P, ..., [2n-1]P in extended coordinates.
    p = _P
    X2, Y2, Z2, T2 = _double(X, Y, Z)
    q2 = ((Y2 + X2) % p, (Y2 - X2) % p, (Z2 << 1) % p, T2 * _D2 % p)
    out = [(X, Y, Z, T)]
    for _ in range(n - 1):
        X, Y, Z, T = _add(X, Y, Z, T, q2)
        out.append((X, Y, Z, T))
    return out


def _cached(pts):
    p = _P
    return [((Y + X) % p, (Y - X) % p, (Z << 1) % p, T * _D2 % p) for X, Y, Z, T in pts]


def precompute():
    """Build the base-point table now (16 point additions and 2 inversions, once per boot).

    Call it at a quiet point at boot: a 1.5 KB block is easiest to find in a fresh heap.
    verify() builds it on first use otherwise."""
    _base()


def _base():
    # Odd multiples [1]B..[31]B in affine cached form (y+x, y-x, 2dxy), Z = 1 saving a
    # multiplication per add; packed as 32-byte little-endian ints (1.5 KB, no per-int overhead).
    # Built in chunks of 8 with one inversion each (Montgomery's trick) to keep the
    # transient RAM small on a 100 KB heap.
    global _base_table
    if _base_table is None:
        p = _P
        table = bytearray(_NB * _ENTRY)
        X, Y, Z, T = _double(_BX, _BY, 1)
        q2 = ((Y + X) % p, (Y - X) % p, (Z << 1) % p, T * _D2 % p)
        X, Y, Z, T = _BX, _BY, 1, _BX * _BY % p
        for first in range(0, _NB, 8):
            pts = []
            acc = [1]
            for _ in range(8):
                pts.append((X, Y, Z))
                acc.append(acc[-1] * Z % p)
                X, Y, Z, T = _add(X, Y, Z, T, q2)
            inv = pow(acc[8], p - 2, p)
            for i in range(7, -1, -1):
                x, y, z = pts[i]
                zi = inv * acc[i] % p
                inv = inv * z % p
                x = x * zi % p
                y = y * zi % p
                o = (first + i) * _ENTRY
                table[o:o + 32] = ((y + x) % p).to_bytes(32, "little")
                table[o + 32:o + 64] = ((y - x) % p).to_bytes(32, "little")
                table[o + 64:o + 96] = (x * y % p * _D2 % p).to_bytes(32, "little")
        _base_table = table
    return _base_table


def _wnaf(k, w, out):
    # Width-w NAF digits of k into out (little-endian); returns the highest nonzero index + 1.
    full = 1 << w
    half = full >> 1
    mask = full - 1
    i = 0
    while k:
        if k & 1:
            dg = k & mask
            if dg >= half:
                dg -= full
            k -= dg
            out[i] = dg
        else:
            out[i] = 0
        k >>= 1
        i += 1
    return i


def verify(pub, msg, sig):
    """True when sig (64 bytes) is pub's (32 bytes) Ed25519 signature of msg.

    Any bad input (wrong length or type, undecodable key, S >= L) gives False; the
    only exception that escapes is MemoryError, so a full heap is not logged as a forgery."""
    try:
        return _verify(pub, msg, sig)
    except MemoryError:
        raise  # not the input's fault: the caller must not report a forgery
    except Exception:
        return False


def _verify(pub, msg, sig):
    if len(pub) != 32 or len(sig) != 64:
        return False
    tb = _base()  # first, before this call's temporaries fragment the heap
    r = int.from_bytes(sig[:32], "little")
    if r & _Y_MASK >= _P:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= _L:
        return False
    a = decode_point(pub)
    if a is None:
        return False
    h = SHA512(sig[:32])
    h.update(pub)
    h.update(msg)
    k = int.from_bytes(h.digest(), "little") % _L

    p = _P
    # -A, so the chain computes [S]B + [k](-A) = [S]B - [k]A.
    ax = p - a[0] if a[0] else 0
    ay = a[1]
    ta = _cached(_odd_multiples(ax, ay, 1, ax * ay % p, 1 << (_WA - 2)))
    fb = int.from_bytes

    na = array("b", _ZEROS)  # signed wNAF digits, |d| < 128
    nb = array("b", _ZEROS)
    top = max(_wnaf(k, _WA, na), _wnaf(s, _WB, nb))

    X, Y, Z, T = 0, 1, 1, 0
    for i in range(top - 1, -1, -1):
        da = na[i]
        db = nb[i]
        # doubling, inlined (see _double); T only when an addition follows
        A = X * X % p
        B = Y * Y % p
        C = Z * Z % p
        E = (X * Y % p) << 1
        G = B - A
        F = G - C - C
        H = -A - B
        X = E * F % p
        Y = G * H % p
        Z = F * G % p
        if da or db:
            T = E * H % p
            if da:
                if da > 0:
                    ypx, ymx, z2, t2d = ta[da >> 1]
                    C = T * t2d % p
                else:
                    ymx, ypx, z2, t2d = ta[-da >> 1]
                    C = -T * t2d % p
                A = (Y - X) * ymx % p
                B = (Y + X) * ypx % p
                D = Z * z2 % p
                E = B - A
                F = D - C
                G = D + C
                H = B + A
                X = E * F % p
                Y = G * H % p
                Z = F * G % p
                T = E * H % p
            if db:
                if db > 0:
                    o = (db >> 1) * _ENTRY
                    ypx = fb(tb[o:o + 32], "little")
                    ymx = fb(tb[o + 32:o + 64], "little")
                    C = T * fb(tb[o + 64:o + 96], "little") % p
                else:
                    o = (-db >> 1) * _ENTRY
                    ymx = fb(tb[o:o + 32], "little")
                    ypx = fb(tb[o + 32:o + 64], "little")
                    C = -T * fb(tb[o + 64:o + 96], "little") % p
                A = (Y - X) * ymx % p
                B = (Y + X) * ypx % p
                D = Z << 1
                E = B - A
                F = D - C
                G = D + C
                H = B + A
                X = E * F % p
                Y = G * H % p
                Z = F * G % p
                T = E * H % p

    zi = pow(Z, p - 2, p)
    x = X * zi % p
    y = Y * zi % p
    return (y | (x & 1) << 255) == r
