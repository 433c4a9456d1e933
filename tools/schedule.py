"""Daily-broadcast schedules as docs/broadcast.md defines them (host side, CPython): build and
check a payload (§2, rule 7), refuse a signer terminals would not believe, sign the envelope
(typ eb-schedule) and verify one by rules 1-12 (`cx broadcast schedule`: cx/broadcast.py).

Every refusal is a `ScheduleError` (a ValueError) of one line that names the field, with the
reason code a terminal would give (`bad_field`, `bad_tz`, ...). `SignerError` and its
`OutOfScope` are the refusals of a key.

A programme's length, where `duration` is not given, is computed from the clip's `bytes` alone:
a 16 kHz 16-bit mono PCM WAV with a 44-byte header, so (bytes - 44) / 32000 seconds, rounded up.
A WAV with more header chunks than that reads a little long, never short: the overlap check errs
on the side of refusing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools import firmware, regions
from tools.envelope import (
    ALG,
    MAX_CLIP,
    MAX_EPOCH,
    MAX_URL,
    MIN_CLIP,
    MIN_EPOCH,
    TYP_CERT,
    KeyPair,
    check_kid,
    decode_jws,
    pub_bytes,
    region_prefix,
    scope_covers,
    sign_jws,
    signer_problem,
    verify_jws,
)

_L = firmware.load("limits")  # the terminal's limits: docs/decisions.md "Limits"
TYP_SCHEDULE = "eb-schedule"
USE = "daily"
MAX_ENVELOPE: int = _L.MAX_SCHEDULE  # broadcast.md §2: the whole envelope, in bytes (rule 1)
TZ = "+08:00"  # §2: China Standard Time, no daylight saving (rule 8)
TZINFO = dt.timezone(dt.timedelta(seconds=_L.TZ_OFFSET))
MAX_ID: int = _L.MAX_ID  # chars of the schedule id
MAX_PROGRAMME_ID: int = _L.MAX_PROG_ID
MAX_TITLE: int = _L.MAX_TITLE
MAX_PROGRAMMES: int = _L.MAX_PROGRAMMES
MAX_EXCEPT: int = _L.MAX_EXCEPT  # dates in each except list
MAX_SPAN_DAYS: int = _L.MAX_VALID_DAYS  # until <= from + 366 days
MAX_VERSION: int = _L.MAX_SCHED_VERSION
MAX_DURATION: int = _L.MAX_DURATION  # s
DEFAULT_VOLUME: int = _L.DAILY_VOLUME
MAX_FUTURE: int = _L.MAX_FUTURE  # s: rule 10, issued <= now + 300
MIN_YEAR, MAX_YEAR = 2000, 2099  # of every date: the terminal's calendar (firmware/daily.py)
WAV_HEADER = 44  # bytes: the length assumption above
WAV_RATE = 16000  # Hz: the terminal's I2S rate (firmware/clip.py)
WAV_BYTES_PER_S = WAV_RATE * 2  # 16-bit mono
WEEK = 7 * 86400
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_ID_RE = regions.ID_RE
_PROG_ID_RE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_PROGRAMME_ID}}}\Z")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_TIME_RE = re.compile(r"(\d{2}):(\d{2})\Z")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}\Z")

# broadcast.md §3: reason code -> (rule number, the check)
RULES: dict[str, tuple[int, str]] = {
    "too_large": (1, f"the envelope is at most {MAX_ENVELOPE} bytes"),
    "malformed": (2, "three base64url parts, and the header is a JSON object"),
    "bad_alg": (3, f"alg is EdDSA and typ is {TYP_SCHEDULE}"),
    "unknown_key": (4, "the key is known: an anchor with use daily, or the crt's anchor"),
    "bad_cert": (5, "the certificate is valid (use daily) and its kid equals the header kid"),
    "bad_signature": (6, "the signature verifies"),
    "bad_field": (7, "the fields are valid (broadcast.md §2), no two programmes overlap"),
    "bad_tz": (8, f"tz is {TZ}"),
    "out_of_scope": (9, "area lies within the signer's scope"),
    "not_yet_valid": (10, f"issued <= now + {MAX_FUTURE}"),
    "expired": (11, "the local date of now is at most until"),
    "not_for_me": (12, "area covers this terminal"),
    "stale": (13, "version is higher than the one held for (area, kid)"),
}


class ScheduleError(ValueError):
    """A schedule, programme or envelope a terminal would refuse: one line naming the field.
    `reason` is the terminal's code (broadcast.md §3), `field` the field's path."""

    def __init__(self, message: str, field: str = "", reason: str = "bad_field") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class SignerError(ScheduleError):
    """A key terminals would not believe for schedules: no private key, not for use daily, a
    bad, foreign or expired certificate."""


class OutOfScope(SignerError):
    """An area outside the key's scope."""


