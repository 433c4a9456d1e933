# Alert audio clips: fetched over HTTP, sha256-checked, cached on flash, streamed to the output
# (alerts.md §5). Clips must be RIFF WAV, PCM 16-bit mono at the I2S rate (16 kHz).
import asyncio
import binascii
import hashlib
import os
import struct
import time

import adpcm
from fsutil import note_damage, remove
from limits import MAX_CLIP, MAX_URL, MIN_CLIP
from micropython import const

MAX_CACHE = const(2097152)  # default flash budget of the cache folder; oldest clips go first
BUF = const(1024)  # the one buffer bytes stream through: HTTP header, body, file, samples
CONNECT_MS = const(5000)  # TCP connect over the current link
READ_MS = const(5000)  # silence from the server that aborts a fetch
FETCH_MS = const(60000)  # whole download; the amplifier is already warming up meanwhile
MAX_WAV_CHUNKS = const(16)  # RIFF chunks skipped looking for "data"
_RATE = const(16000)  # board.RATE
_HTTP_PORT = const(80)
AUDIT_DELAY_MS = const(5000)  # after boot, before the cache is re-hashed in the background


class ClipError(Exception):
    """A clip that cannot be played; reason is one of clip_fetch_failed, clip_hash_mismatch,
    clip_too_large, clip_bad_format, clip_bad_url (the receipt's reason, alerts.md §5)."""

    def __init__(self, reason, detail=None):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def parse_url(url):
    """(host, port, path) of an http:// URL, else ClipError clip_bad_url."""
    if not isinstance(url, str) or len(url) > MAX_URL or not url.startswith("http://"):
        raise ClipError("clip_bad_url", "scheme")
    rest = url[7:]
    i = rest.find("/")
    if i < 0:
        hostport, path = rest, "/"
    else:
        hostport, path = rest[:i], rest[i:]
    host, port = hostport, _HTTP_PORT
    i = hostport.rfind(":")
    if i >= 0:
        host = hostport[:i]
        try:
            port = int(hostport[i + 1:])
        except ValueError:
            raise ClipError("clip_bad_url", "port")
    if not host or not 0 < port < 65536:
        raise ClipError("clip_bad_url", "host")
    for c in url:
        # no controls or spaces: they would split the request line
        if ord(c) <= 32 or ord(c) >= 127:
            raise ClipError("clip_bad_url", "char")
    return host, port, path


def _check_hash(sha):
    # the hash names a file on flash, so only lowercase hex gets through
    if not isinstance(sha, str) or len(sha) != 64:
        raise ClipError("clip_hash_mismatch", "sha256 not 64 hex")
    sha = sha.lower()
    for c in sha:
        if c not in "0123456789abcdef":
            raise ClipError("clip_hash_mismatch", "sha256 not 64 hex")
    return sha


