"""Helpers shared by the `cx alert from-cap` tests (test_cap.py, test_cap_refusals.py): the
CAP samples under tests/cap/ with fresh times, the issuer keys, running from-cap and checking what
it printed, and a local HTTP server for audio resources."""

from __future__ import annotations

import http.server
import json
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

import pytest

from tools.envelope import KeyPair, decode_jws, region_prefix, verify_jws
from tools.keys import new_issuer, save_keyfile

CAP_DIR = Path(__file__).resolve().parent / "cap"
_BIN = Path(sys.executable).parent
CX = str(_BIN / "cx") if (_BIN / "cx").exists() else (shutil.which("cx") or "cx")
HOUR = 3600
Edit = tuple[str, str]  # (old, new) text of a sample, for fresh()
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


@pytest.fixture(scope="module", name="keys")
def keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
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


def printed_all(keys: dict[str, Any], path: Path, *flags: str,
                key: str = "city") -> tuple[list[dict[str, Any]], str]:
    """The payloads of the printed envelopes, one a line, each signature checked; and stderr."""
    r = from_cap(keys, path, "--print", *flags, key=key)
    assert r.returncode == 0, r.stderr
    payloads = []
    for env in r.stdout.splitlines():
        header, body, _ = decode_jws(env)
        assert header["kid"] == keys[key].kid and header["crt"] == keys[key].crt
        assert verify_jws(keys[key].pub, env) and len(env) <= 8192
        payloads.append(json.loads(body))
    assert payloads and r.stdout.endswith("\n")
    return payloads, r.stderr


def parts(identifier: str, count: int = 16) -> list[str]:
    """The ids from-cap gives the alerts of one CAP: <identifier>, <identifier>:2, ..."""
    return [identifier] + [f"{identifier}:{n}" for n in range(2, count + 1)]


def blocks_of(path: Path) -> list[str]:
    return re.findall(r"  <info>\n.*?\n  </info>\n", path.read_text(encoding="utf-8"),
                      re.DOTALL)


def codes_of(text: str) -> list[str]:
    return re.findall(r"<valueName>统计用区划代码</valueName><value>(\d{12})</value>", text)


def time_of(block: str, tag: str) -> int:
    m = re.search(f"<{tag}>(.*?)</{tag}>", block)
    assert m
    return int(datetime.fromisoformat(m.group(1)).timestamp())


def addressed(payloads: list[dict[str, Any]], code: str) -> bool:
    """Whether a terminal with this code is covered by some alert (alerts.md §3)."""
    return any(code.startswith(region_prefix(r)) for p in payloads for r in p["regions"])


@pytest.fixture(name="clip_server")
def clip_server_fixture() -> Iterator[tuple[str, list[str]]]:
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RESERVOIRS = "reservoirs.xml"
RES_ID = "WRA-ReservoirDis-20260807150000-0042"
RES_HEADLINES = ["沙河集水庫放流警戒", "黃栗樹水庫放流警戒", "城西水庫放流警戒",
                 "鳳陽山水庫放流警戒", "屯倉水庫放流警戒"]

FLOOD_EN = blocks_of(CAP_DIR / "flood-alert.xml")[0]  # the English block, before the Chinese


def in_english(old: str, new: str) -> Edit:
    """An edit of flood-alert.xml that changes its English block only."""
    assert old in FLOOD_EN, old
    return FLOOD_EN, FLOOD_EN.replace(old, new)


DIFFERENT: list[tuple[str, Edit]] = [
    ("other_area", in_english("<value>341122000000", "<value>341122100000")),
    ("other_severity", in_english("Severe", "Extreme")),
    ("other_urgency", in_english("Immediate", "Expected")),
    ("other_event_code", in_english("11B03", "11B04")),
    ("other_expires", in_english("T23:00", "T22:00")),
    ("same_language", in_english("en-US", "zh-CN")),
]
