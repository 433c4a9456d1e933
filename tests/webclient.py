"""A CPython client for the terminal's local page (docs/web.md), as a phone's browser would use
it: requests with a cookie jar, the CSRF token read from each page's forms, and raw sockets for
the requests no browser sends (malformed, oversized, cut, idle)."""

from __future__ import annotations

import http.client
import io
import math
import os
import re
import socket
import struct
import wave
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from browser import web_pass
from rig import Rig, Term

PASSWORD = "village-horn-7"
WAIT_S = 30
RATE = 16000
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]*)"')
_MSG = re.compile(r'<p class="(msg|err)" role="\w+">([^<]*)</p>')


def wav_bytes(seconds: float = 1.0, freq: float = 523.0) -> bytes:
    n = int(seconds * RATE)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{n}h", *(int(12000 * math.sin(2 * math.pi * freq * i / RATE))
                                             for i in range(n))))
    return buf.getvalue()


def stereo_wav() -> bytes:
    """A WAV of the wrong format for the terminal (2 channels, 44.1 kHz, 8,000 bytes)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\x00\x01" * 4000)
    return buf.getvalue()


def web_terminal(rig: Rig, name: str = "t1", **cfg: Any) -> tuple[Term, str]:
    cfg.setdefault("web", {"pass": web_pass(PASSWORD)})
    t = rig.terminal(name, **cfg)
    return t, url_of(t)


def url_of(t: Term, since: int = 0) -> str:
    """The page's URL from the terminal's `web` event (from event index `since` on)."""
    return t.wait_event(lambda e: e["dev"] == "web", WAIT_S, since)["value"]["url"].rstrip("/")


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str
    cookies: list[str] = field(default_factory=list)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
              ) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data form as a browser sends it."""
    b = "cx" + os.urandom(8).hex()
    out = b""
    for k, v in fields.items():
        out += f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (name, data, ctype) in files.items():
        out += (f'--{b}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


class Client:
    """One browser: a cookie jar, the last page's CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.host, port = url.split("//")[1].split(":")
        self.port = int(port)
        self.jar: dict[str, str] = {}
        self.csrf = ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        h = dict(headers or {})
        if self.jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        c = http.client.HTTPConnection(self.host, self.port, timeout=WAIT_S)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            text = r.read().decode()
            cookies = r.headers.get_all("Set-Cookie") or []
            a = Answer(r.status, dict(r.headers.items()), text, cookies)
        finally:
            c.close()
        for ck in cookies:
            k, v = ck.split(";")[0].split("=", 1)
            if "Max-Age=0" in ck:
                self.jar.pop(k, None)
            else:
                self.jar[k] = v
        m = _CSRF.search(text)
        if m:
            self.csrf = m.group(1)
        return a

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, data: dict[str, str] | None = None, csrf: str | bool | None = None,
             headers: dict[str, str] | None = None,
             files: dict[str, tuple[str, bytes, str]] | None = None) -> Answer:
        d = dict(data or {})
        if csrf is not False:
            d["csrf"] = self.csrf if csrf is None or csrf is True else str(csrf)
        h = {"Origin": self.url, "Sec-Fetch-Site": "same-origin", **(headers or {})}
        h = {k: v for k, v in h.items() if v}
        if files is not None:
            body, h["Content-Type"] = multipart(d, files)
        else:
            body = urlencode(d).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        return self.request("POST", path, body, h)

    def login(self, password: str = PASSWORD) -> Answer:
        self.get("/login")
        r = self.post("/login", {"password": password})
        if r.status_code == 303:
            self.get("/")
        return r


def message(r: Answer) -> tuple[str, str] | None:
    """("msg" | "err", text) of the page's message, or None."""
    m = _MSG.search(r.text)
    return (m.group(1), m.group(2)) if m else None


def raw(url: str, data: bytes, read: bool = True, timeout: float = WAIT_S) -> bytes:
    """Send `data` on a fresh connection; the whole answer (until the terminal closes)."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the terminal answered and closed before taking it all
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
