"""`cx alert from-cap`: CAP 1.2 files from upstream platforms become signed alerts, or are
refused with the reason (subprocess as an operator runs it, real Mosquitto, real HTTP)."""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from caphelp import (
    CAP_DIR,
    CLIP,
    DIFFERENT,
    HOUR,
    RES_HEADLINES,
    RES_ID,
    RESERVOIRS,
    Edit,
    _closed_port,
    addressed,
    blocks_of,
    clip_server_fixture,  # noqa: F401  (the clip_server fixture)
    codes_of,
    fresh,
    from_cap,
    keys_fixture,  # noqa: F401  (the keys fixture)
    parts,
    printed,
    printed_all,
    refused,
    sent_of,
    time_of,
)
from paho.mqtt.enums import CallbackAPIVersion

from tools.envelope import decode_jws, verify_jws

# --- well-formed CAP files ------------------------------------------------------------


def test_county_flood_warning_becomes_an_orange_siren_in_chinese(keys: dict[str, Any],
                                                               tmp_path: Path) -> None:
    cap = fresh("flood-alert.xml", tmp_path)
    _, p = printed(keys, cap)
    assert p == {
        "id": "34112241600000-20261129170000-flood.0007", "kind": "alert", "level": 2,
        "event": "11B03", "regions": ["341122000000"], "issued": sent_of(cap),
        "expires": sent_of(cap) + 6 * HOUR, "audio": {"tone": "siren"},
        # the zh-CN <info>, not the first (en-US) one; <instruction> is not carried
        "text": "洪水橙色预警\n今夜河水将漫堤，请沿河村民立即撤离。",
    }


def test_json_summary_matches_cx_alert_send(keys: dict[str, Any], tmp_path: Path) -> None:
    r = from_cap(keys, fresh("flood-alert.xml", tmp_path), "--print", "--json")
    summary = json.loads(r.stdout)
    assert set(summary) == {"id", "kid", "topics", "envelope_bytes", "envelope"}
    assert summary["topics"] == ["eb/alert/341122"] and summary["kid"] == "city-3411"
    assert summary["envelope_bytes"] == len(summary["envelope"])


def test_exercise_is_a_blue_test_with_a_chime(keys: dict[str, Any], tmp_path: Path) -> None:
    cap = fresh("exercise-test.xml", tmp_path)
    _, p = printed(keys, cap)
    assert p["kind"] == "test" and p["level"] == 4 and p["audio"] == {"tone": "chime"}
    assert p["regions"] == ["341122000000"]  # GB/T 2260 341122, padded to 12 digits
    assert p["id"] == "drill-2026-11-29" and p["expires"] - p["issued"] == HOUR
    assert "event" not in p and "volume" not in p and "repeat" not in p
    _, p = printed(keys, fresh("exercise-test.xml", tmp_path,
                               ("<status>Exercise</status>", "<status>Test</status>")))
    assert p["kind"] == "test"


