"""tools.envelope: what it signs verifies with cryptography, and it refuses bad alerts."""

from __future__ import annotations

import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tools.envelope import (
    MAX_ENVELOPE,
    KeyPair,
    b64d,
    b64e,
    decode_jws,
    make_alert_payload,
    make_cert,
    region_prefix,
    sign_alert,
    sign_jws,
    sign_jws_raw,
    topics_for,
    verify_jws,
)

NOW = 1_790_000_000


def cryptography_verify(pub: bytes, token: str) -> None:
    signing_input, _, sig = token.rpartition(".")
    Ed25519PublicKey.from_public_bytes(pub).verify(b64d(sig), signing_input.encode("ascii"))


@pytest.fixture
def root() -> KeyPair:
    return KeyPair.generate("root", "prov-34-root-2026", ["34"], ["alert"])


@pytest.fixture
def issuer(root: KeyPair) -> KeyPair:
    kp = KeyPair.generate("issuer", "cty-341122-2026", ["341122"], ["alert"])
    kp.crt = make_cert(root, kp.kid, kp.pub, kp.scope, kp.use, NOW - 10, NOW + 86400)
    return kp


def alert(**kw: object) -> dict:
    base: dict = {"regions": ["341122000000"], "level": 2, "tone": "siren", "issued": NOW}
    base.update(kw)
    return make_alert_payload(**base)