def wav_header(f, buf, rate):
    """Read a WAV header from f (positioned at 0); returns the data size in bytes, with f at the
    first sample. ClipError clip_bad_format unless RIFF PCM 16-bit mono at `rate`."""
    mv = memoryview(buf)
    if f.readinto(mv[:12]) != 12 or buf[0:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise ClipError("clip_bad_format", "not RIFF WAVE")
    fmt = False
    for _ in range(MAX_WAV_CHUNKS):
        if f.readinto(mv[:8]) != 8:
            break
        size = struct.unpack_from("<I", buf, 4)[0]
        if buf[0:4] == b"fmt ":
            if size < 16 or size > 64 or f.readinto(mv[:size]) != size:
                raise ClipError("clip_bad_format", "fmt")
            tag, ch, r, _, _, bits = struct.unpack_from("<HHIIHH", buf, 0)
            if tag != 1 or ch != 1 or bits != 16:
                raise ClipError("clip_bad_format", "not PCM 16-bit mono")
            if r != rate:
                raise ClipError("clip_bad_format", "rate %d" % r)
            if size & 1:
                f.seek(1, 1)
            fmt = True
        elif buf[0:4] == b"data":
            if not fmt:
                break
            return size & ~1
        else:
            f.seek(size + (size & 1), 1)
    raise ClipError("clip_bad_format", "no fmt/data")


class ClipCache:
    """Clips on flash as folder/<sha256>.wav. A file gets that name only after its bytes hashed
    to it (written to a temp file, then renamed), so a cached clip is trusted by name and size
    without re-hashing: re-reading up to MAX_CLIP of flash would delay the alert by seconds."""

    def __init__(self, folder="clips", max_bytes=MAX_CACHE, open_tcp=None, log=None,
                 rate=_RATE):
        self.folder = folder
        self.max_bytes = max_bytes
        self.rate = rate
        self._open_tcp = open_tcp
        self._log = log or _no_log
        self._buf = bytearray(BUF)
        self._mv = memoryview(self._buf)
        # play() has its own: a fetch for the next alert may start while a preempted play unwinds.
        # The player synthesises its tones in it too (a clip and a tone never play at once).
        self.play_buf = bytearray(BUF)
        self._busy = {}  # path -> plays in progress, never evicted
        self.pinned = ()  # sha256 of the clips of held schedules (programme.py), evicted last
        self._seq = 0
        try:
            os.mkdir(folder)
        except OSError:
            pass
        # a power cut mid-download leaves a temp file behind
        for name, _ in self._files(".tmp"):
            remove(folder + "/" + name)
        # The cache's index is its file names: only <sha256>.wav of a playable size belongs here.
        for name, st in self._files(""):
            why = None
            if not (name.endswith(".wav") and _is_hash(name[:-4])):
                why = "not a clip name"
            elif not MIN_CLIP <= st[6] <= MAX_CLIP:
                why = "size %d" % st[6]
            if why is not None:
                self.discard(folder + "/" + name, why)

    def path(self, sha256_hex):
        return self.folder + "/" + _check_hash(sha256_hex) + ".wav"

    async def fetch(self, url, sha256_hex, nbytes):
        """The cached path of the clip, downloading it first if needed. ClipError otherwise."""
        host, port, rpath = parse_url(url)
        path = self.path(sha256_hex)
        sha = path[len(self.folder) + 1:-4]
        if not isinstance(nbytes, int) or nbytes < MIN_CLIP:
            raise ClipError("clip_bad_format", "bytes")
        if nbytes > MAX_CLIP or nbytes > self.max_bytes:
            raise ClipError("clip_too_large", nbytes)
        try:
            size = os.stat(path)[6]
        except OSError:
            size = -1
        if size == nbytes:
            if self._header_ok(path):
                return path
            self.discard(path, "bad header")  # damaged on flash since: fetched again below
        elif size >= 0:
            remove(path)
        if self._open_tcp is None:
            raise ClipError("clip_fetch_failed", "no link")
        self._evict(nbytes, sha)
        self._seq += 1
        tmp = "%s/%s.%d.tmp" % (self.folder, sha[:16], self._seq)
        ok = False
        try:
            end = time.ticks_add(time.ticks_ms(), FETCH_MS)  # both tries together
            try:
                got = await self._download(host, port, rpath, tmp, nbytes, end)
            except ClipError as e:  # the link, not the server's answer: once more (decisions.md)
                why = str(e.detail)
                if not why.startswith(("connect", "io", "short", "closed", "timeout")) or \
                        time.ticks_diff(end, time.ticks_ms()) < CONNECT_MS:
                    raise
                self._log("clip_retry", sha256=sha, detail=e.detail)
                got = await self._download(host, port, rpath, tmp, nbytes, end)
            if got != sha:
                raise ClipError("clip_hash_mismatch", got)
            f = open(tmp, "rb")
            try:
                wav_header(f, self._buf, self.rate)
            finally:
                f.close()
            os.rename(tmp, path)
            ok = True
        except OSError as e:  # flash full or failing: the siren still sounds
            raise ClipError("clip_fetch_failed", "flash %r" % (e,))
        finally:
            if not ok:
                remove(tmp)
        self._log("clip_cached", sha256=sha, bytes=nbytes)
        return path

    async def _download(self, host, port, rpath, tmp, nbytes, deadline):
        # streams the body into tmp while hashing; returns the body's sha256 hex
        open_tcp = self._open_tcp
        if open_tcp is None:
            raise ClipError("clip_fetch_failed", "no link")
        try:
            r, w = await asyncio.wait_for_ms(open_tcp(host, port), CONNECT_MS)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # timeout, DNS, refused, unreachable: all the same to the receipt
            raise ClipError("clip_fetch_failed", "connect %r" % (e,))
        try:
            if port != _HTTP_PORT:
                host = "%s:%d" % (host, port)
            req = "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" % (rpath, host)
            w.write(req.encode())
            await asyncio.wait_for_ms(w.drain(), READ_MS)
            n, start, length = await self._head(r, deadline)
            if length is not None:
                if length > nbytes:
                    raise ClipError("clip_too_large", length)
                if length < nbytes:
                    raise ClipError("clip_fetch_failed", "length %d" % length)
            h = hashlib.sha256()
            got = 0
            f = open(tmp, "wb")
            try:
                k = n - start
                if k:
                    # body bytes that arrived with the header
                    buf = self._buf
                    for i in range(k):
                        buf[i] = buf[start + i]
                while True:
                    if k:
                        got += k
                        if got > nbytes:
                            raise ClipError("clip_too_large", got)
                        chunk = self._mv[:k]
                        h.update(chunk)
                        f.write(chunk)
                    k = await self._read(r, self._mv, deadline)
                    if not k:
                        break
            finally:
                f.close()
            if got != nbytes:
                raise ClipError("clip_fetch_failed", "short %d" % got)
            return binascii.hexlify(h.digest()).decode()
        except (OSError, asyncio.TimeoutError) as e:
            raise ClipError("clip_fetch_failed", "io %r" % (e,))
        finally:
            try:
                await w.wait_closed()  # MicroPython closes the socket here, not in close()
            except Exception:
                pass

    async def _head(self, r, deadline):
        # status line and headers, all within BUF: (bytes in buf, body start, Content-Length)
        buf = self._buf
        n = 0
        end = -1
        while end < 0:
            if n == BUF:
                raise ClipError("clip_fetch_failed", "header too long")
            k = await self._read(r, self._mv[n:], deadline)
            if not k:
                raise ClipError("clip_fetch_failed", "closed in header")
            n += k
            end = buf.find(b"\r\n\r\n", 0, n)
        lines = bytes(buf[:end]).split(b"\r\n")
        status = lines[0].split()
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"200":
            raise ClipError("clip_fetch_failed", "status %s" % lines[0][:40])
        length = None
        for line in lines[1:]:
            i = line.find(b":")
            name = line[:i].strip().lower()
            if name == b"content-length":
                try:
                    length = int(line[i + 1:].strip())
                except ValueError:
                    raise ClipError("clip_fetch_failed", "content-length")
            elif name == b"transfer-encoding":
                raise ClipError("clip_fetch_failed", "transfer-encoding")
        return n, end + 4, length

    async def _read(self, r, mv, deadline):
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0:
            raise ClipError("clip_fetch_failed", "too slow")
        try:
            return await asyncio.wait_for_ms(r.readinto(mv), min(left, READ_MS))
        except asyncio.TimeoutError:
            raise ClipError("clip_fetch_failed", "timeout")

    async def play(self, path, out, volume, live=None):
        """Stream the cached WAV at path to out.write(), scaled by volume 0..100 (or by live[0],
        read at every chunk, when a list is given). The header is checked before any sample is
        written (ClipError clip_bad_format)."""
        try:
            f = open(path, "rb")
        except OSError:
            raise ClipError("clip_fetch_failed", "not cached")
        self._busy[path] = self._busy.get(path, 0) + 1
        try:
            buf = self.play_buf
            mv = memoryview(buf)
            left = wav_header(f, buf, out.rate)
            g = _gain(volume)
            while left > 0:
                k = f.readinto(mv[:BUF if left > BUF else left])
                if not k:
                    break
                k &= ~1
                left -= k
                if live is not None:
                    g = _gain(live[0])
                if g != 0x8000:
                    adpcm.scale(buf, k, g)  # native code: a VM loop took ~7 ms a second
                await out.write(mv[:k])
        finally:
            f.close()
            c = self._busy[path] - 1
            if c:
                self._busy[path] = c
            else:
                del self._busy[path]

    def _header_ok(self, path):
        # 44 bytes read: cheap enough before every play (the full hash is the audit's)
        try:
            f = open(path, "rb")
        except OSError:
            return False
        try:
            wav_header(f, self._buf, self.rate)  # fetch's buffer: one fetch at a time
            return True
        except Exception:
            return False
        finally:
            f.close()

    def discard(self, path, why):
        """Remove a damaged cached file (logged and counted as storage damage)."""
        if path in self._busy:
            return
        remove(path)
        note_damage(self._log, path, why)

    async def audit(self, delay_ms=AUDIT_DELAY_MS):
        """Re-hash every cached clip once, in the background, yielding after each block so an
        alert is never kept waiting; a clip whose bytes no longer match its name is discarded
        and fetched again when next needed. Returns the number discarded."""
        await asyncio.sleep_ms(delay_ms)
        buf = bytearray(BUF)
        mv = memoryview(buf)
        bad = 0
        for name, _ in self._files(".wav"):
            path = self.folder + "/" + name
            try:
                f = open(path, "rb")
            except OSError:
                continue  # evicted meanwhile
            h = hashlib.sha256()
            try:
                while True:
                    k = f.readinto(mv)
                    if not k:
                        break
                    h.update(mv[:k])
                    await asyncio.sleep_ms(0)
            except OSError:
                pass
            finally:
                f.close()
            if binascii.hexlify(h.digest()).decode() != name[:-4]:
                bad += 1
                self.discard(path, "hash mismatch")
        return bad

    def _files(self, suffix):
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        out = []
        for name in names:
            if name.endswith(suffix):
                try:
                    st = os.stat(self.folder + "/" + name)
                except OSError:
                    continue
                out.append((name, st))
        return out

    def _evict(self, incoming, sha):
        # Oldest written first until the new clip fits in max_bytes, clips of held schedules
        # (pinned) last; those go only for a clip that is not one: a warning's voice beats a
        # programme's, which the planner fetches again. A programme's clip never evicts another.
        files = self._files(".wav")
        total = incoming
        for _, st in files:
            total += st[6]
        keep = self.pinned
        mine = sha in keep
        files.sort(key=lambda e: (e[0][:-4] in keep, e[1][8], e[0]))
        for name, st in files:
            if total <= self.max_bytes:
                return
            p = self.folder + "/" + name
            if p not in self._busy and not (mine and name[:-4] in keep):
                remove(p)
                self._log("clip_evicted", file=name)
                total -= st[6]
        if mine and total > self.max_bytes:
            raise ClipError("clip_too_large", "cache full of programmes")


def _is_hash(s):
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def _gain(volume):
    # Q15 gain, 0x8000 (volume 100) passes the clip's samples unchanged
    if volume <= 0:
        return 0
    if volume >= 100:
        return 0x8000
    return volume * 0x8000 // 100


def _no_log(ev, **fields):
    pass
