"""`cx alert from-cap` refusals: CAP files it cannot map, bad input and usage errors each
exit non-zero with one `cx: error:` line that says why (subprocess as an operator runs it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from caphelp import (
    CAP_DIR,
    DIFFERENT,
    HOUR,
    RES_ID,
    RESERVOIRS,
    Edit,
    _closed_port,
    blocks_of,
    clip_server_fixture,  # noqa: F401  (the clip_server fixture)
    cx,
    fresh,
    from_cap,
    in_english,
    keys_fixture,  # noqa: F401  (the keys fixture)
    printed,
    refused,
)

# --- refusals -------------------------------------------------------------------------


FLOOD = "flood-alert.xml"
TOWN_GEOCODE = "<geocode><valueName>统计用区划代码</valueName><value>341122100000</value></geocode>"
REFUSALS: list[tuple[str, str, list[Edit], str]] = [
    ("wrong_namespace", FLOOD, [("emergency:cap:1.2", "emergency:cap:1.1")],
     "not a CAP 1.2 alert"),
    ("missing_sent", FLOOD, [("<sent>2026-11-29T17:00:00+08:00</sent>", "")],
     "missing required <sent>"),
    ("missing_expires", "exercise-test.xml",
     [("<expires>2026-11-29T10:30:00+08:00</expires>", "")], "missing required <expires>"),
    ("missing_info", "exercise-test.xml", [("<info>", "<!--"), ("</info>", "-->")],
     "missing required <info>"),
    ("missing_severity", "exercise-test.xml", [("<severity>Minor</severity>", "")],
     "missing required <severity>"),
    ("severity_unknown", "exercise-test.xml", [("Minor", "Unknown")], "severity Unknown"),
    ("status_draft", FLOOD, [("<status>Actual", "<status>Draft")], "status Draft"),
    ("status_system", FLOOD, [("<status>Actual", "<status>System")], "status System"),
    ("msgtype_ack", FLOOD, [("<msgType>Alert", "<msgType>Ack")], "msgType Ack"),
    ("scope_private", FLOOD, [("<scope>Public", "<scope>Private")], "scope Private"),
    ("polygon_only_area", "multi-area.xml",
     [(f"</polygon>\n      {TOWN_GEOCODE}", "</polygon>")],
     "cannot map area '新安镇' to region codes"),
    ("identifier_with_space", FLOOD, [("flood.0007</identifier>", "flood 0007</identifier>")],
     "cannot be an alert id"),
    ("reference_with_slash", "cancel-two.xml", [("flood.0008", "flood/0008")],
     "cannot be cancelled by id"),
    ("cancel_without_references", "cancel-two.xml", [("<references>", "<note>"),
                                                     ("</references>", "</note>")],
     "needs <references>"),
    ("expires_beyond_7_days", "exercise-test.xml", [("2026-11-29T10:30", "2026-12-06T09:31")],
     "at most 7 days later"),
    ("expires_before_sent", "exercise-test.xml", [("2026-11-29T10:30", "2026-11-29T09:30")],
     "must be after sent"),
    ("time_without_offset", FLOOD, [("17:00:00+08:00</sent>", "17:00:00</sent>")],
     "not a date-time with a UTC offset"),
    ("five_digit_code", "exercise-test.xml", [("<value>341122", "<value>34112")],
     "is not 6 or 12 digits"),
    ("province_00", "exercise-test.xml", [("<value>341122", "<value>001122")], "province"),
    ("https_audio", "audio-alert.xml", [("http://127.0.0.1:8080/clips", "https://x/clips")],
     "plain http://"),
    ("audio_without_uri", "audio-alert.xml",
     [("<uri>http://127.0.0.1:8080/clips/quake.wav</uri>", "<derefUri>UklGRg==</derefUri>")],
     "has no <uri>"),
    ("unfetchable_audio", "audio-alert.xml", [("127.0.0.1:8080/clips", "127.0.0.1:{port}/clips")],
     "cannot fetch audio"),
]


@pytest.mark.parametrize(("name", "sample", "edits", "reason"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_unmappable_cap_is_refused_with_the_reason(keys: dict[str, Any], tmp_path: Path,
                                                   name: str, sample: str, edits: list[Edit],
                                                   reason: str) -> None:
    port = str(_closed_port())
    cap = fresh(sample, tmp_path, *((o, n.replace("{port}", port)) for o, n in edits))
    refused(from_cap(keys, cap, "--print"), 1, reason)


def test_seventeen_warnings_in_one_cap_are_refused(keys: dict[str, Any],
                                                   tmp_path: Path) -> None:
    block = blocks_of(CAP_DIR / "exercise-test.xml")[0]
    many = "".join(block.replace("<value>341122", f"<value>341122{100 + n}000") for n in range(17))
    r = from_cap(keys, fresh("exercise-test.xml", tmp_path, (block, many)), "--print")
    refused(r, 1, "maps to 17 alerts (<info> 1, <info> 2, … <info> 17)")
    assert "at most 16 are made from one CAP" in r.stderr


def test_identifier_too_long_for_a_second_alert_is_refused(keys: dict[str, Any],
                                                           tmp_path: Path) -> None:
    long = "x" * 63
    cap = fresh("flood-alert.xml", tmp_path, DIFFERENT[0][1],
                ("34112241600000-20261129170000-flood.0007", long))
    refused(from_cap(keys, cap, "--print"), 1, f"CAP identifier '{long}' is too long for the 2")
    _, p = printed(keys, fresh("flood-alert.xml", tmp_path,
                               ("34112241600000-20261129170000-flood.0007", long + "y")))
    assert p["id"] == long + "y"  # one alert keeps the identifier, up to 64 chars


def test_one_expired_reservoir_refuses_the_file(keys: dict[str, Any], tmp_path: Path) -> None:
    cap = fresh(RESERVOIRS, tmp_path, ("2026-08-08T06:00:00+08:00", "2026-08-07T15:00:30+08:00"))
    refused(from_cap(keys, cap, "--print"), 1, f"alert {RES_ID}:4: expired at")


def test_unmappable_area_in_a_translation_refuses_the_file(keys: dict[str, Any],
                                                           tmp_path: Path) -> None:
    cap = fresh("flood-alert.xml", tmp_path, in_english("统计用区划代码", "SAME"))
    refused(from_cap(keys, cap, "--print"), 1,
            "<info> 1 of 2: cannot map area \"Lai'an County\" to region codes")


def test_audio_missing_on_the_server_is_refused(keys: dict[str, Any], tmp_path: Path,
                                                clip_server: tuple[str, list[str]]) -> None:
    cap = fresh("audio-alert.xml", tmp_path, ("http://127.0.0.1:8080/clips", clip_server[0]))
    refused(from_cap(keys, cap, "--print"), 1, "HTTP 404")


@pytest.mark.parametrize(("content", "reason"), [
    (b"this is not XML", "not XML"),
    (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>", "not XML"),
    ("<?xml version='1.0' encoding='UTF-16'?><alert/>".encode("utf-16"), "UTF-8"),
    (b"<?xml version='1.0' encoding='GB2312'?><alert/>", "only UTF-8"),
    (b"", "not XML"),
])
def test_non_xml_is_refused(keys: dict[str, Any], tmp_path: Path, content: bytes,
                            reason: str) -> None:
    (tmp_path / "x.xml").write_bytes(content)
    refused(from_cap(keys, tmp_path / "x.xml", "--print"), 1, reason)


def test_entity_bomb_is_refused_before_parsing(keys: dict[str, Any]) -> None:
    start = time.monotonic()
    refused(from_cap(keys, CAP_DIR / "entity-bomb.xml", "--print"), 1, "DOCTYPE")
    assert time.monotonic() - start < 10


def test_expired_and_future_alerts_are_refused(keys: dict[str, Any], tmp_path: Path) -> None:
    refused(from_cap(keys, fresh("exercise-test.xml", tmp_path, ago=2 * HOUR), "--print"), 1,
            "expired at")
    refused(from_cap(keys, fresh("exercise-test.xml", tmp_path, ago=-900), "--print"), 1,
            "ahead of now")


def test_usage_errors_exit_2(keys: dict[str, Any], tmp_path: Path) -> None:
    cap = fresh("flood-alert.xml", tmp_path)
    refused(from_cap(keys, cap, "--print", "--clip-file", str(cap)), 2, "no audio resource")
    refused(from_cap(keys, cap, "--print", "--broker", "127.0.0.1:1883"), 2, "not allowed")
    refused(cx("alert", "from-cap", str(cap), "--print"), 2, "--key")
    refused(from_cap(keys, cap), 2, "--broker")
    refused(from_cap(keys, tmp_path / "missing.xml", "--print"), 1, "missing.xml")
