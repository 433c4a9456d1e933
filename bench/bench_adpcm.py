"""IMA ADPCM decoding under MicroPython: firmware/adpcm.py (native) against bench/adpcm_plain.py
(the IMA reference decoder in plain MicroPython), per second of live audio, with an ESP32 estimate.

One micropython process (the pinned unix port, heap 1 MB) decodes one second of a speech-like
signal (50 blocks of 164 bytes, tools/adpcm.py) with both decoders: ms of CPU per second of
audio (time.ticks_us, best of the rounds) and bytes allocated per second (micropython.mem_total()
around the 50 blocks), plus the cost of importing firmware/adpcm.py (it compiles its native code
then) and of the calls alone (the native loop cut out). Both outputs are checked against the
host's decoder. On the host (CPython): the codec's SNR on test signals. The ESP32 estimate
prices the native loop by its Xtensa code size (mpy-cross -march=xtensawin) and the VM's part
by pystone, as bench/bench_verify.py does (its constants, imported). Writes docs/benchmarks.md.

    .venv/bin/python bench/bench_adpcm.py [--rounds 7] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verify import BYTES_PER_INSN, CPI, MHZ, MPY_CROSS, PYSTONE_ESP32, PYSTONE_HOST
from report import MICROPYTHON, ROOT, write_section

sys.path.insert(0, str(ROOT))
from tools import adpcm

TITLE = "IMA ADPCM decode (MicroPython)"
BLOCKS_PER_S = adpcm.RATE // adpcm.BLOCK_SAMPLES  # 50

SCRIPT = """
import gc, time, micropython, json
gc.collect()
a0 = gc.mem_alloc(); t0 = micropython.mem_total(); u0 = time.ticks_us()
import adpcm
imp_us = time.ticks_diff(time.ticks_us(), u0); imp_total = micropython.mem_total() - t0
gc.collect(); imp_kept = gc.mem_alloc() - a0
import adpcm_plain
data = open(%(blocks)r, 'rb').read()
blocks = [data[i:i + 164] for i in range(0, len(data), 164)]
out = bytearray(640)
res = {"import_ms": imp_us / 1000, "import_alloc": imp_total, "import_kept": imp_kept}
def second(dec):
    for b in blocks:
        dec(b, out)
def timed(dec, rounds):
    best = None
    for _ in range(rounds):
        gc.collect()
        t = time.ticks_us()
        second(dec)
        us = time.ticks_diff(time.ticks_us(), t)
        best = us if best is None or us < best else best
    return best / 1000
def allocated(dec):
    gc.collect()
    t = micropython.mem_total()
    second(dec)
    return micropython.mem_total() - t
for name, dec in (("native", adpcm.decode), ("plain", adpcm_plain.decode)):
    f = open('%%s.pcm' %% name, 'wb')
    for b in blocks:
        dec(b, out)
        f.write(out)
    f.close()
    res[name + "_ms"] = timed(dec, %(rounds)d)
    res[name + "_bytes"] = allocated(dec)
# the calls alone: the same Python wrapper around the native function with its loop cut out
ns = {"_TAB": adpcm._ns["_TAB"]}
exec(open(%(stub)r).read(), ns)
real = adpcm._decode
adpcm._decode = ns["_decode"]
res["calls_ms"] = timed(adpcm.decode, %(rounds)d * 3)
adpcm._decode = real
print(json.dumps(res))
"""


def native_source() -> tuple[str, str]:
    """firmware/adpcm_native.py's _NATIVE, and the same with the decoding loop cut out."""
    src = (ROOT / "firmware" / "adpcm_native.py").read_text()
    native = src[src.index('_NATIVE = """') + 13:src.rindex('"""')]
    lines = native.splitlines()
    i = lines.index("    while i < 164:")
    j = lines.index("    return 320", i)
    stub = lines[:i] + lines[j:]
    return native, "\n".join(stub) + "\n"


def xtensa_bytes(native: str, stub: str) -> dict[str, int]:
    """Bytes of .mpy from mpy-cross -march=xtensawin: the whole function and without its loop."""
    size = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("full", native), ("stub", stub)):
            py = Path(tmp) / f"{name}.py"
            py.write_text(text)
            out = Path(tmp) / f"{name}.mpy"
            subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(py)],
                           check=True, capture_output=True)
            size[name] = out.stat().st_size
    return {"total": size["full"], "loop": size["full"] - size["stub"]}


