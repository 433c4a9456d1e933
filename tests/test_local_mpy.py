"""The operator's local actions on the MicroPython unix port (firmware/local.py, docs/web.md "Local
actions"): the real arbiter, player and emulated board, so what is asserted is what the speaker
and DIR/hw/events.jsonl show; and the announcement's checks for the page's uploads."""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from pathlib import Path
from typing import Any

from conftest import ROOT, run_mpy

PRELUDE = """
import asyncio, json, os
import board_emu as board
import config
from amp import Amplifier
from arbiter import Arbiter
from clip import ClipCache
from lights import Lights
from local import Local
from player import Player
os.chdir(%(dir)r)
def log(ev, **f):
    print("LOG", ev, json.dumps(f))
def result(**kw):
    print("RESULT " + json.dumps(kw))
class Clock:
    synced = True
    def now(self):
        return int(board.epoch())
class Alert:
    # an accepted alert as the verifier hands it to the arbiter; its receipts are logged
    def __init__(self, aid, level=1, tone="siren"):
        self.id, self.kid, self.scope, self.report = aid, "k", ["341122"], None
        now = int(board.epoch())
        self.payload = {"id": aid, "kind": "alert", "level": level, "issued": now,
                        "expires": now + 600, "audio": {"tone": tone}, "volume": 100, "repeat": 1}
def receipt(item, status, reason):
    log("receipt", alert=item.id, status=status, reason=reason)
cfg = config.validate({"id": "T341122100201-01", "region": "341122100201", "trust": [],
                       "mqtt": {"host": "127.0.0.1", "port": 1883}})
config.save(cfg)
amp = Amplifier(board.amp_pin(), 0, 0)
out = board.AudioOut(board.RATE)
player = Player(amp, out, ClipCache("clips", 100000, board.open_tcp, log), log)
arb = Arbiter(player, receipt, Clock(), log)
lights = Lights(board.led)
loc = Local(cfg, arb, player, Clock(), log, lights, lambda: "ip", {}, lambda ev: log("ev", **ev))
def audio(state):
    n = 0
    try:
        f = open("events.jsonl")
    except OSError:
        return 0
    for line in f:
        e = json.loads(line)
        if e["dev"] == "audio" and e["value"]["state"] == state:
            n += 1
    return n
async def until(cond, ms=15000):
    while not cond() and ms > 0:
        await asyncio.sleep_ms(20)
        ms -= 20
    return cond()
async def main():
%(body)s
asyncio.run(main())
"""


