"""What terminals send, checked: MQTT topic + payload → a typed record or a `Bad` with its kind.

Pure functions, no I/O: the service parses, the store applies. The wire format is
docs/fleet-protocol.md (heartbeat, state, fault events, acks) and alerts.md §6 (receipts).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.model import BadKind
from fleet.ota import EVENT_REASONS, VERSION_RE

MAX_PAYLOAD = 8192
"""Bytes: a heartbeat is ~400; anything near this is not a terminal talking."""
MAX_STR = 128
"""Characters in any string field we keep (versions, reasons, alert ids are all short)."""
MAX_ID = 64
"""Device ids and alert ids: at most 64 characters (alerts.md §3 for alert ids)."""
_ALERT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""An alert id (alerts.md §3): 1..64 of A-Z a-z 0-9 . _ : - (with `fullmatch`)."""
_AREA = re.compile(r"\d{12}")
DEFAULT_HB_S = 60
"""Heartbeat interval assumed when a heartbeat does not say (fleet-protocol.md)."""

# Receipts (alerts.md §6): the reason codes a terminal can send with each status. The rule
# codes come from alerts.md §4; the others from what the firmware sends (docs/decisions.md,
# firmware/arbiter.py, player.py, clip.py). A receipt outside these is counted as bad
# (`wrong_types`), never stored: a firmware that adds a code needs this table updated first.
REJECTED_REASONS = frozenset({
    "too_large", "malformed", "bad_alg", "unknown_key", "bad_cert", "bad_signature",
    "bad_field", "out_of_scope", "not_yet_valid", "expired"})
"""`rejected`: rules 1 to 10 of alerts.md §4 (never null)."""
IGNORED_REASONS = frozenset({"duplicate", "not_for_me"})
"""`ignored`: rules 11 and 12 of alerts.md §4 (never null)."""
KEYLESS_REASONS = frozenset({"too_large", "malformed", "bad_alg", "unknown_key"})
"""Rejections that may name no key (`kid` null): rules 1 to 4 fail before the key is known;
from rule 5 on the key was known (rules apply in order), so the receipt names it."""
CLIP_REASONS = frozenset({
    "clip_fetch_failed", "clip_hash_mismatch", "clip_too_large", "clip_bad_format",
    "clip_bad_url"})
"""Why the siren replaced the alert's clip (alerts.md §5; firmware/clip.py `ClipError`)."""
RECEIPT_REASONS: dict[str, frozenset[str | None]] = {
    "accepted": frozenset({None}),
    "rejected": REJECTED_REASONS,
    "ignored": IGNORED_REASONS,
    # null, or why the siren plays instead: a clip that failed, a tone the terminal lacks
    "playing": frozenset({None, "tone_unknown"}) | CLIP_REASONS,
    # null, or playback stopped by a fault mid-way (firmware/player.py)
    "done": frozenset({None, "play_failed"}),
    "preempted": frozenset({None}),
    # null: by a cancel alert; queue_full: dropped from a full queue; expired while waiting
    "cancelled": frozenset({None, "queue_full", "expired"}),
}
"""Status → the reasons it may carry (None: `reason` null)."""
RECEIPT_STATUSES = tuple(RECEIPT_REASONS)
RECEIPT_T_MAX = 2**32 - 1
"""Receipt `t`: epoch seconds up to 2106-02-07, the bound the terminal puts on every epoch field.
No lower bound beyond 0: a terminal whose clock was never set sends what its board counts
(alerts.md §4, clock), and that receipt is real."""
FAULTS = ("line_open", "line_short", "mains_lost", "battery_low", "clock_unsynced", "storage",
          "recovery")
TOPIC_KINDS = ("hb", "state", "event", "ack")


@dataclass(frozen=True)
class Heartbeat:
    device: str
    t: int
    up: int
    hb_s: int
    body: dict[str, Any]
    received_at: float
    raw: str = field(default="", compare=False, repr=False)
    """The payload as received (checked JSON text): stored as is, never encoded again."""


