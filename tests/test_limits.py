"""Host tools and terminals agree on every limit (firmware/limits.py, docs/decisions.md "Limits"):
what a host tool signs, the terminal's own verifier (firmware/alert.py under micropython) accepts;
one step past a limit, the host tool refuses with the reason and the terminal rejects it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tools import envelope as E
from tools.alertverify import run_firmware
from tools.envelope import KeyPair, b64e, json_bytes, make_alert_payload, sign_jws
from tools.keys import new_issuer, save_keyfile

CX = str(Path(sys.executable).parent / "cx")
TERMINAL = "341122100201"
NOW = int(time.time())
CLIP = {"url": "http://127.0.0.1/a.wav", "sha256": "ab" * 32, "bytes": 1000}


@pytest.fixture(scope="module")
def keys() -> tuple[KeyPair, KeyPair]:
    root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
    issuer = new_issuer(root, "cty-341122", ["341122"], ["alert"], NOW - 300, NOW + 86400)
    return root, issuer


def terminal(env: str, root: KeyPair, now: int = NOW) -> tuple[str, str | None]:
    cfg = {"id": "T-limits", "region": TERMINAL, "trust": [root.anchor()],
           "mqtt": {"host": "127.0.0.1", "port": 1883}}
    res, _ = run_firmware(env.encode(), cfg, now, True)
    return res["status"], res["reason"]


def raw(issuer: KeyPair, payload: dict[str, Any]) -> str:
    """Signed as given: what a careless tool outside the project could produce."""
    assert issuer.priv is not None
    header = {"alg": "EdDSA", "typ": "eb-alert", "kid": issuer.kid}
    if issuer.crt:
        header["crt"] = issuer.crt
    return sign_jws(issuer.priv, header, payload)


def base(**kw: Any) -> dict[str, Any]:
    a: dict[str, Any] = {"regions": [TERMINAL[:6] + "000000"], "level": 2, "tone": "siren",
                         "issued": NOW}
    a.update(kw)
    return a


# (name, payload keywords at the limit, the same one step past it, what the host error names)
EDGES = [
    ("refs", {"kind": "cancel", "level": None, "tone": None, "refs": [f"r{i}" for i in range(E.MAX_REFS)]},
     {"kind": "cancel", "level": None, "tone": None, "refs": [f"r{i}" for i in range(E.MAX_REFS + 1)]},
     "refs"),
    ("regions", {"regions": [f"341122{i:03d}000" for i in range(100, 100 + E.MAX_REGIONS)]},
     {"regions": [f"341122{i:03d}000" for i in range(100, 101 + E.MAX_REGIONS)]}, "regions"),
    ("text", {"text": "水" * E.MAX_TEXT}, {"text": "水" * (E.MAX_TEXT + 1)}, "text"),
    ("event", {"event": "E" * E.MAX_EVENT}, {"event": "E" * (E.MAX_EVENT + 1)}, "event"),
    ("id", {"id": "a" * E.MAX_ID}, {"id": "a" * (E.MAX_ID + 1)}, "id"),
    ("volume", {"volume": 100}, {"volume": 101}, "volume"),
    ("repeat", {"repeat": 20}, {"repeat": 21}, "repeat"),
    ("level", {"level": 4}, {"level": 5}, "level"),
    ("clip bytes", {"tone": None, "clip": dict(CLIP, bytes=E.MAX_CLIP)},
     {"tone": None, "clip": dict(CLIP, bytes=E.MAX_CLIP + 1)}, "bytes"),
    ("clip url", {"tone": None, "clip": dict(CLIP, url="http://h/" + "a" * (E.MAX_URL - 9))},
     {"tone": None, "clip": dict(CLIP, url="http://h/" + "a" * (E.MAX_URL - 8))}, "url"),
    ("lifetime", {"expires": NOW + E.MAX_EXPIRY}, {"expires": NOW + E.MAX_EXPIRY + 1}, "expir"),
]


@pytest.mark.parametrize("name,at,past,word", EDGES, ids=[e[0] for e in EDGES])
def test_host_signs_exactly_what_the_terminal_accepts(keys: tuple[KeyPair, KeyPair], name: str,
                                                      at: dict[str, Any], past: dict[str, Any],
                                                      word: str) -> None:
    root, issuer = keys
    p = make_alert_payload(**base(**at))
    status, reason = terminal(E.sign_alert(issuer, p), root)
    assert status in ("accepted", "ignored"), (name, status, reason)
    with pytest.raises(ValueError, match=word):
        make_alert_payload(**base(**past))
    # what a tool outside the project might sign anyway is rejected by the terminal, or, for a
    # clip it cannot cache, still sounds (the siren, alerts.md §5): never silently different
    over = dict(p)
    kw = base(**past)
    for k in ("refs", "regions", "text", "event", "id", "volume", "repeat", "level", "expires"):
        if k in kw and kw[k] is not None:
            over[k] = kw[k]
    if "clip" in kw and kw["clip"] is not None:
        over["audio"] = {"clip": kw["clip"]}
    status, reason = terminal(raw(issuer, over), root)
    if name == "clip bytes":
        assert status == "accepted"  # plays the siren with reason clip_too_large (clip.py)
    else:
        assert (status, reason) == ("rejected", "bad_field"), name


@pytest.mark.parametrize("field", ["issued", "expires", "clip.bytes"])
def test_huge_integers_are_bad_field_and_never_signed(keys: tuple[KeyPair, KeyPair],
                                                      field: str) -> None:
    root, issuer = keys
    p = make_alert_payload(**base(tone=None, clip=CLIP))
    if field == "clip.bytes":
        p["audio"]["clip"]["bytes"] = 10**3000
    else:
        p[field] = 10**3000
    assert terminal(raw(issuer, p), root) == ("rejected", "bad_field")
    p = make_alert_payload(**base())
    p["issued"] = E.MAX_EPOCH + 1 - 3600
    p["expires"] = E.MAX_EPOCH + 1
    # signed by the anchor itself: the issuer's certificate has long expired by then
    assert terminal(raw(root, p), root, now=E.MAX_EPOCH - 3600) == ("rejected", "bad_field")
    with pytest.raises(ValueError, match="issued"):
        make_alert_payload(**base(issued=10**3000))
    with pytest.raises(ValueError, match="bytes"):
        make_alert_payload(**base(tone=None, clip=dict(CLIP, bytes=10**3000)))


def _respellings(part: str) -> list[str]:
    """The same bytes spelt with the last character's unused bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = 15 if len(part) % 4 == 2 else 3
    v = alphabet.index(part[-1])
    return [part[:-1] + alphabet[(v & ~unused) | u] for u in range(1, unused + 1)]