def test_base64url_has_no_padding_and_round_trips() -> None:
    for n in range(40):
        data = bytes(range(n))
        text = b64e(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64d(text) == data
    with pytest.raises(ValueError):
        b64d("ab==")
    with pytest.raises(ValueError):
        b64d("a")


def test_certificate_verifies_under_the_root_key(root: KeyPair, issuer: KeyPair) -> None:
    assert issuer.crt is not None
    cryptography_verify(root.pub, issuer.crt)
    header, body, _ = decode_jws(issuer.crt)
    assert header == {"alg": "EdDSA", "typ": "eb-cert", "kid": root.kid}
    cert = json.loads(body)
    assert cert == {"kid": issuer.kid, "pub": issuer.pub_b64, "scope": ["341122"],
                    "use": ["alert"], "nbf": NOW - 10, "exp": NOW + 86400}
    assert b64d(cert["pub"]) == issuer.pub and len(issuer.pub) == 32


def test_alert_signed_by_issuer_carries_its_certificate(root: KeyPair, issuer: KeyPair) -> None:
    env = sign_alert(issuer, alert())
    cryptography_verify(issuer.pub, env)
    with pytest.raises(InvalidSignature):
        cryptography_verify(root.pub, env)
    header, body, _ = decode_jws(env)
    assert header == {"alg": "EdDSA", "typ": "eb-alert", "kid": issuer.kid, "crt": issuer.crt}
    assert json.loads(body)["regions"] == ["341122000000"]
    # Compact serialization: no whitespace in either JSON part.
    assert b" " not in b64d(env.split(".")[0]) and b" " not in body


def test_alert_signed_by_an_anchor_has_no_crt(root: KeyPair) -> None:
    env = sign_alert(root, alert(regions=["340000000000"]))
    header, _, _ = decode_jws(env)
    assert header == {"alg": "EdDSA", "typ": "eb-alert", "kid": root.kid}
    assert verify_jws(root.pub, env)


def test_tampered_envelope_fails_verification(issuer: KeyPair) -> None:
    env = sign_alert(issuer, alert())
    h, p, s = env.split(".")
    forged = h + "." + b64e(b64d(p).replace(b'"level":2', b'"level":1')) + "." + s
    assert verify_jws(issuer.pub, env)
    assert not verify_jws(issuer.pub, forged)


def test_raw_signing_crafts_malformed_envelopes_that_still_verify(issuer: KeyPair) -> None:
    assert issuer.priv is not None
    bad_json = sign_jws_raw(issuer.priv, b"{not json", b"{}")
    assert verify_jws(issuer.pub, bad_json)
    with pytest.raises(ValueError, match="not JSON"):
        decode_jws(bad_json)
    not_object = sign_jws_raw(issuer.priv, b"[1,2]", b"{}")
    with pytest.raises(ValueError, match="not a JSON object"):
        decode_jws(not_object)
    wrong_alg = sign_jws(issuer.priv, {"alg": "HS256", "typ": "eb-alert", "kid": "x"}, b"\xff")
    header, payload, _ = decode_jws(wrong_alg)
    assert header["alg"] == "HS256" and payload == b"\xff"


@pytest.mark.parametrize(("code", "prefix"), [
    ("340000000000", "34"),
    ("341100000000", "3411"),
    ("341122000000", "341122"),
    ("341122100000", "341122100"),
    ("341122100201", "341122100201"),
    ("340000100000", "340000100"),  # only trailing zero groups are cut
    ("340100000001", "340100000001"),
])
def test_region_prefix_cuts_trailing_zero_groups(code: str, prefix: str) -> None:
    assert region_prefix(code) == prefix


@pytest.mark.parametrize("code", ["34112200000", "3411220000001", "34112200000a", "000000000000"])
def test_region_prefix_refuses_bad_codes(code: str) -> None:
    with pytest.raises(ValueError):
        region_prefix(code)


def test_topics_are_one_per_prefix_deduplicated() -> None:
    p = alert(regions=["341122000000", "341122100201", "340000000000", "341122000000"])
    assert topics_for(p) == ["eb/alert/341122", "eb/alert/341122100201", "eb/alert/34"]


def test_payload_has_the_section_3_fields() -> None:
    p = alert(id="flood-1", volume=90, repeat=3, event="FLOOD", text="洪水预警")
    assert p == {"id": "flood-1", "kind": "alert", "level": 2, "event": "FLOOD",
                 "regions": ["341122000000"], "issued": NOW, "expires": NOW + 3600,
                 "audio": {"tone": "siren"}, "volume": 90, "repeat": 3, "text": "洪水预警"}
    clip = alert(tone=None, clip={"url": "http://x/a.wav", "sha256": "AB" * 32, "bytes": 1000})
    assert clip["audio"] == {"clip": {"url": "http://x/a.wav", "sha256": "ab" * 32, "bytes": 1000}}
    cancel = make_alert_payload(kind="cancel", regions=["341122000000"], refs=["flood-1"],
                                issued=NOW)
    assert cancel["refs"] == ["flood-1"] and "audio" not in cancel and "level" not in cancel


def test_generated_ids_are_unique_and_in_charset() -> None:
    ids = {alert()["id"] for _ in range(200)}
    assert len(ids) == 200


@pytest.mark.parametrize(("kw", "msg"), [
    ({"level": 0}, "level"),
    ({"level": 5}, "level"),
    ({"level": True}, "level"),
    ({"level": None}, "level"),
    ({"regions": ["34112200000"]}, "12 digits"),
    ({"regions": []}, "regions"),
    ({"regions": ["341122000000"] * 65}, "at most 64"),
    ({"expires_in": 0}, "expiry"),
    ({"expires_in": 7 * 86400 + 1}, "expiry"),
    ({"expires": NOW - 1}, "expiry"),
    ({"tone": None}, "exactly one"),
    ({"clip": {"url": "u", "sha256": "0" * 64, "bytes": 1}}, "exactly one"),
    ({"tone": "bell"}, "tone"),
    ({"tone": None, "clip": {"url": "http://h/a.wav", "sha256": "xyz", "bytes": 1}}, "sha256"),
    ({"tone": None, "clip": {"url": "http://h/a.wav", "sha256": "0" * 64, "bytes": 0}}, "bytes"),
    ({"id": "bad id"}, "id"),
    ({"id": "x" * 65}, "id"),
    ({"kind": "drill"}, "kind"),
    ({"volume": 101}, "volume"),
    ({"repeat": 0}, "repeat"),
    ({"repeat": 21}, "repeat"),
    ({"event": "E" * 17}, "event"),
    ({"text": "t" * 1025}, "text"),
    ({"refs": ["a"]}, "cancel only"),
    ({"kind": "cancel"}, "cancel takes no"),
    ({"kind": "cancel", "level": None, "tone": None}, "refs"),
])
def test_invalid_payloads_are_refused_with_a_reason(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        alert(**kw)


def test_oversized_envelope_is_refused(issuer: KeyPair) -> None:
    p = alert()
    p["pad"] = "x" * MAX_ENVELOPE  # unknown fields are allowed, size is not
    with pytest.raises(ValueError, match="8192"):
        sign_alert(issuer, p)
    assert issuer.priv is not None
    assert len(sign_jws(issuer.priv, {"alg": "EdDSA"}, p)) > MAX_ENVELOPE  # crafting still works
