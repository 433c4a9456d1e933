"""`cx alert from-cap`: map an OASIS CAP 1.2 alert to an alert payload (alerts.md §3), sign, send.

The mapping is documented in docs/keys-and-alerts.md, "From CAP 1.2". A CAP that
cannot be mapped faithfully raises CapError with the reason; nothing is guessed
or silently rewritten. Signing, the signer checks and publishing are those of
`cx alert send` (tools.alertcli).
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import http.client
import re
import struct
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tools.alertcli import add_broker_login, check_signer, destination, dispatch
from tools.cx import EXIT_FAILURE, EXIT_USAGE, CliError
from tools.envelope import (
    MAX_EVENT,
    MAX_EXPIRY,
    MAX_REGIONS,
    MAX_TEXT,
    check_id,
    make_alert_payload,
    region_prefix,
)
from tools.keys import KeyFileError, load_keyfile

__all__ = [
    "CAP_NS",
    "REGION_VALUE_NAMES",
    "AudioResource",
    "CapAlert",
    "CapError",
    "clip_for",
    "fetch_clip",
    "map_cap",
    "parse_cap",
    "payload_for",
    "register",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MAX_CAP_FILE = 1 << 20  # bytes: a CAP alert is a few KB; anything this big is not one
MAX_CLIP = 1 << 20  # bytes: firmware/clip.py MAX_CLIP, the most a terminal downloads
MAX_CLIP_URL = 512  # chars: firmware/clip.py parse_url
FUTURE_SKEW = 300  # s: alerts.md §4 rule 9, terminals reject issued > now + 300
CANCEL_EXPIRY = 24 * 3600  # s: a cancel without any <expires> lives one day
FETCH_TIMEOUT = 10.0  # s: connect plus the whole download

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
    """What the payload is made from; `notes` say which choices were made."""

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


def map_cap(data: bytes, scope: list[str] | None = None) -> CapAlert:
    """Map a CAP 1.2 document; `scope` (the signing key's) addresses a cancel without areas."""
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
                       "1..64 chars of A-Z a-z 0-9 . _ : -") from None
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

    infos = root.findall(_q("info"))
    notes: list[str] = []
    info = None
    if infos:
        langs = [(_text(i, "language", "info", required=False) or "en-US") for i in infos]
        pick = next((n for n, lang in enumerate(langs) if lang.lower().startswith("zh")), 0)
        info, language = infos[pick], langs[pick]
        if len(infos) > 1:
            notes.append(f"used <info> {pick + 1} of {len(infos)} (language {language})")
        for tag in ("category", "event", "urgency", "severity", "certainty"):
            _text(info, tag, "info")
    elif kind != "cancel":
        raise CapError(f"missing required <info> in a {msg_type}: it carries severity, "
                       "expires and the areas")
    else:
        language = None

    cap = CapAlert(identifier=identifier, kind=kind, issued=issued, expires=0, regions=[],
                   language=language, notes=notes)
    if kind == "cancel":
        cap.refs = _refs(root)
        ends = [_time(e, "expires") for i in infos
                if (e := _text(i, "expires", "info", required=False))]
        cap.expires = max(ends) if ends else issued + CANCEL_EXPIRY
    elif info is not None:  # always: an Alert or Update without <info> was refused above
        severity = str(_text(info, "severity", "info"))
        if severity not in LEVELS:
            raise CapError(f"severity {severity} cannot be mapped to a level 1..4 "
                           "(Extreme, Severe, Moderate or Minor)")
        cap.level = LEVELS[severity]
        expires = _text(info, "expires", "info", required=False)
        if expires is None:
            raise CapError("missing required <expires> in <info>: an alert or test needs an end")
        cap.expires = _time(expires, "expires")
        cap.audio = _audio(info)
    if info is not None:
        cap.event = _event(info)
        cap.text = _message(info)
        cap.regions = _regions(info)
    if not cap.regions:
        if kind != "cancel":
            raise CapError("missing required <area> in <info>: nowhere to send the alert")
        if not scope:
            raise CapError("a cancel without <area> is sent to the key's scope, and there is none")
        cap.regions = [p.ljust(12, "0") for p in scope]
        notes.append("no <area>: the cancel goes to the whole scope of the key")
    if not issued < cap.expires <= issued + MAX_EXPIRY:
        raise CapError(f"expires {_utc(cap.expires)} must be after sent {_utc(issued)} and at "
                       "most 7 days later (alerts.md §3)")
    return cap


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
    if len(regions) > MAX_REGIONS:
        raise CapError(f"{len(regions)} region codes, at most {MAX_REGIONS} fit one alert")
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


# --- audio ----------------------------------------------------------------------------


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
            raise CliError(f"{clip_file}: {e.strerror or e}") from None
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


# --- cx alert from-cap ----------------------------------------------------------------


def cmd_from_cap(args: argparse.Namespace) -> int:
    broker = destination(args)
    try:
        with open(args.file, "rb") as f:
            data = f.read(MAX_CAP_FILE + 1)
    except OSError as e:
        raise CliError(f"{args.file}: {e.strerror or e}") from None
    try:
        key = load_keyfile(args.key)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    now = int(time.time())
    try:
        cap = map_cap(data, key.scope)
        if cap.expires <= now:
            raise CapError(f"expired at {_utc(cap.expires)} (now {_utc(now)}); terminals "
                           "reject it (alerts.md §4 rule 10)")
        if cap.issued > now + FUTURE_SKEW:
            raise CapError(f"sent {_utc(cap.issued)} is more than {FUTURE_SKEW} s ahead of now "
                           f"({_utc(now)}); terminals reject it (alerts.md §4 rule 9)")
        if args.clip_file is not None and cap.audio is None:
            raise CliError("--clip-file given, but the CAP has no audio resource to check it "
                           "against", EXIT_USAGE)
        check_signer(key, cap.regions, now)
        clip = clip_for(cap.audio, args.clip_file, args.timeout) if cap.audio else None
        payload = payload_for(cap, clip)
    except CapError as e:
        raise CliError(f"{args.file}: {e}", EXIT_FAILURE) from None
    return dispatch(args, key, payload, broker)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `from-cap` to the `cx alert` subparsers."""
    p = sub.add_parser("from-cap", help="map an OASIS CAP 1.2 alert, sign it and publish it "
                       "(or --print it)")
    p.add_argument("file", metavar="FILE", help="the CAP 1.2 XML document")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="issuer (or root) key file")
    p.add_argument("--clip-file", metavar="F", help="local copy of the CAP audio resource (checked against "
                   "its <size> and <digest>) instead of fetching its uri")
    p.add_argument("--timeout", type=float, default=FETCH_TIMEOUT, metavar="SECONDS",
                   help=f"seconds for the broker and for fetching audio (default "
                   f"{FETCH_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--db", help="fleet store to record the alert in, for cx alert status "
                                "(default $CX_FLEET_DB, or ./fleet.sqlite when it exists)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--broker", metavar="HOST:PORT", help="publish QoS 1 to this broker")
    dest.add_argument("--print", action="store_true", help="print the envelope, send nothing")
    add_broker_login(p)
    p.set_defaults(func=cmd_from_cap)
