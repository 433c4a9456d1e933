# The native (viper) source of fe25519.py, compiled there at import by the running port and then
# dropped (an OTA release is compiled without -march for every board; mpy-cross refuses a viper
# decorator then). scripts/check-device builds it with mpy-cross -march=xtensawin. The bounds
# that make 32-bit words enough are in fe25519.py's header.

_NATIVE = """
@micropython.viper
def run(prog: ptr8, pc: int, end: int, e: int):
    M = ptr16(_M)
    w = uint(_W)
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
        pd = ptr16(uint(M) + 40 * d)  # 40 bytes a slot
        pa = ptr16(uint(M) + 40 * a)
        if op == 2:  # values < 2**15: no mask needed before a shift
            pb = ptr16(uint(M) + 40 * b)
            v = uint(pa[0]) + uint(pb[0])
            pd[0] = v & 0x1FFF
            v = uint(pa[1]) + uint(pb[1]) + (v >> 13)
            pd[1] = v & 0x1FFF
            v = uint(pa[2]) + uint(pb[2]) + (v >> 13)
            pd[2] = v & 0x1FFF
            v = uint(pa[3]) + uint(pb[3]) + (v >> 13)
            pd[3] = v & 0x1FFF
            v = uint(pa[4]) + uint(pb[4]) + (v >> 13)
            pd[4] = v & 0x1FFF
            v = uint(pa[5]) + uint(pb[5]) + (v >> 13)
            pd[5] = v & 0x1FFF
            v = uint(pa[6]) + uint(pb[6]) + (v >> 13)
            pd[6] = v & 0x1FFF
            v = uint(pa[7]) + uint(pb[7]) + (v >> 13)
            pd[7] = v & 0x1FFF
            v = uint(pa[8]) + uint(pb[8]) + (v >> 13)
            pd[8] = v & 0x1FFF
            v = uint(pa[9]) + uint(pb[9]) + (v >> 13)
            pd[9] = v & 0x1FFF
            v = uint(pa[10]) + uint(pb[10]) + (v >> 13)
            pd[10] = v & 0x1FFF
            v = uint(pa[11]) + uint(pb[11]) + (v >> 13)
            pd[11] = v & 0x1FFF
            v = uint(pa[12]) + uint(pb[12]) + (v >> 13)
            pd[12] = v & 0x1FFF
            v = uint(pa[13]) + uint(pb[13]) + (v >> 13)
            pd[13] = v & 0x1FFF
            v = uint(pa[14]) + uint(pb[14]) + (v >> 13)
            pd[14] = v & 0x1FFF
            v = uint(pa[15]) + uint(pb[15]) + (v >> 13)
            pd[15] = v & 0x1FFF
            v = uint(pa[16]) + uint(pb[16]) + (v >> 13)
            pd[16] = v & 0x1FFF
            v = uint(pa[17]) + uint(pb[17]) + (v >> 13)
            pd[17] = v & 0x1FFF
            v = uint(pa[18]) + uint(pb[18]) + (v >> 13)
            pd[18] = v & 0x1FFF
            v = uint(pa[19]) + uint(pb[19]) + (v >> 13)
            pd[19] = v & 0x1FFF
        elif op == 3:  # a + 64p - b, 64p as limbs >= 16381 (see fe25519.py): < 2**16
            pb = ptr16(uint(M) + 40 * b)
            v = uint(pa[0]) + 23360 - uint(pb[0])
            pd[0] = v & 0x1FFF
            v = uint(pa[1]) + 24573 - uint(pb[1]) + (v >> 13)
            pd[1] = v & 0x1FFF
            v = uint(pa[2]) + 24573 - uint(pb[2]) + (v >> 13)
            pd[2] = v & 0x1FFF
            v = uint(pa[3]) + 24573 - uint(pb[3]) + (v >> 13)
            pd[3] = v & 0x1FFF
            v = uint(pa[4]) + 24573 - uint(pb[4]) + (v >> 13)
            pd[4] = v & 0x1FFF
            v = uint(pa[5]) + 24573 - uint(pb[5]) + (v >> 13)
            pd[5] = v & 0x1FFF
            v = uint(pa[6]) + 24573 - uint(pb[6]) + (v >> 13)
            pd[6] = v & 0x1FFF
            v = uint(pa[7]) + 24573 - uint(pb[7]) + (v >> 13)
            pd[7] = v & 0x1FFF
            v = uint(pa[8]) + 24573 - uint(pb[8]) + (v >> 13)
            pd[8] = v & 0x1FFF
            v = uint(pa[9]) + 24573 - uint(pb[9]) + (v >> 13)
            pd[9] = v & 0x1FFF
            v = uint(pa[10]) + 24573 - uint(pb[10]) + (v >> 13)
            pd[10] = v & 0x1FFF
            v = uint(pa[11]) + 24573 - uint(pb[11]) + (v >> 13)
            pd[11] = v & 0x1FFF
            v = uint(pa[12]) + 24573 - uint(pb[12]) + (v >> 13)
            pd[12] = v & 0x1FFF
            v = uint(pa[13]) + 24573 - uint(pb[13]) + (v >> 13)
            pd[13] = v & 0x1FFF
            v = uint(pa[14]) + 24573 - uint(pb[14]) + (v >> 13)
            pd[14] = v & 0x1FFF
            v = uint(pa[15]) + 24573 - uint(pb[15]) + (v >> 13)
            pd[15] = v & 0x1FFF
            v = uint(pa[16]) + 24573 - uint(pb[16]) + (v >> 13)
            pd[16] = v & 0x1FFF
            v = uint(pa[17]) + 24573 - uint(pb[17]) + (v >> 13)
            pd[17] = v & 0x1FFF
            v = uint(pa[18]) + 24573 - uint(pb[18]) + (v >> 13)
            pd[18] = v & 0x1FFF
            v = uint(pa[19]) + 16381 - uint(pb[19]) + (v >> 13)
            pd[19] = v & 0x1FFF
        if op >= 2:
            v = uint(pd[0]) + 608 * (v >> 13)
            pd[0] = v & 0x1FFF
            pd[1] = uint(pd[1]) + (v >> 13)
            continue
        n = 1
        if op == 1:
            n = b
        pb = ptr16(uint(M) + 40 * b)
        while n > 0:
            a0 = uint(pa[0])
            a1 = uint(pa[1])
            a2 = uint(pa[2])
            a3 = uint(pa[3])
            a4 = uint(pa[4])
            a5 = uint(pa[5])
            a6 = uint(pa[6])
            a7 = uint(pa[7])
            a8 = uint(pa[8])
            a9 = uint(pa[9])
            a10 = uint(pa[10])
            a11 = uint(pa[11])
            a12 = uint(pa[12])
            a13 = uint(pa[13])
            a14 = uint(pa[14])
            a15 = uint(pa[15])
            a16 = uint(pa[16])
            a17 = uint(pa[17])
            a18 = uint(pa[18])
            a19 = uint(pa[19])
            if op == 0:
                b0 = uint(pb[0])
                b1 = uint(pb[1])
                b2 = uint(pb[2])
                b3 = uint(pb[3])
                b4 = uint(pb[4])
                b5 = uint(pb[5])
                b6 = uint(pb[6])
                b7 = uint(pb[7])
                b8 = uint(pb[8])
                b9 = uint(pb[9])
                b10 = uint(pb[10])
                b11 = uint(pb[11])
                b12 = uint(pb[12])
                b13 = uint(pb[13])
                b14 = uint(pb[14])
                b15 = uint(pb[15])
                b16 = uint(pb[16])
                b17 = uint(pb[17])
                b18 = uint(pb[18])
                b19 = uint(pb[19])
                h = (a1*b19 + a2*b18 + a3*b17 + a4*b16 + a5*b15 + a6*b14 + a7*b13 + a8*b12
                     + a9*b11 + a10*b10 + a11*b9 + a12*b8 + a13*b7 + a14*b6 + a15*b5 + a16*b4
                     + a17*b3 + a18*b2 + a19*b1)
                l = a0*b0 + 608*(h & 0x1FFF)
                pd[0] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a2*b19 + a3*b18 + a4*b17 + a5*b16 + a6*b15 + a7*b14 + a8*b13 + a9*b12
                     + a10*b11 + a11*b10 + a12*b9 + a13*b8 + a14*b7 + a15*b6 + a16*b5 + a17*b4
                     + a18*b3 + a19*b2)
                l = l + a0*b1 + a1*b0 + 608*(h & 0x1FFF)
                pd[1] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a3*b19 + a4*b18 + a5*b17 + a6*b16 + a7*b15 + a8*b14 + a9*b13 + a10*b12
                     + a11*b11 + a12*b10 + a13*b9 + a14*b8 + a15*b7 + a16*b6 + a17*b5 + a18*b4
                     + a19*b3)
                l = l + a0*b2 + a1*b1 + a2*b0 + 608*(h & 0x1FFF)
                pd[2] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a4*b19 + a5*b18 + a6*b17 + a7*b16 + a8*b15 + a9*b14 + a10*b13 + a11*b12
                     + a12*b11 + a13*b10 + a14*b9 + a15*b8 + a16*b7 + a17*b6 + a18*b5 + a19*b4)
                l = l + a0*b3 + a1*b2 + a2*b1 + a3*b0 + 608*(h & 0x1FFF)
                pd[3] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a5*b19 + a6*b18 + a7*b17 + a8*b16 + a9*b15 + a10*b14 + a11*b13 + a12*b12
                     + a13*b11 + a14*b10 + a15*b9 + a16*b8 + a17*b7 + a18*b6 + a19*b5)
                l = l + a0*b4 + a1*b3 + a2*b2 + a3*b1 + a4*b0 + 608*(h & 0x1FFF)
                pd[4] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a6*b19 + a7*b18 + a8*b17 + a9*b16 + a10*b15 + a11*b14 + a12*b13 + a13*b12
                     + a14*b11 + a15*b10 + a16*b9 + a17*b8 + a18*b7 + a19*b6)
                l = l + a0*b5 + a1*b4 + a2*b3 + a3*b2 + a4*b1 + a5*b0 + 608*(h & 0x1FFF)
                pd[5] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a7*b19 + a8*b18 + a9*b17 + a10*b16 + a11*b15 + a12*b14 + a13*b13
                     + a14*b12 + a15*b11 + a16*b10 + a17*b9 + a18*b8 + a19*b7)
                l = l + a0*b6 + a1*b5 + a2*b4 + a3*b3 + a4*b2 + a5*b1 + a6*b0 + 608*(h & 0x1FFF)
                pd[6] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a8*b19 + a9*b18 + a10*b17 + a11*b16 + a12*b15 + a13*b14 + a14*b13
                     + a15*b12 + a16*b11 + a17*b10 + a18*b9 + a19*b8)
                l = l + (a0*b7 + a1*b6 + a2*b5 + a3*b4 + a4*b3 + a5*b2 + a6*b1 + a7*b0
                     + 608*(h & 0x1FFF))
                pd[7] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a9*b19 + a10*b18 + a11*b17 + a12*b16 + a13*b15 + a14*b14 + a15*b13
                     + a16*b12 + a17*b11 + a18*b10 + a19*b9)
                l = l + (a0*b8 + a1*b7 + a2*b6 + a3*b5 + a4*b4 + a5*b3 + a6*b2 + a7*b1 + a8*b0
                     + 608*(h & 0x1FFF))
                pd[8] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a10*b19 + a11*b18 + a12*b17 + a13*b16 + a14*b15 + a15*b14 + a16*b13
                     + a17*b12 + a18*b11 + a19*b10)
                l = l + (a0*b9 + a1*b8 + a2*b7 + a3*b6 + a4*b5 + a5*b4 + a6*b3 + a7*b2 + a8*b1
                     + a9*b0 + 608*(h & 0x1FFF))
                pd[9] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a11*b19 + a12*b18 + a13*b17 + a14*b16 + a15*b15 + a16*b14 + a17*b13
                     + a18*b12 + a19*b11)
                l = l + (a0*b10 + a1*b9 + a2*b8 + a3*b7 + a4*b6 + a5*b5 + a6*b4 + a7*b3 + a8*b2
                     + a9*b1 + a10*b0 + 608*(h & 0x1FFF))
                pd[10] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a12*b19 + a13*b18 + a14*b17 + a15*b16 + a16*b15 + a17*b14 + a18*b13
                     + a19*b12)
                l = l + (a0*b11 + a1*b10 + a2*b9 + a3*b8 + a4*b7 + a5*b6 + a6*b5 + a7*b4 + a8*b3
                     + a9*b2 + a10*b1 + a11*b0 + 608*(h & 0x1FFF))
                pd[11] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a13*b19 + a14*b18 + a15*b17 + a16*b16 + a17*b15 + a18*b14 + a19*b13
                l = l + (a0*b12 + a1*b11 + a2*b10 + a3*b9 + a4*b8 + a5*b7 + a6*b6 + a7*b5 + a8*b4
                     + a9*b3 + a10*b2 + a11*b1 + a12*b0 + 608*(h & 0x1FFF))
                pd[12] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a14*b19 + a15*b18 + a16*b17 + a17*b16 + a18*b15 + a19*b14
                l = l + (a0*b13 + a1*b12 + a2*b11 + a3*b10 + a4*b9 + a5*b8 + a6*b7 + a7*b6 + a8*b5
                     + a9*b4 + a10*b3 + a11*b2 + a12*b1 + a13*b0 + 608*(h & 0x1FFF))
                pd[13] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a15*b19 + a16*b18 + a17*b17 + a18*b16 + a19*b15
                l = l + (a0*b14 + a1*b13 + a2*b12 + a3*b11 + a4*b10 + a5*b9 + a6*b8 + a7*b7
                     + a8*b6 + a9*b5 + a10*b4 + a11*b3 + a12*b2 + a13*b1 + a14*b0
                     + 608*(h & 0x1FFF))
                pd[14] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a16*b19 + a17*b18 + a18*b17 + a19*b16
                l = l + (a0*b15 + a1*b14 + a2*b13 + a3*b12 + a4*b11 + a5*b10 + a6*b9 + a7*b8
                     + a8*b7 + a9*b6 + a10*b5 + a11*b4 + a12*b3 + a13*b2 + a14*b1 + a15*b0
                     + 608*(h & 0x1FFF))
                pd[15] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a17*b19 + a18*b18 + a19*b17
                l = l + (a0*b16 + a1*b15 + a2*b14 + a3*b13 + a4*b12 + a5*b11 + a6*b10 + a7*b9
                     + a8*b8 + a9*b7 + a10*b6 + a11*b5 + a12*b4 + a13*b3 + a14*b2 + a15*b1
                     + a16*b0 + 608*(h & 0x1FFF))
                pd[16] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a18*b19 + a19*b18
                l = l + (a0*b17 + a1*b16 + a2*b15 + a3*b14 + a4*b13 + a5*b12 + a6*b11 + a7*b10
                     + a8*b9 + a9*b8 + a10*b7 + a11*b6 + a12*b5 + a13*b4 + a14*b3 + a15*b2
                     + a16*b1 + a17*b0 + 608*(h & 0x1FFF))
                pd[17] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a19*b19
                l = l + (a0*b18 + a1*b17 + a2*b16 + a3*b15 + a4*b14 + a5*b13 + a6*b12 + a7*b11
                     + a8*b10 + a9*b9 + a10*b8 + a11*b7 + a12*b6 + a13*b5 + a14*b4 + a15*b3
                     + a16*b2 + a17*b1 + a18*b0 + 608*(h & 0x1FFF))
                pd[18] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                l = l + (a0*b19 + a1*b18 + a2*b17 + a3*b16 + a4*b15 + a5*b14 + a6*b13 + a7*b12
                     + a8*b11 + a9*b10 + a10*b9 + a11*b8 + a12*b7 + a13*b6 + a14*b5 + a15*b4
                     + a16*b3 + a17*b2 + a18*b1 + a19*b0 + 608*(h & 0x1FFF))
                pd[19] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
            else:
                b1 = a1 << 1
                b2 = a2 << 1
                b3 = a3 << 1
                b4 = a4 << 1
                b5 = a5 << 1
                b6 = a6 << 1
                b7 = a7 << 1
                b8 = a8 << 1
                b9 = a9 << 1
                b10 = a10 << 1
                b11 = a11 << 1
                b12 = a12 << 1
                b13 = a13 << 1
                b14 = a14 << 1
                b15 = a15 << 1
                b16 = a16 << 1
                b17 = a17 << 1
                b18 = a18 << 1
                b19 = a19 << 1
                h = (a1*b19 + a2*b18 + a3*b17 + a4*b16 + a5*b15 + a6*b14 + a7*b13 + a8*b12
                     + a9*b11 + a10*a10)
                l = a0*a0 + 608*(h & 0x1FFF)
                pd[0] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a2*b19 + a3*b18 + a4*b17 + a5*b16 + a6*b15 + a7*b14 + a8*b13 + a9*b12
                     + a10*b11)
                l = l + a0*b1 + 608*(h & 0x1FFF)
                pd[1] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + (a3*b19 + a4*b18 + a5*b17 + a6*b16 + a7*b15 + a8*b14 + a9*b13 + a10*b12
                     + a11*a11)
                l = l + a0*b2 + a1*a1 + 608*(h & 0x1FFF)
                pd[2] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a4*b19 + a5*b18 + a6*b17 + a7*b16 + a8*b15 + a9*b14 + a10*b13 + a11*b12
                l = l + a0*b3 + a1*b2 + 608*(h & 0x1FFF)
                pd[3] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a5*b19 + a6*b18 + a7*b17 + a8*b16 + a9*b15 + a10*b14 + a11*b13 + a12*a12
                l = l + a0*b4 + a1*b3 + a2*a2 + 608*(h & 0x1FFF)
                pd[4] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a6*b19 + a7*b18 + a8*b17 + a9*b16 + a10*b15 + a11*b14 + a12*b13
                l = l + a0*b5 + a1*b4 + a2*b3 + 608*(h & 0x1FFF)
                pd[5] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a7*b19 + a8*b18 + a9*b17 + a10*b16 + a11*b15 + a12*b14 + a13*a13
                l = l + a0*b6 + a1*b5 + a2*b4 + a3*a3 + 608*(h & 0x1FFF)
                pd[6] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a8*b19 + a9*b18 + a10*b17 + a11*b16 + a12*b15 + a13*b14
                l = l + a0*b7 + a1*b6 + a2*b5 + a3*b4 + 608*(h & 0x1FFF)
                pd[7] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a9*b19 + a10*b18 + a11*b17 + a12*b16 + a13*b15 + a14*a14
                l = l + a0*b8 + a1*b7 + a2*b6 + a3*b5 + a4*a4 + 608*(h & 0x1FFF)
                pd[8] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a10*b19 + a11*b18 + a12*b17 + a13*b16 + a14*b15
                l = l + a0*b9 + a1*b8 + a2*b7 + a3*b6 + a4*b5 + 608*(h & 0x1FFF)
                pd[9] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a11*b19 + a12*b18 + a13*b17 + a14*b16 + a15*a15
                l = l + a0*b10 + a1*b9 + a2*b8 + a3*b7 + a4*b6 + a5*a5 + 608*(h & 0x1FFF)
                pd[10] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a12*b19 + a13*b18 + a14*b17 + a15*b16
                l = l + a0*b11 + a1*b10 + a2*b9 + a3*b8 + a4*b7 + a5*b6 + 608*(h & 0x1FFF)
                pd[11] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a13*b19 + a14*b18 + a15*b17 + a16*a16
                l = l + a0*b12 + a1*b11 + a2*b10 + a3*b9 + a4*b8 + a5*b7 + a6*a6 + 608*(h & 0x1FFF)
                pd[12] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a14*b19 + a15*b18 + a16*b17
                l = l + (a0*b13 + a1*b12 + a2*b11 + a3*b10 + a4*b9 + a5*b8 + a6*b7
                     + 608*(h & 0x1FFF))
                pd[13] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a15*b19 + a16*b18 + a17*a17
                l = l + (a0*b14 + a1*b13 + a2*b12 + a3*b11 + a4*b10 + a5*b9 + a6*b8 + a7*a7
                     + 608*(h & 0x1FFF))
                pd[14] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a16*b19 + a17*b18
                l = l + (a0*b15 + a1*b14 + a2*b13 + a3*b12 + a4*b11 + a5*b10 + a6*b9 + a7*b8
                     + 608*(h & 0x1FFF))
                pd[15] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a17*b19 + a18*a18
                l = l + (a0*b16 + a1*b15 + a2*b14 + a3*b13 + a4*b12 + a5*b11 + a6*b10 + a7*b9
                     + a8*a8 + 608*(h & 0x1FFF))
                pd[16] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a18*b19
                l = l + (a0*b17 + a1*b16 + a2*b15 + a3*b14 + a4*b13 + a5*b12 + a6*b11 + a7*b10
                     + a8*b9 + 608*(h & 0x1FFF))
                pd[17] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                h = h + a19*a19
                l = l + (a0*b18 + a1*b17 + a2*b16 + a3*b15 + a4*b14 + a5*b13 + a6*b12 + a7*b11
                     + a8*b10 + a9*a9 + 608*(h & 0x1FFF))
                pd[18] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
                l = l + (a0*b19 + a1*b18 + a2*b17 + a3*b16 + a4*b15 + a5*b14 + a6*b13 + a7*b12
                     + a8*b11 + a9*b10 + 608*(h & 0x1FFF))
                pd[19] = l & 0x1FFF
                l = (l & w) >> 13
                h = (h & w) >> 13
            v = uint(pd[0]) + 608 * l + 369664 * h
            pd[0] = v & 0x1FFF
            v = uint(pd[1]) + ((v & w) >> 13)
            pd[1] = v & 0x1FFF
            pd[2] = uint(pd[2]) + ((v & w) >> 13)
            pa = pd
            n -= 1
"""
