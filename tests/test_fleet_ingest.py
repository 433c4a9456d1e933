"""`fleet.ingest.parse`: what a terminal sends becomes a record, or a `Bad` of the right kind.

The heartbeat check is the service's hot path and is written for speed; these pin down what it
accepts and refuses, field by field (docs/fleet-protocol.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.ingest import Bad, Heartbeat, parse
from fleet.model import BadKind
from fleet.sim import heartbeat

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
