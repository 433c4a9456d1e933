# The baseline for bench/bench_adpcm.py: IMA ADPCM block decoding as the IMA/DVI reference
# writes it (one sample at a time, the step and index tables, the predictor clamped to int16),
# in plain MicroPython: no native code, the same block format and output as firmware/adpcm.py
# (tools/adpcm.py's docstring). Not a strawman: it writes into the caller's buffer, allocates
# nothing per sample (small ints only), and checks the header as firmware/adpcm.py does.

STEPS = (
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408,
    449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066,
    2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630,
    9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794,
    32767,
)
INDEX = (-1, -1, -1, -1, 2, 4, 6, 8, -1, -1, -1, -1, 2, 4, 6, 8)


def decode(block, out):
    """One 164-byte block into out (>= 640 bytes, little-endian int16); returns 320."""
    if len(block) != 164:
        raise ValueError("block_length")
    if len(out) < 640:
        raise ValueError("out_length")
    index = block[2]
    if index > 88:
        raise ValueError("step_index")
    if block[3] != 0:
        raise ValueError("reserved")
    predictor = block[0] | (block[1] << 8)
    if predictor >= 32768:
        predictor -= 65536
    for n in range(320):
        byte = block[4 + (n >> 1)]
        code = byte >> 4 if n & 1 else byte & 15
        step = STEPS[index]
        diff = step >> 3
        if code & 4:
            diff += step
        if code & 2:
            diff += step >> 1
        if code & 1:
            diff += step >> 2
        if code & 8:
            predictor -= diff
        else:
            predictor += diff
        if predictor > 32767:
            predictor = 32767
        elif predictor < -32768:
            predictor = -32768
        index += INDEX[code]
        if index < 0:
            index = 0
        elif index > 88:
            index = 88
        out[2 * n] = predictor & 255
        out[2 * n + 1] = (predictor >> 8) & 255
    return 320