def mpy(tmp: Path, body: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(RESULT lines, events.jsonl) of BODY run as main() in tmp."""
    body = "\n".join("    " + line for line in body.strip("\n").splitlines())
    lib = tmp / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "board.py").write_text("from board_emu import *\n")  # as the flash's board.py
    r = run_mpy(PRELUDE % {"dir": str(tmp), "body": body}, env={"CX_HW": str(tmp)}, timeout=90,
                path=[lib, ROOT / "firmware", ROOT / "hardware"])
    assert r.returncode == 0, r.stdout + r.stderr
    res = [json.loads(ln[7:]) for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    p = tmp / "events.jsonl"
    ev = [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []
    return res, ev


def wav(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(struct.pack(f"<{n * channels}h", *(
            int(12000 * math.sin(2 * math.pi * freq * (i // channels) / rate))
            for i in range(n * channels))))
    return buf.getvalue()


def test_check_wav_names_what_is_wrong_with_an_upload(tmp_path: Path) -> None:
    good = wav(0.5)
    header_only = good[:44]
    files = {
        "good.wav": good,
        "text.wav": b"this is not a wav file at all, only text" * 4,
        "rate.wav": wav(0.5, rate=8000),
        "stereo.wav": wav(0.5, channels=2),
        "empty.wav": header_only[:40] + struct.pack("<I", 0),
        "cut.wav": good[: len(good) // 2],
        "huge.wav": header_only[:40] + struct.pack("<I", 1048578) + good[44:],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    names = [*files, "absent.wav"]
    res, _ = mpy(tmp_path, f"result(got=[loc.check_wav(n) for n in {names!r}])")
    assert dict(zip(names, res[0]["got"], strict=True)) == {
        "good.wav": None, "text.wav": "bad_format", "rate.wav": "bad_format",
        "stereo.wav": "bad_format", "empty.wav": "empty", "cut.wav": "truncated",
        "huge.wav": "too_large", "absent.wav": "missing"}


def test_store_keeps_a_good_upload_and_removes_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "announce.wav.part").write_bytes(b"RIFF....not really")
    res, _ = mpy(tmp_path, """
bad = loc.store()
result(bad=bad, part=os.listdir("local"), state=loc.state()["announcement"], play=loc.play())
""")
    assert res[0] == {"bad": "bad_format", "part": [], "state": None, "play": "no_announcement"}
    good = wav(0.5)
    (tmp_path / "local" / "announce.wav.part").write_bytes(good)
    res, _ = mpy(tmp_path, """
result(ok=loc.store(), files=sorted(os.listdir("local")), size=loc.state()["announcement"])
""")
    assert res[0] == {"ok": None, "files": ["announce.wav"], "size": len(good)}


def test_announcement_plays_at_the_local_volume_follows_it_live_and_stops(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "announce.wav").write_bytes(wav(3.0))
    res, ev = mpy(tmp_path, """
assert loc.set_volume(40) is None
r = [loc.play(), loc.play(), loc.chime()]  # a second item is busy: nothing waits
await until(lambda: audio("start") == 1)
st = loc.state()
await asyncio.sleep_ms(500)
v = loc.set_volume(20)
await asyncio.sleep_ms(500)
r.append(loc.stop())
await until(lambda: audio("stop") == 1)
result(r=r, v=v, st=st, after=loc.state()["playing"], again=loc.stop(), bad=loc.set_volume(101),
       saved=config.load()[0]["volume"])
""")
    out = res[0]
    assert out["r"] == [None, "busy", "busy", None] and out["v"] is None
    assert out["st"]["playing"] == {"kind": "local", "id": "local-announce", "what": "announce",
                                    "source": "file:local/announce.wav"}
    assert out["st"]["volume"] == 40 and out["st"]["recovery"] is False
    assert out["after"] is None and out["again"] == "nothing_playing"
    assert out["bad"] == "bad_volume" and out["saved"] == 20
    vols = [e["value"] for e in ev if e["dev"] == "volume"]
    assert vols == [40, 40, 20], "set at once idle, at the play's start, and live while it plays"
    stop = [e["value"] for e in ev if e["dev"] == "audio" and e["value"]["state"] == "stop"]
    assert stop[0]["source"] == "file:local/announce.wav"
    leds = [e["value"] for e in ev if e["dev"] == "led"]
    assert leds == ["local", "offline"]


def test_an_alert_preempts_local_items_and_the_page_cannot_stop_or_quiet_it(tmp_path: Path) -> None:
    res, ev = mpy(tmp_path, """
assert loc.chime() is None
await until(lambda: audio("start") == 1)
a = Alert("A-1")
arb.submit(a)
await until(lambda: audio("start") == 2)
r = [loc.stop(), loc.chime(), loc.beeps(), loc.set_volume(10)]
loc.press("short")
loc.press("long")
await until(lambda: audio("stop") == 2)
await asyncio.sleep_ms(300)
result(r=r, after=loc.state()["playing"], starts=audio("start"))
""")
    out = res[0]
    assert out["r"] == ["alert_playing", "busy", "busy", None]
    assert out["after"] is None and out["starts"] == 2, "the chime is dropped, never resumed"
    vols = [e["value"] for e in ev if e["dev"] == "volume"]
    assert vols == [30, 100], "the local volume never reaches the alert"
    starts = [e["value"]["source"] for e in ev if e["dev"] == "audio"
              and e["value"]["state"] == "start"]
    assert starts == ["tone:chime", "tone:siren"]
    stops = [e["value"]["why"] for e in ev if e["dev"] == "audio" and e["value"]["state"] == "stop"]
    assert stops == ["preempted", "done"]
    assert [e["value"] for e in ev if e["dev"] == "led"] == ["local", "offline"]
