"""Daily programmes end to end (docs/broadcast.md): signed schedules published retained on the real
broker, an emulated terminal whose clock runs at an offset (`cx emu run --clock-offset`, here
through its environment variable) so that a seven o'clock programme starts within seconds, the
clip fetched ahead and played from flash with both links down, receipts to the fleet."""

from __future__ import annotations

import hashlib
import math
import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rig import REGION, Rig, Term
from test_e2e_playback import ClipServer, wav_bytes

from tools.envelope import b64e, make_alert_payload, pub_bytes, region_prefix, sign_jws

TZ = 8 * 3600
LEAD_S = 50  # the terminal boots this long before local 07:00:00 (its offset clock): room for a
# slow boot, two schedules and a clip fetch before seven


class DailyKey:
    """A key with use `daily` only, a trust anchor for `scope` (certificates: test_daily_mpy)."""

    def __init__(self, kid: str, scope: str) -> None:
        self.priv = Ed25519PrivateKey.generate()
        self.kid = kid
        self.anchor = {"kid": kid, "pub": b64e(pub_bytes(self.priv)), "scope": [scope],
                       "use": ["daily"]}

    def schedule(self, area: str, programmes: list[dict[str, Any]], *, version: int = 1,
                 first: int = 0, last: int = 30, sid: str | None = None,
                 excepted: list[str] | None = None) -> str:
        today = local_date(offset_now())
        p: dict[str, Any] = {"id": sid or f"s-{area}-{version}", "area": area,
                             "version": version, "issued": int(time.time()), "tz": "+08:00",
                             "from": day(today + first), "until": day(today + last),
                             "programmes": programmes}
        if excepted:
            p["except"] = excepted
        return sign_jws(self.priv, {"alg": "EdDSA", "typ": "eb-schedule", "kid": self.kid}, p)


OFFSET = 0.0  # set by offset_for_seven(): the terminal's clock minus the host's


def offset_for_seven(lead: float = LEAD_S) -> float:
    """The clock offset that puts the terminal `lead` seconds before the next local 07:00:00:
    ahead of the host, never behind (an alert or probe the rig signs now is then never from the
    future; the warning below is given a long life so it has not expired on the terminal's
    clock)."""
    local = time.time() + TZ
    seven = (local // 86400) * 86400 + 7 * 3600
    while seven - lead - local < 60:
        seven += 86400
    return seven - lead - local


def offset_now() -> float:
    return time.time() + OFFSET


def local_date(epoch: float) -> int:
    return int(epoch + TZ) // 86400


def day(z: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(z * 86400))


def clip_prog(pid: str, start: str, clip: bytes, url: str, **kw: Any) -> dict[str, Any]:
    return {"id": pid, "days": [1, 2, 3, 4, 5, 6, 7], "start": start,
            "audio": {"clip": {"url": url, "sha256": hashlib.sha256(clip).hexdigest(),
                               "bytes": len(clip)}}, **kw}


def publish(rig: Rig, env: str, prefix: str) -> None:
    rig.pub.publish(f"eb/daily/{prefix}", env.encode(), qos=1, retain=True).wait_for_publish(5)


def receipt(rig: Rig, pred: Any, timeout: float = 60) -> dict[str, Any]:
    return rig.rx.wait(pred, timeout)


def programme_receipts(rig: Rig, name: str) -> list[tuple[str, Any]]:
    with rig.rx.cond:
        return [(r["status"], r["reason"]) for r in rig.rx.items if r.get("programme") == name]


def tone_power(samples: list[int], rate: int, freq: float) -> float:
    w = 2 * math.pi * freq / rate
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + c * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - c * s1 * s2) / max(1, len(samples)) ** 2


def terminal(rig: Rig, keys: list[DailyKey], lead: float = LEAD_S, **cfg: Any) -> Term:
    global OFFSET
    OFFSET = offset_for_seven(lead)
    trust = [rig.root.anchor()] + [k.anchor for k in keys]
    return rig.terminal("t1", env={"CX_CLOCK_OFFSET": repr(OFFSET)}, trust=trust,
                        hold_ms=200, **cfg)