def test_cancel_stops_both_referenced_alerts_across_the_key_scope(keys: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    cap = fresh("cancel-two.xml", tmp_path)
    _, p = printed(keys, cap)
    assert p == {
        "id": "34112241600000-20261129200000-cancel.0002", "kind": "cancel",
        # each with the ids of every alert from-cap may have made of that CAP (:2 … :16)
        "refs": parts("34112241600000-20261129170000-flood.0007")
        + parts("34112241600000-20261129180000-flood.0008"),
        "regions": ["341100000000"],  # no <area>: the whole scope of the city key
        "issued": sent_of(cap), "expires": sent_of(cap) + 24 * HOUR,
    }


def test_cancel_with_areas_uses_them_and_the_latest_expires(keys: dict[str, Any],
                                                            tmp_path: Path) -> None:
    def info(lang: str, expires: str) -> str:
        return (f"<info><language>{lang}</language><category>Met</category><event>洪水</event>"
                "<urgency>Past</urgency><severity>Severe</severity><certainty>Observed"
                f"</certainty><expires>{expires}</expires><area><areaDesc>x</areaDesc>"
                "<geocode><valueName>GB/T 2260</valueName><value>341122</value></geocode>"
                "</area></info>")
    extra = info("zh-CN", "2026-11-30T08:00:00+08:00") + info("en", "2026-12-01T20:00:00+08:00")
    cap = fresh("cancel-two.xml", tmp_path, ("</references>", "</references>" + extra))
    _, p = printed(keys, cap)
    assert p["kind"] == "cancel" and p["regions"] == ["341122000000"]
    assert p["expires"] == sent_of(cap) + 48 * HOUR and "audio" not in p


def test_multi_area_update_mixes_6_and_12_digit_codes(keys: dict[str, Any],
                                                      tmp_path: Path) -> None:
    _, p = printed(keys, fresh("multi-area.xml", tmp_path))
    assert p["kind"] == "alert" and p["level"] == 1 and p["id"] == "dam-break-0001"
    # in area order, deduplicated; SAME codes ignored; the polygon left to the geocode
    assert p["regions"] == ["341122100000", "341122100201", "341126000000", "341122000000"]
    assert "event" not in p  # the eventCode is over 16 chars
    assert "refs" not in p and p["expires"] - p["issued"] == 12 * HOUR


def test_region_outside_the_key_scope_is_a_usage_error(keys: dict[str, Any],
                                                       tmp_path: Path) -> None:
    r = from_cap(keys, fresh("multi-area.xml", tmp_path), "--print", key="county")
    refused(r, 2, "region 341126000000 lies outside key cty-341122's scope")

def test_audio_resource_is_fetched_and_its_sha256_computed(
        keys: dict[str, Any], tmp_path: Path, clip_server: tuple[str, list[str]]) -> None:
    base, hits = clip_server
    cap = fresh("audio-alert.xml", tmp_path, ("http://127.0.0.1:8080", base))
    _, p = printed(keys, cap)
    assert p["audio"] == {"clip": {"url": f"{base}/clips/quake.wav", "bytes": len(CLIP),
                                   "sha256": hashlib.sha256(CLIP).hexdigest()}}
    assert p["level"] == 3 and p["event"] == "11A01" and p["text"] == "地震黄色预警"
    assert hits == ["/clips/quake.wav"]  # the image/png resource is not fetched


def test_clip_file_stands_in_for_the_download(keys: dict[str, Any], tmp_path: Path) -> None:
    clip = tmp_path / "quake.wav"
    clip.write_bytes(CLIP)
    cap = fresh("audio-alert.xml", tmp_path)  # its uri (port 8080) is never contacted
    _, p = printed(keys, cap, "--clip-file", str(clip))
    assert p["audio"]["clip"]["sha256"] == hashlib.sha256(CLIP).hexdigest()
    clip.write_bytes(CLIP[:-2] + b"\x01\x02")
    refused(from_cap(keys, cap, "--print", "--clip-file", str(clip)), 1,
            "does not match <digest>")
    clip.write_bytes(CLIP + b"\0\0")
    refused(from_cap(keys, cap, "--print", "--clip-file", str(clip)), 1, "<size> says 8044")


# --- several <info> blocks: translations, or warnings of their own --------------------


def test_five_reservoirs_become_five_alerts_and_all_28_areas_hear_one(keys: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    cap = fresh(RESERVOIRS, tmp_path)
    blocks = blocks_of(cap)
    areas = codes_of(cap.read_text(encoding="utf-8"))
    assert len(blocks) == 5 and len(areas) == len(set(areas)) == 28
    payloads, stderr = printed_all(keys, cap)
    assert [p["id"] for p in payloads] == parts(RES_ID, 5)
    assert [p["regions"] for p in payloads] == [codes_of(b) for b in blocks]  # 6, 5, 7, 4, 6
    assert all(addressed(payloads, code) for code in areas)
    assert [p["level"] for p in payloads] == [2, 3, 2, 3, 2]  # Severe 紅色, Moderate 橙色
    assert [p["expires"] for p in payloads] == [time_of(b, "expires") for b in blocks]
    assert [p["text"].split("\n")[0] for p in payloads] == RES_HEADLINES
    assert all(p["kind"] == "alert" and p["event"] == "reservoirDis" and p["issued"] ==
               sent_of(cap) and p["audio"] == {"tone": "siren"} for p in payloads)
    # stdout is the envelopes only; one line on stderr says why there are five
    assert stderr.count("\n") == 1 and "makes 5 alerts" in stderr
    assert f"{RES_ID}:5 (<info> 5)" in stderr


def english(block: str) -> str:
    """The English translation of a reservoir block: same areas and codes, other words, and
    its expiry written in UTC (the same instant)."""
    expires = re.search(r"<expires>(.*?)</expires>", block)
    assert expires
    utc = datetime.fromisoformat(expires.group(1)) - timedelta(hours=8)
    return (re.sub(r"<headline>.*?</headline>", "<headline>Reservoir discharge warning</headline>",
                   block)
            .replace("<language>zh-TW", "<language>en-US")
            .replace(expires.group(0), f"<expires>{utc.isoformat()[:19]}+00:00</expires>")
            .replace("放流</event>", "放流 (reservoir discharge)</event>"))


def test_translations_of_the_reservoirs_add_no_alert(keys: dict[str, Any],
                                                     tmp_path: Path) -> None:
    blocks = blocks_of(CAP_DIR / RESERVOIRS)
    edits = [(b, english(b) + b) if n < 2 else (b, b + english(b)) for n, b in enumerate(blocks)]
    simplified = blocks[4].replace("<language>zh-TW", "<language>zh-CN")  # 简体 as well
    cap = fresh(RESERVOIRS, tmp_path, *edits, (english(blocks[4]), english(blocks[4]) + simplified))
    assert len(blocks_of(cap)) == 11
    payloads, stderr = printed_all(keys, cap)
    assert [p["id"] for p in payloads] == parts(RES_ID, 5)
    assert [p["text"].split("\n")[0] for p in payloads] == RES_HEADLINES  # the zh-TW blocks
    assert [p["regions"] for p in payloads] == [codes_of(b) for b in blocks]
    assert "<info> 2, translations 1" in stderr and "<info> 9, translations 10,11" in stderr


def test_flood_translation_is_still_one_alert(keys: dict[str, Any], tmp_path: Path) -> None:
    payloads, stderr = printed_all(keys, fresh("flood-alert.xml", tmp_path))
    assert [p["id"] for p in payloads] == ["34112241600000-20261129170000-flood.0007"]
    assert payloads[0]["text"].startswith("洪水橙色预警") and stderr == ""


@pytest.mark.parametrize(("name", "edit"), DIFFERENT, ids=[d[0] for d in DIFFERENT])
def test_info_blocks_that_differ_beyond_language_are_two_alerts(
        keys: dict[str, Any], tmp_path: Path, name: str, edit: Edit) -> None:
    cap = fresh("flood-alert.xml", tmp_path, edit)
    payloads, _ = printed_all(keys, cap)
    identifier = "34112241600000-20261129170000-flood.0007"
    assert [p["id"] for p in payloads] == [identifier, f"{identifier}:2"]
    # in document order: the first block (English) is an alert too, nothing is dropped
    assert [p["text"].split("\n")[0] for p in payloads] == ["Orange flood warning", "洪水橙色预警"]
    for code in codes_of(cap.read_text(encoding="utf-8")):
        assert addressed(payloads, code)
    assert payloads[1]["level"] == 2 and payloads[1]["regions"] == ["341122000000"]


def test_block_of_70_villages_is_split_into_two_alerts(keys: dict[str, Any],
                                                       tmp_path: Path) -> None:
    villages = [f"341122{100 + n // 10:03d}{201 + n % 10:03d}" for n in range(70)]
    areas = "".join(f"<area><areaDesc>村 {c}</areaDesc><geocode><valueName>统计用区划代码"
                    f"</valueName><value>{c}</value></geocode></area>" for c in villages)
    area = re.search(r"<area>.*?</area>", blocks_of(CAP_DIR / "exercise-test.xml")[0], re.DOTALL)
    assert area
    cap = fresh("exercise-test.xml", tmp_path, (area.group(), areas))
    payloads, stderr = printed_all(keys, cap)
    assert [p["id"] for p in payloads] == ["drill-2026-11-29", "drill-2026-11-29:2"]
    assert [len(p["regions"]) for p in payloads] == [64, 6]  # the terminal's limit per alert
    assert payloads[0]["regions"] + payloads[1]["regions"] == villages
    assert payloads[0] | {"id": "", "regions": []} == payloads[1] | {"id": "", "regions": []}
    assert "regions 65..70 of 70" in stderr


def test_cancel_of_the_reservoirs_reaches_all_28_areas_and_every_part(keys: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    ref = f"cap.wra@example.gov.tw,{RES_ID},2026-08-07T15:00:00+08:00"
    cap = fresh(RESERVOIRS, tmp_path, ("-0042</identifier>", "-0043</identifier>"),
                ("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>"),
                ("<scope>Public</scope>", f"<scope>Public</scope><references>{ref}</references>"))
    payloads, stderr = printed_all(keys, cap)
    assert len(payloads) == 1 and stderr == ""
    p = payloads[0]
    assert p["kind"] == "cancel" and p["id"] == RES_ID.replace("-0042", "-0043")
    assert p["refs"] == parts(RES_ID)  # RES_ID, RES_ID:2 … RES_ID:16
    assert p["regions"] == codes_of(cap.read_text(encoding="utf-8"))  # all five blocks
    assert p["expires"] == max(time_of(b, "expires") for b in blocks_of(cap))


def cancel_of(refs: list[str], folder: Path) -> Path:
    """cancel-two.xml referencing these identifiers instead."""
    old = re.search(r"<references>.*?</references>",
                    (CAP_DIR / "cancel-two.xml").read_text(encoding="utf-8"), re.DOTALL)
    assert old
    triples = " ".join(f"341122-emergency@example.gov.cn,{r},2026-11-29T17:00:00+08:00"
                       for r in refs)
    return fresh("cancel-two.xml", folder, (old.group(), f"<references>{triples}</references>"))


def test_cancel_of_five_caps_is_two_cancels(keys: dict[str, Any], tmp_path: Path) -> None:
    refs = [f"34112241600000-2026112917000{n}-flood.000{n}" for n in range(5)]
    payloads, stderr = printed_all(keys, cancel_of(refs, tmp_path))
    identifier = "34112241600000-20261129200000-cancel.0002"
    assert [p["id"] for p in payloads] == [identifier, f"{identifier}:2"]
    assert payloads[0]["refs"] == [i for r in refs[:4] for i in parts(r)]  # 64: the limit
    assert payloads[1]["refs"] == parts(refs[4])
    assert all(p["regions"] == ["341100000000"] for p in payloads)
    assert "references 5..5 of 5" in stderr


def test_cancel_of_65_caps_is_refused(keys: dict[str, Any], tmp_path: Path) -> None:
    cap = cancel_of([f"flood.{n}" for n in range(65)], tmp_path)
    refused(from_cap(keys, cap, "--print"), 1, "a Cancel of 65 references is over the 64")


def test_json_is_one_summary_a_line(keys: dict[str, Any], tmp_path: Path) -> None:
    r = from_cap(keys, fresh(RESERVOIRS, tmp_path), "--print", "--json")
    assert r.returncode == 0, r.stderr
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["id"] for s in summaries] == parts(RES_ID, 5)
    assert all(set(s) == {"id", "kid", "topics", "envelope_bytes", "envelope"} for s in summaries)
    assert sum(len(s["topics"]) for s in summaries) == 28  # a topic per village


def test_shared_audio_is_fetched_once(keys: dict[str, Any], tmp_path: Path,
                                      clip_server: tuple[str, list[str]]) -> None:
    base, hits = clip_server
    block = blocks_of(CAP_DIR / "audio-alert.xml")[0]
    other = block.replace("<value>341122000000", "<value>341126000000")
    cap = fresh("audio-alert.xml", tmp_path, (block, block + other),
                ("http://127.0.0.1:8080", base))
    payloads, _ = printed_all(keys, cap)
    assert [p["regions"] for p in payloads] == [["341122000000"], ["341126000000"]]
    assert payloads[0]["audio"] == payloads[1]["audio"] and "clip" in payloads[0]["audio"]
    assert hits == ["/clips/quake.wav"]


def test_clip_file_for_two_audio_resources_is_a_usage_error(keys: dict[str, Any],
                                                            tmp_path: Path) -> None:
    block = blocks_of(CAP_DIR / "audio-alert.xml")[0]
    other = block.replace("<value>341122000000", "<value>341126000000").replace(
        "quake.wav", "quake-fengyang.wav")
    cap = fresh("audio-alert.xml", tmp_path, (block, block + other))
    clip = tmp_path / "quake.wav"
    clip.write_bytes(CLIP)
    refused(from_cap(keys, cap, "--print", "--clip-file", str(clip)), 2,
            "--clip-file stands for one audio resource, and the CAP has 2")


# --- to a real broker -----------------------------------------------------------------


def subscribe(host: str, port: int, topic: str) -> tuple[mqtt.Client, queue.Queue[Any]]:
    got: queue.Queue[Any] = queue.Queue()
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-cap-sub")

    def on_connect(cl: mqtt.Client, *_a: Any) -> None:
        cl.subscribe(topic, 1)

    c.on_connect = on_connect
    c.on_subscribe = lambda *_a: ready.set()
    c.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
    c.connect(host, port)
    c.loop_start()
    assert ready.wait(10), "no SUBACK"
    return c, got


def test_flood_cap_reaches_a_county_subscriber(keys: dict[str, Any], tmp_path: Path,
                                               broker: Any) -> None:
    client, got = subscribe(broker.host, broker.port, "eb/alert/341122")
    try:
        r = from_cap(keys, fresh("flood-alert.xml", tmp_path),
                     "--broker", f"{broker.host}:{broker.port}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("sent alert 34112241600000-20261129170000-flood.0007 "
                                   "(kid city-3411, ") and r.stdout.count("\n") == 1
        assert r.stdout.rstrip().endswith("to eb/alert/341122")
        topic, env = got.get(timeout=10)
        assert topic == "eb/alert/341122" and verify_jws(keys["city"].pub, env.decode())
        assert json.loads(decode_jws(env.decode())[1])["level"] == 2
    finally:
        client.disconnect()
        client.loop_stop()


def test_unreachable_broker_exits_3(keys: dict[str, Any], tmp_path: Path) -> None:
    r = from_cap(keys, fresh("flood-alert.xml", tmp_path),
                 "--broker", f"127.0.0.1:{_closed_port()}")
    refused(r, 3, "unreachable")


def test_five_reservoir_alerts_reach_the_villages(keys: dict[str, Any], tmp_path: Path,
                                                  broker: Any) -> None:
    client, got = subscribe(broker.host, broker.port, "eb/alert/#")
    try:
        cap = fresh(RESERVOIRS, tmp_path)
        r = from_cap(keys, cap, "--broker", f"{broker.host}:{broker.port}")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert [line.split()[2] for line in lines] == parts(RES_ID, 5)
        assert all(line.startswith("sent alert ") for line in lines)
        heard: dict[str, str] = {}
        for _ in range(28):  # one publish per village topic
            topic, env = got.get(timeout=10)
            assert verify_jws(keys["city"].pub, env.decode())
            heard[topic] = json.loads(decode_jws(env.decode())[1])["id"]
        assert sorted(heard) == sorted(f"eb/alert/{c}" for c in codes_of(cap.read_text("utf-8")))
        assert sorted(set(heard.values())) == sorted(parts(RES_ID, 5))
    finally:
        client.disconnect()
        client.loop_stop()