@dataclass(frozen=True)
class State:
    device: str
    online: bool
    received_at: float


@dataclass(frozen=True)
class Fault:
    device: str
    fault: str
    active: bool
    t: int
    received_at: float
    detail: str = ""  # storage: "<file>: <reason> (<n> dropped)"


@dataclass(frozen=True)
class ReceiptMsg:
    device: str
    alert: str | None
    kid: str | None
    status: str
    reason: str | None
    t: int
    received_at: float


@dataclass(frozen=True)
class Ack:
    device: str
    cid: str | None
    ok: bool
    received_at: float
    error: str | None = None


@dataclass(frozen=True)
class OtaEvent:
    """An OTA report (ota.md §4): one transition of the update to `version`."""

    device: str
    version: str
    state: str
    reason: str | None
    done: int | None
    total: int | None
    t: int
    received_at: float


@dataclass(frozen=True)
class DailyReceipt:
    """A schedule's, a programme's or a live announcement's receipt (broadcast.md §4, §7)."""

    device: str
    kind: str
    """"schedule", "programme" or "live"."""
    name: str | None
    """The schedule id, `<schedule id>/<programme id>`, or the stream id; None only when a
    schedule or header was rejected before its id could be read."""
    kid: str | None
    status: str
    reason: str | None
    t: int
    received_at: float
    date: str | None = None
    """Programme: the local date `YYYY-MM-DD` it was due on."""
    start: str | None = None
    """Programme: its local start `HH:MM`."""
    area: str | None = None
    """Schedule: its 12-digit area, when the receipt names it."""
    version: int | None = None
    """Schedule: its version, when the receipt names it."""
    chunks: int | None = None
    """Live `done`/`preempted`: chunks played."""
    silent: int | None = None
    """Live `done`/`preempted`: chunks lost, late or refused (silence)."""
    refused: int | None = None
    """Live `done`/`preempted`: chunks received whose hash no batch signed."""


@dataclass(frozen=True)
class Bad:
    kind: BadKind
    device: str
    """The topic's device id ('' when the topic has none)."""
    topic: str
    """hb, state, event, ack, or '' when the topic itself is malformed."""
    received_at: float


@dataclass(frozen=True)
class Ignored:
    """Valid but carries nothing to store (an empty retained state clearing the topic)."""

    device: str


Record = Heartbeat | State | Fault | ReceiptMsg | DailyReceipt | Ack | OtaEvent | Bad | Ignored


class _WrongType(ValueError):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any, limit: int = MAX_STR, *, none_ok: bool = False) -> str | None:
    if v is None and none_ok:
        return None
    if not isinstance(v, str) or len(v) > limit or "\x00" in v:
        raise _WrongType()
    return v


def _int(v: Any, lo: int = -(2**62), hi: int = 2**62) -> int:
    if not _is_int(v) or not lo <= v <= hi:
        raise _WrongType()
    return int(v)


def _opt_int(v: Any, lo: int, hi: int) -> int | None:
    return None if v is None else _int(v, lo, hi)


_HB_STRS = ("v", "reset", "link", "clock", "line", "supply")
_HB_UINTS = ("up", "heap", "amp")
_MISSING = object()
_INT_HI = 2**62


