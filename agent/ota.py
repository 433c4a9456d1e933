# OTA on the terminal (ota.md, docs/ota.md): the `ota` command (rules, then download, staging and
# the switch, resumed after a reboot), and at boot the trial's confirmation or the report of how
# the last update ended. Alerts first: every step waits while the arbiter has something to play.
import asyncio
import binascii
import hashlib
import json
import os
import time

import board
import deflate
import ed25519
import fsutil
import otacheck
import otahttp
import trust
import version
from clip import ClipError, parse_url
from micropython import const

POINTER = "ota.json"
JOB = "stage/update.json"  # the update under way: manifest and base, so a reboot resumes it
_BUF = const(1024)
_INFLATE = const(256)  # bytes inflated per step: 0.07 ms on the unix port, 0.28 ms for 1 KB
_TRIES = const(3)  # fetches of one file whose bytes do not match before `failed bad_hash`
_MAX_POINTER = const(2048)

# RFC 8032 §7.1 test 1 (empty message): the trial's self-test of its own verifier.
_ST_PUB = binascii.unhexlify("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_ST_SIG = binascii.unhexlify(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
    "b46bd25bf5f0595bbe24655141438e7a100b")


class Failed(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def read_pointer():
    p, _ = fsutil.read_json(POINTER, _MAX_POINTER)
    if not isinstance(p, dict) or not isinstance(p.get("run"), str):
        p = {"run": version.VERSION, "try": None, "boots": 0, "last": None}
    return p


def write_pointer(p):
    fsutil.write_atomic(POINTER, json.dumps(p).encode())


def _isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def _rm(path):
    # a file, or a folder and everything in it
    if _isdir(path):
        for name in os.listdir(path):
            _rm(path + "/" + name)
        os.rmdir(path)
    elif fsutil.size(path) >= 0:
        os.remove(path)


def _mkdirs(path):
    d = ""
    for seg in path.split("/"):
        d = seg if not d else d + "/" + seg
        if not _isdir(d):
            os.mkdir(d)


def _io_reason(e):
    return "no_space" if e.args and e.args[0] == 28 else "io"  # ENOSPC: the flash is full


def _hex(h):
    return binascii.hexlify(h.digest()).decode()


class Updater:
    """Handed the config, the log, the clock (for the chain), the link (streams for downloads),
    the MQTT client (reports, and `up` for the trial), the arbiter and the intake's `pending`
    (alerts first) and the agent's send_event (a refusal's report)."""

    def __init__(self, cfg, log, *, clock, link, mqtt, arbiter, send_event, pending=None):
        self.cfg, self.log, self.clock, self.link, self.mqtt = cfg, log, clock, link, mqtt
        self.arbiter, self.pending = arbiter, pending or (lambda: 0)  # pending: an alert coming
        self.send_event = send_event
        self.chain = trust.Chain(cfg["trust"], "ota", clock)
        self.topic = "eb/dev/%s/event" % cfg["id"]
        self.under_way = None  # {"version", "state"} for the heartbeat while an update runs
        self._task = None
        self._buf = bytearray(_BUF)
        self._mv = memoryview(self._buf)
        self._last_pct = -1
        self._http = otahttp.Fetcher(link, self._buf, self._quiet, log, cfg["ota_stall_s"])

    # --- the command ---------------------------------------------------------------------

    def start(self, args):
        """The `ota` command: None when the update has begun (or is this one, already under
        way), else the reason the acknowledgement carries."""
        m, base = args.get("manifest"), args.get("base")
        if not isinstance(m, str) or not isinstance(base, str):
            return "bad_args"
        try:
            parse_url(base.rstrip("/") + "/x")
        except ClipError:
            return "bad_args"  # the files come over http:// (docs/ota.md)
        raw = m.encode()
        if version.TRIAL:
            return "busy"  # this version has not proved itself yet
        if self._task is not None:
            job, _ = fsutil.read_json(JOB, otacheck.MAX_MANIFEST + 1024)
            if isinstance(job, dict) and job.get("manifest") == m:
                return None
            return "busy"
        held = self._held()
        reason, p = otacheck.check(raw, self.chain, version.VERSION, self.cfg["region"],
                                   self._free(), set(held))
        try:
            if reason is None:
                _mkdirs("stage")
                fsutil.write_atomic(JOB, json.dumps({"manifest": m, "base": base}).encode())
        except OSError as e:  # the flash takes not even the job: as rule 13, nothing kept
            self._clear_stage()
            reason = _io_reason(e)
        if reason is not None:
            ver = p["version"] if p else otacheck.claimed_version(raw)
            self.log("ota_refused", version=ver, reason=reason)
            self.send_event(self._report(ver, "refused", reason, 0, 0))
            return reason
        self._task = asyncio.create_task(self._update(p, raw, base.rstrip("/"), held))
        return None

    def resume(self):
        """At boot: an update a reboot or power cut interrupted carries on from where it was."""
        job, _ = fsutil.read_json(JOB, otacheck.MAX_MANIFEST + 1024)
        if not isinstance(job, dict):
            return
        m, base = job.get("manifest"), job.get("base")
        if not isinstance(m, str) or not isinstance(base, str):
            self._clear_stage()
            return
        reason, p = otacheck.check(m.encode(), self.chain, version.VERSION, self.cfg["region"],
                                   None, ())
        if p is None or reason is not None:
            self.log("ota_dropped", reason=reason)  # e.g. same_version: it was installed
            self._clear_stage()
            return
        self._task = asyncio.create_task(self._update(p, m.encode(), base.rstrip("/")))

    # --- download, staging, switch -------------------------------------------------------

    async def _update(self, p, raw, base, held=None):
        ver = p["version"]
        part = "v/%s.part" % ver
        held = self._held() if held is None else held  # the command's, else hashed again
        fetch = otacheck.to_fetch(p["files"], held)
        total = 0
        for f in fetch:
            total += f["bytes"]
        done = 0
        self.under_way = {"version": ver, "state": "downloading"}
        self._last_pct = -1
        try:
            staged = fsutil.read_bytes("v/%s/manifest.jws" % ver) == raw
            if staged:
                p = {"files": ()}  # staged before a reboot: only the switch is left
            else:
                _mkdirs(part)
                await self._say(ver, "downloading", None, 0, total)
            for f in p["files"]:
                await self._quiet()
                dest = part + "/" + f["path"]
                if "/" in f["path"]:
                    _mkdirs(dest.rsplit("/", 1)[0])
                if self._file_ok(dest, f):
                    if f["sha256"] not in held:
                        done += f["bytes"]
                    continue  # staged before a reboot
                if f["sha256"] in held:
                    if await self._copy(held[f["sha256"]], dest) != f["sha256"]:
                        raise Failed("io")
                    continue
                await self._fetch(base, f, dest)
                done += f["bytes"]
                await self._progress(ver, done, total)
            if not staged:
                fsutil.write_atomic(part + "/manifest.jws", raw)
                await self._quiet()
                os.rename(part, "v/" + ver)
        except Failed as e:
            await self._fail(ver, e.reason, done, total, part)
            return
        except OSError as e:
            self.log("ota_io", error=repr(e))
            await self._fail(ver, _io_reason(e), done, total, part)
            return
        self.under_way = {"version": ver, "state": "staged"}
        await self._say(ver, "staged", None, total, total)
        await self._quiet()
        p0 = read_pointer()
        write_pointer({"run": p0["run"], "try": ver, "boots": 0, "last": None})
        self._clear_stage()
        self.log("ota_switch", version=ver)
        await asyncio.sleep_ms(200)  # the log line out; the next boot runs the new version
        await self._quiet()
        board.reset()

    async def _fail(self, ver, reason, done, total, part):
        self.under_way = None
        self._task = None
        self.log("ota_failed", version=ver, reason=reason)
        try:
            _rm(part)
        except OSError:
            pass
        self._clear_stage()
        await self._say(ver, "failed", reason, done, total)

    async def _fetch(self, base, f, dest):
        sha = f["sha256"]
        z = "stage/%s.z" % sha
        for _ in range(_TRIES):
            try:
                await self._http.download(base + "/" + sha + ".z", z, otahttp.zlib_max(f["bytes"]))
            except otahttp.Unreachable:
                raise Failed("unreachable")
            except otahttp.FlashError as e:
                raise Failed(_io_reason(e))
            except otahttp.TooBig:
                _rm(z + ".part")  # more bytes than the file can be: wrong bytes, as a bad hash
            else:
                if await self._inflate(z, dest, f):
                    _rm(z)
                    return
            self.log("ota_bad_hash", file=f["path"])
            _rm(z)
        _rm(dest)
        raise Failed("bad_hash")

    async def _inflate(self, z, dest, f):
        # z (zlib) -> dest through the fixed buffer, hashing; True when bytes and sha256 match.
        h = hashlib.sha256()
        n = 0
        src = open(z, "rb")
        try:
            d = deflate.DeflateIO(src, deflate.ZLIB)
            step = self._mv[:_INFLATE]  # DeflateIO reads its input a byte per call
            out = open(dest, "wb")
            try:
                while True:
                    await self._quiet()
                    try:
                        k = d.readinto(step)
                    except (OSError, ValueError):
                        return False  # not a zlib stream: the bytes are wrong
                    if not k:
                        break
                    n += k
                    if n > f["bytes"]:
                        return False
                    chunk = self._mv[:k]
                    h.update(chunk)
                    out.write(chunk)
            finally:
                out.close()
        finally:
            src.close()
        return n == f["bytes"] and _hex(h) == f["sha256"]

    def _file_ok(self, path, f):
        return fsutil.size(path) == f["bytes"] and self._sha(path) == f["sha256"]

    def _sha(self, path):
        h = hashlib.sha256()
        src = open(path, "rb")
        try:
            while True:
                k = src.readinto(self._mv)
                if not k:
                    break
                h.update(self._mv[:k])
        finally:
            src.close()
        return _hex(h)

    async def _copy(self, src_path, dest):
        # In steps of the buffer (alerts first), hashed as written: the sha256 of the copy.
        h = hashlib.sha256()
        src = open(src_path, "rb")
        try:
            out = open(dest, "wb")
            try:
                while True:
                    await self._quiet()
                    k = src.readinto(self._mv)
                    if not k:
                        break
                    h.update(self._mv[:k])
                    out.write(self._mv[:k])
            finally:
                out.close()
        finally:
            src.close()
        return _hex(h)

    def _held(self):
        """sha256 -> path of every file of the running version (hashed in C: hardware SHA)."""
        d = "v/" + version.VERSION
        out = {}
        if not _isdir(d):
            return out
        stack = [d]
        while stack:
            folder = stack.pop()
            for name in os.listdir(folder):
                path = folder + "/" + name
                if _isdir(path):
                    stack.append(path)
                elif name != "manifest.jws":
                    out[self._sha(path)] = path
        return out

    def _free(self):
        try:
            s = os.statvfs("/" if _isdir("/v") else ".")
            return s[1] * s[4]  # fragment size x blocks available
        except OSError:
            return None

    def _clear_stage(self):
        try:
            _rm("stage")
        except OSError:
            pass
        self._task = None

    async def _quiet(self):
        # Alerts first: no step while an alert may be coming (pending) or the arbiter plays or
        # has a queue. The turn is given before the check: a packet begun in it is seen.
        a, pending, t0 = self.arbiter, self.pending, None
        while True:
            await asyncio.sleep_ms(0)
            if not (pending() or a.current is not None or a.waiting):
                break
            t0 = time.ticks_ms() if t0 is None else t0
            await asyncio.sleep_ms(200)
        if t0 is not None:
            self.log("ota_paused", ms=time.ticks_diff(time.ticks_ms(), t0))

    # --- reports -------------------------------------------------------------------------

    def _report(self, ver, state, reason, done, total):
        return {"ota": ver, "state": state, "reason": reason, "done": done, "total": total,
                "t": self.clock.now()}

    async def _say(self, ver, state, reason, done, total):
        self.log("ota_" + state, version=ver, reason=reason, done=done, total=total)
        return await self.mqtt.publish(self.topic, json.dumps(
            self._report(ver, state, reason, done, total)).encode(), 1)

    async def _progress(self, ver, done, total):
        pct = done * 10 // total if total else 10
        if pct > self._last_pct and pct < 10:
            self._last_pct = pct
            await self._say(ver, "downloading", None, done, total)

    # --- boot: trial, confirmation, outcome ----------------------------------------------

    async def boot_task(self):
        """Run once at boot: report how the last update ended, confirm a trial or roll it back,
        tidy the flash, resume an update a reboot interrupted."""
        p = read_pointer()
        if version.TRIAL:
            await self._trial(p)
            return
        self._tidy(p)
        last = p.get("last")
        if isinstance(last, dict) and isinstance(last.get("version"), str):
            await self.mqtt.up.wait()
            ok = await self._say(last["version"], str(last.get("state")), last.get("reason"),
                                 0, 0)
            if ok:
                p["last"] = None
                write_pointer(p)
        self.resume()

    async def _trial(self, p):
        ver = version.VERSION
        self.under_way = {"version": ver, "state": "trial"}
        trial_ms = self.cfg["ota_trial_s"] * 1000
        reason = "no_fleet"
        try:
            await asyncio.wait_for_ms(self._prove(ver), trial_ms)
            reason = None
        except asyncio.TimeoutError:
            pass
        except Failed as e:
            reason = e.reason
        if reason is not None:
            self.log("ota_rollback", version=ver, reason=reason)
            write_pointer({"run": p["run"], "try": None, "boots": 0,
                           "last": {"version": ver, "state": "rolled_back", "reason": reason}})
            await asyncio.sleep_ms(200)
            board.reset()
            return
        old = p["run"]
        write_pointer({"run": ver, "try": None, "boots": 0,
                       "last": {"version": ver, "state": "confirmed", "reason": None}})
        self.under_way = None
        version.TRIAL = False  # confirmed: it takes updates now
        if old != ver:
            try:
                _rm("v/" + old)  # kept until now: the new version proved itself
            except OSError:
                pass  # the next boot's tidy-up tries again
        if await self._say(ver, "confirmed", None, 0, 0):
            write_pointer({"run": ver, "try": None, "boots": 0, "last": None})

    async def _prove(self, ver):
        # Connected, subscribed (a QoS 1 message acknowledged after the SUBSCRIBEs on the same
        # connection), and the verifier works: ota.md §5.
        await self.mqtt.up.wait()
        while not await self._say(ver, "trial", None, 0, 0):
            await self.mqtt.up.wait()
        good = ed25519.verify(_ST_PUB, b"", _ST_SIG)
        bad = bytearray(_ST_SIG)
        bad[0] ^= 1
        if not good or ed25519.verify(_ST_PUB, b"", bytes(bad)):
            raise Failed("selftest")

    def _tidy(self, p):
        # Versions that are neither running nor on trial, and staging nobody resumes.
        keep = (p.get("run"), p.get("try"))
        try:
            for name in os.listdir("v"):
                if name not in keep:
                    _rm("v/" + name)
        except OSError:
            pass
        if fsutil.size(JOB) < 0:
            self._clear_stage()
