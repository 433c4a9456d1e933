# IMA ADPCM's block decoder as source: firmware/adpcm.py compiles _NATIVE with exec() at import,
# then drops this module, as sha512.py does with sha512_native.py (an OTA release is compiled
# without -march, and mpy-cross refuses a viper decorator then; scripts/check-device builds this
# source with mpy-cross -march=xtensawin, the ESP32's target).
#
# _decode(block, out) -> 320, or a negative reason (firmware/adpcm.py raises it):
#   -1 block not 164 bytes, -2 out shorter than 640 bytes, -3 step index > 88, -4 reserved != 0.
#
# One table lookup a sample: _TAB (array('I'), 89 x 8 entries, built by firmware/adpcm.py from
# the IMA step table) holds, at 8 * index + (code & 7), the difference the code adds to or takes
# from the predictor (step/8 + step for bit 2 + step/2 for bit 1 + step/4 for bit 0, each
# shifted down as the reference does, so bit for bit the same) in its low 16 bits, and
# 8 * the next index (clamped to 0..88) above. k is that 8 * index. Code bit 3 is the sign.
# A table instead of the reference's three tests and the index clamp: the Xtensa loop is 666
# bytes instead of 1,140 (mpy-cross -march=xtensawin), with two branches a sample instead of six.
#
# Word size: viper ints are 32 bits on the ESP32, 64 on the emulator (unix x86-64). No value
# here needs more than 27 bits: the predictor is clamped to an int16 after every sample, a
# difference is at most 61,436, an entry below 705 << 16, so every value is the same on both
# machines (a ptr32 load of an entry below 2**31 is the same number on both). The one shift of
# a negative value, v >> 8 for a sample's high byte, is arithmetic on both, and the ptr8 store
# keeps its low 8 bits. Only small literals (below 2**17). Output: two ptr8 stores a sample, so
# the caller's buffer may sit at any address (a ptr16 store at an odd address faults on Xtensa;
# ptr16 would save 91 bytes of the loop).

_NATIVE = """
@micropython.viper
def _decode(block, out) -> int:
    if int(len(block)) != 164:
        return -1
    if int(len(out)) < 640:
        return -2
    p = ptr8(block)
    k = p[2]
    if k > 88:
        return -3
    if p[3] != 0:
        return -4
    t = ptr32(_TAB)
    q = ptr8(out)
    v = p[0] | (p[1] << 8)
    if v > 32767:
        v -= 65536
    k <<= 3
    i = 4
    j = 0
    while i < 164:
        b = p[i]
        # low nibble: the pair's first sample
        e = t[k | (b & 7)]
        if b & 8:
            v -= e & 0xFFFF
            if v < -32768:
                v = -32768
        else:
            v += e & 0xFFFF
            if v > 32767:
                v = 32767
        k = e >> 16
        q[j] = v
        q[j + 1] = v >> 8
        # high nibble: its second
        b >>= 4
        e = t[k | (b & 7)]
        if b & 8:
            v -= e & 0xFFFF
            if v < -32768:
                v = -32768
        else:
            v += e & 0xFFFF
            if v > 32767:
                v = 32767
        k = e >> 16
        q[j + 2] = v
        q[j + 3] = v >> 8
        i += 1
        j += 4
    return 320
"""