def test_a_seven_oclock_programme_plays_from_flash_with_both_links_down(rig: Rig) -> None:
    county = DailyKey("county-341122-daily", "341122")
    clip = wav_bytes(2.0, 440.0)
    srv = ClipServer({"/news.wav": clip})
    try:
        t = terminal(rig, [county])
        today = day(local_date(offset_now()))
        env = county.schedule("341122000000", [
            clip_prog("news", "07:00", clip, srv.url("/news.wav"), title="三农新闻"),
            # due from 06:59:00 to 06:59:50 (the terminal boots at 06:59:10), so it would play as
            # soon as the schedule is in: but not today, a holiday
            clip_prog("early", "06:59", clip, srv.url("/news.wav"), duration=50,
                      **{"except": [today]}),
        ], sid="county-day")
        publish(rig, env, "341122")
        r = receipt(rig, lambda r: r.get("schedule") == "county-day")
        assert (r["status"], r["reason"], r["version"]) == ("accepted", None, 1), r
        # a schedule of the county's whose last day has passed plays nothing
        publish(rig, county.schedule("341122100000", [clip_prog("old", "07:00", clip,
                                                                srv.url("/news.wav"))],
                                     first=-10, last=-1, sid="town-old"), "341122100")
        r = receipt(rig, lambda r: r.get("schedule") == "town-old")
        assert (r["status"], r["reason"]) == ("rejected", "expired"), r
        # the clip is fetched ahead; then both links go down before seven
        cached = t.dir / "flash" / "clips" / f"{hashlib.sha256(clip).hexdigest()}.wav"
        deadline = time.monotonic() + 20
        while not cached.exists():
            assert time.monotonic() < deadline, "the programme's clip was never fetched"
            time.sleep(0.2)
    finally:
        srv.stop()
    assert t.ctl("link", "ip", "down") == "ok" and t.ctl("link", "4g", "down") == "ok"
    n = len(t.events())
    assert not [e for e in t.events() if e["dev"] == "audio"], "nothing plays before seven"
    start = t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "start",
                         LEAD_S + 30, n)
    assert start["value"]["source"].endswith(cached.name), start
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 30, n)
    # its receipts reach the fleet once a link is back
    assert t.ctl("link", "ip", "up") == "ok"
    receipt(rig, lambda r: r.get("programme") == "county-day/news" and r["status"] == "done")
    assert programme_receipts(rig, "county-day/news") == [("playing", None), ("done", None)]
    assert programme_receipts(rig, "county-day/early") == [], "a holiday plays nothing"
    rate, s = t.samples()
    assert tone_power(s[-rate:], rate, 440.0) > 100 * tone_power(s[-rate:], rate, 3000.0)


def test_restarted_with_both_links_down_it_plays_from_the_schedule_and_clip_on_flash(
        rig: Rig) -> None:
    # The cache holds the programme's clip and one alert clip: two alerts with their own clips
    # pass through it, and neither may push the programme's out (it is pinned). Then both links
    # go down and the power is cut: the schedule comes back from flash, verified again.
    county = DailyKey("county-341122-daily", "341122")
    clip = wav_bytes(2.0, 440.0)
    voices = [wav_bytes(0.5, 600.0 + 100 * i) for i in range(2)]
    srv = ClipServer({"/news.wav": clip, "/v0.wav": voices[0], "/v1.wav": voices[1]})
    try:
        t = terminal(rig, [county], lead=60, clip_cache_bytes=len(clip) + len(voices[0]) + 100)
        publish(rig, county.schedule("341122000000", [
            clip_prog("news", "07:00", clip, srv.url("/news.wav"))], sid="cty-flash"), "341122")
        r = receipt(rig, lambda r: r.get("schedule") == "cty-flash")
        assert r["status"] == "accepted", r
        cached = t.dir / "flash" / "clips" / f"{hashlib.sha256(clip).hexdigest()}.wav"
        deadline = time.monotonic() + 20
        while not cached.exists():
            assert time.monotonic() < deadline, "the programme's clip was never fetched"
            time.sleep(0.2)
        old = time.time() - 3600  # cached an hour ago: the oldest file in the cache by far
        os.utime(cached, (old, old))
        for i, v in enumerate(voices):
            a = rig.send_alert(level=2, expires_in=2 * 86400, clip={
                "url": srv.url(f"/v{i}.wav"), "sha256": hashlib.sha256(v).hexdigest(),
                "bytes": len(v)})
            r = receipt(rig, lambda r, a=a: r.get("alert") == a["id"] and r["status"] == "playing")
            assert r["reason"] is None, r
            receipt(rig, lambda r, a=a: r.get("alert") == a["id"] and r["status"] == "done")
    finally:
        srv.stop()
    assert cached.exists(), "an alert's clip pushed the programme's out of the cache"
    evicted = [e["file"] for e in t.log() if e.get("ev") == "clip_evicted"]
    assert evicted == [f"{hashlib.sha256(voices[0]).hexdigest()}.wav"], evicted
    assert t.ctl("link", "ip", "down") == "ok" and t.ctl("link", "4g", "down") == "ok"
    n = len(t.events())
    t.ctl("power-cut")
    t.wait_event(lambda e: e["dev"] == "boot" and e["value"]["cause"] == "power", 20, n)
    start = t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "start",
                         90, n)
    assert start["value"]["source"].endswith(cached.name), start
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 30, n)
    assert t.ctl("link", "ip", "up") == "ok"
    receipt(rig, lambda r: r.get("programme") == "cty-flash/news" and r["status"] == "done", 60)
    assert programme_receipts(rig, "cty-flash/news") == [("playing", None), ("done", None)]
    booted = [e for e in t.log() if e.get("ev") == "schedule_loaded"]
    assert booted, "the schedule was not read back from flash at boot"


