"""`fleet.ingest.parse`: what a terminal sends becomes a record, or a `Bad` of the right kind.

The heartbeat check is the service's hot path and is written for speed; these pin down what it
accepts and refuses, field by field (docs/fleet-protocol.md). Receipts are held to what a
terminal can send (alerts.md §6, the reason codes of §4 and of the firmware)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.ingest import Bad, Heartbeat, ReceiptMsg, parse
from fleet.model import BadKind
from fleet.sim import heartbeat
from fleet.store import Store

DEV = "T341122100001-01"
TOPIC = f"eb/dev/{DEV}/hb"


def hb(**fields: Any) -> bytes:
    body = heartbeat(DEV, 1_800_000_000)
    body.update(fields)
    return json.dumps(body).encode()


def test_a_healthy_heartbeat_parses_with_its_raw_text_kept() -> None:
    body = hb(counts={"done": 3, "rejected:bad_sig": 1}, line_ma=451.5, rssi=-71,
              last_alert="a-1", g4=[1024, 2048])
    r = parse(TOPIC, body, 5.0)
    assert isinstance(r, Heartbeat)
    assert (r.device, r.t, r.hb_s, r.received_at) == (DEV, 1_800_000_000, 60, 5.0)
    assert r.raw == body.decode()


@pytest.mark.parametrize("fields", [
    {"v": 1}, {"v": "x" * 129}, {"reset": None}, {"link": ["ip"]}, {"clock": "a\x00b"},
    {"line": True}, {"supply": 3.5},
    {"last_alert": 7}, {"last_alert": "a" * 65},
    {"up": -1}, {"up": 1.5}, {"up": True}, {"heap": "905000"}, {"amp": None},
    {"supply_mv": -5}, {"supply_mv": 2**31 + 1}, {"supply_mv": 12.6},
    {"rssi": 201}, {"rssi": "-70"}, {"rssi": False},
    {"line_ma": "450"}, {"line_ma": True},
    {"g4": [1]}, {"g4": [1, -2]}, {"g4": [1, 2.0]}, {"g4": {"rx": 1, "tx": 2}},
    {"counts": []}, {"counts": {"done": -1}}, {"counts": {"done": "1"}},
    {"counts": {"k" * 129: 1}}, {"counts": {f"k{i}": 1 for i in range(65)}},
    {"t": "now"}, {"hb_s": 0}, {"hb_s": 86401},
])
def test_each_wrong_field_type_is_refused_as_wrong_types(fields: dict[str, Any]) -> None:
    r = parse(TOPIC, hb(**fields), 5.0)
    assert r == Bad(BadKind.WRONG_TYPES, DEV, "hb", 5.0), fields


@pytest.mark.parametrize("fields", [
    {"rssi": None}, {"supply_mv": None}, {"line_ma": None}, {"last_alert": None},
    {"rssi": -200}, {"supply_mv": 0}, {"up": 0}, {"counts": {}},
])
def test_documented_nulls_and_edges_are_accepted(fields: dict[str, Any]) -> None:
    assert isinstance(parse(TOPIC, hb(**fields), 5.0), Heartbeat), fields


def test_missing_optional_fields_are_accepted() -> None:
    body = json.dumps({"id": DEV, "t": 1}).encode()
    r = parse(TOPIC, body, 5.0)
    assert isinstance(r, Heartbeat) and r.hb_s == 60


@pytest.mark.parametrize(("topic", "payload", "kind"), [
    (TOPIC, b"{not json", BadKind.NOT_JSON),
    (TOPIC, b"\xff\xfe", BadKind.NOT_JSON),
    (TOPIC, b"[1, 2]", BadKind.WRONG_TYPES),
    (TOPIC, json.dumps(heartbeat("T341122100002-01", 1)).encode(), BadKind.SPOOFED_ID),
    (TOPIC, b"{" + b" " * 9000 + b"}", BadKind.TOO_LARGE),
])
def test_bad_payloads_get_their_kind(topic: str, payload: bytes, kind: BadKind) -> None:
    r = parse(topic, payload, 5.0)
    assert isinstance(r, Bad) and r.kind == kind and r.device == DEV


def test_a_bytearray_payload_parses_like_bytes() -> None:
    assert parse(TOPIC, bytearray(hb()), 5.0) == parse(TOPIC, hb(), 5.0)


# ---- receipts (alerts.md §6): only what a terminal can send is stored

EV = f"eb/dev/{DEV}/event"


def receipt(**fields: Any) -> bytes:
    body: dict[str, Any] = {"alert": "cty-341122-2026-0042", "kid": "cty-341122",
                            "status": "accepted", "reason": None, "t": 1_800_000_000}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize("fields", [
    {},
    {"status": "rejected", "reason": "bad_signature"},
    {"status": "rejected", "reason": "expired", "alert": "A:1.b_c-D"},
    {"status": "rejected", "reason": "too_large", "alert": None, "kid": None},
    {"status": "rejected", "reason": "malformed", "alert": None, "kid": None},
    {"status": "rejected", "reason": "bad_alg", "alert": None, "kid": None},
    {"status": "rejected", "reason": "unknown_key", "alert": None, "kid": None},
    {"status": "rejected", "reason": "unknown_key", "alert": None},
    {"status": "rejected", "reason": "bad_cert", "alert": None},
    {"status": "ignored", "reason": "duplicate"}, {"status": "ignored", "reason": "not_for_me"},
    {"status": "playing"}, {"status": "playing", "reason": "clip_fetch_failed"},
    {"status": "playing", "reason": "clip_hash_mismatch"},
    {"status": "playing", "reason": "clip_too_large"},
    {"status": "playing", "reason": "clip_bad_format"},
    {"status": "playing", "reason": "clip_bad_url"}, {"status": "playing", "reason": "tone_unknown"},
    {"status": "done"}, {"status": "done", "reason": "play_failed"}, {"status": "preempted"},
    {"status": "cancelled"}, {"status": "cancelled", "reason": "queue_full"},
    {"status": "cancelled", "reason": "expired"},
    {"alert": "a" * 64}, {"kid": "k" * 64}, {"t": 0}, {"t": 2**32 - 1},
    {"reason": ...},  # absent reads as null
    {"extra": "ignored", "v": 2},  # unknown fields are ignored
])
def test_every_receipt_the_firmware_sends_is_stored(fields: dict[str, Any]) -> None:
    body = receipt(**fields)
    r = parse(EV, body, 5.0)
    sent = json.loads(body)
    assert isinstance(r, ReceiptMsg), fields
    assert (r.status, r.reason, r.alert, r.kid, r.t) == (
        sent["status"], sent.get("reason"), sent["alert"], sent["kid"], sent["t"])


@pytest.mark.parametrize("fields", [
    # status and reason: each status carries only its own codes (§4 for rejected and ignored)
    {"status": "exploded"}, {"status": None}, {"status": ...}, {"status": 1},
    {"status": "ACCEPTED"}, {"reason": "bad_signature"}, {"reason": "anything at all"},
    {"reason": ""}, {"reason": 3}, {"reason": ["x"]},
    {"status": "rejected"}, {"status": "rejected", "reason": "duplicate"},
    {"status": "rejected", "reason": "clip_fetch_failed"},
    {"status": "ignored"}, {"status": "ignored", "reason": "expired"},
    {"status": "playing", "reason": "bad_signature"}, {"status": "playing", "reason": "play_failed"},
    {"status": "done", "reason": "clip_fetch_failed"}, {"status": "done", "reason": "expired"},
    {"status": "preempted", "reason": "queue_full"}, {"status": "cancelled", "reason": "duplicate"},
    # alert: an id as §3 writes it; null only for a rejection
    {"alert": ""}, {"alert": None}, {"alert": ...}, {"alert": "a" * 65}, {"alert": "a b"},
    {"alert": "a/b"}, {"alert": "警报-1"}, {"alert": "a\n"}, {"alert": 42}, {"alert": ["a"]},
    {"status": "ignored", "reason": "duplicate", "alert": None},
    {"status": "done", "alert": None}, {"status": "rejected", "reason": "bad_field", "alert": ""},
    # kid: 1..64 chars; null only for a rejection before the key was known (rules 1-4)
    {"kid": ""}, {"kid": "k" * 65}, {"kid": 7}, {"kid": "a\x00b"}, {"kid": None},
    {"status": "ignored", "reason": "not_for_me", "kid": None},
    {"status": "rejected", "reason": "bad_signature", "alert": None, "kid": None},
    {"status": "rejected", "reason": "expired", "kid": None},
    {"status": "rejected", "reason": "malformed", "kid": None},  # an id without its key
    # t: an int of epoch seconds, 0 .. 2**32 - 1
    {"t": -1}, {"t": 2**32}, {"t": 1.5}, {"t": "1800000000"}, {"t": True}, {"t": None},
    {"t": ...},
])
def test_a_receipt_no_terminal_can_send_is_bad(fields: dict[str, Any]) -> None:
    assert parse(EV, receipt(**fields), 5.0) == Bad(BadKind.WRONG_TYPES, DEV, "event", 5.0), \
        fields


def test_an_impossible_receipt_is_counted_as_bad_and_not_stored(url: str) -> None:
    store = Store.open(url)
    try:
        store.upsert_devices([(DEV, DEV[1:13], "horn")])
        good = parse(EV, receipt(status="rejected", reason="bad_signature"), 5.0)
        forged = [parse(EV, receipt(reason="bad_signature"), 6.0),
                  parse(EV, receipt(alert=""), 7.0),
                  parse(EV, receipt(status="ignored", reason="exploded"), 8.0)]
        st = store.ingest([good, *forged], 10.0)
        assert (st.receipts, st.bad) == (1, 3)
        assert [(r.status, r.reason) for r in store.receipts(device=DEV)] == [
            ("rejected", "bad_signature")]
        assert [(b.kind, b.device, b.topic, b.count) for b in store.report().bad] == [
            ("wrong_types", DEV, "event", 3)]
        # the genuine rejection still raises its alarm; the forged "accepted" opened nothing
        assert [(a.kind, a.count) for a in store.alarms(active=True, device=DEV)] == [
            ("rejected", 1)]
    finally:
        store.close()


@pytest.mark.parametrize("body", [
    {"schedule": "cty", "kid": "k", "area": "341122000000", "version": 1, "status": "accepted",
     "reason": None, "t": 1},
    {"schedule": None, "kid": "k", "area": None, "version": None, "status": "rejected",
     "reason": "bad_signature", "t": 1},
    {"programme": "cty/news", "kid": "k", "date": "2026-12-03", "start": "07:00",
     "status": "skipped", "reason": "higher_tier", "t": 1},
    {"live": "live-1", "kid": "k", "status": "done", "reason": "ended", "t": 1, "chunks": 150,
     "silent": 0, "refused": 0},
])
def test_schedule_and_programme_receipts_are_taken_not_refused(body: dict[str, Any]) -> None:
    # docs/broadcast.md §4: a terminal's daily receipts are not malformed alert receipts
    # (tests/test_fleet_daily.py checks them field by field)
    r = parse(f"eb/dev/{DEV}/event", json.dumps(body).encode(), 5.0)
    assert type(r).__name__ == "DailyReceipt", r


def test_a_programme_receipt_with_an_unknown_status_is_wrong_types() -> None:
    body = {"programme": "cty/news", "status": "sounding", "reason": None, "t": 1}
    r = parse(f"eb/dev/{DEV}/event", json.dumps(body).encode(), 5.0)
    assert isinstance(r, Bad) and r.kind == BadKind.WRONG_TYPES, r
