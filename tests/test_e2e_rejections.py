"""Every reason code of alerts.md §4, sent to a running emulated terminal through the real broker:
the right receipt, and nothing sounds."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import Broker
from rig import PROBE, REGION, Rig

from tools.envelope import KeyPair, b64e, json_bytes, make_cert, sign_jws, sign_jws_raw

TOPIC = f"eb/alert/{REGION[:6]}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("rej")
    broker = Broker(tmp)
    r = Rig(tmp, broker)
    try:
        r.terminal("t1")
        yield r
    finally:  # also when the terminal never comes up: stop what was started
        r.close()
        broker.stop()


def payload(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    p: dict[str, Any] = {"id": f"x{time.monotonic_ns()}", "kind": "alert", "level": 2,
                         "regions": [REGION[:6] + "000000"], "issued": now, "expires": now + 600,
                         "audio": {"tone": "siren"}}
    p.update(over)
    return p


def signed(rig: Rig, p: dict[str, Any] | bytes, key: KeyPair | None = None,
           **hdr: Any) -> str:
    k = key or rig.issuer
    h = {"alg": "EdDSA", "typ": "eb-alert", "kid": k.kid}
    if k.crt:
        h["crt"] = k.crt
    h.update(hdr)
    h = {a: b for a, b in h.items() if b is not None}
    assert k.priv is not None
    if isinstance(p, bytes):
        return sign_jws_raw(k.priv, json_bytes(h), p)
    return sign_jws(k.priv, h, p)


def flip(sig: str) -> str:
    """The same base64url signature with one character in its middle changed."""
    i = len(sig) // 2
    return sig[:i] + ("B" if sig[i] == "A" else "A") + sig[i + 1:]


def verdicts(rig: Rig, start: int, end: int | None = None) -> list[dict[str, Any]]:
    """The first receipts (accepted, rejected, ignored) among rx.items[start:end]."""
    with rig.rx.cond:
        return [r for r in rig.rx.items[start:end] if r.get("status") in ("rejected", "ignored",
                                                                            "accepted")]


def expect(rig: Rig, env: str | bytes, status: str, reason: str, aid: str | None = None) -> None:
    """`env` alone is answered (status, reason, aid), and nothing sounds. The rig's module-wide
    terminal answers in order, so fences (probes answered) before and after the send hold exactly
    this envelope's receipt between them, never a late one of another test's."""
    t = rig.terms[0]
    n_events, n_samples = len(t.events()), t.sample_count()
    start = rig.fence(t, TOPIC)
    rig.send(env, [TOPIC])
    end = rig.fence(t, TOPIC)
    got = verdicts(rig, start["_at"], end["_at"])
    assert len(got) == 1, f"one receipt for one envelope: {got}"
    r = got[0]
    assert (r["status"], r["reason"]) == (status, reason), r
    assert r["alert"] == aid
    assert set(r) >= {"alert", "kid", "status", "reason", "t"}
    time.sleep(0.3)
    # Nothing switched on or started. (An earlier test's amplifier may still switch off here,
    # after its hold time: an "off" is not a sound, so only switch-ons and audio starts count.)
    assert [e for e in t.events()[n_events:] if (e["dev"] == "amp" and e["value"])
            or (e["dev"] == "audio" and e["value"].get("state") == "start")] == []
    assert t.sample_count() == n_samples
    log = t.log(rotated=True)
    ids = [e.get("alert") for e in log]
    between = log[ids.index(start["alert"]) + 1:ids.index(end["alert"])]
    logged = [(e["ev"], e.get("reason"), e.get("alert")) for e in between
              if e.get("ev", "").startswith("alert_") and not str(e.get("alert")).startswith(PROBE)]
    assert logged == [("alert_" + status, reason, aid)], "the rejection is in the terminal's log"


def test_oversized_envelope_rejected_too_large(rig: Rig) -> None:
    p = payload(pad="x" * 9000)
    expect(rig, signed(rig, p), "rejected", "too_large")


MALFORMED = [
    "only.two", "a.b.c.d", "!!!.eyJ9.AAAA", "eyJhbGciOiJFZERTQSJ9.%%%.AAAA",
    b64e(b"[1,2]") + ".e30.AAAA", b64e(b"not json") + ".e30.AAAA", "",
    b64e(b"[" * 2000 + b"]" * 2000) + ".e30.AAAA",
]
GARBAGE = bytes(range(256)) * 4


@pytest.mark.parametrize("env", MALFORMED)
def test_malformed_envelopes_rejected_malformed(rig: Rig, env: str) -> None:
    expect(rig, env, "rejected", "malformed")


def test_binary_garbage_rejected_malformed(rig: Rig) -> None:
    expect(rig, GARBAGE, "rejected", "malformed")


def test_wrong_algorithm_rejected_bad_alg(rig: Rig) -> None:
    expect(rig, signed(rig, payload(), alg="RS256"), "rejected", "bad_alg")
    expect(rig, signed(rig, payload(), typ="eb-cert"), "rejected", "bad_alg")


def test_unknown_signer_rejected_unknown_key(rig: Rig) -> None:
    stranger = KeyPair.generate("root", "stranger-root", ["34"])
    expect(rig, signed(rig, payload(), key=stranger), "rejected", "unknown_key")


def test_certificate_from_unknown_anchor_rejected_unknown_key(rig: Rig) -> None:
    other = KeyPair.generate("root", "other-root", ["34"])
    now = int(time.time())
    crt = make_cert(other, rig.issuer.kid, rig.issuer.pub, ["341122"], ["alert"], now - 10, now + 999)
    expect(rig, signed(rig, payload(), crt=crt), "rejected", "unknown_key")


def _cert(rig: Rig, **over: Any) -> str:
    now = int(time.time())
    a: dict[str, Any] = {"kid": rig.issuer.kid, "pub": rig.issuer.pub, "scope": ["341122"],
                             "use": ["alert"], "nbf": now - 10, "exp": now + 999}
    a.update(over)
    return make_cert(rig.root, **a)


BAD_CERTS = ["expired", "not_yet", "kid_mismatch", "scope_outside_anchor", "use_ota_only", "forged",
             "garbage"]


@pytest.mark.parametrize("what", BAD_CERTS)
def test_invalid_certificates_rejected_bad_cert(rig: Rig, what: str) -> None:
    expect(rig, signed(rig, payload(), crt=bad_cert(rig, what)), "rejected", "bad_cert")


def bad_cert(rig: Rig, what: str) -> str:
    now = int(time.time())
    if what == "expired":
        crt = _cert(rig, nbf=now - 999, exp=now - 1)
    elif what == "not_yet":
        crt = _cert(rig, nbf=now + 999, exp=now + 9999)
    elif what == "kid_mismatch":
        crt = _cert(rig, kid="someone-else")
    elif what == "scope_outside_anchor":
        crt = _cert(rig, scope=["35"])
    elif what == "use_ota_only":
        crt = _cert(rig, use=["ota"])
    elif what == "forged":
        good = _cert(rig)
        h, _p, s = good.split(".")
        crt = h + "." + b64e(json_bytes({"kid": rig.issuer.kid, "pub": rig.issuer.pub_b64,
                                         "scope": ["34"], "use": ["alert"], "nbf": 0,
                                         "exp": now + 999})) + "." + s
    else:
        crt = "not.a.cert"
    return crt


def test_tampered_signature_rejected_bad_signature(rig: Rig) -> None:
    env = signed(rig, payload())
    h, p, s = env.split(".")
    expect(rig, f"{h}.{p}.{flip(s)}", "rejected", "bad_signature")
    # payload swapped under a genuine signature: id must not be read before verification
    other = b64e(json_bytes(payload(id="swapped", level=1)))
    expect(rig, f"{h}.{other}.{env.split('.')[2]}", "rejected", "bad_signature", None)


BAD_FIELDS: list[dict[str, Any]] = [
    {"level": 7}, {"level": "1"}, {"level": True}, {"kind": "drill"}, {"regions": []},
    {"regions": ["3411"]}, {"regions": "341122000000"}, {"audio": {"tone": "horn"}},
    {"audio": {"tone": "siren", "clip": {}}}, {"audio": {"clip": {"url": "http://x/a.wav",
                                                                  "sha256": "zz" * 32, "bytes": 5}}},
    {"volume": 101}, {"repeat": 0}, {"repeat": 10**40}, {"text": "x" * 1025},
    {"id": "bad id with spaces"}, {"event": "e" * 17}, {"expires": 0},
    {"issued": 1.5}, {"audio": None},
]


@pytest.mark.parametrize("over", BAD_FIELDS)
def test_invalid_fields_rejected_bad_field(rig: Rig, over: dict[str, Any]) -> None:
    p = payload(**over)
    aid = p["id"] if isinstance(p["id"], str) and " " not in p["id"] else None
    expect(rig, signed(rig, p), "rejected", "bad_field", aid)


def test_payload_not_json_rejected_bad_field(rig: Rig) -> None:
    expect(rig, signed(rig, b"\xff\xfe not json"), "rejected", "bad_field")
    expect(rig, signed(rig, b"[" * 1500 + b"]" * 1500), "rejected", "bad_field")


def test_region_outside_signer_scope_rejected_out_of_scope(rig: Rig) -> None:
    p = payload(regions=["341123000000"])
    expect(rig, signed(rig, p), "rejected", "out_of_scope", p["id"])
    p = payload(regions=[REGION, "350000000000"])
    expect(rig, signed(rig, p), "rejected", "out_of_scope", p["id"])


def test_alert_from_the_future_rejected_not_yet_valid(rig: Rig) -> None:
    now = int(time.time())
    p = payload(issued=now + 3600, expires=now + 7200)
    expect(rig, signed(rig, p), "rejected", "not_yet_valid", p["id"])


def test_expired_alert_never_switches_amp_on(rig: Rig) -> None:
    now = int(time.time())
    p = payload(issued=now - 7200, expires=now - 5)
    expect(rig, signed(rig, p), "rejected", "expired", p["id"])


def test_alert_for_another_village_ignored_not_for_me(rig: Rig) -> None:
    p = payload(regions=["341122200000"])
    expect(rig, signed(rig, p), "ignored", "not_for_me", p["id"])


def test_duplicate_id_ignored_and_plays_once(rig: Rig) -> None:
    t = rig.terms[0]
    p = payload(kind="test", level=4, audio={"tone": "chime"})
    env = signed(rig, p)
    rig.send(env, [TOPIC])
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", timeout=30)
    # the same bytes on another topic, and different bytes with the same id, both duplicates
    expect(rig, env, "ignored", "duplicate", p["id"])
    p2 = dict(p, text="same id, other bytes")
    expect(rig, signed(rig, p2), "ignored", "duplicate", p["id"])
    assert [e["value"] for e in t.events() if e["dev"] == "amp"].count(1) == 1
    # a forged copy of the genuine id is rejected, never answered duplicate
    h, pl, s = signed(rig, dict(p, text="forged")).split(".")
    expect(rig, f"{h}.{pl}.{flip(s)}", "rejected", "bad_signature", None)


def test_terminal_still_responsive_after_bad_input(rig: Rig) -> None:
    t = rig.terms[0]
    p = payload(kind="test", level=4, audio={"tone": "chime"})
    rig.send(signed(rig, p), [TOPIC])
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", timeout=20)
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 10, since=len(t.events()) - 1)
    assert "Traceback" not in t.console()


def test_truncated_envelopes_rejected(rig: Rig) -> None:
    env = signed(rig, payload())
    h, p, s = env.split(".")
    expect(rig, f"{h}.{p[: len(p) // 2]}", "rejected", "malformed")
    expect(rig, f"{h}.{p}.{s[:40]}", "rejected", "bad_signature")


def test_huge_numbers_rejected_bad_field(rig: Rig) -> None:
    p = payload()
    body = json_bytes(p).replace(b'"level":2', b'"level":1e400')
    expect(rig, signed(rig, body), "rejected", "bad_field", p["id"])
    p = payload(expires=10**400)
    expect(rig, signed(rig, p), "rejected", "bad_field", p["id"])
    # past the terminal's epoch bound (firmware/limits.py, 2**32 - 1) a time is not a time
    p = payload(issued=10**400, expires=10**400 + 60)
    expect(rig, signed(rig, p), "rejected", "bad_field", p["id"])
    # a far but representable time is judged by the time rules, not by a crash
    p = payload(issued=2**32 - 120, expires=2**32 - 60)
    expect(rig, signed(rig, p), "rejected", "not_yet_valid", p["id"])


def counts_now(rig: Rig) -> dict[str, int]:
    """The terminal's receipt counts (its log's `counts` line) once it has answered everything
    the rig sent before: the first line after a fence's receipt."""
    t = rig.terms[0]
    f = rig.fence(t, TOPIC)
    deadline = time.monotonic() + 15
    while True:
        log = t.log(rotated=True)
        ids = [e.get("alert") for e in log]
        if f["alert"] in ids:
            after = [e for e in log[ids.index(f["alert"]):] if e.get("ev") == "counts"]
            if after:
                return after[0]["receipts"]
        assert time.monotonic() < deadline, f"no counts line after {f['alert']}: {log[-5:]}"
        time.sleep(0.2)