def test_the_county_wins_over_the_village_and_a_warning_over_both(rig: Rig) -> None:
    county = DailyKey("county-341122-daily", "341122")
    town = DailyKey("town-341122100-daily", "341122100")
    village = DailyKey("village-341122100201-daily", "341122100201")
    clip = wav_bytes(1.0, 440.0)
    srv = ClipServer({"/c.wav": clip})
    try:
        t = terminal(rig, [county, town, village])
        url = srv.url("/c.wav")
        # the village's runs from 06:59 across seven; the county's starts at seven; the town's
        # at seven too, below the county
        for k, area, prog, sid in [
            (village, REGION, clip_prog("v", "06:59", clip, url, duration=90), "vil"),
            (town, "341122100000", clip_prog("t", "07:00", clip, url, duration=30), "town"),
            (county, "341122000000", clip_prog("c", "07:00", clip, url, duration=30), "cty"),
        ]:
            publish(rig, k.schedule(area, [prog], sid=sid), region_prefix(area))
            r = receipt(rig, lambda r, sid=sid: r.get("schedule") == sid)
            assert r["status"] == "accepted", r
        # a daily key cannot sound a warning
        p = make_alert_payload(kind="alert", level=1, tone="siren", regions=[REGION])
        forged = sign_jws(village.priv, {"alg": "EdDSA", "typ": "eb-alert", "kid": village.kid},
                          p)
        rig.send(forged, [f"eb/alert/{REGION}"])
        r = receipt(rig, lambda r: "alert" in r and r.get("kid") == village.kid)
        assert (r["status"], r["reason"], r["alert"]) == ("rejected", "unknown_key", None), r
        # an unsigned (badly signed) schedule is refused
        bad = county.schedule("341122000000", [], version=9, sid="cty-forged")
        h, pl, _s = bad.split(".")
        publish(rig, f"{h}.{pl}.{b64e(bytes(64))}", "341122")
        # its id is not read before its signature holds (as an alert's): the receipt names none
        r = receipt(rig, lambda r: "schedule" in r and r["schedule"] is None)
        assert (r["status"], r["reason"], r["kid"]) == ("rejected", "bad_signature",
                                                        county.kid), r
        receipt(rig, lambda r: r.get("programme") == "vil/v" and r["status"] == "playing",
                LEAD_S + 30)
        receipt(rig, lambda r: r.get("programme") == "cty/c" and r["status"] == "playing",
                LEAD_S + 60)
        # a warning during the county's programme takes the horn
        w = rig.send_alert(level=2, tone="siren", expires_in=2 * 86400)
        receipt(rig, lambda r: r.get("alert") == w["id"] and r["status"] == "playing")
        receipt(rig, lambda r: r.get("programme") == "cty/c" and r["status"] == "preempted")
    finally:
        srv.stop()
    assert programme_receipts(rig, "vil/v") == [("playing", None), ("preempted", "higher_tier")]
    assert programme_receipts(rig, "town/t") == [("skipped", "higher_tier")]
    assert programme_receipts(rig, "cty/c") == [("playing", None), ("preempted", "alert")]
    log = [e for e in t.log() if e.get("ev") == "resume"]
    assert not log, "a preempted programme is not resumed"
    # each preemption ramps down to silence: the first step in speaker.wav larger than the 440 Hz
    # clip's own (about 1,250 at volume 60) is the siren's onset, from a sample at zero
    _rate, sp = t.samples()
    first = next(i for i in range(1, len(sp)) if abs(sp[i] - sp[i - 1]) > 2000)
    assert sp[first - 1] == 0 and abs(sp[first - 2]) < 100, sp[first - 40:first + 2]
