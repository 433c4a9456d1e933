"""`cx alert from-cap`: map an OASIS CAP 1.2 alert to alert payloads (alerts.md §3), sign, send.

The mapping is documented in docs/keys-and-alerts.md, "From CAP 1.2". A CAP that
cannot be mapped faithfully raises CapError with the reason; nothing is guessed
or silently rewritten, and no area is ever dropped: <info> blocks that are not
translations of each other become alerts of their own (`<identifier>`,
`<identifier>:2`, ...). The audio of a CAP alert is fetched and checked by tools/capaudio.py;
`cx alert from-cap` (cx/alert.py) signs, checks the signer and publishes as `cx alert send`
does.
"""

from __future__ import annotations

import codecs
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from tools.envelope import (
    MAX_EVENT,
    MAX_EXPIRY,
    MAX_ID,
    MAX_REFS,
    MAX_REGIONS,
    MAX_TEXT,
    check_id,
    make_alert_payload,
    region_prefix,
)

__all__ = [
    "CAP_NS",
    "REGION_VALUE_NAMES",
    "AudioResource",
    "CapAlert",
    "CapError",
    "check_times",
    "map_cap",
    "parse_cap",
    "part_id",
    "payload_for",
    "resource_key",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MAX_CAP_FILE = 1 << 20  # bytes: a CAP alert is a few KB; anything this big is not one
FUTURE_SKEW = 300  # s: alerts.md §4 rule 9, terminals reject issued > now + 300
CANCEL_EXPIRY = 24 * 3600  # s: a cancel without any <expires> lives one day
# One CAP becomes at most MAX_PARTS alerts, with ids part_id(<identifier>, 1..MAX_PARTS); a
# Cancel names every one of them, since terminals match refs exactly (firmware/arbiter.py).
MAX_PARTS = 16
PART_SEP = ":"  # CAP identifiers number with "." and "-" far more often: X:2 is seldom another's id

LEVELS = {"Extreme": 1, "Severe": 2, "Moderate": 3, "Minor": 4}  # CAP <severity> → level
KINDS = {"Actual": "alert", "Test": "test", "Exercise": "test"}  # CAP <status> → kind
TONES = {"alert": "siren", "test": "chime"}  # audio when the CAP has no audio resource
# <geocode><valueName> that carry administrative division codes, compared without case
# or blanks: GB/T 2260 (6 digits) and 统计用区划代码 (12 digits); either length is accepted.
REGION_VALUE_NAMES = ("GB/T 2260", "GB2260", "ADCODE", "统计用区划代码", "区划代码",
                      "行政区划代码")
_VALUE_NAMES = {re.sub(r"\s+", "", v).casefold() for v in REGION_VALUE_NAMES}

# CAP 1.2 dateTime: seconds, and a numeric offset (CAP forbids "Z"; accepted, it is exact).
_DATETIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_XML_DECL_RE = re.compile(r"""\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
T = TypeVar("T")


class CapError(ValueError):
    """A CAP document that cannot be mapped faithfully; the message says why."""


@dataclass
class AudioResource:
    """The first <resource> whose mimeType is audio/* (CAP 1.2 §3.2.3)."""

    desc: str
    mime: str
    uri: str | None
    size: int | None
    digest: str | None  # SHA-1 hex, as CAP defines <digest>


@dataclass
class CapAlert:
    """What one payload is made from; `notes` say which choices were made.

    `infos` are the 1-based positions of the <info> blocks it stands for, the one it was
    made from first (the others are its translations; for a cancel, every block); `origin`
    says in a few words which part of the CAP it is, when the CAP makes several alerts."""

    identifier: str
    kind: str
    issued: int
    expires: int
    regions: list[str]
    level: int | None = None
    event: str | None = None
    text: str | None = None
    refs: list[str] = field(default_factory=list)
    audio: AudioResource | None = None
    language: str | None = None
    notes: list[str] = field(default_factory=list)
    infos: list[int] = field(default_factory=list)
    origin: str = ""


# --- XML ------------------------------------------------------------------------------


def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def parse_cap(data: bytes) -> ET.Element:
    """The <alert> element of a CAP 1.2 document, parsed without any DTD or entity.

    Declarations are refused before expat sees them (entity bombs, external
    entities), so only UTF-8 is read: a UTF-16 file could hide them from that check.
    """
    if len(data) > MAX_CAP_FILE:
        raise CapError(f"not a CAP alert: {len(data)} bytes, over {MAX_CAP_FILE}")
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CapError("not XML in UTF-8 (CAP files are read as UTF-8 only)") from None
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise CapError("refusing XML with a DOCTYPE or ENTITY declaration (CAP needs neither)")
    m = _XML_DECL_RE.match(text)
    if m and m.group(1).strip().lower() not in ("utf-8", "utf8"):
        raise CapError(f"XML declares encoding {m.group(1)!r}; only UTF-8 is read")
    try:
        root = ET.fromstring(body)  # declarations were refused above
    except ET.ParseError as e:
        raise CapError(f"not XML: {e}") from None
    if root.tag != _q("alert"):
        raise CapError(f"not a CAP 1.2 alert: the root element is {root.tag}, expected "
                       f"<alert> in namespace {CAP_NS}")
    return root


def _text(el: ET.Element, tag: str, where: str, required: bool = True) -> str | None:
    child = el.find(_q(tag))
    value = (child.text or "").strip() if child is not None else ""
    if not value:
        if required:
            raise CapError(f"missing required <{tag}> in <{where}>")
        return None
    return value


def _time(text: str, what: str) -> int:
    if not _DATETIME_RE.fullmatch(text):
        raise CapError(f"<{what}> {text!r} is not a date-time with a UTC offset "
                       "(e.g. 2026-11-29T17:00:00+08:00)")
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError as e:
        raise CapError(f"<{what}> {text!r} is not a date-time: {e}") from None


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


# --- mapping --------------------------------------------------------------------------


def part_id(identifier: str, n: int) -> str:
    """The id of the n-th alert (1-based) made from the CAP `identifier`: the first keeps it."""
    return identifier if n == 1 else f"{identifier}{PART_SEP}{n}"


@dataclass
class _Info:
    """One <info> block, its required elements checked and its areas mapped."""

    n: int  # 1-based position in the document
    el: ET.Element
    language: str
    regions: list[str]
    key: tuple[object, ...]  # equal for blocks that may be translations of each other


def map_cap(data: bytes, scope: list[str] | None = None) -> list[CapAlert]:
    """Map a CAP 1.2 document to its alerts, in document order (most often one).

    <info> blocks are translations of each other when they differ in language only (same
    category, urgency, severity, certainty, event codes, times and region codes): one alert,
    from the Chinese block. Any other block is a warning of its own and becomes an alert of
    its own, as does every further 64 regions of one block; alert n has the id
    part_id(<identifier>, n). `scope` (the signing key's) addresses a cancel without areas.
    """
    root = parse_cap(data)
    identifier = str(_text(root, "identifier", "alert"))
    _text(root, "sender", "alert")
    sent = str(_text(root, "sent", "alert"))
    status = str(_text(root, "status", "alert"))
    msg_type = str(_text(root, "msgType", "alert"))
    scope_el = str(_text(root, "scope", "alert"))
    try:
        check_id(identifier)
    except ValueError:
        raise CapError(f"CAP identifier {identifier!r} cannot be an alert id: it must be "
                       f"1..{MAX_ID} chars of A-Z a-z 0-9 . _ : -") from None
    if status not in KINDS:
        raise CapError(f"status {status} is not broadcast (only Actual, Test and Exercise)")
    if msg_type in ("Ack", "Error"):
        raise CapError(f"msgType {msg_type} is a reply between systems, not an alert")
    if msg_type not in ("Alert", "Update", "Cancel"):
        raise CapError(f"unknown msgType {msg_type!r}")
    if scope_el != "Public":
        raise CapError(f"scope {scope_el} is not for public loudspeakers (only Public)")
    issued = _time(sent, "sent")
    kind = "cancel" if msg_type == "Cancel" else KINDS[status]

    elements = root.findall(_q("info"))
    infos = [_info(el, n, len(elements)) for n, el in enumerate(elements, 1)]
    if not infos and kind != "cancel":
        raise CapError(f"missing required <info> in a {msg_type}: it carries severity, "
                       "expires and the areas")
    if kind == "cancel":
        caps = _cancels(identifier, issued, infos, _refs(root), scope)
    else:
        caps = [cap for group in _translations(infos)
                for cap in _alerts(identifier, kind, issued, group, len(infos))]
    if len(caps) > MAX_PARTS:
        raise CapError(f"maps to {len(caps)} alerts ({caps[0].origin}, {caps[1].origin}, … "
                       f"{caps[-1].origin}); at most {MAX_PARTS} are made from one CAP: split "
                       "it upstream")
    for n, cap in enumerate(caps, 1):
        cap.identifier = part_id(identifier, n)
        if len(cap.identifier) > MAX_ID:
            raise CapError(f"CAP identifier {identifier!r} is too long for the {len(caps)} "
                           f"alerts it maps to: their ids {identifier}{PART_SEP}2 … must be at "
                           f"most {MAX_ID} chars (alerts.md §3)")
    return caps


def _info(el: ET.Element, n: int, count: int) -> _Info:
    try:
        for tag in ("category", "event", "urgency", "severity", "certainty"):
            _text(el, tag, "info")
        language = _text(el, "language", "info", required=False) or "en-US"
        regions = _regions(el)
    except CapError as e:
        raise CapError(f"<info> {n} of {count}: {e}" if count > 1 else str(e)) from None
    categories = tuple(sorted((c.text or "").strip() for c in el.findall(_q("category"))))
    codes = tuple(sorted((_text(c, "valueName", "eventCode", False) or "",
                          _text(c, "value", "eventCode", False) or "")
                         for c in el.findall(_q("eventCode"))))
    times = tuple(_instant(_text(el, tag, "info", required=False))
                  for tag in ("effective", "onset", "expires"))
    key = (categories, _text(el, "urgency", "info"), _text(el, "severity", "info"),
           _text(el, "certainty", "info"), codes, times, frozenset(regions))
    return _Info(n=n, el=el, language=language, regions=regions, key=key)


def _instant(text: str | None) -> int | str | None:
    """A CAP time as epoch seconds when it is one (so +08:00 and Z compare), else as written."""
    try:
        return None if text is None else _time(text, "time")
    except CapError:
        return text


def _translations(infos: list[_Info]) -> list[list[_Info]]:
    """Blocks grouped into warnings, in document order: a block joins the first group of
    its key that has no block in its language yet (two blocks in one language are never
    translations of each other), else starts a warning of its own."""
    groups: list[list[_Info]] = []
    for info in infos:
        lang = info.language.casefold()
        for group in groups:
            if group[0].key == info.key and all(i.language.casefold() != lang for i in group):
                group.append(info)
                break
        else:
            groups.append([info])
    return groups


def _chosen(infos: list[_Info]) -> _Info:
    """The block an alert is made from: the first Chinese one (zh, zh-CN, zh-TW, ...)."""
    return next((i for i in infos if i.language.lower().startswith("zh")), infos[0])


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[k:k + size] for k in range(0, len(items), size)]


def _span(what: str, start: int, part: list[T], whole: list[T]) -> str:
    return f"{what} {start + 1}..{start + len(part)} of {len(whole)}"


def _alerts(identifier: str, kind: str, issued: int, group: list[_Info],
            count: int) -> list[CapAlert]:
    """The alert (or, past 64 regions, alerts) of one warning; ids are set by map_cap."""
    info = _chosen(group)
    el = info.el
    try:
        severity = str(_text(el, "severity", "info"))
        if severity not in LEVELS:
            raise CapError(f"severity {severity} cannot be mapped to a level 1..4 "
                           "(Extreme, Severe, Moderate or Minor)")
        expires_text = _text(el, "expires", "info", required=False)
        if expires_text is None:
            raise CapError("missing required <expires> in <info>: an alert or test needs an end")
        expires = _time(expires_text, "expires")
        if not info.regions:
            raise CapError("missing required <area> in <info>: nowhere to send the alert")
        _check_expires(issued, expires)
        audio = _audio(el)
    except CapError as e:
        raise CapError(f"<info> {info.n} of {count}: {e}" if count > 1 else str(e)) from None
    others = [i for i in group if i is not info]
    origin = f"<info> {info.n}" + (f", translations {','.join(str(i.n) for i in others)}"
                                   if others else "")
    notes: list[str] = []
    if count > 1:
        notes.append(f"used <info> {info.n} of {count} (language {info.language})"
                     + (f", its translations: {', '.join(f'{i.n} ({i.language})' for i in others)}"
                        if others else ""))
    parts = _chunks(info.regions, MAX_REGIONS)
    caps: list[CapAlert] = []
    for k, regions in enumerate(parts):
        cap = CapAlert(identifier=identifier, kind=kind, issued=issued, expires=expires,
                       regions=regions, level=LEVELS[severity], event=_event(el),
                       text=_message(el), audio=audio, language=info.language,
                       notes=list(notes), infos=[info.n, *(i.n for i in others)], origin=origin)
        if len(parts) > 1:
            span = _span("regions", k * MAX_REGIONS, regions, info.regions)
            cap.origin += f", {span}"
            cap.notes.append(f"{span} of <info> {info.n}: at most {MAX_REGIONS} fit one alert")
        caps.append(cap)
    return caps


def _cancels(identifier: str, issued: int, infos: list[_Info], refs: list[str],
             scope: list[str] | None) -> list[CapAlert]:
    """The cancel of a Cancel (several past 64 regions or 64 refs); ids are set by map_cap.

    Each referenced identifier R stands for every alert from-cap may have made of it (R,
    R:2, ... R:MAX_PARTS), and the cancel goes to the areas of all blocks, since all were
    sent as alerts: every terminal that heard one of them must hear the cancel."""
    notes: list[str] = []
    regions: list[str] = []
    for info in infos:
        regions.extend(r for r in info.regions if r not in regions)
    if not regions:
        if not scope:
            raise CapError("a cancel without <area> is sent to the key's scope, and there is none")
        regions = [p.ljust(12, "0") for p in scope]
        notes.append("no <area>: the cancel goes to the whole scope of the key")
    ends = [_time(e, "expires") for i in infos
            if (e := _text(i.el, "expires", "info", required=False))]
    expires = max(ends) if ends else issued + CANCEL_EXPIRY
    _check_expires(issued, expires)
    chosen = _chosen(infos) if infos else None
    per_cancel = MAX_REFS // MAX_PARTS  # 4: a cancel names 64 ids at most
    if len(refs) > per_cancel * MAX_PARTS:
        raise CapError(f"a Cancel of {len(refs)} references is over the {per_cancel * MAX_PARTS} "
                       f"from-cap sends: a cancel's refs hold {MAX_REFS} ids, each reference "
                       f"takes its {MAX_PARTS} possible ids, and one CAP makes at most "
                       f"{MAX_PARTS} cancels; split it upstream")
    named = [[part_id(r, n) for n in range(1, MAX_PARTS + 1) if len(part_id(r, n)) <= MAX_ID]
             for r in refs]
    ref_parts = _chunks(named, per_cancel)
    region_parts = _chunks(regions, MAX_REGIONS)
    caps: list[CapAlert] = []
    for j, ref_part in enumerate(ref_parts):
        for k, region_part in enumerate(region_parts):
            cap = CapAlert(identifier=identifier, kind="cancel", issued=issued, expires=expires,
                           regions=region_part, refs=[i for ids in ref_part for i in ids],
                           language=chosen.language if chosen else None, notes=list(notes),
                           infos=[i.n for i in infos])
            if chosen is not None:
                cap.event, cap.text = _event(chosen.el), _message(chosen.el)
            spans = [_span("references", j * per_cancel, ref_part, named)]
            if len(region_parts) > 1:
                spans.append(_span("regions", k * MAX_REGIONS, region_part, regions))
            cap.origin = ", ".join(spans)
            if len(ref_parts) > 1 or len(region_parts) > 1:
                cap.notes.append(f"{cap.origin}: a cancel names at most {per_cancel} CAP alerts "
                                 f"(each as its {MAX_PARTS} possible ids) for at most "
                                 f"{MAX_REGIONS} regions")
            caps.append(cap)
    return caps


def _check_expires(issued: int, expires: int) -> None:
    if not issued < expires <= issued + MAX_EXPIRY:
        raise CapError(f"expires {_utc(expires)} must be after sent {_utc(issued)} and at "
                       "most 7 days later (alerts.md §3)")


def _refs(root: ET.Element) -> list[str]:
    refs_text = _text(root, "references", "alert", required=False)
    if refs_text is None:
        raise CapError("a Cancel needs <references> naming the alerts it stops")
    refs: list[str] = []
    for triple in refs_text.split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapError(f"reference {triple!r} is not sender,identifier,sent")
        try:
            ref = check_id(parts[1], "referenced identifier")
        except ValueError as e:
            raise CapError(f"{e}, so it cannot be cancelled by id") from None
        if ref not in refs:
            refs.append(ref)
    return refs


def _event(info: ET.Element) -> str | None:
    code = info.find(_q("eventCode"))
    value = _text(code, "value", "eventCode", required=False) if code is not None else None
    return value if value is not None and len(value) <= MAX_EVENT else None


def _message(info: ET.Element) -> str | None:
    parts = [t for tag in ("headline", "description")
             if (t := _text(info, tag, "info", required=False))]
    text = "\n".join(parts)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 1] + "…"
    return text or None


def _regions(info: ET.Element) -> list[str]:
    regions: list[str] = []
    for area in info.findall(_q("area")):
        desc = str(_text(area, "areaDesc", "area"))
        codes: list[str] = []
        for geo in area.findall(_q("geocode")):
            name = str(_text(geo, "valueName", "geocode"))
            value = str(_text(geo, "value", "geocode"))
            if re.sub(r"\s+", "", name).casefold() not in _VALUE_NAMES:
                continue
            if not value.isascii() or not value.isdigit() or len(value) not in (6, 12):
                raise CapError(f"area {desc!r}: {name} code {value!r} is not 6 or 12 digits")
            code = value.ljust(12, "0")
            if code.startswith("00"):
                raise CapError(f"area {desc!r}: {name} code {value!r} has no province (00)")
            try:
                region_prefix(code)
            except ValueError as e:
                raise CapError(f"area {desc!r}: {e}") from None
            codes.append(code)
        if not codes:
            raise CapError(f"cannot map area {desc!r} to region codes: it has no <geocode> "
                           f"named {', '.join(REGION_VALUE_NAMES)} (polygons and circles "
                           "are not mapped)")
        regions.extend(c for c in codes if c not in regions)
    return regions


def _audio(info: ET.Element) -> AudioResource | None:
    for res in info.findall(_q("resource")):
        mime = _text(res, "mimeType", "resource") or ""
        if not mime.lower().startswith("audio/"):
            continue
        desc = str(_text(res, "resourceDesc", "resource"))
        size_text = _text(res, "size", "resource", required=False)
        if size_text is not None and not (size_text.isascii() and size_text.isdigit()):
            raise CapError(f"audio resource {desc!r}: <size> {size_text!r} is not bytes")
        digest = _text(res, "digest", "resource", required=False)
        if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{40}", digest):
            raise CapError(f"audio resource {desc!r}: <digest> {digest!r} is not a SHA-1")
        return AudioResource(desc=desc, mime=mime, uri=_text(res, "uri", "resource", False),
                             size=None if size_text is None else int(size_text),
                             digest=None if digest is None else digest.lower())
    return None


def payload_for(cap: CapAlert, clip: dict[str, Any] | None = None) -> dict[str, Any]:
    """The section-3 payload (volume and repeat left to the terminal's defaults)."""
    audio: dict[str, Any] = {}
    if cap.kind != "cancel":
        audio = {"clip": clip} if clip is not None else {"tone": TONES[cap.kind]}
    try:
        return make_alert_payload(
            regions=cap.regions, kind=cap.kind, level=cap.level, issued=cap.issued,
            expires=cap.expires, id=cap.identifier, refs=cap.refs or None, event=cap.event,
            text=cap.text, **audio)
    except ValueError as e:
        raise CapError(f"maps to an invalid alert: {e}") from None


def check_times(caps: list[CapAlert], now: int) -> None:
    """Refuse alerts every terminal would reject for their times at `now`: expired (alerts.md
    §4 rule 10) or sent too far ahead (rule 9)."""
    many = len(caps) > 1
    for cap in caps:
        which = f"alert {cap.identifier}: " if many else ""
        if cap.expires <= now:
            raise CapError(f"{which}expired at {_utc(cap.expires)} (now {_utc(now)}); "
                           "terminals reject it (alerts.md §4 rule 10)")
        if cap.issued > now + FUTURE_SKEW:
            raise CapError(f"sent {_utc(cap.issued)} is more than {FUTURE_SKEW} s ahead of "
                           f"now ({_utc(now)}); terminals reject it (alerts.md §4 rule 9)")


def resource_key(res: AudioResource) -> tuple[str | None, int | None, str | None]:
    """What makes two audio resources the same clip: its uri, size and digest."""
    return res.uri, res.size, res.digest
