# Textbook Ed25519 verification (RFC 8032 §5.1.7): affine points, one inversion per addition,
# plain double-and-add. The yardstick for bench/bench_verify.py; not for the firmware.

from sha512 import sha512

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
BY = 4 * pow(5, P - 2, P) % P


def inv(x):
    return pow(x, P - 2, P)


def recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * inv(D * y * y + 1) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x


BX = recover_x(BY, 0)
IDENTITY = (0, 1)


def add(p1, p2):
    x1, y1 = p1
    x2, y2 = p2
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * inv(1 + t) % P
    y3 = (y1 * y2 + x1 * x2) * inv(1 - t) % P
    return x3, y3


def mul(k, pt):
    q = IDENTITY
    for i in range(255, -1, -1):   # MicroPython ints have no bit_length()
        q = add(q, q)
        if (k >> i) & 1:
            q = add(q, pt)
    return q


def decode(b):
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = recover_x(y, sign)
    return None if x is None else (x, y)


def verify(pub, msg, sig):
    if len(pub) != 32 or len(sig) != 64:
        return False
    a = decode(pub)
    r = decode(sig[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(sha512(bytes(sig[:32]) + bytes(pub) + bytes(msg)), "little") % L
    return mul(s, (BX, BY)) == add(r, mul(k, a))