def send_all(rig: Rig, envs: list[str | bytes], group: int = 8) -> None:
    """Publish envelopes a few at a time (the terminal's intake holds 16), each group answered."""
    for k in range(0, len(envs), group):
        start = rig.fence(rig.terms[0], TOPIC)["_at"]
        for env in envs[k:k + group]:
            rig.send(env, [TOPIC])
        end = rig.fence(rig.terms[0], TOPIC)["_at"]
        assert len(verdicts(rig, start, end)) == len(envs[k:k + group])


def test_rejections_are_counted_by_reason(rig: Rig) -> None:
    # this test's own envelopes, counted from what the terminal said before them: 9 malformed,
    # 7 bad certificates, 19 bad fields and 2 duplicates, as the tests above send
    before = counts_now(rig)
    dup = payload(kind="test", level=4, audio={"tone": "chime"})
    dup_env = signed(rig, dup)
    rig.send(dup_env, [TOPIC])
    rig.rx.wait(lambda r: r.get("alert") == dup["id"] and r["status"] == "done", timeout=30)
    envs: list[str | bytes] = [*MALFORMED, GARBAGE]
    envs += [signed(rig, payload(), crt=bad_cert(rig, what)) for what in BAD_CERTS]
    envs += [signed(rig, payload(**over)) for over in BAD_FIELDS]
    envs += [dup_env, signed(rig, dict(dup, text="same id, other bytes"))]
    send_all(rig, envs)
    after = counts_now(rig)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    assert grew["rejected:malformed"] == 9, grew
    assert grew["rejected:bad_cert"] == 7, grew
    assert grew["rejected:bad_field"] == 19, grew
    assert grew["ignored:duplicate"] == 2, grew
    assert grew["accepted"] == 1, grew


def test_envelope_too_big_to_hold_is_rejected_and_later_alerts_still_sound(rig: Rig) -> None:
    # 40 KB: beyond what the MQTT client holds; it must be acknowledged and refused, not
    # redelivered forever by the persistent session.
    start = rig.fence(rig.terms[0], TOPIC)["_at"]
    expect(rig, b"A" * 40000, "rejected", "too_large")
    p = payload(kind="test", level=4, audio={"tone": "chime"})
    rig.send(signed(rig, p), [TOPIC])
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", timeout=20,
                start=start)
    end = rig.fence(rig.terms[0], TOPIC)["_at"]
    assert [r["reason"] for r in verdicts(rig, start, end)] == ["too_large", None], \
        "refused once, then the alert accepted: never redelivered"
