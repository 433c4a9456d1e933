"""Valid alerts sound (alerts.md §5): amplifier, audio, receipts; priority, cancel, clips, power cut."""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import struct
import threading
import time
import wave
from pathlib import Path
from typing import Any

from conftest import Broker
from rig import REGION, Receipts, Rig

from tools.envelope import topics_for


def zero_cross_freqs(samples: list[int], rate: int, win: float = 0.05) -> list[float]:
    n = int(rate * win)
    out = []
    for i in range(0, len(samples) - n, n):
        w = samples[i:i + n]
        crossings = sum(1 for a, b in itertools.pairwise(w) if (a < 0) != (b < 0))
        out.append(crossings / 2 / win)
    return out


def statuses(rig: Rig, aid: str) -> list[str]:
    return rig.rx.statuses(aid)


def wait_status(rig: Rig, aid: str, status: str, timeout: float = 30) -> dict[str, Any]:
    return rig.rx.wait(lambda r: r.get("alert") == aid and r["status"] == status, timeout)


def test_valid_alert_sounds_siren_and_amp_follows_profile(rig: Rig) -> None:
    t = rig.terminal("t1")  # horn profile defaults: 500 ms warm-up, 2000 ms hold
    p = rig.send_alert(level=1, tone="siren")
    done = wait_status(rig, p["id"], "done")
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, timeout=10)
    ev = [e for e in t.events() if e["dev"] in ("amp", "audio", "volume")]
    kinds = [(e["dev"], e["value"] if e["dev"] != "audio" else e["value"]["state"]) for e in ev]
    assert kinds == [("amp", 1), ("volume", 100), ("audio", "start"), ("audio", "stop"), ("amp", 0)]
    amp_on, start, stop, amp_off = ev[0]["t"], ev[2]["t"], ev[3]["t"], ev[4]["t"]
    assert ev[2]["value"] == {"state": "start", "source": "tone:siren", "alert": p["id"]}
    assert 0.45 <= start - amp_on <= 1.0, "horn warm-up before the first sample"
    assert 1.9 <= amp_off - stop <= 2.6, "amplifier held ~2 s after the audio"
    assert statuses(rig, p["id"]) == ["accepted", "playing", "done"]
    assert done["reason"] is None
    rate, s = t.samples()
    assert len(s) >= 3 * rate
    freqs = zero_cross_freqs(s, rate)
    assert all(450 <= f <= 1560 for f in freqs), (min(freqs), max(freqs))
    assert min(freqs) < 700 and max(freqs) > 1300, "siren sweeps"
    assert max(abs(x) for x in s) > 20000, "level 1 plays at full volume"


def test_higher_priority_preempts_and_lower_resumes_from_start(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    low = rig.send_alert(kind="test", level=4, tone="chime", repeat=3)
    wait_status(rig, low["id"], "playing")
    time.sleep(1.0)
    high = rig.send_alert(level=1, tone="alarm")
    wait_status(rig, low["id"], "preempted", 10)
    wait_status(rig, high["id"], "done", 20)
    r = rig.rx.wait(lambda r: r.get("alert") == low["id"] and r["status"] == "done", 30)
    assert r["status"] == "done"
    assert statuses(rig, high["id"]) == ["accepted", "playing", "done"]
    assert statuses(rig, low["id"]) == ["accepted", "playing", "preempted", "playing", "done"]
    starts = [e["value"] for e in t.events() if e["dev"] == "audio" and e["value"]["state"] == "start"]
    assert [s["alert"] for s in starts] == [low["id"], high["id"], low["id"]]
    assert [s["source"] for s in starts] == ["tone:chime", "tone:alarm", "tone:chime"]


def test_lower_priority_waits_until_higher_finishes(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    high = rig.send_alert(level=1, tone="siren")
    wait_status(rig, high["id"], "playing")
    low = rig.send_alert(level=3, tone="chime")
    wait_status(rig, low["id"], "accepted")
    hd = wait_status(rig, high["id"], "done", 20)
    lp = wait_status(rig, low["id"], "playing", 20)
    assert lp["t"] >= hd["t"]
    wait_status(rig, low["id"], "done", 20)
    assert "preempted" not in statuses(rig, high["id"])
    amps = [e["value"] for e in t.events() if e["dev"] == "amp"]
    assert amps[0] == 1


def test_cancel_stops_playing_alert_and_amp_goes_off_after_hold(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=500)
    p = rig.send_alert(level=2, tone="siren", repeat=10)
    wait_status(rig, p["id"], "playing")
    time.sleep(0.5)
    sent = time.time()
    c = rig.send_alert(kind="cancel", refs=[p["id"]])
    wait_status(rig, c["id"], "accepted")
    r = wait_status(rig, p["id"], "cancelled", 10)
    assert r["reason"] is None
    stop = t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "stop")
    off = t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 10)
    assert stop["t"] - sent < 2, "the siren stopped promptly after the cancel was published"
    assert 0.4 <= off["t"] - stop["t"] <= 1.2
    rate = 16000
    assert t.sample_count() < 6 * rate, "the 30 s siren was cut short"
    assert "done" not in statuses(rig, p["id"])


