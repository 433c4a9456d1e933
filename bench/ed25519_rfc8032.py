# Ed25519 verification as RFC 8032 §6 lays it out: the honest yardstick for bench/bench_verify.py.
#
# Plain Python ints mod p, extended coordinates (X:Y:Z:T) with the unified addition of §5.1.4
# used for doubling as well, right-to-left double-and-add for [S]B and [k]A separately, point
# decoding with the square root of §5.1.3 (one inversion, then x = x2^((p+3)/8), times
# sqrt(-1) if needed), and one projective comparison [S]B == R + [k]A at the end. SHA-512 is
# bench/sha512_plain.py, the straightforward FIPS 180-4 form on Python ints. No wNAF, no
# tables, no tricks: what a careful reader of the RFC writes first. Not for the firmware.

from sha512_plain import sha512

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493


def inv(x):
    return pow(x, P - 2, P)


D = -121665 * inv(121666) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def add(p1, p2):
    # §5.1.4, a = -1: valid for doubling too (p1 == p2)
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = add(q, pt)
        pt = add(pt, pt)
        s >>= 1
    return q


def equal(p1, p2):
    # x1/z1 == x2/z2 and y1/z1 == y2/z2 without inverting
    x1, y1, z1, _ = p1
    x2, y2, z2, _ = p2
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * inv(D * y * y + 1) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode(b):
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = recover_x(y, sign)
    if x is None:
        return None
    return x, y, 1, x * y % P


BY = 4 * inv(5) % P
BASE = (recover_x(BY, 0), BY, 1, recover_x(BY, 0) * BY % P)


def verify(pub, msg, sig):
    if len(pub) != 32 or len(sig) != 64:
        return False
    a = decode(pub)
    if a is None:
        return False
    r = decode(sig[:32])
    if r is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(sha512(bytes(sig[:32]) + bytes(pub) + bytes(msg)), "little") % L
    return equal(mul(s, BASE), add(r, mul(k, a)))
