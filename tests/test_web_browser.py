"""The terminal's local page in a real browser (issue 11, docs/web.md): headless Chromium on a
phone screen logs in, reads the status, sets the volume, uploads a WAV made here and plays it,
stops it; it cannot stop a level-1 warning, which plays to its end. A wrong password shows its
message; the language switch shows English.

Screenshots (status and upload, Chinese and English, and the refused stop; phone width) are taken on every run into
the test's folder; with CX_SCREENSHOTS=1 they are written to docs/screens/ too (the committed
ones come from such a run).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

from browser import Page, web_pass
from conftest import ROOT
from rig import Rig, Term
from selenium.webdriver.common.by import By

PASSWORD = "horn-test-2026"
RATE = 16000
CLIP_S = 3.0  # long enough to be still playing when the page's stop arrives, on a loaded machine
WAIT_S = 30  # any page or event the test waits for; generous for a loaded CI machine
SCREENS = ROOT / "docs" / "screens"


def clip_samples(seconds: float = CLIP_S) -> list[int]:
    """A two-tone announcement stand-in (523 Hz then 659 Hz), loud enough to see through any
    volume scaling, distinct from every alert tone."""
    n = int(seconds * RATE)
    return [int(14000 * math.sin(2 * math.pi * (523 if i < n // 2 else 659) * i / RATE))
            for i in range(n)]


def wav_file(path: Path, samples: list[int]) -> Path:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    path.write_bytes(buf.getvalue())
    return path


def page_url(t: Term) -> str:
    """The page's address, from the terminal's `web` event (issue 11, emulator)."""
    return t.wait_event(lambda e: e["dev"] == "web", WAIT_S)["value"]["url"]


def web_terminal(rig: Rig, name: str, **cfg: Any) -> tuple[Term, str]:
    t = rig.terminal(name, hold_ms=300, web={"pass": web_pass(PASSWORD)}, **cfg)
    return t, page_url(t)


def shoot(page: Page, tmp: Path, name: str) -> None:
    """A screenshot of the whole page into the test's folder, and into docs/screens/ with
    CX_SCREENSHOTS=1."""
    p = page.b.screenshot(tmp / "screens" / f"{name}.png")
    if os.environ.get("CX_SCREENSHOTS") == "1":
        SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, SCREENS / p.name)


def since(t: Term) -> int:
    return len(t.events())


def audio(t: Term, state: str, n: int, timeout: float = WAIT_S) -> dict[str, Any]:
    return t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == state,
                        timeout, since=n)


LABELS_ONE_LINE = """return Array.from(document.querySelectorAll('table#status th')).filter(th =>
    th.getBoundingClientRect().height >= 2 * parseFloat(getComputedStyle(th).lineHeight)
  ).map(th => th.textContent);"""


def alert_rows(page: Page) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in page.d.find_elements(By.CSS_SELECTOR, "table#alerts tr")]


def test_operator_page_runs_local_announcement_and_cannot_stop_a_warning(
        rig: Rig, browser: Any, tmp_path: Path) -> None:
    t, url = web_terminal(rig, "t1")
    page = Page(browser(), url)
    page.open("/")
    assert page.path() == "/login", "the status needs a login"
    page.login(PASSWORD)
    assert page.path() == "/", page.text()[:400]
    st = page.table("status")
    assert st["线路"] == "村广播线路", st  # online over IP, in Chinese by default
    assert st["本地音量"].endswith(" %") and st["正在播放"] == "无" and st["故障"] == "无", st
    assert st["固件版本"] and st["运行时间"].startswith("0天 "), st
    # the path in use first, the 4G signal in words as the backup's state; no recording yet
    assert list(st)[:2] == ["线路", "备用 4G 信号"] and st["备用 4G 信号"] in "好中弱无", st
    assert st["本地广播录音"] == "无", st
    assert page.d.execute_script(LABELS_ONE_LINE) == [], "every label on one line on a phone"
    assert page.d.find_elements(By.CSS_SELECTOR, "nav form[action$='/lang']"), "switch at the top"
    # the rig's probes (envelopes for another village, `ignored`) stay out of the last alerts
    assert alert_rows(page) == [["无"]], alert_rows(page)

    # the local volume: applied at once, a `volume` event
    n = since(t)
    page.submit("/volume", {"volume": "40"})
    assert page.message() == "音量已设置。" and page.table("status")["本地音量"] == "40 %"
    t.wait_event(lambda e: e["dev"] == "volume" and e["value"] == 40, WAIT_S, since=n)

    # upload a clip made here; it is stored as sent
    want = clip_samples()
    clip = wav_file(tmp_path / "通知.wav", want)
    page.submit("/upload", files={"file": clip})
    assert page.message() == "本地广播已保存。", page.text()[:400]
    shoot(page, tmp_path, "upload-zh")
    assert page.table("status")["本地广播录音"] == "已存 0:03"
    assert (t.dir / "flash" / "local" / "announce.wav").read_bytes() == clip.read_bytes()

    # play it to its end: amplifier, audio, the clip's own samples at the local volume
    n, before = since(t), t.sample_count()
    page.submit("/play")
    assert page.message() == "本地广播正在播放。", page.text()[:400]
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 1, WAIT_S, since=n)
    start = audio(t, "start", n)
    assert "local/announce.wav" in start["value"]["source"], start
    audio(t, "stop", n)
    _rate, s = t.samples()
    got = s[before:before + len(want)]
    assert len(got) == len(want), "the whole clip reached the speaker"
    g = sum(a * b for a, b in zip(got, want, strict=True)) / sum(b * b for b in want)
    assert 0.2 < g < 0.6, f"the clip at the local volume 40 (gain {g:.3f})"
    assert max(abs(a - g * b) for a, b in zip(got, want, strict=True)) <= 14000 * g * 0.1

    # play it again and stop it from the page halfway
    n, before = since(t), t.sample_count()
    page.submit("/play")
    audio(t, "start", n)
    page.submit("/stop")
    assert page.message() == "本地播放已停止。", page.text()[:400]
    audio(t, "stop", n)
    assert t.sample_count() - before < len(want), "the second play was cut short"

    # a level-1 warning: the page cannot stop it, and it plays to its end
    p = rig.send_alert(level=1, tone="siren", repeat=2)
    t.wait_event(lambda e: e["dev"] == "audio" and e["value"]["state"] == "start"
                 and e["value"].get("alert") == p["id"], WAIT_S)
    n = since(t)
    page.open("/")
    page.submit("/stop")
    assert page.error() == "正在播放警报,这里不能停止或打断。", page.text()[:400]
    assert page.table("status")["正在播放"] == "警报 · 红色 (1级)", "what plays, in words"
    shoot(page, tmp_path, "refused-zh")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", WAIT_S)
    assert rig.rx.statuses(p["id"]) == ["accepted", "playing", "done"]
    assert not [e for e in t.events()[n:] if e["dev"] == "audio"
                and e["value"]["state"] == "start"], "nothing else started meanwhile"
    page.open("/")  # the status once more, now with the warning and its receipts
    assert page.table("status")["正在播放"] == "无"
    rows = alert_rows(page)  # time (China Standard Time), what, the final state, in words
    assert len(rows) == 1 and rows[0][1:] == ["警报 · 红色 (1级)", "播完"], rows
    assert len(rows[0][0].split()) == 2 and ":" in rows[0][0] and "月" in rows[0][0], rows
    shoot(page, tmp_path, "status-zh")


def test_wrong_password_is_refused_and_english_is_selectable(
        rig: Rig, browser: Any, tmp_path: Path) -> None:
    _t, url = web_terminal(rig, "t1")
    page = Page(browser(), url)
    page.open("/login")
    page.login("not-the-password")
    assert page.path() == "/login" and page.has_form("/login")
    assert page.error() == "密码错误。", page.text()[:400]
    page.submit("/lang")
    assert page.d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    page.login(PASSWORD)
    st = page.table("status")
    assert st["Link"] == "village line" and st["Playing"] == "nothing", st
    assert st["Backup 4G signal"] in ("good", "fair", "weak", "none"), st
    shoot(page, tmp_path, "status-en")
    clip = wav_file(tmp_path / "notice.wav", clip_samples(1.0))
    page.submit("/upload", files={"file": clip})
    assert page.message() == "Announcement stored.", page.text()[:400]
    assert page.table("status")["Announcement"] == "stored, 0:01"
    shoot(page, tmp_path, "upload-en")
