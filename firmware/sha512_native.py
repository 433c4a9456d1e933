# SHA-512's native code and tables, as source: firmware/sha512.py compiles _NATIVE with exec() at
# import, takes the tables, then drops this module, so none of these strings stays in RAM.
#
# Why source and not @micropython.viper in a module: mpy-cross compiles a viper function only with
# -march, and an OTA release is one set of .mpy files for every board and the emulator (x64), so
# it is compiled without. Compiled at import by the running port, the same source becomes Xtensa
# code on the ESP32 and x64 code on the emulator. scripts/check-device builds _NATIVE with
# mpy-cross -march=xtensawin (the ESP32's target, 31-bit small ints); tests/test_sha512_mpy.py
# runs it on a 32-bit machine model. firmware/sha512.py's header has the word-size rules.

# The FIPS 180-4 words, big-endian: the initial hash value, then K[0..79].
IV = (
    "6a09e667f3bcc908bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1"
    "510e527fade682d19b05688c2b3e6c1f1f83d9abfb41bd6b5be0cd19137e2179"
)
K = (
    "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc"
    "3956c25bf348b53859f111f1b605d019923f82a4af194f9bab1c5ed5da6d8118"
    "d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e2"
    "72be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694"
    "e49b69c19ef14ad2efbe4786384f25e30fc19dc68b8cd5b5240ca1cc77ac9c65"
    "2de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
    "983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4"
    "c6e00bf33da88fc2d5a79147930aa72506ca6351e003826f142929670a0e6e70"
    "27b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df"
    "650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353b"
    "a2bfe8a14cf10364a81a664bbc423001c24b8b70d0f89791c76c51a30654be30"
    "d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
    "19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8"
    "391c0cb3c5c95a634ed8aa4ae3418acb5b9cca4f7763e373682e6ff3d6b2b8a3"
    "748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
    "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532b"
    "ca273eceea26619cd186b8c721c0c207eada7dd6cde0eb1ef57d4f7fee6ed178"
    "06f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
    "28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c"
    "4cc5d4becb3e42b6597f299cfc657e2a5fcb6fab3ad6faec6c44198c4a475817"
)