def test_cancel_removes_waiting_alert(rig: Rig) -> None:
    rig.terminal("t1", hold_ms=300)
    # long enough that the cancel finds the low one still waiting on a loaded machine
    high = rig.send_alert(level=1, tone="siren", repeat=5)
    wait_status(rig, high["id"], "playing")
    low = rig.send_alert(level=3, tone="chime")
    wait_status(rig, low["id"], "accepted")
    rig.send_alert(kind="cancel", refs=[low["id"]])
    wait_status(rig, low["id"], "cancelled")
    rig.send_alert(kind="cancel", refs=[high["id"]])
    wait_status(rig, high["id"], "cancelled", 20)
    time.sleep(1)
    assert statuses(rig, low["id"]) == ["accepted", "cancelled"]


def wav_bytes(seconds: float, freq: float = 440.0, rate: int = 16000) -> bytes:
    import math
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(struct.pack(f"<{n}h", *(int(12000 * math.sin(2 * math.pi * freq * i / rate))
                                               for i in range(n))))
    return buf.getvalue()


class ClipServer:
    """Serves `files`; the first `cut` requests of each path get half the body, then the
    connection is closed (a link that broke mid-download)."""

    def __init__(self, files: dict[str, bytes], cut: int = 0) -> None:
        files_ = files
        cuts = dict.fromkeys(files, cut)
        self.requests: list[str] = []
        requests = self.requests

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                body = files_.get(self.path)
                if body is not None and cuts[self.path] > 0:
                    cuts[self.path] -= 1
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.srv.shutdown()


def test_clip_plays_and_wrong_hash_falls_back_to_siren(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    clip = wav_bytes(1.0)
    srv = ClipServer({"/ok.wav": clip, "/bad.wav": clip})
    try:
        sha = hashlib.sha256(clip).hexdigest()
        good = rig.send_alert(level=2, clip={"url": srv.url("/ok.wav"), "sha256": sha,
                                             "bytes": len(clip)})
        r = wait_status(rig, good["id"], "playing")
        assert r["reason"] is None
        wait_status(rig, good["id"], "done")
        bad = rig.send_alert(level=2, clip={"url": srv.url("/bad.wav"), "sha256": "ab" * 32,
                                            "bytes": len(clip)})
        r = wait_status(rig, bad["id"], "playing")
        assert r["reason"] == "clip_hash_mismatch"
        wait_status(rig, bad["id"], "done", 20)
        # a clip never fetched before (a cached hash would play from flash without fetching)
        other = hashlib.sha256(b"another clip").hexdigest()
        missing = rig.send_alert(level=2, clip={"url": srv.url("/none.wav"), "sha256": other,
                                                "bytes": len(clip)})
        r = wait_status(rig, missing["id"], "playing", 20)
        assert r["reason"] == "clip_fetch_failed"
        wait_status(rig, missing["id"], "done", 20)
    finally:
        srv.stop()
    starts = [e["value"] for e in t.events() if e["dev"] == "audio" and e["value"]["state"] == "start"]
    assert [s["source"] for s in starts] == [f"clip:{sha}", "tone:siren", "tone:siren"]
    _rate, s = t.samples()
    # the clip's exact samples are on the speaker line first
    with wave.open(io.BytesIO(clip)) as w:
        want = list(struct.unpack(f"<{w.getnframes()}h", w.readframes(w.getnframes())))
    got = s[: len(want)]
    assert len(got) == len(want)
    assert max(abs(a - b) for a, b in zip(got, want)) <= abs(max(want)) * 0.25


def test_a_clip_download_cut_once_is_fetched_again_and_plays(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    clip = wav_bytes(1.0, 660.0)
    srv = ClipServer({"/c.wav": clip}, cut=1)
    try:
        sha = hashlib.sha256(clip).hexdigest()
        p = rig.send_alert(level=2, clip={"url": srv.url("/c.wav"), "sha256": sha,
                                          "bytes": len(clip)})
        r = wait_status(rig, p["id"], "playing")
        assert r["reason"] is None
        wait_status(rig, p["id"], "done", 20)
        assert srv.requests == ["/c.wav", "/c.wav"]
        retry = [e for e in t.log() if e.get("ev") == "clip_retry"]
        assert len(retry) == 1 and retry[0]["detail"].startswith("short")
        # cut every time: the siren after the second try, not a third
        clip2 = wav_bytes(1.0, 770.0)
        srv2 = ClipServer({"/d.wav": clip2}, cut=5)
        try:
            p = rig.send_alert(level=2, clip={"url": srv2.url("/d.wav"),
                                              "sha256": hashlib.sha256(clip2).hexdigest(),
                                              "bytes": len(clip2)})
            r = wait_status(rig, p["id"], "playing", 20)
            assert r["reason"] == "clip_fetch_failed"
            assert srv2.requests == ["/d.wav", "/d.wav"]
        finally:
            srv2.stop()
    finally:
        srv.stop()
    starts = [e["value"]["source"] for e in t.events() if e["dev"] == "audio"
              and e["value"]["state"] == "start"]
    assert starts[-2:] == [f"clip:{sha}", "tone:siren"]


def test_duplicate_after_power_cut_is_ignored(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    env, p = rig.alert(kind="test", level=4, tone="chime")
    rig.send(env, topics_for(p))
    wait_status(rig, p["id"], "done", 20)
    n = len(t.events())
    t.ctl("power-cut")
    t.wait_event(lambda e: e["dev"] == "boot" and e["value"]["cause"] == "power", 20, since=n)
    t.wait_online(since=n)
    n_rx = len(rig.rx.items)
    rig.send(env, topics_for(p))
    r = rig.rx.wait(lambda r: r.get("alert") == p["id"], 20, start=n_rx)
    assert (r["status"], r["reason"]) == ("ignored", "duplicate")
    # the same id under different bytes: verified, then duplicate
    env2, _ = rig.alert(kind="test", level=4, tone="chime", id=p["id"], issued=p["issued"],
                        expires=p["expires"], text="resent")
    rig.send(env2, topics_for(p))
    r = rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] != "done", 20, start=n_rx + 1)
    assert (r["status"], r["reason"]) == ("ignored", "duplicate")
    # Nothing sounded again. (The amplifier's own switch-off after the first play may land after
    # `n`: its hold time can outlast the "done" receipt, so only switch-ons count.)
    assert [e for e in t.events()[n:] if e["dev"] == "amp" and e["value"]] == []


def test_same_alert_on_several_topics_plays_once(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=300)
    env, p = rig.alert(level=3, tone="chime", regions=[REGION, REGION[:9] + "000", "341122000000"])
    rig.send(env, topics_for(p) + [f"eb/alert/{REGION[:2]}"])
    wait_status(rig, p["id"], "done", 20)
    time.sleep(1)
    st = statuses(rig, p["id"])
    assert st.count("accepted") == 1 and st.count("done") == 1
    assert st.count("ignored") == len(topics_for(p))
    assert [e["value"] for e in t.events() if e["dev"] == "amp"] == [1, 0]


def test_terminals_outside_the_area_stay_silent(rig: Rig) -> None:
    inside = rig.terminal("in", hold_ms=300)
    outside = rig.terminal("out", tid="T341122200101-01", region="341122200101", hold_ms=300)
    # published on the county topic both hear; only the town's terminal is addressed
    env, p = rig.alert(level=2, tone="siren", regions=[REGION[:9] + "000"])
    rig.send(env, ["eb/alert/" + REGION[:6]])
    wait_status(rig, p["id"], "done", 20)
    r = rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["_dev"] == outside.id, 10)
    assert (r["status"], r["reason"]) == ("ignored", "not_for_me")
    assert [e for e in outside.events() if e["dev"] == "amp"] == []
    assert [e["value"] for e in inside.events() if e["dev"] == "amp"][:1] == [1]


