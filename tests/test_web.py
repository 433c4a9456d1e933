"""The terminal's local page from a CPython client (issue 11, docs/web.md): login and its cookie,
lockout that survives a power cut, cross-site and CSRF refusals, the volume, an announcement
uploaded, played and stopped, and a level-1 warning the page cannot stop."""

from __future__ import annotations

import struct

from rig import Rig
from webclient import WAIT_S, Client, message, url_of, wav_bytes, web_terminal


def test_login_sets_a_strict_http_only_cookie_and_every_post_needs_site_and_token(
        rig: Rig) -> None:
    t, url = web_terminal(rig)
    assert f"{url}/" == __import__("json").loads(t.ctl("status"))["web"]
    c = Client(url)
    r = c.get("/")
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    r = c.get("/login")
    assert 'name="viewport"' in r.text and 'href="/style.css"' in r.text and "<script" not in r.text
    assert c.get("/style.css").headers["Cache-Control"] == "max-age=86400"
    c.get("/login")
    r = c.post("/login", {"password": "not-the-password"})
    assert r.status_code == 403 and message(r) == ("err", "密码错误。")
    r = c.login()
    assert r.status_code == 303
    cookie = r.cookies[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie, cookie
    r = c.get("/")
    assert r.status_code == 200 and "<th>线路</th><td>村广播线路</td>" in r.text, r.text[:800]
    assert "固件版本" in r.text and "运行时间" in r.text

    n = len(t.events())
    # another site's form: refused by Origin, by Sec-Fetch-Site, with the right token even
    r = c.post("/volume", {"volume": "40"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and message(r) == ("err", "拒绝来自其他网站的请求。")
    r = c.post("/volume", {"volume": "40"}, headers={"Origin": "", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    # a missing or stale token
    r = c.post("/volume", {"volume": "40"}, csrf=False)
    assert r.status_code == 403 and message(r) == ("err", "页面已过期,请重新打开再试。")
    r = c.post("/volume", {"volume": "40"}, csrf="0" * 32)
    assert r.status_code == 403
    other = Client(url)
    other.login()
    r = c.post("/volume", {"volume": "40"}, csrf=other.csrf)  # another session's token
    assert r.status_code == 403
    assert not [e for e in t.events()[n:] if e["dev"] == "volume"], "nothing refused took effect"

    r = c.post("/volume", {"volume": "40"})
    assert r.status_code == 200 and message(r) == ("msg", "音量已设置。"), r.text[:600]
    t.wait_event(lambda e: e["dev"] == "volume" and e["value"] == 40, WAIT_S, since=n)
    assert "<th>本地音量</th><td>40 %</td>" in r.text

    # English by a cookie, messages too
    c.post("/lang", {"lang": "en"})
    r = c.post("/volume", {"volume": "101"})
    assert message(r) == ("err", "The volume must be 0 to 100."), r.text[:600]
    r = c.post("/logout")
    assert r.status_code == 303 and c.get("/").status_code == 303


def test_five_wrong_passwords_lock_the_login_also_across_a_power_cut(rig: Rig) -> None:
    t, url = web_terminal(rig)
    c = Client(url)
    for i in range(5):
        c.get("/login")
        r = c.post("/login", {"password": f"wrong-{i}"})
        assert r.status_code == 403
    assert "已锁定" in message(r)[1], r.text[:600]
    c.get("/login")
    r = c.post("/login", {"password": "village-horn-7"})
    assert r.status_code == 403 and "已锁定" in message(r)[1], "locked even with the password"
    n = len(t.events())
    t.ctl("power-cut")
    url = url_of(t, n)
    t.wait_online(since=n)
    c = Client(url)
    r = c.login()
    assert r.status_code == 403 and "已锁定" in message(r)[1], "the lock survived the reboot"


def test_an_uploaded_announcement_plays_stops_and_never_stops_a_warning(rig: Rig) -> None:
    t, url = web_terminal(rig)
    c = Client(url)
    c.login()
    # a recorder's WAV: a 40 KB LIST chunk (metadata) before its 2 s of sound
    plain = wav_bytes(2.0)
    meta = b"LIST" + struct.pack("<I", 40000) + b"INFO" + bytes(39996)
    clip = plain[:4] + struct.pack("<I", len(plain) - 8 + len(meta)) + plain[8:36] + meta \
        + plain[36:]
    r = c.post("/upload", files={"file": ("通知.wav", clip, "audio/wav")})
    assert message(r) == ("msg", "本地广播已保存。"), r.text[:600]
    assert (t.dir / "flash" / "local" / "announce.wav").read_bytes() == clip
    assert not (t.dir / "flash" / "local" / "announce.wav.part").exists()
    # its length on the status page is the sound's, not the file's (3 s by file size)
    assert "已存 0:02" in c.get("/").text

    n, before = len(t.events()), t.sample_count()
    r = c.post("/play")
    assert message(r) == ("msg", "本地广播正在播放。"), r.text[:600]
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 1, WAIT_S, n)
    start = t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "start",
                         WAIT_S, n)
    assert "local/announce.wav" in str(start["value"]["source"])
    t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "stop", WAIT_S, n)
    assert t.sample_count() - before >= 32000 - 16, "the whole clip reached the speaker"
    _, s = t.samples()
    assert max(abs(x) for x in s[before:before + 32000]) > 1000, "the clip's samples, not silence"

    n = len(t.events())
    c.post("/play")
    t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "start", WAIT_S, n)
    r = c.post("/stop")
    assert message(r) == ("msg", "本地播放已停止。"), r.text[:600]
    t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "stop", WAIT_S, n)

    p = rig.send_alert(level=1, tone="siren", repeat=1)
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "playing", WAIT_S)
    r = c.post("/stop")
    assert r.status_code == 409 and message(r) == ("err", "正在播放警报,这里不能停止或打断。")
    r = c.post("/play")
    assert r.status_code == 409
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", WAIT_S)
    assert rig.rx.statuses(p["id"]) == ["accepted", "playing", "done"]
    r = c.get("/")
    # the last alerts in words: what it was (a red warning) and how it ended, no machine id
    assert "<td>警报 · 红色 (1级)</td><td>播完</td>" in r.text, "the warning and its end shown"
    assert p["id"] not in r.text
    r = c.get("/log")
    assert r.status_code == 200 and "receipt" in r.text


