# Daily schedules (docs/broadcast.md): the thirteen acceptance rules of §3, first failure wins,
# the key chain of trust.py with use "daily", and the accepted schedules on flash.
#
# Local time is China Standard Time (UTC+8, no daylight saving): a local date is a day number
# (days since 1970-01-01) of epoch + 8 h, computed here and not by the port's time module (the
# ESP32 port counts from 2000, the unix port from 1970; epoch seconds are what the clock gives).
import binascii
import hashlib
import os

import b64
import ed25519
import region
import trust
from fsutil import read_bytes, remove, write_atomic
from limits import (
    DAILY_VOLUME,
    MAX_DURATION,
    MAX_EXCEPT,
    MAX_FUTURE,
    MAX_PROG_ID,
    MAX_PROGRAMMES,
    MAX_SCHED_VERSION,
    MAX_SCHEDULE,
    MAX_TITLE,
    MAX_VALID_DAYS,
    TZ_OFFSET,
    VOLUME_MAX,
)
from micropython import const
from trust import Reject

FOLDER = "daily"
MAX_HELD = const(8)  # schedules kept (five tiers and a few second signers); more: the oldest goes
_RATE_BYTES = const(32000)  # a clip's bytes per second (16 kHz 16-bit mono) for its length
_WAV_HEADER = const(44)


def days_from_civil(y, m, d):
    # day number of a proleptic Gregorian date (H. Hinnant's algorithm; small ints only)
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def date_str(z):
    y, m, d = civil_from_days(z)
    return "%04d-%02d-%02d" % (y, m, d)


def parse_date(s):
    """The day number of a local date "YYYY-MM-DD", or None."""
    if not isinstance(s, str) or len(s) != 10 or s[4] != "-" or s[7] != "-":
        return None
    y, m, d = s[:4], s[5:7], s[8:]
    if not (y.isdigit() and m.isdigit() and d.isdigit()):
        return None
    y, m, d = int(y), int(m), int(d)
    if not (2000 <= y <= 2099 and 1 <= m <= 12 and 1 <= d <= 31):
        return None
    z = days_from_civil(y, m, d)
    return z if civil_from_days(z) == (y, m, d) else None  # 2026-02-30 is no date


def parse_hm(s):
    """Minutes after local midnight of "HH:MM", or None."""
    if not isinstance(s, str) or len(s) != 5 or s[2] != ":" or not (s[:2] + s[3:]).isdigit():
        return None
    h, mi = int(s[:2]), int(s[3:])
    return h * 60 + mi if h < 24 and mi < 60 else None


def local_day(epoch):
    """(day number, seconds after local midnight) of an epoch second."""
    t = int(epoch) + TZ_OFFSET
    return t // 86400, t % 86400


def weekday(z):
    """ISO weekday of a day number: 1 Monday .. 7 Sunday (1970-01-01 was a Thursday)."""
    return (z + 3) % 7 + 1


def valid_pid(s):
    return trust.valid_id(s, MAX_PROG_ID)