def test_non_canonical_base64url_is_malformed_on_the_terminal_and_the_host(
        keys: tuple[KeyPair, KeyPair]) -> None:
    root, issuer = keys
    env = E.sign_alert(issuer, make_alert_payload(**base()))
    h, p, s = env.split(".")
    assert len(s) % 4 == 2  # a 64-byte signature: 86 chars, 4 unused bits
    assert terminal(env, root)[0] == "accepted"
    variants = [f"{h}.{p}.{s2}" for s2 in _respellings(s)]
    assert len(variants) == 15
    for v in variants:
        assert terminal(v, root) == ("rejected", "malformed")
        with pytest.raises(ValueError, match="canonical"):
            E.decode_jws(v)
    # a header or payload spelt differently is refused too
    hdr = b64e(json_bytes({"alg": "EdDSA", "typ": "eb-alert", "kid": issuer.kid, "crt": issuer.crt,
                           "x": "ab"}))
    if len(hdr) % 4:
        for h2 in _respellings(hdr):
            with pytest.raises(ValueError, match="canonical"):
                E.b64d(h2)


def test_cx_alert_send_refuses_a_cancel_the_terminal_would_reject(
        keys: tuple[KeyPair, KeyPair], tmp_path: Path) -> None:
    _, issuer = keys
    kf = tmp_path / "issuer.key"
    save_keyfile(kf, issuer)
    refs = ",".join(f"r{i}" for i in range(100))
    r = subprocess.run([CX, "alert", "send", "--key", str(kf), "--kind", "cancel", "--refs", refs,
                        "--regions", TERMINAL[:6] + "000000", "--print"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refs" in lines[0] and str(E.MAX_REFS) in lines[0], r.stderr


def test_cx_alert_from_cap_refuses_a_cancel_of_100_references(keys: tuple[KeyPair, KeyPair],
                                                              tmp_path: Path) -> None:
    _, issuer = keys
    kf = tmp_path / "issuer.key"
    save_keyfile(kf, issuer)
    sent = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW))
    refs = " ".join(f"cn.gov.341122,a{i},{sent}" for i in range(100))
    cap = tmp_path / "cancel.xml"
    cap.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>cancel-100</identifier><sender>cn.gov.341122</sender><sent>{sent}</sent>
  <status>Actual</status><msgType>Cancel</msgType><scope>Public</scope>
  <references>{refs}</references>
</alert>""")
    r = subprocess.run([CX, "alert", "from-cap", str(cap), "--key", str(kf), "--print"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refs" in lines[0] and str(E.MAX_REFS) in lines[0], r.stderr


def test_certificates_hold_to_the_terminal_limits(keys: tuple[KeyPair, KeyPair]) -> None:
    root, issuer = keys
    with pytest.raises(ValueError, match="scope"):
        E.make_cert(root, "k", issuer.pub, [f"3411{i:02d}" for i in range(E.MAX_SCOPE + 1)],
                    ["alert"], NOW, NOW + 10)
    with pytest.raises(ValueError, match="exp"):
        E.make_cert(root, "k", issuer.pub, ["341122"], ["alert"], NOW, 10**3000)
    with pytest.raises(ValueError, match="scope"):
        E.check_scope([f"3411{i:02d}" for i in range(E.MAX_SCOPE + 1)])
    # and one the host would not make is refused by the terminal (rules 5)
    assert root.priv is not None
    crt = sign_jws(root.priv, {"alg": "EdDSA", "typ": "eb-cert", "kid": root.kid},
                   {"kid": issuer.kid, "pub": b64e(issuer.pub), "scope": ["341122"],
                    "use": ["alert"], "nbf": NOW - 10, "exp": 10**3000})
    assert issuer.priv is not None
    env = sign_jws(issuer.priv, {"alg": "EdDSA", "typ": "eb-alert", "kid": issuer.kid, "crt": crt},
                   make_alert_payload(**base()))
    assert terminal(env, root) == ("rejected", "bad_cert")

