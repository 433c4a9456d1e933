# A live chunk's volume as source: firmware/adpcm.py compiles _NATIVE with exec() at import, then
# drops this module, as it does adpcm_native.py (scripts/check-device builds this source with
# mpy-cross -march=xtensawin, the ESP32's target). Apart from the decoder's source so that
# bench/bench_adpcm.py still prices the decoder alone.
#
# _scale(b, n, g) -> n, or -2 when b is shorter than n bytes: n bytes of int16 little-endian
# samples in place, each s to (s * g) >> 15 for the Q15 gain g (0..0x8000, clip._gain): what
# the Python loop clips and live audio used computed (tests/test_adpcm_mpy.py keeps it), bit for
# bit, without its VM loop (147 us a 20 ms chunk on the unix port,
# 7.3 ms per second of audio; at the VM's 47-70x of docs/benchmarks.md, 0.35-0.5 s of every
# second on the ESP32, at any volume below 100, the live default 80 included).
#
# Word size: |s * g| <= 2**30 on both machines (32-bit viper ints on the ESP32); the two shifts
# of a negative value are arithmetic on both and the ptr8 stores keep the low 8 bits. Two ptr8
# loads and stores a sample, so the buffer may sit at any address (tests/test_adpcm_mpy.py).

_NATIVE = """
@micropython.viper
def _scale(b, n: int, g: int) -> int:
    if n > int(len(b)):
        return -2
    q = ptr8(b)
    j = 0
    while j < n - 1:
        s = q[j] | (q[j + 1] << 8)
        if s > 32767:
            s -= 65536
        s = (s * g) >> 15
        q[j] = s
        q[j + 1] = s >> 8
        j += 2
    return n
"""