# --- fields ---------------------------------------------------------------------------------------


def _fail(where: str, message: str, reason: str = "bad_field") -> ScheduleError:
    return ScheduleError(f"{where}: {message}", where, reason)


def _int(where: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"must be an integer {lo}..{hi}, got {value!r}")
    return value


def check_date(value: object, where: str) -> dt.date:
    """A local date YYYY-MM-DD that exists, years 2000..2099 (firmware/daily.py parse_date)."""
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            d = dt.date.fromisoformat(value)
        except ValueError:
            d = None
        if d is not None and MIN_YEAR <= d.year <= MAX_YEAR:
            return d
    raise _fail(where, f"must be a date YYYY-MM-DD in {MIN_YEAR}..{MAX_YEAR}, got {value!r}")


def check_time(value: object, where: str) -> int:
    """A local time HH:MM, 00:00..23:59; returns minutes after midnight."""
    m = _TIME_RE.match(value) if isinstance(value, str) else None
    if m is None or int(m[1]) > 23 or int(m[2]) > 59:
        raise _fail(where, f"must be a time HH:MM from 00:00 to 23:59, got {value!r}")
    return int(m[1]) * 60 + int(m[2])


def check_dates(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_EXCEPT:
        raise _fail(where, f"must be a list of at most {MAX_EXCEPT} dates YYYY-MM-DD")
    for i, d in enumerate(value):
        check_date(d, f"{where}[{i}]")
    return value


def check_days(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or not 1 <= len(value) <= 7:
        raise _fail(where, f"must list 1..7 ISO weekdays (1 Monday .. 7 Sunday), got {value!r}")
    for d in value:
        _int(where, d, 1, 7)
    if len(set(value)) != len(value):
        raise _fail(where, f"weekdays must be distinct, got {value!r}")
    return value


def check_clip(value: object, where: str) -> dict[str, Any]:
    """{url, sha256, bytes} as alerts.md §3, held to what a terminal fetches and caches."""
    if not isinstance(value, dict):
        raise _fail(where, "must be an object with url, sha256 and bytes")
    url, sha, size = value.get("url"), value.get("sha256"), value.get("bytes")
    if not isinstance(url, str) or not url.startswith("http://") or len(url) > MAX_URL or any(
            not 32 < ord(c) < 127 for c in url):
        raise _fail(f"{where}.url", f"must be an http:// URL of at most {MAX_URL} printable "
                                    f"ASCII chars without spaces, got {url!r}")
    if not isinstance(sha, str) or not _HEX64_RE.match(sha):
        raise _fail(f"{where}.sha256", f"must be 64 hex digits, got {sha!r}")
    # more than a bare header (the terminal's bad_field), at most what it caches
    _int(f"{where}.bytes", size, MIN_CLIP + 1, MAX_CLIP)
    return value


def clip_seconds(nbytes: int) -> int:
    """The length of a clip of `nbytes` in whole seconds, rounded up, at least 1 (the module's
    assumption: 16 kHz 16-bit mono with a 44-byte header; firmware/daily.py length_s)."""
    return max(1, -(-(nbytes - WAV_HEADER) // WAV_BYTES_PER_S))


def programme_length(p: dict[str, Any]) -> int:
    """Seconds a (checked) programme occupies: its duration, else its clip's length."""
    if p.get("duration") is not None:
        return int(p["duration"])
    return clip_seconds(int(p["audio"]["clip"]["bytes"]))


def check_programme(p: object, where: str) -> dict[str, Any]:
    """One programme object (§2); raises ScheduleError naming the field."""
    if not isinstance(p, dict):
        raise _fail(where, "must be an object")
    pid = p.get("id")
    if not isinstance(pid, str) or not _PROG_ID_RE.match(pid):
        raise _fail(f"{where}.id", f"must be 1..{MAX_PROGRAMME_ID} chars of A-Z a-z 0-9 . _ : -, "
                                   f"got {pid!r}")
    where = f"{where} ({pid})"
    title = p.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE):
        raise _fail(f"{where}.title", f"must be a string of at most {MAX_TITLE} chars")
    check_days(p.get("days"), f"{where}.days")
    check_time(p.get("start"), f"{where}.start")
    audio = p.get("audio")
    if isinstance(audio, dict) and "tone" in audio:
        raise _fail(f"{where}.audio", "a programme plays a clip, never a tone (a daily "
                                      "programme must not sound like a warning)")
    if not isinstance(audio, dict) or list(audio) != ["clip"]:
        raise _fail(f"{where}.audio", 'must be {"clip": {url, sha256, bytes}} and nothing else')
    check_clip(audio["clip"], f"{where}.audio.clip")
    if p.get("duration") is not None:
        _int(f"{where}.duration", p["duration"], 1, MAX_DURATION)
    if p.get("volume") is not None:
        _int(f"{where}.volume", p["volume"], 0, 100)
    if p.get("except") is not None:
        check_dates(p["except"], f"{where}.except")
    return p


def overlap(programmes: Sequence[dict[str, Any]]) -> str | None:
    """Rule 7: the first two programmes that overlap on some weekday, as a sentence; None when
    none do. Over one week of weekdays (except lists aside); an interval that crosses midnight
    (or Sunday night) runs into the next day."""
    spans: list[tuple[int, int, dict[str, Any], int]] = []
    for p in programmes:
        start, length = check_time(p["start"], "start") * 60, programme_length(p)
        for d in p["days"]:
            s = (d - 1) * 86400 + start
            spans += [(s, s + length, p, d)]
            if s + length > WEEK:
                spans += [(s - WEEK, s + length - WEEK, p, d)]
    spans.sort(key=lambda x: x[0])
    for i, (s1, e1, p1, d1) in enumerate(spans):
        for s2, _e2, p2, _d2 in spans[i + 1:]:
            if s2 >= e1:
                break
            if p2 is not p1:
                return (f"programmes {p1['id']} and {p2['id']} overlap on {DAY_NAMES[d1 - 1]}: "
                        f"{p1['id']} plays {p1['start']} for {e1 - s1} s, {p2['id']} starts "
                        f"{p2['start']}")
    return None


def check_payload(payload: object, *, tz: bool = True) -> dict[str, Any]:
    """A schedule payload by §2 and rule 7 (fields, then overlap), then rule 8 (`tz`, unless
    tz=False). Unknown fields are ignored. Raises ScheduleError."""
    if not isinstance(payload, dict):
        raise _fail("payload", "must be a JSON object")
    sid = payload.get("id")
    if not isinstance(sid, str) or not _ID_RE.match(sid):
        raise _fail("id", f"must be 1..{MAX_ID} chars of A-Z a-z 0-9 . _ : -, got {sid!r}")
    area = payload.get("area")
    try:
        region_prefix(area)  # type: ignore[arg-type]
    except ValueError as e:
        raise _fail("area", f"{e} (one 12-digit region code)") from None
    _int("version", payload.get("version"), 1, MAX_VERSION)
    _int("issued", payload.get("issued"), MIN_EPOCH, MAX_EPOCH)
    if not isinstance(payload.get("tz"), str):
        raise _fail("tz", f'must be the string "{TZ}", got {payload.get("tz")!r}')
    first = check_date(payload.get("from"), "from")
    last = check_date(payload.get("until"), "until")
    if not first <= last <= first + dt.timedelta(days=MAX_SPAN_DAYS):
        raise _fail("until", f"must be from {first} to {MAX_SPAN_DAYS} days after it, got {last}")
    if payload.get("except") is not None:
        check_dates(payload["except"], "except")
    progs = payload.get("programmes")
    if not isinstance(progs, list) or len(progs) > MAX_PROGRAMMES:
        raise _fail("programmes", f"must be a list of 0..{MAX_PROGRAMMES} programmes")
    seen: set[str] = set()
    for i, p in enumerate(progs):
        check_programme(p, f"programmes[{i}]")
        if p["id"] in seen:
            raise _fail(f"programmes[{i}].id", f"{p['id']!r} is used twice: programme ids are "
                                               "unique within a schedule")
        seen.add(p["id"])
    clash = overlap(progs)
    if clash:
        raise _fail("programmes", clash)
    if tz and payload["tz"] != TZ:
        raise _fail("tz", f'must be "{TZ}" (China Standard Time), got {payload["tz"]!r}',
                    "bad_tz")
    return payload


# --- building -------------------------------------------------------------------------------------


def make_programme(*, id: str, days: Iterable[int], start: str, url: str, sha256: str,
                   nbytes: int, duration: int | None = None, volume: int | None = None,
                   title: str | None = None, except_: Sequence[str] | None = None
                   ) -> dict[str, Any]:
    """A checked programme object; options left None are omitted (terminals' defaults)."""
    p: dict[str, Any] = {"id": id}
    if title is not None:
        p["title"] = title
    p["days"] = sorted(days)
    p["start"] = start
    p["audio"] = {"clip": {"url": url, "sha256": str(sha256).lower(), "bytes": nbytes}}
    for k, v in (("duration", duration), ("volume", volume)):
        if v is not None:
            p[k] = v
    if except_:
        p["except"] = list(except_)
    return check_programme(p, "programme")


def make_payload(*, id: str, area: str, version: int, issued: int, from_: str, until: str,
                 programmes: Sequence[dict[str, Any]], except_: Sequence[str] | None = None
                 ) -> dict[str, Any]:
    """A checked schedule payload, programmes sorted by first start then id."""
    def first(p: dict[str, Any]) -> tuple[int, int, str]:
        return min(p["days"]), check_time(p["start"], "start"), p["id"]

    payload: dict[str, Any] = {"id": id, "area": area, "version": version, "issued": issued,
                               "tz": TZ, "from": from_, "until": until}
    if except_:
        payload["except"] = list(except_)
    payload["programmes"] = sorted(programmes, key=first)
    return check_payload(payload)


def parse_days(text: str) -> list[int]:
    """`1-5`, `1,3,5`, `1-3,6`: ISO weekdays for --days; ScheduleError otherwise."""
    out: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise _fail("days", f"must be weekdays 1..7 like 1-5 or 1,3,5, got {text!r}") from None
        if not 1 <= lo <= hi <= 7:
            raise _fail("days", f"must be weekdays 1..7 like 1-5 or 1,3,5, got {text!r}")
        out += [d for d in range(lo, hi + 1) if d not in out]
    return sorted(out)


def wav_problem(data: bytes) -> str | None:
    """Why a terminal would not play this file as a clip (RIFF WAVE, PCM 16-bit mono at 16 kHz:
    firmware/clip.py wav_header), or None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return "not a RIFF WAVE file"
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            if size < 16 or pos + 24 > len(data):
                return "its fmt chunk is cut short"
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            if tag != 1 or channels != 1 or bits != 16:
                return (f"not 16-bit mono PCM (format {tag}, {channels} channel(s), {bits} "
                        "bits)")
            if rate != WAV_RATE:
                return f"sampled at {rate} Hz, not the terminal's {WAV_RATE} Hz"
            return None
        pos += 8 + size + (size & 1)
    return "no fmt chunk"


# --- keys and signing -----------------------------------------------------------------------------


def topic_for(area: str) -> str:
    """broadcast.md §4: the retained topic of an area's schedule."""
    return "eb/daily/" + region_prefix(area)


def check_signer(key: KeyPair, area: str, now: int) -> None:
    """Refuse a key every terminal would: no private key, not for use daily (in the key file
    and in its certificate), a bad, foreign or expired certificate, or a scope without `area`."""
    why = signer_problem(key, USE, "daily schedules", now)
    if why is not None:
        raise SignerError(why)
    prefix = region_prefix(area)
    if not scope_covers(key.scope, prefix):
        raise OutOfScope(f"area {area} lies outside key {key.kid}'s scope {','.join(key.scope)}: "
                         "sign with a key certified for it")


def sign_schedule(key: KeyPair, payload: dict[str, Any]) -> str:
    """The envelope (§2): the payload checked, crt in the header when the key has one. Raises
    ScheduleError past MAX_ENVELOPE."""
    if key.priv is None:
        raise SignerError(f"key {key.kid} has no private key")
    check_payload(payload)
    header: dict[str, Any] = {"alg": ALG, "typ": TYP_SCHEDULE, "kid": key.kid}
    if key.crt:
        header["crt"] = key.crt
    env = sign_jws(key.priv, header, payload)
    if len(env) > MAX_ENVELOPE:
        raise ScheduleError(f"envelope is {len(env)} bytes, over the {MAX_ENVELOPE}-byte limit: "
                            "fewer programmes, or shorter titles and URLs", "", "too_large")
    return env


# --- verifying (broadcast.md §3) -----------------------------------------------------------------


@dataclass
class Verdict:
    """What a terminal would do with an envelope. `status`: accepted, rejected, ignored, or
    unverified (no trust anchors given: rules 4-6 not checked, fields checked as written)."""

    status: str
    reason: str | None = None
    detail: str = ""
    kid: str | None = None
    scope: list[str] | None = None
    payload: dict[str, Any] | None = None
    """The payload when its signature verified (rule 6 passed)."""
    claimed: dict[str, Any] | None = None
    """The payload as written, verified or not (None: not readable)."""
    skipped: list[int] = field(default_factory=list)

    @property
    def rule(self) -> int | None:
        return RULES[self.reason][0] if self.reason in RULES else None


def local_date(now: int) -> dt.date:
    return dt.datetime.fromtimestamp(now, TZINFO).date()


def _signer(hdr: dict[str, Any], kid: str, trust: list[dict[str, Any]], now: int
            ) -> tuple[bytes, list[str]]:
    """(pub, scope) of the signing key by rules 4 and 5; raises ScheduleError."""
    anchors = {a.get("kid"): a for a in trust if isinstance(a, dict) and USE in (a.get("use")
                                                                                  or ())}
    crt = hdr.get("crt")
    if crt is None:
        a = anchors.get(kid)
        if a is None:
            raise ScheduleError(f"kid {kid} is no trust anchor with use daily", "kid",
                                "unknown_key")
        return pub_bytes(a["pub"]), list(a["scope"])

    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"crt: {why}", "crt", "bad_cert")

    if not isinstance(crt, str):
        raise bad("not a string")
    try:
        chdr, body, _ = decode_jws(crt)
    except ValueError as e:
        raise bad(str(e)) from None
    anchor = anchors.get(chdr.get("kid"))
    if anchor is None:
        raise ScheduleError(f"crt: its anchor {chdr.get('kid')!r} is no trust anchor with use "
                            "daily", "crt", "unknown_key")
    if chdr.get("alg") != ALG or chdr.get("typ") != TYP_CERT:
        raise bad(f"alg must be {ALG} and typ {TYP_CERT}")
    if not verify_jws(anchor["pub"], crt):
        raise bad(f"its signature does not verify under anchor {chdr.get('kid')}")
    try:
        c = json.loads(body)
        pub = pub_bytes(c["pub"])
        scope, use, nbf, exp = list(c["scope"]), list(c["use"]), c["nbf"], c["exp"]
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"unreadable payload ({e})") from None
    if USE not in use:
        raise bad(f"use {','.join(map(str, use))} does not contain daily")
    outside = [s for s in scope if not (isinstance(s, str) and scope_covers(anchor["scope"], s))]
    if not scope or outside:
        raise bad(f"scope {','.join(map(str, outside))} lies outside the anchor's")
    if not (isinstance(nbf, int) and isinstance(exp, int) and nbf <= now < exp):
        raise bad(f"not valid now ({now}): nbf {nbf!r}, exp {exp!r}")
    if c.get("kid") != kid:
        raise bad(f"it is for kid {c.get('kid')!r}, the header says {kid}")
    return pub, scope


def verify_schedule(env: bytes | str, trust: list[dict[str, Any]] | None, now: int, *,
                    region: str | None = None, synced: bool = True) -> Verdict:
    """Rules 1-12 of broadcast.md §3, first failure wins. `trust` None: rules 4-6 are skipped
    (status `unverified`). `region` None: rule 12 skipped. Rule 13 needs what a terminal holds:
    never checked here. `synced` False: rule 10 skipped, as on a terminal whose clock is unset."""
    raw = env.encode() if isinstance(env, str) else bytes(env)
    raw = raw.strip()
    if len(raw) > MAX_ENVELOPE:
        return Verdict("rejected", "too_large", f"{len(raw)} bytes")
    try:
        text = raw.decode("ascii")
        hdr, body, _ = decode_jws(text)
    except (UnicodeDecodeError, ValueError) as e:
        return Verdict("rejected", "malformed", str(e))
    try:
        claimed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        claimed = None
    v = Verdict("accepted", claimed=claimed if isinstance(claimed, dict) else None)
    if hdr.get("alg") != ALG or hdr.get("typ") != TYP_SCHEDULE:
        v.status, v.reason = "rejected", "bad_alg"
        v.detail = f"alg {hdr.get('alg')!r}, typ {hdr.get('typ')!r}"
        return v
    try:
        v.kid = check_kid(hdr.get("kid"))
    except ValueError as e:
        v.status, v.reason, v.detail = "rejected", "unknown_key", str(e)
        return v
    if trust is None:
        v.skipped += [4, 5, 6]
    else:
        try:
            pub, v.scope = _signer(hdr, v.kid, trust, now)
        except ScheduleError as e:
            v.status, v.reason, v.detail = "rejected", e.reason, str(e)
            return v
        if not verify_jws(pub, text):
            v.status, v.reason = "rejected", "bad_signature"
            v.detail = f"the signature does not verify under the key of {v.kid}"
            return v
        v.payload = v.claimed
    return _check_verified(v, claimed, now, region, synced)


def _check_verified(v: Verdict, p: Any, now: int, region: str | None, synced: bool) -> Verdict:
    """Rules 7-12, on a payload whose signature verified (or was not checked)."""
    try:
        check_payload(p)
    except ScheduleError as e:
        v.status, v.reason, v.detail = "rejected", e.reason, str(e)
        return v
    if v.scope is not None and not scope_covers(v.scope, region_prefix(p["area"])):
        v.status, v.reason = "rejected", "out_of_scope"
        v.detail = f"area {p['area']} is not within scope {','.join(v.scope)}"
    elif not synced:
        v.skipped.append(10)
    elif p["issued"] > now + MAX_FUTURE:
        v.status, v.reason = "rejected", "not_yet_valid"
        v.detail = f"issued {p['issued']} is more than {MAX_FUTURE} s after now ({now})"
    if v.reason is None and local_date(now) > check_date(p["until"], "until"):
        v.status, v.reason = "rejected", "expired"
        v.detail = f"until {p['until']} is before today ({local_date(now)}, {TZ})"
    if v.reason is None:
        if region is None:
            v.skipped.append(12)
        elif not regions.covers(p["area"], region):
            v.status, v.reason = "ignored", "not_for_me"
            v.detail = f"area {p['area']} does not cover terminal {region}"
    if v.reason is None and v.payload is None:
        v.status = "unverified"
    return v
