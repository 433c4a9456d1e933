# IMA ADPCM's block decoder as source: firmware/adpcm.py compiles _NATIVE with exec() at import,
# then drops this module, as sha512.py does with sha512_native.py (an OTA release is compiled
# without -march, and mpy-cross refuses a viper decorator then; scripts/check-device builds this
# source with mpy-cross -march=xtensawin, the ESP32's target).
#
# Word size: viper ints are 32 bits on the ESP32, 64 on the emulator (unix x86-64). Nothing here
# needs more than 17 bits: the predictor is clamped to an int16 after every sample, a step is at
# most 32767 and the difference added to the predictor at most 1.875 steps (61,436), so every
# value is the same on both machines. The one shift of a negative value, v >> 8 for a sample's
# high byte, is arithmetic on both and the ptr8 store keeps its low 8 bits. Only small literals
# (below 2**17). Output: two ptr8 stores per sample, so the caller's buffer may sit at any
# address (a ptr16 store at an odd address faults on Xtensa).
#
# _decode(block, out) -> 320, or a negative reason (firmware/adpcm.py raises it):
#   -1 block not 164 bytes, -2 out shorter than 640 bytes, -3 step index > 88, -4 reserved != 0.
# It reads the step table from the global _STEP (an array('H') of 89 entries, firmware/adpcm.py).
# Each code's step-index change (-1 -1 -1 -1 2 4 6 8) is computed, not looked up.

_NATIVE = """
@micropython.viper
def _decode(block, out) -> int:
    if int(len(block)) != 164:
        return -1
    if int(len(out)) < 640:
        return -2
    p = ptr8(block)
    x = p[2]
    if x > 88:
        return -3
    if p[3] != 0:
        return -4
    t = ptr16(_STEP)
    q = ptr8(out)
    v = p[0] | (p[1] << 8)
    if v > 32767:
        v -= 65536
    step = t[x]
    i = 4
    j = 0
    while i < 164:
        b = p[i]
        # low nibble: sample 2k
        c = b & 15
        d = step >> 3
        if c & 4:
            d += step
        if c & 2:
            d += step >> 1
        if c & 1:
            d += step >> 2
        if c & 8:
            v -= d
            if v < -32768:
                v = -32768
        else:
            v += d
            if v > 32767:
                v = 32767
        c &= 7
        if c < 4:
            if x > 0:
                x -= 1
        else:
            x += (c - 3) << 1
            if x > 88:
                x = 88
        step = t[x]
        q[j] = v
        q[j + 1] = v >> 8
        # high nibble: sample 2k + 1
        c = b >> 4
        d = step >> 3
        if c & 4:
            d += step
        if c & 2:
            d += step >> 1
        if c & 1:
            d += step >> 2
        if c & 8:
            v -= d
            if v < -32768:
                v = -32768
        else:
            v += d
            if v > 32767:
                v = 32767
        c &= 7
        if c < 4:
            if x > 0:
                x -= 1
        else:
            x += (c - 3) << 1
            if x > 88:
                x = 88
        step = t[x]
        q[j + 2] = v
        q[j + 3] = v >> 8
        i += 1
        j += 4
    return 320
"""