# A 64-bit word is two native 32-bit halves, high first, every one a uint; m is 32 one bits.
# firmware/sha512.py's header gives the rules that make x64 compute what the ESP32 computes.
_NATIVE = """
@micropython.viper
def _swap(buf, n: int):
    # n words of buf between big-endian bytes and native words, in place (its own inverse)
    p = ptr8(buf)
    q = ptr32(buf)
    i = 0
    while i < n:
        j = i << 2
        q[i] = (p[j] << 24) | (p[j + 1] << 16) | (p[j + 2] << 8) | p[j + 3]
        i += 1


@micropython.viper
def _update(st, data):
    # data onto the state st: whole blocks compressed straight from data, the rest left pending
    n = int(len(data))
    b = ptr8(st)
    q = ptr32(st)
    p = ptr8(data)
    m = uint(0xFFFF)
    m = (m << 16) | m
    c = uint(q[50])
    u = (c + uint(n)) & m
    if u < c:
        q[49] = uint(q[49]) + 1
    q[50] = u
    f = q[48]
    pos = 0
    if f > 0:
        pos = 128 - f
        if pos > n:
            pos = n
        i = 0
        while i < pos:
            b[64 + f + i] = p[i]
            i += 1
        f += pos
        if f < 128:
            q[48] = f
            return
        _compress(st, st, 64, 1)
    full = (n - pos) >> 7
    if full > 0:
        _compress(st, data, pos, full)
        pos += full << 7
    i = 0
    while pos + i < n:
        b[64 + i] = p[pos + i]
        i += 1
    q[48] = i


@micropython.viper
def _digest(st):
    # _D = the state of st with the padding and the length compressed, as big-endian bytes
    b = ptr8(st)
    q = ptr32(st)
    t = ptr8(_T)
    n = q[48]
    i = 0
    while i < n:
        t[i] = b[64 + i]
        i += 1
    t[n] = 0x80
    end = 128
    if n >= 112:
        end = 256
    i = n + 1
    while i < end - 8:
        t[i] = 0
        i += 1
    # the length in bits, 8 bytes of the 16 (a byte count of 2**61 or more is out of reach)
    m = uint(0xFFFF)
    m = (m << 16) | m
    hi = ((uint(q[49]) << 3) | (uint(q[50]) >> 29)) & m
    lo = (uint(q[50]) << 3) & m
    i = 0
    while i < 4:
        t[end - 8 + i] = int(hi >> (24 - 8 * i))
        t[end - 4 + i] = int(lo >> (24 - 8 * i))
        i += 1
    d = ptr32(_D)
    i = 0
    while i < 16:
        d[i] = q[i]
        i += 1
    _compress(_D, _T, 0, end >> 7)
    _swap(_D, 16)


@micropython.viper
def _sched(data, off: int):
    # the message schedule W[0..79] of the block at data[off:] into _W (160 halves)
    w = ptr32(_W)
    p = ptr8(data)
    m = uint(0xFFFF)
    m = (m << 16) | m
    i = 0
    while i < 32:
        j = off + (i << 2)
        w[i] = (p[j] << 24) | (p[j + 1] << 16) | (p[j + 2] << 8) | p[j + 3]
        i += 1
    while i < 160:
        # W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]; i = 2t
        yh = uint(w[i - 4])
        yl = uint(w[i - 3])
        zh = uint(w[i - 30])
        zl = uint(w[i - 29])
        xl = uint(w[i - 31])
        xh = uint(w[i - 32]) + uint(w[i - 14])
        v = (xl + uint(w[i - 13])) & m
        if v < xl:
            xh += 1
        u = (v + ((zl >> 1 | zh << 31) ^ (zl >> 8 | zh << 24) ^ (zl >> 7 | zh << 25))) & m
        if u < v:
            xh += 1
        xh += (zh >> 1 | zl << 31) ^ (zh >> 8 | zl << 24) ^ (zh >> 7)
        xl = (u + ((yl >> 19 | yh << 13) ^ (yh >> 29 | yl << 3) ^ (yl >> 6 | yh << 26))) & m
        if xl < u:
            xh += 1
        w[i] = xh + ((yh >> 19 | yl << 13) ^ (yl >> 29 | yh << 3) ^ (yh >> 6))
        w[i + 1] = xl
        i += 2


@micropython.viper
def _rounds(h):
    # the 80 rounds over _W from the state h (16 halves), added into h
    s = ptr32(h)
    k = ptr32(_K)
    w = ptr32(_W)
    m = uint(0xFFFF)
    m = (m << 16) | m
    ah = uint(s[0])
    al = uint(s[1])
    bh = uint(s[2])
    bl = uint(s[3])
    ch = uint(s[4])
    cl = uint(s[5])
    dh = uint(s[6])
    dl = uint(s[7])
    eh = uint(s[8])
    el = uint(s[9])
    fh = uint(s[10])
    fl = uint(s[11])
    gh = uint(s[12])
    gl = uint(s[13])
    hh = uint(s[14])
    hl = uint(s[15])
    j = 0
    while j < 160:
        # t1 = h + S1(e) + Ch(e, f, g) + K[t] + W[t]; j = 2t
        th = hh + uint(w[j])
        tl = (hl + uint(w[j + 1])) & m
        if tl < hl:
            th += 1
        th += uint(k[j])
        v = (tl + uint(k[j + 1])) & m
        if v < tl:
            th += 1
        th += (eh >> 14 | el << 18) ^ (eh >> 18 | el << 14) ^ (el >> 9 | eh << 23)
        tl = (v + ((el >> 14 | eh << 18) ^ (el >> 18 | eh << 14) ^ (eh >> 9 | el << 23))) & m
        if tl < v:
            th += 1
        th += gh ^ (eh & (fh ^ gh))
        v = (tl + (gl ^ (el & (fl ^ gl)))) & m
        if v < tl:
            th += 1
        th &= m
        # t2 = S0(a) + Maj(a, b, c), from Maj's low half (a clean first operand)
        uh = ((ah >> 28 | al << 4) ^ (al >> 2 | ah << 30) ^ (al >> 7 | ah << 25)) + ((ah & bh) | (ch & (ah | bh)))
        ul = (al & bl) | (cl & (al | bl))
        u = (ul + ((al >> 28 | ah << 4) ^ (ah >> 2 | al << 30) ^ (ah >> 7 | al << 25))) & m
        if u < ul:
            uh += 1
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        el = (dl + v) & m
        eh = dh + th
        if el < dl:
            eh += 1
        eh &= m
        dh = ch
        dl = cl
        ch = bh
        cl = bl
        bh = ah
        bl = al
        al = (v + u) & m
        ah = th + uh
        if al < v:
            ah += 1
        ah &= m
        j += 2
    # h += a..h, through W[0..7] (free now)
    w[0] = ah
    w[1] = al
    w[2] = bh
    w[3] = bl
    w[4] = ch
    w[5] = cl
    w[6] = dh
    w[7] = dl
    w[8] = eh
    w[9] = el
    w[10] = fh
    w[11] = fl
    w[12] = gh
    w[13] = gl
    w[14] = hh
    w[15] = hl
    j = 0
    while j < 16:
        v = uint(s[j + 1])
        u = (v + uint(w[j + 1])) & m
        th = uint(s[j]) + uint(w[j])
        if u < v:
            th += 1
        s[j] = th
        s[j + 1] = u
        j += 2


@micropython.viper
def _compress(h, data, off: int, n: int):
    # n blocks of data from byte off into the state h (16 halves)
    while n > 0:
        _sched(data, off)
        _rounds(h)
        off += 128
        n -= 1
"""