def _check_heartbeat(obj: dict[str, Any]) -> None:
    """Known fields, when present, have their documented types (fleet-protocol.md).

    The service's hot path (every heartbeat): plain `type(...) is` tests, no helper calls
    (`type(v) is int` also refuses bools)."""
    get = obj.get
    for key in _HB_STRS:
        v = get(key, _MISSING)
        if v is not _MISSING and (type(v) is not str or len(v) > MAX_STR or "\x00" in v):
            raise _WrongType()
    v = get("last_alert")
    if v is not None and (type(v) is not str or len(v) > MAX_ID or "\x00" in v):
        raise _WrongType()
    for key in _HB_UINTS:
        v = get(key, 0)
        if type(v) is not int or not 0 <= v <= _INT_HI:
            raise _WrongType()
    v = get("supply_mv")  # null until the first reading
    if v is not None and (type(v) is not int or not 0 <= v <= 2**31):
        raise _WrongType()
    v = get("rssi")
    if v is not None and (type(v) is not int or not -200 <= v <= 200):
        raise _WrongType()
    v = get("line_ma")  # null until the line was measured while playing
    if v is not None and type(v) is not int and type(v) is not float:
        raise _WrongType()
    g4 = get("g4", _MISSING)
    if g4 is not _MISSING:
        if type(g4) is not list or len(g4) != 2:
            raise _WrongType()
        for n in g4:
            if type(n) is not int or not 0 <= n <= _INT_HI:
                raise _WrongType()
    counts = get("counts", _MISSING)
    if counts is not _MISSING:
        if type(counts) is not dict or len(counts) > 64:
            raise _WrongType()
        for k, n in counts.items():
            if len(k) > MAX_STR or "\x00" in k or type(n) is not int or not 0 <= n <= _INT_HI:
                raise _WrongType()
    o = get("ota")  # while an update is under way (ota.md §4)
    if o is not None and (type(o) is not dict or type(o.get("version")) is not str
                          or not VERSION_RE.match(o["version"])
                          or o.get("state") not in EVENT_REASONS):
        raise _WrongType()