def length_s(prog):
    """A programme's length in seconds: its duration, or its clip's (docs/broadcast.md §2)."""
    d = prog.get("duration")
    if d is not None:
        return d
    n = prog["audio"]["clip"]["bytes"] - _WAV_HEADER
    return max(1, (n + _RATE_BYTES - 1) // _RATE_BYTES)


class Schedule:
    """One accepted schedule: its envelope, payload, signer and tier (the area's prefix length:
    shorter is higher)."""

    def __init__(self, env, p, kid, scope, h):
        self.env = env
        self.p = p
        self.kid = kid
        self.scope = scope
        self.hash = h
        self.id = p["id"]
        self.area = p["area"]
        self.version = p["version"]
        self.prefix = region.prefix(p["area"])
        self.tier = len(self.prefix)
        self.first = parse_date(p["from"]) or 0  # valid: rule 7
        self.last = parse_date(p["until"]) or 0
        self.skip = {parse_date(d) for d in p.get("except", ())}
        # per programme, parsed once: (programme, start s after midnight, length s, its except)
        self.plan = [(g, (parse_hm(g["start"]) or 0) * 60, length_s(g),
                      {parse_date(d) for d in g.get("except", ())}) for g in p["programmes"]]


class Verdict:
    def __init__(self, status, reason=None, kid=None, sid=None, sched=None, area=None,
                 version=None):
        self.status = status
        self.reason = reason
        self.kid = kid
        self.id = sid
        self.sched = sched
        self.area = area
        self.version = version


class Schedules:
    """The verifier of docs/broadcast.md §3 and the schedules it accepted, on flash in FOLDER
    (one file per (area, kid), replaced by rename: a power cut leaves the old or the new one)."""

    def __init__(self, anchors, my_region, clock, log):
        self.chain = trust.Chain(anchors, "daily", clock)
        self.region = my_region
        self.clock = clock
        self.log = log
        self.held = {}  # (area, kid) -> Schedule
        try:
            os.mkdir(FOLDER)
        except OSError:
            pass

    def stored(self):
        """The names of the schedules kept on flash (load_one each: one signature apiece, so
        the caller can yield to alert intake between them)."""
        try:
            return [n for n in os.listdir(FOLDER) if n.endswith(".jws")]
        except OSError:
            return []

    def load_one(self, name):
        """A schedule kept on flash, verified again (a damaged or expired one is dropped)."""
        path = FOLDER + "/" + name
        env = read_bytes(path)
        v = self.check(env) if env is not None else None
        if v is None or v.status != "accepted":
            self.log("daily_dropped", file=name, reason=v.reason if v else "unreadable")
            remove(path)
        else:
            self.log("schedule_loaded", schedule=v.id, area=v.area, version=v.version)

    def all(self):
        return list(self.held.values())

    def check(self, env):
        """Verdict for one schedule envelope (bytes); an accepted one is held and stored. Never
        raises on bad input; MemoryError escapes (the caller retries, as for alerts)."""
        kid = sid = area = ver = None
        try:
            if len(env) > MAX_SCHEDULE:  # rule 1
                raise Reject("rejected", "too_large")
            h = binascii.hexlify(hashlib.sha256(env).digest()[:8]).decode()
            parts = trust.split(env)  # rule 2
            if parts is None:
                raise Reject("rejected", "malformed")
            signing_input, hdr_raw, payload_b64, sig = parts
            hdr = trust.json_obj(hdr_raw)
            if hdr is None:
                raise Reject("rejected", "malformed")
            if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-schedule":  # rule 3
                raise Reject("rejected", "bad_alg")
            kid = hdr.get("kid")
            if not trust.valid_kid(kid):
                kid = None
                raise Reject("rejected", "unknown_key")
            for s in self.held.values():
                if s.hash == h and s.kid == kid:
                    return Verdict("ignored", "duplicate", kid, s.id, None, s.area, s.version)
            pub, scope = self.chain.signer(kid, hdr.get("crt"))  # rules 4, 5
            if len(sig) != 64 or not ed25519.verify(pub, signing_input, sig):  # rule 6
                raise Reject("rejected", "bad_signature")
            p = trust.json_obj(b64.decode(payload_b64))  # only now (alerts.md §4)
            if p is None:
                raise Reject("rejected", "bad_field")
            if trust.valid_id(p.get("id")):
                sid = p["id"]
            _fields(p)  # rule 7
            area, ver = p["area"], p["version"]
            if p["tz"] != "+08:00":  # rule 8
                raise Reject("rejected", "bad_tz")
            if not region.within(area, scope):  # rule 9
                raise Reject("rejected", "out_of_scope")
            now = self.clock.now()
            if self.clock.synced and p["issued"] > now + MAX_FUTURE:  # rule 10
                raise Reject("rejected", "not_yet_valid")
            if local_day(now)[0] > (parse_date(p["until"]) or 0):  # rule 11 (valid: rule 7)
                raise Reject("rejected", "expired")
            if not region.covers(area, self.region):  # rule 12
                raise Reject("ignored", "not_for_me")
            old = self.held.get((area, kid))
            if old is not None and ver <= old.version:  # rule 13
                raise Reject("ignored", "stale")
            s = Schedule(env, p, kid, scope, h)
            v = Verdict("accepted", None, kid, sid, s, area, ver)
            self._keep(s)
            return v
        except Reject as r:
            return Verdict(r.status, r.reason, kid, sid, None, area, ver)
        except MemoryError:
            raise
        except Exception as e:  # a verifier bug must not take the terminal down; it is logged
            print("daily verifier error", repr(e))
            return Verdict("rejected", "malformed", kid, sid, None, area, ver)

    def _keep(self, s):
        key = (s.area, s.kid)
        if key not in self.held and len(self.held) >= MAX_HELD:
            drop, last = key, 0
            for k, o in self.held.items():  # the one ending first goes
                if drop == key or o.last < last:
                    drop, last = k, o.last
            remove(_path(drop[0], drop[1]))
            del self.held[drop]
        self.held[key] = s
        try:
            write_atomic(_path(s.area, s.kid), s.env)
        except OSError as e:  # the schedule plays from RAM until the next boot; logged
            self.log("daily_store_failed", schedule=s.id, error=repr(e))


def _path(area, kid):
    h = binascii.hexlify(hashlib.sha256((area + "\n" + kid).encode()).digest()[:6]).decode()
    return FOLDER + "/" + h + ".jws"


def _dates(v):
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_EXCEPT:
        raise Reject("rejected", "bad_field")
    out = []
    for d in v:
        z = parse_date(d)
        if z is None:
            raise Reject("rejected", "bad_field")
        out.append(z)
    return out


def _fields(p):
    """Rule 7 (docs/broadcast.md §2), tz aside (rule 8). Fills each programme's volume."""
    bad = Reject("rejected", "bad_field")
    if not trust.valid_id(p.get("id")) or not region.valid_code(p.get("area")):
        raise bad
    ver = p.get("version")
    if not trust.is_int(ver) or not 1 <= ver <= MAX_SCHED_VERSION:
        raise bad
    if not trust.epoch(p.get("issued")) or not isinstance(p.get("tz"), str):
        raise bad
    first, last = parse_date(p.get("from")), parse_date(p.get("until"))
    if first is None or last is None or not first <= last <= first + MAX_VALID_DAYS:
        raise bad
    _dates(p.get("except"))
    progs = p.get("programmes")
    if not isinstance(progs, list) or len(progs) > MAX_PROGRAMMES:
        raise bad
    ids = []
    for g in progs:
        _programme(g, bad)
        if g["id"] in ids:
            raise bad
        ids.append(g["id"])
    _no_overlap(progs, bad)


def _programme(g, bad):
    if not isinstance(g, dict) or not valid_pid(g.get("id")):
        raise bad
    t = g.get("title")
    if t is not None and (not isinstance(t, str) or len(t) > MAX_TITLE):
        raise bad
    days = g.get("days")
    if not isinstance(days, list) or not 1 <= len(days) <= 7:
        raise bad
    for d in days:
        if not trust.is_int(d) or not 1 <= d <= 7 or days.count(d) > 1:
            raise bad
    if parse_hm(g.get("start")) is None:
        raise bad
    a = g.get("audio")
    if not isinstance(a, dict) or len(a) != 1 or not trust.clip_ok(a.get("clip"), _WAV_HEADER):
        raise bad
    dur = g.get("duration")
    if dur is not None and (not trust.is_int(dur) or not 1 <= dur <= MAX_DURATION):
        raise bad
    vol = g.get("volume")
    if vol is None:
        g["volume"] = DAILY_VOLUME
    elif not trust.is_int(vol) or not 0 <= vol <= VOLUME_MAX:
        raise bad
    _dates(g.get("except"))


def _no_overlap(progs, bad):
    # over one week of weekdays, in minutes of the week; an interval may run past Sunday night
    # into Monday (checked by also placing each one a week later)
    spans = []
    for g in progs:
        start = (parse_hm(g["start"]) or 0) * 60
        n = length_s(g)
        for d in g["days"]:
            s = (d - 1) * 86400 + start
            spans.append((s, s + n))
            spans.append((s + 7 * 86400, s + 7 * 86400 + n))
    spans.sort()
    for i in range(1, len(spans)):
        if spans[i][0] < spans[i - 1][1]:
            raise bad
