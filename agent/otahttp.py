# The HTTP side of an OTA download (docs/ota.md): GET <base>/<sha256>.z over the link in use,
# resumed with Range after a cut, into stage/<sha256>.z.part, renamed once the body is complete.
import asyncio
import os
import time

import fsutil
from clip import parse_url
from micropython import const

_READ_MS = const(10000)  # one read or connect waits at most this long (or the stall time)
_RETRY_MS = const(2000)


class Unreachable(Exception):
    """No byte gained for the stall time (config ota_stall_s), or the server has no such file."""


class FlashError(Exception):
    """Writing what came failed (args[0] the errno: ENOSPC when the flash is full): not the
    network's fault, so never retried as if it were."""


class TooBig(Exception):
    """The body is longer than any zlib stream of the manifest's size can be: wrong bytes."""


def zlib_max(n):
    """The most bytes a zlib stream of n bytes can take: stored blocks (5 bytes per 65535), the
    2-byte header and the 4-byte Adler-32; a bigger body is not that file (docs/ota.md)."""
    return n + 5 * (n // 65535 + 1) + 6


def _flash(op, *args):
    try:
        return op(*args)
    except OSError as e:
        raise FlashError(e.args[0] if e.args else 0)


class Fetcher:
    """Streams over link.open_stream through the updater's fixed buffer `mv`; `quiet()` is
    awaited before every read (alerts first)."""

    def __init__(self, link, buf, quiet, log, stall_s):
        self.link = link
        self.stall_ms = stall_s * 1000
        self._read_ms = min(_READ_MS, self.stall_ms)
        self._buf = buf
        self._mv = memoryview(buf)
        self._quiet = quiet
        self.log = log

    async def download(self, url, z, limit):
        # Into z.part, resuming with Range; z once the body is complete. limit: the most bytes
        # the body may have (zlib_max), beyond is TooBig. Unreachable once no byte was gained for
        # the stall time, however the attempts end (a silent server, a dead line, a refusal).
        if fsutil.size(z) >= 0:
            return
        host, port, path = parse_url(url)
        since = time.ticks_ms()
        best = fsutil.size(z + ".part")
        while True:
            have = fsutil.size(z + ".part")
            try:
                if await self._get(host, port, path, z + ".part", max(have, 0), limit):
                    os.rename(z + ".part", z)
                    return
            except (OSError, asyncio.TimeoutError) as e:
                self.log("ota_fetch", error=repr(e))
            got = fsutil.size(z + ".part")
            if got > best:
                best, since = got, time.ticks_ms()
            elif got < best:
                best = got  # restarted from 0 (a lying Range): progress is counted from there
            if time.ticks_diff(time.ticks_ms(), since) + _RETRY_MS > self.stall_ms:
                raise Unreachable()
            await asyncio.sleep_ms(_RETRY_MS)

    async def _get(self, host, port, path, tmp, start, limit):
        rd = self._read_ms
        r, w = await asyncio.wait_for_ms(self.link.open_stream(host, port), rd)
        try:
            hp = host if port == 80 else "%s:%d" % (host, port)
            req = "GET %s HTTP/1.0\r\nHost: %s\r\n" % (path, hp)
            if start:
                req += "Range: bytes=%d-\r\n" % start
            w.write((req + "\r\n").encode())
            await asyncio.wait_for_ms(w.drain(), rd)
            n, body, status, length, first = await self._head(r)
            if status == 416 and start:
                return True  # we hold every byte already; the hash will tell
            if status == 200:
                start = 0  # no Range support: the whole body again
            elif status == 206 and first != start:
                os.remove(tmp)  # a server that lies about Range: start over from byte 0
                raise OSError("range %r for %d" % (first, start))
            elif status == 404:
                raise Unreachable()
            elif status != 206:
                raise OSError("status %d" % status)
            if length is not None and start + length > limit:
                raise TooBig()  # announced longer than the file can be: not worth a byte
            f = _flash(open, tmp, "ab" if start else "wb")
            try:
                got = n - body
                if got:
                    _flash(f.write, self._mv[body:n])
                while length is None or got < length:
                    if start + got > limit:
                        raise TooBig()
                    await self._quiet()
                    k = await asyncio.wait_for_ms(r.readinto(self._mv), rd)
                    if not k:
                        break
                    _flash(f.write, self._mv[:k])
                    got += k
            finally:
                _flash(f.close)  # LittleFS writes its cache out here: it can be ENOSPC too
            if start + got > limit:
                raise TooBig()
            return length is None or got >= length
        finally:
            try:
                await w.wait_closed()
            except Exception:
                pass

    async def _head(self, r):
        # (bytes in buf, body start, status, Content-Length, Content-Range start)
        buf, n, end = self._buf, 0, -1
        size = len(buf)
        while end < 0:
            if n == size:
                raise OSError("header too long")
            k = await asyncio.wait_for_ms(r.readinto(self._mv[n:]), self._read_ms)
            if not k:
                raise OSError("closed in header")
            n += k
            end = buf.find(b"\r\n\r\n", 0, n)
        lines = bytes(buf[:end]).split(b"\r\n")
        st = lines[0].split()
        if len(st) < 2 or not st[0].startswith(b"HTTP/1.") or not st[1].isdigit():
            raise OSError("bad status line")
        length = first = None
        for line in lines[1:]:
            i = line.find(b":")
            name, val = line[:i].strip().lower(), line[i + 1:].strip()
            if name == b"content-length" and val.isdigit():
                length = int(val)
            elif name == b"content-range" and val.startswith(b"bytes "):
                a = val[6:].split(b"-")[0]
                first = int(a) if a.isdigit() else None
            elif name == b"transfer-encoding":
                raise OSError("transfer-encoding")
        return n, end + 4, int(st[1]), length, first