def parse(topic: str, payload: bytes | bytearray, received_at: float) -> Record:
    """Check one message from `eb/dev/<id>/<kind>`; never raises."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "eb" or parts[1] != "dev" or parts[3] not in TOPIC_KINDS:
        return Bad(BadKind.WRONG_TYPES, "", "", received_at)
    device, kind = parts[2], parts[3]
    if not device or len(device) > MAX_ID:
        return Bad(BadKind.WRONG_TYPES, device[:MAX_ID], kind, received_at)
    if len(payload) > MAX_PAYLOAD:
        return Bad(BadKind.TOO_LARGE, device, kind, received_at)
    if kind == "state":
        return _parse_state(device, payload, received_at)
    try:
        text = payload.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return Bad(BadKind.NOT_JSON, device, kind, received_at)
    if not isinstance(obj, dict):
        return Bad(BadKind.WRONG_TYPES, device, kind, received_at)
    try:
        if kind == "hb":
            return _parse_heartbeat(device, obj, received_at, text)
        if kind == "event":
            return _parse_event(device, obj, received_at)
        return _parse_ack(device, obj, received_at)
    except _WrongType:
        return Bad(BadKind.WRONG_TYPES, device, kind, received_at)


def _parse_state(device: str, payload: bytes | bytearray, received_at: float) -> Record:
    # The protocol shows the bare words; a JSON string or {"state": …} is accepted too.
    if not payload:
        return Ignored(device)
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Bad(BadKind.NOT_JSON, device, "state", received_at)
    value: Any = text
    if text[:1] in ('"', "{"):
        try:
            value = json.loads(text)
        except ValueError:
            return Bad(BadKind.NOT_JSON, device, "state", received_at)
        if isinstance(value, dict):
            value = value.get("state")
    if value in ("online", "offline"):
        return State(device, value == "online", received_at)
    return Bad(BadKind.WRONG_TYPES, device, "state", received_at)


def _parse_heartbeat(device: str, obj: dict[str, Any], received_at: float,
                     raw: str = "") -> Record:
    hb_id = _str(obj.get("id"), MAX_ID)
    t = _int(obj.get("t"), 0)
    hb_s = _int(obj.get("hb_s", DEFAULT_HB_S), 1, 86400)
    _check_heartbeat(obj)
    if hb_id != device:
        return Bad(BadKind.SPOOFED_ID, device, "hb", received_at)
    up = obj.get("up", -1)
    return Heartbeat(device, t, up, hb_s, obj, received_at, raw)


def _parse_event(device: str, obj: dict[str, Any], received_at: float) -> Record:
    if "fault" in obj:
        fault = _str(obj["fault"])
        if fault not in FAULTS or not isinstance(obj.get("active"), bool):
            raise _WrongType()
        t = _int(obj.get("t"), 0)
        if fault == "storage":
            # told once, never cleared (fleet-protocol.md): active is always true
            if obj["active"] is not True:
                raise _WrongType()
            name, why = _str(obj.get("file"), MAX_STR), _str(obj.get("reason"), MAX_STR)
            n = _int(obj.get("value"), 0, _INT_HI)
            return Fault(device, fault, True, t, received_at, f"{name}: {why} ({n} dropped)")
        return Fault(device, fault, bool(obj["active"]), t, received_at)
    if "ota" in obj:
        return _parse_ota(device, obj, received_at)
    if "schedule" in obj or "programme" in obj or "live" in obj:
        return _parse_daily(device, obj, received_at)
    return _parse_receipt(device, obj, received_at)


# Daily-broadcast receipts (broadcast.md §3, §4, §7): status → the reasons it may carry.
_HEADER_REJECTS = frozenset({
    "too_large", "malformed", "bad_alg", "unknown_key", "bad_cert", "bad_signature", "bad_field",
    "out_of_scope", "not_yet_valid", "expired"})
"""`rejected` reasons a schedule (§3, with `bad_tz`) or a live header (§7) may carry."""
DAILY_REASONS: dict[str, dict[str, frozenset[str | None]]] = {
    "schedule": {
        "accepted": frozenset({None}),
        "rejected": _HEADER_REJECTS | {"bad_tz"},
        "ignored": frozenset({"not_for_me", "stale", "duplicate"}),
    },
    "programme": {
        "playing": frozenset({None}),
        "done": frozenset({None, "play_failed"}),
        "preempted": frozenset({"alert", "higher_tier", "live"}),
        "skipped": frozenset({"no_clip", "late", "higher_tier", "busy", "clock_unsynced"}),
    },
    "live": {
        "accepted": frozenset({None}),
        "rejected": _HEADER_REJECTS,
        "ignored": frozenset({"not_for_me", "busy"}),
        "playing": frozenset({None}),
        "done": frozenset({"ended", "stalled"}),
        "preempted": frozenset({"alert", "higher_tier", "newer"}),
        "cancelled": frozenset({"expired", "queue_full", "higher_tier"}),
    },
}
"""Kind → status → the reasons it may carry (None: `reason` null). Anything else: wrong_types."""
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")
_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_PROG_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}/[A-Za-z0-9._:-]{1,32}")
"""`<schedule id>/<programme id>` (broadcast.md §2: 1..64 and 1..32 of A-Z a-z 0-9 . _ : -)."""


def _parse_daily(device: str, obj: dict[str, Any], received_at: float) -> DailyReceipt:
    """A schedule's, a programme's or a live announcement's receipt (docs/broadcast.md §4, §7),
    or `_WrongType`: a status and reason of DAILY_REASONS, bounded ids, a date and start for a
    programme, the chunk counts for a live `done` or `preempted`. Unknown fields are ignored."""
    kind = "schedule" if "schedule" in obj else ("programme" if "programme" in obj else "live")
    status, reason = obj.get("status"), obj.get("reason")
    table = DAILY_REASONS[kind]
    if not isinstance(status, str) or status not in table:
        raise _WrongType()
    if not (reason is None or isinstance(reason, str)) or reason not in table[status]:
        raise _WrongType()
    name = obj.get(kind)
    if kind == "programme":
        if not isinstance(name, str) or not _PROG_NAME.fullmatch(name):
            raise _WrongType()
    elif name is None:
        if status != "rejected":  # only a refusal may not know the id
            raise _WrongType()
    elif not isinstance(name, str) or not _ALERT_ID.fullmatch(name):
        raise _WrongType()
    kid = obj.get("kid")
    if kid is None:
        if status != "rejected" or reason not in KEYLESS_REASONS:
            raise _WrongType()
    elif not isinstance(kid, str) or not 1 <= len(kid) <= MAX_ID or "\x00" in kid:
        raise _WrongType()
    t = _int(obj.get("t"), 0, RECEIPT_T_MAX)
    rec = DailyReceipt(device, kind, name, kid, status, reason, t, received_at)
    if kind == "programme":
        date, start = obj.get("date"), obj.get("start")
        if (not isinstance(date, str) or not _DATE.fullmatch(date)
                or not isinstance(start, str) or not _HHMM.fullmatch(start)):
            raise _WrongType()
        return replace(rec, date=date, start=start)
    if kind == "schedule":
        area, version = obj.get("area"), obj.get("version")
        if area is not None and (not isinstance(area, str) or not _AREA.fullmatch(area)):
            raise _WrongType()
        return replace(rec, area=area, version=_opt_int(version, 0, 2**31 - 1))
    if status in ("done", "preempted"):
        return replace(rec, chunks=_int(obj.get("chunks"), 0, _INT_HI),
                       silent=_int(obj.get("silent"), 0, _INT_HI),
                       refused=_int(obj.get("refused"), 0, _INT_HI))
    return rec


def _parse_ota(device: str, obj: dict[str, Any], received_at: float) -> OtaEvent:
    """An OTA report (ota.md §4): a version, a state and a reason it may carry."""
    version, state, reason = obj.get("ota"), obj.get("state"), obj.get("reason")
    if (not isinstance(version, str) or not VERSION_RE.match(version)
            or not isinstance(state, str) or state not in EVENT_REASONS
            or not (reason is None or isinstance(reason, str))
            or reason not in EVENT_REASONS[state]):
        raise _WrongType()
    done, total = _opt_int(obj.get("done"), 0, _INT_HI), _opt_int(obj.get("total"), 0, _INT_HI)
    return OtaEvent(device, version, state, reason, done, total,
                    _int(obj.get("t", 0), 0, RECEIPT_T_MAX), received_at)


def _parse_receipt(device: str, obj: dict[str, Any], received_at: float) -> ReceiptMsg:
    """A receipt a terminal can send (alerts.md §6), or `_WrongType`. An absent `alert`, `kid`
    or `reason` reads as null; unknown fields are ignored."""
    status = obj.get("status")
    if not isinstance(status, str) or status not in RECEIPT_REASONS:
        raise _WrongType()
    reason = obj.get("reason")
    if not (reason is None or isinstance(reason, str)) or reason not in RECEIPT_REASONS[status]:
        raise _WrongType()
    alert = obj.get("alert")
    if alert is None:
        if status != "rejected":  # only a rejection may lack the id (§6)
            raise _WrongType()
    elif not isinstance(alert, str) or not _ALERT_ID.fullmatch(alert):
        raise _WrongType()
    kid = obj.get("kid")
    if kid is None:
        # Every other status follows an acceptance, which knew its key; an id is read only
        # from a payload whose signature verified, so it comes with its key too (§4).
        if status != "rejected" or reason not in KEYLESS_REASONS or alert is not None:
            raise _WrongType()
    elif not isinstance(kid, str) or not 1 <= len(kid) <= MAX_ID or "\x00" in kid:
        raise _WrongType()  # alerts.md §1: kid 1..64 chars
    t = _int(obj.get("t"), 0, RECEIPT_T_MAX)
    return ReceiptMsg(device, alert, kid, status, reason, t, received_at)


def _parse_ack(device: str, obj: dict[str, Any], received_at: float) -> Record:
    cid = _str(obj.get("cid"), MAX_ID, none_ok=True)
    if not isinstance(obj.get("ok"), bool):
        raise _WrongType()
    error = obj.get("error")
    error = error[:MAX_STR] if isinstance(error, str) else None
    return Ack(device, cid, bool(obj["ok"]), received_at, error)
