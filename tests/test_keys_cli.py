"""`cx keys` and `cx alert send` as an operator runs them (subprocess, real Mosquitto)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from tools.envelope import b64d, decode_jws

CX = str(Path(sys.executable).parent / "cx") if (Path(sys.executable).parent / "cx").exists() \
    else (shutil.which("cx") or "cx")
ROOT_KID = "prov-34-root-2026"
ISSUER_KID = "cty-341122-2026"


def cx(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([CX, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                       check=False)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cx: error: ") and text in lines[0], lines[0]


def verify(pub_b64: str, token: str) -> None:
    signing_input, _, sig = token.rpartition(".")
    Ed25519PublicKey.from_public_bytes(b64d(pub_b64)).verify(b64d(sig), signing_input.encode())


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    root, issuer = tmp_path / "root.json", tmp_path / "issuer.json"
    cx("keys", "root", "--kid", ROOT_KID, "--scope", "34", "--out", str(root))
    cx("keys", "issuer", "--kid", ISSUER_KID, "--root", str(root), "--scope", "341122",
       "--out", str(issuer))
    return {"root": root, "issuer": issuer}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --- cx keys --------------------------------------------------------------------------


def test_root_key_file_is_private_and_complete(keys: dict[str, Path]) -> None:
    doc = load(keys["root"])
    assert stat.S_IMODE(os.stat(keys["root"]).st_mode) == 0o600
    assert doc["kind"] == "root" and doc["kid"] == ROOT_KID
    assert doc["scope"] == ["34"] and doc["use"] == ["alert"]
    assert len(b64d(doc["priv"])) == 32 and len(b64d(doc["pub"])) == 32
    assert "crt" not in doc


def test_existing_key_file_is_never_overwritten_without_force(keys: dict[str, Path]) -> None:
    before = keys["root"].read_text()
    r = cx("keys", "root", "--kid", "other", "--scope", "34", "--out", str(keys["root"]), ok=False)
    assert_one_line_error(r, 1, "exists")
    assert keys["root"].read_text() == before
    cx("keys", "root", "--kid", "other", "--scope", "34,35", "--use", "alert,ota",
       "--out", str(keys["root"]), "--force")
    doc = load(keys["root"])
    assert doc["kid"] == "other" and doc["scope"] == ["34", "35"] and doc["use"] == ["alert", "ota"]
    assert stat.S_IMODE(os.stat(keys["root"]).st_mode) == 0o600


def test_issuer_certificate_is_signed_by_the_root(keys: dict[str, Path]) -> None:
    root, issuer = load(keys["root"]), load(keys["issuer"])
    assert issuer["kind"] == "issuer" and stat.S_IMODE(os.stat(keys["issuer"]).st_mode) == 0o600
    verify(root["pub"], issuer["crt"])
    header, body, _ = decode_jws(issuer["crt"])
    assert header == {"alg": "EdDSA", "typ": "eb-cert", "kid": ROOT_KID}
    cert = json.loads(body)
    assert cert["kid"] == ISSUER_KID and cert["pub"] == issuer["pub"]
    assert cert["scope"] == ["341122"] and cert["use"] == ["alert"]
    now = time.time()
    assert cert["nbf"] <= now < cert["exp"] and cert["exp"] - cert["nbf"] == 365 * 86400
    assert (cert["nbf"], cert["exp"]) == (issuer["nbf"], issuer["exp"])


def test_issuer_validity_from_flags(keys: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "i2.json"
    cx("keys", "issuer", "--kid", "i2", "--root", str(keys["root"]), "--scope", "3411,341122100",
       "--nbf", "1790000000", "--exp", "1830000000", "--out", str(out))
    cert = json.loads(decode_jws(load(out)["crt"])[1])
    assert (cert["nbf"], cert["exp"], cert["scope"]) == (1790000000, 1830000000,
                                                         ["3411", "341122100"])


@pytest.mark.parametrize(("flags", "text"), [
    (["--scope", "35"], "outside root"),
    (["--scope", "3"], "2, 4, 6, 9 or 12 digits"),
    (["--scope", "341122", "--use", "ota"], "not granted"),
    (["--scope", "341122", "--use", "radio"], "use"),
    (["--scope", "341122", "--days", "10", "--exp", "1830000000"], "not both"),
    (["--scope", "341122", "--nbf", "1830000000", "--exp", "1790000000"], "validity"),
    (["--scope", "341122", "--days", "x"], "--days: must be a whole number from 1 to 36500"),
    (["--scope", "341122", "--days", "0"], "--days: must be a whole number from 1 to 36500"),
    (["--scope", "341122", "--exp", "-1"], "--exp: must be a whole number from 0 to"),
])
def test_issuer_bad_flags_fail_in_one_line(keys: dict[str, Path], tmp_path: Path,
                                           flags: list[str], text: str) -> None:
    out = tmp_path / "bad.json"
    r = cx("keys", "issuer", "--kid", "bad", "--root", str(keys["root"]), "--out", str(out),
           *flags, ok=False)
    assert_one_line_error(r, 2, text)
    assert not out.exists()


@pytest.mark.parametrize(("args", "code", "text"), [
    (["keys", "root", "--scope", "34", "--out", "x.json"], 2, "--kid"),
    (["keys", "root", "--kid", "bad kid", "--scope", "34", "--out", "x.json"], 2, "kid"),
    (["keys", "root", "--kid", "r", "--scope", "34", "--use", "radio", "--out", "x.json"], 2,
     "use"),
    (["keys", "root", "--kid", "r", "--scope", "34", "--out", "x.json", "--bogus"], 2,
     "unrecognized"),
    (["keys", "show", "missing.json"], 1, "missing.json"),
    (["keys", "frobnicate"], 2, "invalid choice"),
    (["keys"], 2, "required"),
    ([], 2, "required"),
])
def test_bad_keys_commands_fail_in_one_line(tmp_path: Path, args: list[str], code: int,
                                            text: str) -> None:
    assert_one_line_error(cx(*args, cwd=tmp_path, ok=False), code, text)
    assert not (tmp_path / "x.json").exists()


def test_corrupt_key_file_is_a_one_line_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "root", "kid": "r"}')
    assert_one_line_error(cx("keys", "show", str(bad), ok=False), 1, "missing field pub")
    bad.write_text("not json")
    assert_one_line_error(cx("keys", "anchors", str(bad), ok=False), 1, "not a JSON key file")


def test_anchors_list_public_parts_of_roots(keys: dict[str, Path], tmp_path: Path) -> None:
    second = tmp_path / "root2.json"
    cx("keys", "root", "--kid", "prov-35-root", "--scope", "35", "--use", "alert,ota",
       "--out", str(second))
    anchors = json.loads(cx("keys", "anchors", str(keys["root"]), str(second)).stdout)
    root = load(keys["root"])
    assert anchors == [
        {"kid": ROOT_KID, "pub": root["pub"], "scope": ["34"], "use": ["alert"]},
        {"kid": "prov-35-root", "pub": load(second)["pub"], "scope": ["35"],
         "use": ["alert", "ota"]},
    ]
    out = tmp_path / "trust.json"
    cx("keys", "anchors", str(keys["root"]), "--out", str(out))
    assert json.loads(out.read_text())[0]["kid"] == ROOT_KID
    assert_one_line_error(cx("keys", "anchors", str(keys["root"]), "--out", str(out), ok=False),
                          1, "exists")
    assert_one_line_error(cx("keys", "anchors", str(keys["issuer"]), ok=False), 2, "issuer")


def test_show_summarizes_without_the_private_key(keys: dict[str, Path]) -> None:
    issuer = load(keys["issuer"])
    out = cx("keys", "show", str(keys["issuer"])).stdout
    assert issuer["priv"] not in out
    assert ISSUER_KID in out and "341122" in out and f"signed by {ROOT_KID}" in out
    assert ": valid" in out
    shown = json.loads(cx("keys", "show", "--json", str(keys["root"])).stdout)
    assert "priv" not in shown and shown["kid"] == ROOT_KID
    assert load(keys["root"])["priv"] not in cx("keys", "show", str(keys["root"])).stdout


# --- cx alert send --print ------------------------------------------------------------


def send(keyfile: Path, *flags: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return cx("alert", "send", "--key", str(keyfile), *flags, ok=ok)


def test_printed_envelope_is_a_compact_jws_with_kid_and_crt(keys: dict[str, Path]) -> None:
    issuer = load(keys["issuer"])
    env = send(keys["issuer"], "--regions", "341122000000,341122100201", "--level", "1",
               "--tone", "siren", "--id", "flood-7", "--volume", "95", "--repeat", "3",
               "--event", "FLOOD", "--text", "撤离", "--expires", "600", "--print").stdout.strip()
    assert len(env.split(".")) == 3 and len(env) <= 8192 and env.isascii()
    assert "=" not in env and "\n" not in env
    header, body, _ = decode_jws(env)
    assert header == {"alg": "EdDSA", "typ": "eb-alert", "kid": ISSUER_KID, "crt": issuer["crt"]}
    assert json.loads(decode_jws(header["crt"])[1])["kid"] == header["kid"]
    verify(issuer["pub"], env)
    p = json.loads(body)
    assert p["id"] == "flood-7" and p["kind"] == "alert" and p["level"] == 1
    assert p["regions"] == ["341122000000", "341122100201"]
    assert p["audio"] == {"tone": "siren"} and p["volume"] == 95 and p["repeat"] == 3
    assert p["event"] == "FLOOD" and p["text"] == "撤离"
    assert p["expires"] - p["issued"] == 600 and abs(p["issued"] - time.time()) < 60


def test_root_signs_directly_without_crt(keys: dict[str, Path]) -> None:
    env = send(keys["root"], "--regions", "340000000000", "--level", "2", "--tone", "alarm",
               "--print").stdout.strip()
    header, _, _ = decode_jws(env)
    assert header == {"alg": "EdDSA", "typ": "eb-alert", "kid": ROOT_KID}
    verify(load(keys["root"])["pub"], env)


def test_test_and_cancel_kinds(keys: dict[str, Path]) -> None:
    env = send(keys["issuer"], "--regions", "341122000000", "--kind", "test", "--print").stdout
    p = json.loads(decode_jws(env.strip())[1])
    assert p["kind"] == "test" and p["level"] == 4 and p["audio"] == {"tone": "chime"}
    env = send(keys["issuer"], "--regions", "341122000000", "--kind", "cancel",
               "--refs", "flood-7,flood-8", "--print").stdout
    p = json.loads(decode_jws(env.strip())[1])
    assert p["kind"] == "cancel" and p["refs"] == ["flood-7", "flood-8"] and "audio" not in p


def test_clip_file_gives_sha256_and_size(keys: dict[str, Path], tmp_path: Path) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF" + bytes(1000))
    out = send(keys["issuer"], "--regions", "341122000000", "--level", "3", "--clip-file",
               str(clip), "--clip-url", "http://clips/a.wav", "--print", "--json").stdout
    summary = json.loads(out)
    assert summary["kid"] == ISSUER_KID and summary["topics"] == ["eb/alert/341122"]
    assert summary["envelope_bytes"] == len(summary["envelope"])
    p = json.loads(decode_jws(summary["envelope"])[1])
    assert p["id"] == summary["id"]
    assert p["audio"] == {"clip": {"url": "http://clips/a.wav", "bytes": 1004,
                                   "sha256": hashlib.sha256(clip.read_bytes()).hexdigest()}}


def test_generated_ids_differ(keys: dict[str, Path]) -> None:
    ids = {json.loads(send(keys["issuer"], "--regions", "341122000000", "--kind", "test",
                           "--print", "--json").stdout)["id"] for _ in range(3)}
    assert len(ids) == 3


ALERT = ["--regions", "341122000000", "--level", "2", "--tone", "siren"]


@pytest.mark.parametrize(("flags", "code", "text"), [
    (["--regions", "341122000000", "--level", "9", "--tone", "siren", "--print"], 2, "level"),
    (["--regions", "341122000000", "--tone", "siren", "--print"], 2, "level"),
    (["--regions", "34112200", "--level", "2", "--tone", "siren", "--print"], 2, "12 digits"),
    (["--regions", "350000000000", "--level", "2", "--tone", "siren", "--print"], 2,
     "outside key"),
    (["--regions", "341122000000", "--level", "2", "--print"], 2, "exactly one"),
    ([*ALERT, "--clip-url", "http://x", "--print"], 2, "not both"),
    (["--regions", "341122000000", "--level", "2", "--clip-url", "u", "--print"], 2,
     "--clip-sha256"),
    (["--regions", "341122000000", "--level", "2", "--clip-sha256", "0" * 64, "--clip-bytes",
      "4096", "--print"], 2, "--clip-url"),
    (["--regions", "341122000000", "--level", "2", "--clip-url", "http://x/a.wav",
      "--clip-sha256", "0" * 64, "--clip-bytes", "3", "--print"], 2,
     "--clip-bytes: must be a whole number from 44 to 1048576"),
    ([*ALERT, "--expires", "0", "--print"], 2, "--expires: must be a whole number from 1 to 604800"),
    ([*ALERT, "--expires", str(8 * 86400), "--print"], 2, "--expires"),
    ([*ALERT, "--volume", "101", "--print"], 2, "--volume: must be a whole number from 0 to 100"),
    ([*ALERT, "--repeat", "0", "--print"], 2, "--repeat: must be a whole number from 1 to 20"),
    ([*ALERT, "--timeout", "0", "--print"], 2, "--timeout: must be a number > 0 and <= 3600"),
    ([*ALERT, "--issued", "-5", "--print"], 2, "--issued: must be a whole number from 0 to"),
    ([*ALERT, "--id", "no spaces", "--print"], 2, "id"),
    ([*ALERT, "--refs", "a", "--print"], 2, "cancel only"),
    ([*ALERT, "--tone", "bell", "--print"], 2, "invalid choice"),
    (ALERT, 2, "--broker"),
    ([*ALERT, "--print", "--broker", "127.0.0.1:1883"], 2, "not allowed"),
    ([*ALERT, "--broker", "nohostport"], 2, "HOST:PORT"),
])
def test_bad_send_flags_fail_in_one_line(keys: dict[str, Path], flags: list[str], code: int,
                                         text: str) -> None:
    r = send(keys["issuer"], *flags, ok=False)
    assert_one_line_error(r, code, text)
    assert r.stdout == ""


def test_expired_certificate_is_refused_before_sending(keys: dict[str, Path],
                                                       tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    cx("keys", "issuer", "--kid", "old", "--root", str(keys["root"]), "--scope", "341122",
       "--nbf", "1600000000", "--exp", "1600086400", "--out", str(old))
    assert_one_line_error(send(old, *ALERT, "--print", ok=False), 1, "expired")
    # --unchecked still crafts it, for tests of the terminal's bad_cert rule.
    assert send(old, *ALERT, "--print", "--unchecked").stdout.count(".") == 2


# --- cx alert send to a real broker ---------------------------------------------------


class Subscriber:
    """A paho client subscribed (QoS 1) to some topics, collecting (topic, payload)."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sub")

        def on_connect(c: mqtt.Client, *_a: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_message(_c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
            self.messages.put((m.topic, bytes(m.payload)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "subscriber got no SUBACK"

    def take(self, n: int, timeout: float = 10) -> list[tuple[str, bytes]]:
        return [self.messages.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_send_publishes_to_every_region_topic(keys: dict[str, Path], broker: Any) -> None:
    sub = Subscriber(broker.host, broker.port,
                     ["eb/alert/34", "eb/alert/341122", "eb/alert/341122100201", "eb/alert/35"])
    try:
        r = send(keys["issuer"], "--regions", "341122000000,341122100201,341122000000",
                 "--level", "2", "--tone", "siren", "--id", "quake-1",
                 "--broker", f"{broker.host}:{broker.port}")
        assert r.stdout.count("\n") == 1 and "quake-1" in r.stdout
        assert "eb/alert/341122" in r.stdout and "eb/alert/341122100201" in r.stdout
        got = sub.take(2)
        assert sorted(t for t, _ in got) == ["eb/alert/341122", "eb/alert/341122100201"]
        assert got[0][1] == got[1][1]
        env = got[0][1].decode()
        verify(load(keys["issuer"])["pub"], env)
        assert json.loads(decode_jws(env)[1])["id"] == "quake-1"
        assert sub.messages.empty()
    finally:
        sub.close()


def test_send_json_summary(keys: dict[str, Path], broker: Any) -> None:
    sub = Subscriber(broker.host, broker.port, ["eb/alert/34"])
    try:
        r = send(keys["root"], "--regions", "340000000000", "--level", "1", "--tone", "siren",
                 "--json", "--broker", f"{broker.host}:{broker.port}")
        summary = json.loads(r.stdout)
        assert set(summary) == {"id", "kid", "topics", "envelope_bytes", "published_at"}
        assert summary["kid"] == ROOT_KID and summary["topics"] == ["eb/alert/34"]
        assert abs(summary["published_at"] - time.time()) < 60
        (topic, payload), = sub.take(1)
        assert topic == "eb/alert/34" and len(payload) == summary["envelope_bytes"]
        assert json.loads(decode_jws(payload.decode())[1])["id"] == summary["id"]
    finally:
        sub.close()


def test_unreachable_broker_exits_3(keys: dict[str, Path]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        r = send(keys["issuer"], *ALERT, "--broker", f"127.0.0.1:{port}", ok=False)
    assert_one_line_error(r, 3, "unreachable")
    assert r.stdout == ""


def test_silent_broker_times_out_with_exit_3(keys: dict[str, Path]) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)  # accepts TCP, never answers CONNECT
        start = time.monotonic()
        r = send(keys["issuer"], *ALERT, "--timeout", "1",
                 "--broker", f"127.0.0.1:{srv.getsockname()[1]}", ok=False)
    assert_one_line_error(r, 3, "unreachable")
    assert time.monotonic() - start < 20
