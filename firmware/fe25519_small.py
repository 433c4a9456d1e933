# The compact native source of fe25519.run, compiled only when the fast one (fe25519_native.py,
# ~26 KB of Xtensa code) cannot be: the ESP32 port puts native code in IRAM
# (heap_caps_malloc(MALLOC_CAP_EXEC)), which other native code or the port itself may have used
# up. Same instructions, same slots, same arithmetic (the columns and carry chain of fe25519.py's
# header, so the same results bit for bit on either word size), but in loops: a few KB of code,
# several times slower. SQR is MUL of a slot by itself. Slot 5 is its scratch (MUL's output is
# written there first: d may be a or b).

_NATIVE = """
@micropython.viper
def run(prog: ptr8, pc: int, end: int, e: int):
    M = ptr16(_M)
    w = uint(_W)
    ps = ptr16(uint(M) + 200)
    while pc < end:
        op = prog[pc]
        d = prog[pc + 1]
        a = prog[pc + 2]
        b = prog[pc + 3]
        pc += 4
        if d >= 128:
            d += e - 128
        if a >= 128:
            a += e - 128
        if b >= 128:
            b += e - 128
        pd = ptr16(uint(M) + 40 * d)
        pa = ptr16(uint(M) + 40 * a)
        n = 1
        if op == 1:
            n = b
            b = a
        pb = ptr16(uint(M) + 40 * b)
        if op >= 2:
            v = uint(0)
            i = 0
            while i < 20:
                if op == 2:
                    v = uint(pa[i]) + uint(pb[i]) + (v >> 13)
                else:
                    c = 24573  # 64p as limbs, as in fe25519_native.py
                    if i == 0:
                        c = 23360
                    elif i == 19:
                        c = 16381
                    v = uint(pa[i]) + uint(c) - uint(pb[i]) + (v >> 13)
                pd[i] = v & 0x1FFF
                i += 1
            v = uint(pd[0]) + 608 * (v >> 13)
            pd[0] = v & 0x1FFF
            pd[1] = uint(pd[1]) + (v >> 13)
            continue
        while n > 0:
            h = uint(0)
            l = uint(0)
            k = 0
            while k < 20:
                s = uint(0)
                i = k + 1
                while i < 20:
                    s += uint(pa[i]) * uint(pb[k + 20 - i])
                    i += 1
                h = h + s
                s = uint(0)
                i = 0
                while i <= k:
                    s += uint(pa[i]) * uint(pb[k - i])
                    i += 1
                l = l + s + 608 * (h & 0x1FFF)
                ps[k] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                k += 1
            v = uint(ps[0]) + 608 * l + 369664 * h
            ps[0] = v & 0x1FFF
            v = uint(ps[1]) + ((v & w) >> 13)
            ps[1] = v & 0x1FFF
            ps[2] = uint(ps[2]) + ((v & w) >> 13)
            i = 0
            while i < 20:
                pd[i] = ps[i]
                i += 1
            pa = pd
            pb = pd
            n -= 1
"""
