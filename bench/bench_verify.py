"""Ed25519 verify under MicroPython: firmware/ed25519.py against the textbook bench/ed25519_naive.py.

Runs one micropython process that times both on the same alert-sized signature
(time.ticks_us), prints ms per verify and the speedup, and writes docs/benchmarks.md.

    .venv/bin/python bench/bench_verify.py [--n 50] [--n-naive 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import MICROPYTHON, ROOT, write_section

TITLE = "Ed25519 verify (MicroPython)"
MESSAGE_BYTES = 600  # a typical JWS signing input: header with crt + payload, base64url

SCRIPT = """
import gc, time, ed25519, ed25519_naive
pub = bytes.fromhex(%(pub)r); msg = bytes.fromhex(%(msg)r); sig = bytes.fromhex(%(sig)r)
gc.collect()
t = time.ticks_us(); ed25519.precompute(); table_us = time.ticks_diff(time.ticks_us(), t)
def run(verify, n):
    # best of 3 rounds: the host is shared, the minimum is the least disturbed figure
    ok = True
    best = None
    for _ in range(3):
        gc.collect()
        t = time.ticks_us()
        for _ in range(n):
            ok = verify(pub, msg, sig) and ok
        us = time.ticks_diff(time.ticks_us(), t)
        best = us if best is None else min(best, us)
    return best / n / 1000, ok
ours, ok1 = run(ed25519.verify, %(n)d)
naive, ok2 = run(ed25519_naive.verify, %(n_naive)d)
print('{"ours_ms": %%f, "naive_ms": %%f, "table_ms": %%f, "ok": %%s}'
      %% (ours, naive, table_us / 1000, 'true' if ok1 and ok2 else 'false'))
"""


def measure(n: int, n_naive: int) -> dict:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg = os.urandom(MESSAGE_BYTES)
    script = SCRIPT % {"pub": pub.hex(), "msg": msg.hex(), "sig": key.sign(msg).hex(),
                       "n": n, "n_naive": n_naive}
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'bench'}")
    res = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1m", "-c", script],
                         env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"micropython failed: {res.stderr.strip()}")
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    if not figures["ok"]:
        sys.exit("a verification returned False: the benchmark measured nothing useful")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="verifications with firmware/ed25519.py")
    ap.add_argument("--n-naive", type=int, default=2, help="verifications with the naive one")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    f = measure(args.n, args.n_naive)
    speedup = f["naive_ms"] / f["ours_ms"]
    print(f"firmware/ed25519.py      {f['ours_ms']:9.2f} ms/verify  (best of 3 x {args.n})")
    print(f"bench/ed25519_naive.py   {f['naive_ms']:9.2f} ms/verify  (best of 3 x {args.n_naive})")
    print(f"speedup                  {speedup:9.1f}x  (target >= 5x)")
    print(f"base table, once         {f['table_ms']:9.2f} ms")
    if not args.no_write:
        write_section(TITLE, f"""
Unix port of MicroPython, one process, the same {MESSAGE_BYTES}-byte message and signature
for both; `time.ticks_us`, heap 1 MB, best of 3 rounds of the given runs each.
`python bench/bench_verify.py` reproduces it.

| implementation | ms / verify | runs |
|---|---:|---:|
| `firmware/ed25519.py` (extended coords, wNAF Straus, base table) | {f['ours_ms']:.2f} | 3 x {args.n} |
| `bench/ed25519_naive.py` (affine, inversion per add, double-and-add) | {f['naive_ms']:.2f} | 3 x {args.n_naive} |
| speedup | {speedup:.1f}x | |

Building the 1.5 KB base-point table (`ed25519.precompute()`, once per boot): {f['table_ms']:.2f} ms.
Not measured on an ESP32 here: it has 30-bit small ints (every field element and
SHA-512 word is a big int there too) and a far slower core, so its absolute figures
will be larger; the ratio between the two implementations is what this shows.
""")
        print(f"wrote {TITLE!r} to {Path('docs') / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