def test_a_terminal_without_a_password_offers_nothing(rig: Rig) -> None:
    t = rig.terminal("t1")
    c = Client(url_of(t))
    r = c.get("/")
    assert r.status_code == 200 and "从未设置" in r.text and "<form" not in r.text
    r = c.post("/login", {"password": "anything-at-all"})
    assert r.status_code == 403 and "从未设置" in r.text


def test_the_config_check_takes_web_pass_as_provisioning_writes_it(rig: Rig) -> None:
    from browser import web_pass

    from tools.terminal_config import refusal

    cfg = rig.config()
    assert refusal(cfg) is None, "web is optional: old configs still load"
    assert refusal(dict(cfg, web={"pass": web_pass("abcdefgh")})) is None
    assert refusal(dict(cfg, web={"pass": web_pass("abcdefgh"), "port": 8080})) is None
    for bad in ("plain-text", web_pass("abcdefgh", 999), web_pass("abcdefgh", 100001),
                web_pass("abcdefgh").replace("sha256", "sha1"), web_pass("abcdefgh") + "A"):
        assert refusal(dict(cfg, web={"pass": bad})) == "web pass", bad
    assert refusal(dict(cfg, web={"port": 0})) == "web port"


def test_recovery_mode_resets_a_forgotten_password_without_a_login(rig: Rig) -> None:
    t, url = web_terminal(rig)
    c = Client(url)
    assert c.get("/password").status_code == 303, "outside recovery: a login first"
    for i in range(5):
        c.get("/login")
        c.post("/login", {"password": f"forgotten-{i}"})
    n = len(t.events())
    # held until well after the restart: a loaded machine took 7 s to boot again in CI
    assert t.ctl("press", "--hold-ms", "30000") == "ok"
    t.ctl("power-cut")
    t.wait_event(lambda e: e["dev"] == "led" and e["value"] == "recovery", WAIT_S, n)
    c = Client(url_of(t, n))
    r = c.get("/password")
    assert r.status_code == 200 and 'name="old"' not in r.text, "no old password in recovery"
    r = c.post("/password", {"new": "fresh-password", "again": "fresh-password"})
    assert message(r) == ("msg", "密码已修改。"), r.text[:600]
    assert Client(url_of(t, n)).login("fresh-password").status_code == 303, "and the lock ended"
    assert (t.dir / "flash" / "config.json").exists(), "nothing erased"