def measure(rounds: int, blocks: list[bytes], stub: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bpath = Path(tmp) / "blocks.bin"
        bpath.write_bytes(b"".join(blocks))
        spath = Path(tmp) / "stub.py"
        spath.write_text(stub)
        script = SCRIPT % {"rounds": rounds, "blocks": str(bpath), "stub": str(spath)}
        env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'bench'}")
        res = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1m", "-c", script], cwd=tmp,
                             env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            sys.exit(f"micropython failed: {res.stderr.strip()}")
        f = json.loads(res.stdout.strip().splitlines()[-1])
        want = adpcm.decode(blocks)
        for name in ("native", "plain"):
            if (Path(tmp) / f"{name}.pcm").read_bytes() != want:
                sys.exit(f"the {name} decoder disagrees with tools/adpcm.py: nothing measured")
    return f


def pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def quality() -> dict[str, float]:
    """SNR (dB) of encode then decode, on 3 s of each test signal."""
    import random

    n = 3 * adpcm.RATE
    rnd = random.Random(5)
    sweep, ph = [], 0.0
    for i in range(n):
        ph += 2 * math.pi * (100 + 7000 * i / n) / adpcm.RATE
        sweep.append(round(16000 * math.sin(ph)))
    sigs = {
        "speech-like (tools/adpcm.py speech_like, peaks -6 dBFS)": adpcm.speech_like(n),
        "sine sweep 100 Hz-7.1 kHz, -6 dBFS": sweep,
        "white noise, sd 3000": [max(-32768, min(32767, round(rnd.gauss(0, 3000))))
                                 for _ in range(n)],
    }
    out = {}
    for name, s in sigs.items():
        dec = struct.unpack(f"<{n}h", adpcm.decode(adpcm.encode(pcm(s)))[:2 * n])
        out[name] = adpcm.snr_db(s, dec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed seconds of audio (best kept)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    blocks = adpcm.encode(pcm(adpcm.speech_like(adpcm.RATE, seed=11)))
    assert len(blocks) == BLOCKS_PER_S
    native, stub = native_source()
    f = measure(args.rounds, blocks, stub)
    xb = xtensa_bytes(native, stub)
    snr = quality()

    nat, plain, calls = f["native_ms"], f["plain_ms"], f["calls_ms"]
    # ESP32: the loop runs 160 times a block (two samples each): its instructions at most the
    # loop's code (every branch counted, each sample skips some of it), CPI as bench_verify.py
    insns = xb["loop"] / BYTES_PER_INSN
    loop_esp = tuple(insns * 160 * BLOCKS_PER_S * cpi / MHZ / 1000 for cpi in CPI)  # ms per s
    ratio = tuple(PYSTONE_HOST / s for s in PYSTONE_ESP32)
    vm_esp = tuple(calls * r for r in ratio)
    est = tuple(a + b for a, b in zip(loop_esp, vm_esp, strict=True))
    plain_esp = tuple(plain * r for r in ratio)
    bps = adpcm.BLOCK_BYTES * BLOCKS_PER_S

    print(f"per second of audio (50 blocks): firmware/adpcm.py {nat:.3f} ms, "
          f"{f['native_bytes']} B allocated; bench/adpcm_plain.py {plain:.2f} ms, "
          f"{f['plain_bytes']} B ({plain / nat:.0f}x slower); the calls alone {calls:.3f} ms")
    print(f"import of firmware/adpcm.py: {f['import_ms']:.2f} ms, {f['import_alloc']} B "
          f"allocated, {f['import_kept']} B kept")
    for name, v in snr.items():
        print(f"SNR {name}: {v:.1f} dB")
    print(f"xtensa: {xb['total']} B of .mpy, loop {xb['loop']} B = {insns:.0f} instructions "
          f"per 2 samples")
    print(f"ESP32 estimate: {est[0]:.1f}-{est[1]:.1f} ms per s of audio (loop {loop_esp[0]:.1f}-"
          f"{loop_esp[1]:.1f}, VM {vm_esp[0]:.1f}-{vm_esp[1]:.1f}); plain {plain_esp[0]:.0f}-"
          f"{plain_esp[1]:.0f} ms")
    print(f"bitrate: {bps} B/s, {bps * 60:,} B/min before framing")
    if args.no_write:
        return
    snr_rows = "\n".join(f"| {name} | {v:.1f} dB |" for name, v in snr.items())
    write_section(TITLE, f"""
Unix port of MicroPython (x86-64), one process, heap 1 MB. One second of live audio is 50
blocks of 164 bytes (IMA ADPCM, 320 samples of 16 kHz mono each; tools/adpcm.py's docstring has
the format), here one second of `tools/adpcm.py speech_like`. ms: `time.ticks_us` around the 50
blocks, best of {args.rounds} rounds. Bytes: `micropython.mem_total()` around the 50 blocks.
Both outputs are checked against tools/adpcm.py, bit for bit. `python bench/bench_adpcm.py`
reproduces it.

The baseline, `bench/adpcm_plain.py`, is the IMA reference decoder as the spec writes it, one
sample at a time on small ints, in plain MicroPython, writing into the same buffer: not a
strawman. What it allocates is its frame, {f['plain_bytes'] // BLOCKS_PER_S} bytes a call
(MicroPython puts the frame of a function with more than 11 words of locals and stack on the
heap); the native decoder's table lookup replaces the reference's three tests and index clamp
(firmware/adpcm_native.py's header).

| decoder | ms of CPU per s of audio | share of one core | bytes allocated per s |
|---|---:|---:|---:|
| firmware/adpcm.py (viper) | {nat:.3f} | {nat / 10:.3f}% | {f['native_bytes']} |
| bench/adpcm_plain.py | {plain:.2f} | {plain / 10:.2f}% | {f['plain_bytes']} |

Native is {plain / nat:.0f}x faster. Of its {nat:.3f} ms, {calls:.3f} ms are the 50 calls alone
(the Python wrapper and the native function with its loop cut out). Importing
firmware/adpcm.py compiles its native code: {f['import_ms']:.2f} ms, {f['import_alloc']:,} bytes
allocated on the way, {f['import_kept']:,} kept.

### ESP32-WROVER-E (240 MHz): an estimate, not a measurement

Priced as in "Ed25519 verify (MicroPython)" (bench/bench_verify.py's constants):
- The native loop: mpy-cross -march=xtensawin makes {xb['total']:,} bytes of .mpy for
  `_decode`, {xb['loop']:,} of them the loop (the source with the loop cut out, the difference),
  which decodes one byte (two samples) a pass: at {BYTES_PER_INSN} bytes an instruction,
  {insns:.0f} instructions a pass, counted as if every branch ran (each sample skips some
  of them, so this side is high), at {CPI[0]}-{CPI[1]} cycles each, {MHZ} MHz, 8,000 passes a
  second: **{loop_esp[0]:.1f}-{loop_esp[1]:.1f} ms**.
- The VM's part, the 50 calls: {calls:.3f} ms here times {ratio[0]:.0f}-{ratio[1]:.0f}
  (MicroPython's perf_bench `misc_pystone.py`: {PYSTONE_HOST:,.0f} here against
  {PYSTONE_ESP32[0]} and {PYSTONE_ESP32[1]} on an ESP32, micropython/micropython#6565):
  **{vm_esp[0]:.1f}-{vm_esp[1]:.1f} ms**.

**Estimate: {est[0]:.0f}-{est[1]:.0f} ms of CPU per second of audio, about
{est[0] / 10:.1f}-{est[1] / 10:.1f}% of one core**, allocating nothing. The plain decoder, all VM,
would take {plain:.2f} ms times the same ratio: {plain_esp[0]:,.0f}-{plain_esp[1]:,.0f} ms per
second ({plain_esp[0] / 10:.0f}-{plain_esp[1] / 10:.0f}% of the core) and {f['plain_bytes']:,} bytes of
garbage a second. To check on a board: time `adpcm.decode` over 50 blocks.

### Quality and bitrate

Encode then decode (tools/adpcm.py, the IMA reference encoder), 3 s of each signal, SNR =
signal power over error power:

| signal | SNR |
|---|---:|
{snr_rows}

Bitrate: 164 bytes per 20 ms = {bps:,} B/s ({bps * 8 / 1000:.1f} kbit/s), {bps * 60:,} bytes a
minute over 4G, before the stream's own framing (chunk headers, signed hash batches: not part
of this codec, added by the live stream's format).
""")
    print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
