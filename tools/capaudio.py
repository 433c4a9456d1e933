"""The audio of a CAP alert (CAP 1.2 §3.2.3 <resource>): fetched over http:// or read from a
local copy, checked against the CAP's <size> and <digest> and against what a terminal plays (a
16-bit mono PCM WAV of at most 1 MiB), and described as an alert's clip {url, sha256, bytes}
(alerts.md §3). Mapping the rest of the CAP: tools/cap.py.
"""

from __future__ import annotations

import hashlib
import http.client
import struct
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tools.cap import AudioResource, CapError

MAX_CLIP = 1 << 20  # bytes: firmware/clip.py MAX_CLIP, the most a terminal downloads
MAX_CLIP_URL = 512  # chars: firmware/clip.py parse_url
FETCH_TIMEOUT = 10.0  # s: connect plus the whole download


class ClipFileError(Exception):
    """The local copy of an audio resource (--clip-file) cannot be read: not the CAP's fault,
    so not a CapError."""


def fetch_clip(url: str, timeout: float = FETCH_TIMEOUT, limit: int = MAX_CLIP) -> bytes:
    """GET an http:// URL (no redirects), at most `limit` bytes within `timeout` seconds."""
    u = urllib.parse.urlsplit(url)
    why = f"cannot fetch audio {url}"
    if u.scheme != "http" or not u.hostname:
        raise CapError(f"{why}: only http:// is fetched (give --clip-file)")
    deadline = time.monotonic() + timeout
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    except ValueError as e:
        raise CapError(f"{why}: {e}") from None
    try:
        conn.request("GET", path, headers={"User-Agent": "cx-alert-from-cap"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise CapError(f"{why}: HTTP {resp.status} {resp.reason} (give --clip-file)")
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise CapError(f"{why}: {length} bytes, over the {limit}-byte clip limit")
        chunks: list[bytes] = []
        got = 0
        while chunk := resp.read(65536):
            got += len(chunk)
            if got > limit:
                raise CapError(f"{why}: over the {limit}-byte clip limit")
            if time.monotonic() > deadline:
                raise CapError(f"{why}: not complete within {timeout:g} s")
            chunks.append(chunk)
    except (OSError, http.client.HTTPException) as e:
        raise CapError(f"{why}: {e or type(e).__name__} (give --clip-file)") from None
    finally:
        conn.close()
    return b"".join(chunks)


def _wav_ok(data: bytes) -> bool:
    """RIFF WAVE, PCM 16-bit mono: what firmware/clip.py plays (the rate is per terminal)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            if size < 16 or pos + 24 > len(data):
                return False
            tag, channels, _rate, _, _, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            return tag == 1 and channels == 1 and bits == 16
        pos += 8 + size + (size & 1)
    return False


def clip_for(res: AudioResource, clip_file: str | None = None,
             timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """{url, sha256, bytes} of an audio resource, from the actual bytes (CAP's digest is SHA-1)."""
    name = f"audio resource {res.desc!r}"
    url = res.uri
    if url is None:
        raise CapError(f"{name} has no <uri> terminals could fetch")
    if (not url.startswith("http://") or len(url) > MAX_CLIP_URL
            or any(not 32 < ord(c) < 127 for c in url)):
        raise CapError(f"{name}: terminals fetch clips from plain http:// URLs of at most "
                       f"{MAX_CLIP_URL} printable ASCII chars, not {url!r}")
    if clip_file is not None:
        try:
            data = Path(clip_file).read_bytes()
        except OSError as e:
            raise ClipFileError(f"{clip_file}: {e.strerror or e}") from None
        source = clip_file
    else:
        data = fetch_clip(url, timeout)
        source = url
    if res.size is not None and len(data) != res.size:
        raise CapError(f"{name}: {source} is {len(data)} bytes, <size> says {res.size}")
    if res.digest is not None and hashlib.sha1(data).hexdigest() != res.digest:
        raise CapError(f"{name}: the SHA-1 of {source} does not match <digest>")
    if not data or len(data) > MAX_CLIP:
        raise CapError(f"{name}: {len(data)} bytes; terminals take 1..{MAX_CLIP}")
    if not _wav_ok(data):
        raise CapError(f"{name}: {source} is not a WAV of 16-bit mono PCM, which terminals play")
    return {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
