"""`cx alert from-cap`: CAP 1.2 files from upstream platforms become signed alerts, or are
refused with the reason (subprocess as an operator runs it, real Mosquitto, real HTTP)."""

from __future__ import annotations

import hashlib
import http.server
import json
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tools.envelope import KeyPair, decode_jws, verify_jws
from tools.keys import new_issuer, save_keyfile

CAP_DIR = Path(__file__).resolve().parent / "cap"
_BIN = Path(sys.executable).parent
CX = str(_BIN / "cx") if (_BIN / "cx").exists() else (shutil.which("cx") or "cx")
HOUR = 3600
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


def wav(samples: int = 4000, rate: int = 16000) -> bytes:
    """The clip audio-alert.xml describes: 8044 bytes, SHA-1 25081cdf…"""
    data = b"".join(struct.pack("<h", 8000 if (i // 8) % 2 else -8000) for i in range(samples))
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data"
            + struct.pack("<I", len(data)) + data)


CLIP = wav()


def cx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *args], capture_output=True, text=True, timeout=60, check=False)


def refused(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("cx: error: ") and text in lines[0], lines[0]
    assert r.stdout == ""


def fresh(name: str, folder: Path, *edits: tuple[str, str], ago: int = 60) -> Path:
    """A sample with its times moved so <sent> is `ago` seconds before now (terminals and
    from-cap refuse expired alerts), after applying text edits (old, new)."""
    text = (CAP_DIR / name).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    m = re.search(r"<sent>(.*?)</sent>", text)
    if m and _TIMESTAMP.fullmatch(m.group(1)):
        delta = timedelta(seconds=int(time.time()) - ago
                          - datetime.fromisoformat(m.group(1)).timestamp())
        text = _TIMESTAMP.sub(
            lambda t: (datetime.fromisoformat(t.group()) + delta).isoformat(), text)
    out = folder / name
    out.write_text(text, encoding="utf-8")
    return out


def sent_of(path: Path) -> int:
    m = re.search(r"<sent>(.*?)</sent>", path.read_text(encoding="utf-8"))
    assert m
    return int(datetime.fromisoformat(m.group(1)).timestamp())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A province root; a city issuer (scope 3411) and a county issuer (scope 341122)."""
    folder = tmp_path_factory.mktemp("keys")
    root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
    now = int(time.time())
    out: dict[str, Any] = {"root": root}
    for name, kid, scope in (("city", "city-3411", "3411"), ("county", "cty-341122", "341122")):
        kp = new_issuer(root, kid, [scope], ["alert"], now - 300, now + 30 * 86400)
        save_keyfile(folder / f"{name}.json", kp)
        out[name], out[f"{name}_file"] = kp, str(folder / f"{name}.json")
    return out


def from_cap(keys: dict[str, Any], path: Path | str, *flags: str,
             key: str = "city") -> subprocess.CompletedProcess[str]:
    return cx("alert", "from-cap", str(path), "--key", keys[f"{key}_file"], *flags)


def printed(keys: dict[str, Any], path: Path, *flags: str,
            key: str = "city") -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, payload) of the printed envelope, after checking its signature."""
    r = from_cap(keys, path, "--print", *flags, key=key)
    assert r.returncode == 0, r.stderr
    env = r.stdout.strip()
    assert "\n" not in env and len(env) <= 8192
    header, body, _ = decode_jws(env)
    assert header["kid"] == keys[key].kid and header["crt"] == keys[key].crt
    assert verify_jws(keys[key].pub, env)
    return header, json.loads(body)


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
        "refs": ["34112241600000-20261129170000-flood.0007",
                 "34112241600000-20261129180000-flood.0008"],
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


@pytest.fixture
def clip_server() -> Iterator[tuple[str, list[str]]]:
    """http://127.0.0.1:<port> serving CLIP at /clips/quake.wav; the list collects paths."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path != "/clips/quake.wav":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(CLIP)))
            self.end_headers()
            self.wfile.write(CLIP)

        def log_message(self, *_a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


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


# --- refusals -------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FLOOD = "flood-alert.xml"
TOWN_GEOCODE = "<geocode><valueName>统计用区划代码</valueName><value>341122100000</value></geocode>"
Edit = tuple[str, str]
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
