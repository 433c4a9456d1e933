"""The local page against bad and hostile clients (issue 11 "Bad input", docs/web.md "Security
limits"): each refused with a clear message, nothing half-written on flash, and a hundred idle
connections held open while an alert published at the same moment still sounds."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from conftest import fill
from rig import Rig, Term
from webclient import WAIT_S, Client, message, multipart, raw, stereo_wav, wav_bytes, web_terminal


@pytest.fixture
def page(rig: Rig) -> tuple[Term, Client]:
    t, url = web_terminal(rig)
    c = Client(url)
    c.login()
    return t, c


def local_files(t: Term) -> list[str]:
    d = t.dir / "flash" / "local"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def head_and_body(c: Client, path: str, body: bytes, ctype: str, length: int | None = None,
                  extra: str = "") -> bytes:
    cookie = "; ".join(f"{k}={v}" for k, v in c.jar.items())
    return (f"POST {path} HTTP/1.1\r\nHost: {c.host}:{c.port}\r\nOrigin: {c.url}\r\n"
            f"Cookie: {cookie}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}\r\n"
            ).encode() + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def test_bad_uploads_are_refused_with_a_message_and_leave_nothing_half_written(
        page: tuple[Term, Client]) -> None:
    t, c = page
    # a non-WAV named .wav
    r = c.post("/upload", files={"file": ("通知.wav", b"RIFF\x00\x00\x00\x00not a wave" * 20,
                                          "audio/wav")})
    assert r.status_code == 409 and message(r) == (
        "err", "文件不是本终端能播放的 WAV(16 位单声道 PCM)。"), r.text[:600]
    r = c.post("/upload", files={"file": ("stereo.wav", stereo_wav(), "audio/wav")})
    assert r.status_code == 409 and message(r)[0] == "err"
    assert local_files(t) == []

    # oversized: refused from its Content-Length, before a byte of it is stored
    body, ctype = multipart({"csrf": c.csrf}, {"file": ("big.wav", b"", "audio/wav")})
    ans = raw(c.url, head_and_body(c, "/upload", body, ctype, length=2_000_000))
    assert status_of(ans) == 413 and "上传的文件太大(最多 1 MB)。".encode() in ans, ans[:300]
    # a stored announcement survives every refusal after it
    good = wav_bytes(0.5)
    r = c.post("/upload", files={"file": ("a.wav", good, "audio/wav")})
    assert message(r) == ("msg", "本地广播已保存。")

    # cut halfway: the client goes away with half the body sent
    clip = wav_bytes(3.0, 660)
    body, ctype = multipart({"csrf": c.csrf}, {"file": ("b.wav", clip, "audio/wav")})
    with socket.create_connection((c.host, c.port), WAIT_S) as s:
        s.sendall(head_and_body(c, "/upload", body, ctype)[:len(body) // 2])
        deadline = time.monotonic() + WAIT_S
        while not (t.dir / "flash" / "local" / "announce.wav.part").exists():
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
    deadline = time.monotonic() + WAIT_S
    while "announce.wav.part" in local_files(t):
        assert time.monotonic() < deadline, "the cut upload's part file stayed"
        time.sleep(0.05)
    assert local_files(t) == ["announce.wav"]
    assert (t.dir / "flash" / "local" / "announce.wav").read_bytes() == good

    # an upload without its token writes nothing either
    r = c.post("/upload", csrf=False, files={"file": ("c.wav", clip, "audio/wav")})
    assert r.status_code == 403 and local_files(t) == ["announce.wav"]
    assert (t.dir / "flash" / "local" / "announce.wav").read_bytes() == good


def test_malformed_http_long_headers_and_bad_forms_get_their_message(
        page: tuple[Term, Client]) -> None:
    t, c = page
    ans = raw(c.url, b"GARBAGE\r\n\r\n")
    assert status_of(ans) == 400 and "请求格式错误。".encode() in ans
    ans = raw(c.url, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")
    assert status_of(ans) == 414
    ans = raw(c.url, b"GET / HTTP/1.1\r\nX-Long: " + b"b" * 1100 + b"\r\n\r\n")
    assert status_of(ans) == 431 and "请求头太长或太多。".encode() in ans
    ans = raw(c.url, b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40))
              + b"\r\n")
    assert status_of(ans) == 431
    ans = raw(c.url, b"GET / HTTP/1.1\r\nHost: x\xff\xfe\r\n\r\n")
    assert status_of(ans) == 400
    # a form field that is not UTF-8, in the session's language
    body = b"csrf=" + c.csrf.encode() + b"&volume=%ff%fe"
    ans = raw(c.url, head_and_body(c, "/volume", body, "application/x-www-form-urlencoded"))
    assert status_of(ans) == 400 and "表单内容无效(需要 UTF-8 文字)。".encode() in ans, ans[:400]
    ans = raw(c.url, head_and_body(c, "/volume", b"x" * 3000, "application/x-www-form-urlencoded"))
    assert status_of(ans) == 413
    # a wrong old password changes nothing; a network setting that cuts the terminal off
    r = c.post("/password", {"old": "not-it-at-all", "new": "new-pass-word", "again":
                             "new-pass-word"})
    assert r.status_code == 409 and message(r) == ("err", "旧密码错误,密码未修改。")
    assert not (t.dir / "flash" / "web" / "pass").exists()
    r = c.post("/network", {"mode": "static", "address": "192.168.1.20",
                            "netmask": "255.255.255.0", "gateway": "192.168.2.1", "dns": ""})
    assert r.status_code == 409 and "同一个子网" in message(r)[1]
    assert not (t.dir / "flash" / "net.json").exists()
    n = len(t.events())
    r = c.post("/network", {"mode": "static", "address": "192.168.1.20",
                            "netmask": "255.255.255.0", "gateway": "192.168.1.1", "dns": ""})
    assert message(r) == ("msg", "网络设置已保存。"), r.text[:600]
    t.wait_event(lambda e: e["dev"] == "net" and e["value"]["address"] == "192.168.1.20",
                 WAIT_S, n)
    # the password changes with the old one; the new one logs in
    r = c.post("/password", {"old": "village-horn-7", "new": "new-pass-word",
                             "again": "new-pass-word"})
    assert message(r) == ("msg", "密码已修改。"), r.text[:600]
    assert Client(c.url).login("new-pass-word").status_code == 303
    assert (t.dir / "flash" / "web" / "pass").read_text().startswith("pbkdf2-sha256$4096$")


def test_a_hundred_idle_connections_never_delay_an_alert(rig: Rig, tmp_path: Path) -> None:
    t, url = web_terminal(rig)
    host, port = url.split("//")[1].split(":")
    socks = []
    opened = time.monotonic()
    try:
        for _ in range(100):
            s = socket.create_connection((host, int(port)), WAIT_S)
            socks.append(s)
        p = rig.send_alert(level=1, tone="siren", repeat=1)
        sent = time.time()
        rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "playing", WAIT_S)
        amp = t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 1, WAIT_S)
        assert amp["t"] - sent < 5.0, f"publish to amplifier {amp['t'] - sent:.2f} s"
        # a fifth connection at once is told 503 and closed
        # (on a slow machine the first four may reach their 10 s idle drop while the rest are
        # still opening: a later one then takes a freed place, and is closed unanswered too)
        answers = [s.recv(64) for s in socks[4:]]
        busy = sum(a.startswith(b"HTTP/1.0 503") for a in answers)
        late = sum(a == b"" for a in answers)
        assert busy + late == 96 and late <= 4, (busy, late)
        # the four served ones said nothing: each is dropped after the 10 s idle read
        for s in socks[:4]:
            s.settimeout(WAIT_S)
            assert s.recv(64) == b"", "an idle client gets no answer, only the close"
        held = time.monotonic() - opened
        assert 9.5 < held < 25, f"dropped after {held:.1f} s (idle read: 10 s)"
        rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", WAIT_S)
    finally:
        for s in socks:
            s.close()
    # the page answers again
    assert Client(url).get("/login").status_code == 200


def test_a_slow_client_is_dropped_at_the_whole_request_deadline(
        page: tuple[Term, Client]) -> None:
    _t, c = page
    with socket.create_connection((c.host, c.port), WAIT_S) as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        s.settimeout(2.0)
        closed = None
        while time.monotonic() - start < 45:
            try:
                s.sendall(b"X")  # a byte every 2 s: never idle for 10 s, never done
            except OSError:
                closed = time.monotonic() - start
                break
            try:
                if s.recv(64) == b"":
                    closed = time.monotonic() - start
                    break
            except TimeoutError:
                pass
            assert c.get("/login").status_code == 200, "the page serves others meanwhile"
    assert closed is not None and 29 < closed < 40, f"closed after {closed} s (deadline 30 s)"


def test_an_upload_to_a_full_flash_is_refused_and_the_old_announcement_stays(
        rig: Rig, small_flash: Path) -> None:
    t, url = web_terminal(rig)
    c = Client(url)
    c.login()
    good = wav_bytes(0.5)
    assert message(c.post("/upload", files={"file": ("a.wav", good, "audio/wav")})) == (
        "msg", "本地广播已保存。")
    fill(small_flash, leave=200_000)
    r = c.post("/upload", files={"file": ("b.wav", wav_bytes(10.0), "audio/wav")})
    assert r.status_code == 409 and message(r) == (
        "err", "存储空间已满,没有保存任何内容。"), r.text[:600]
    assert local_files(t) == ["announce.wav"]
    assert (small_flash / "local" / "announce.wav").read_bytes() == good
    p = rig.send_alert(level=1, tone="siren", repeat=1)
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", WAIT_S)