def test_unsynced_clock_skips_future_check_and_uses_persisted_time(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200, env={"CX_CLOCK": "unsynced"})
    # No NTP, and no 4G network clock either: the emulated modem (which outlives the firmware's
    # reboots) loses its SIM, then the power is cut. Otherwise the modem sets the clock a moment
    # after boot, and the first alert would race it.
    t.ctl("modem", "sim", "out")
    n = len(t.events())
    t.ctl("power-cut")
    t.wait_event(lambda e: e["dev"] == "boot", 20, since=n)
    t.wait_online(since=next(i for i, e in enumerate(t.events()) if i >= n and e["dev"] == "boot"))
    booted = [i for i, e in enumerate(t.log()) if e.get("ev") == "boot"][-1]
    after = [e.get("ev") for e in t.log()[booted:]]
    assert "clock_unsynced" in after and "clock_synced" not in after
    now = int(time.time())
    ahead = rig.send_alert(kind="test", level=4, tone="chime", issued=now + 3600,
                           expires=now + 7200)
    wait_status(rig, ahead["id"], "done", 20)  # rule 9 skipped until the clock is set
    old = rig.send_alert(kind="test", level=4, tone="chime", issued=now - 7200, expires=now - 60)
    r = wait_status(rig, old["id"], "rejected", 20)
    assert r["reason"] == "expired"
    assert "clock_synced" not in [e.get("ev") for e in t.log()[booted:]], "unsynced throughout"


def test_receipts_made_while_broker_is_down_arrive_when_it_returns(rig: Rig, tmp_path: Path) -> None:
    t = rig.terminal("t1", hold_ms=200)
    p = rig.send_alert(level=2, tone="siren", repeat=2)
    wait_status(rig, p["id"], "playing")
    port = rig.broker.port
    rig.broker.stop()
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "none", 15)
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 15)  # done while offline
    rig.broker = again = Broker(tmp_path / "again", port=port)
    try:
        old, rig.rx = rig.rx, Receipts(rig.broker.host, port)
        old.stop()
        r = rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 60)
        assert r["reason"] is None
    finally:
        again.stop()  # the fixture stops only the broker it started
