"""Alert envelopes and issuer certificates as specs/alerts.md defines them (host side, CPython).

The producing half of the contract: build and sign what terminals verify. The
`make_*` and `sign_alert` helpers refuse input a terminal would reject; tests
that need a malformed envelope on purpose use `sign_jws` / `sign_jws_raw`, which
sign whatever they are given.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tools import firmware, regions

__all__ = [
    "ALG",
    "AUDIO_TONES",
    "KINDS",
    "MAX_CLIP",
    "MAX_ENVELOPE",
    "MAX_EXPIRY",
    "MAX_REFS",
    "TYP_ALERT",
    "TYP_CERT",
    "USES",
    "KeyPair",
    "b64d",
    "b64e",
    "check_id",
    "check_kid",
    "check_scope",
    "decode_jws",
    "json_bytes",
    "make_alert_payload",
    "make_cert",
    "new_alert_id",
    "pub_bytes",
    "region_prefix",
    "scope_covers",
    "sign_alert",
    "sign_jws",
    "sign_jws_raw",
    "topics_for",
    "verify_jws",
]



_L = firmware.load("limits")  # the terminal's limits: docs/decisions.md "Limits"
ALG = "EdDSA"
TYP_ALERT = "eb-alert"
TYP_CERT = "eb-cert"
MAX_ENVELOPE: int = _L.MAX_ENVELOPE  # alerts.md §1: the whole envelope, in bytes
MAX_EXPIRY: int = _L.MAX_LIFETIME  # alerts.md §3: expires <= issued + 7 days
MAX_REGIONS: int = _L.MAX_REGIONS
MAX_REFS: int = _L.MAX_REFS
MAX_ID: int = _L.MAX_ID
MAX_KID: int = _L.MAX_KID
MAX_EVENT: int = _L.MAX_EVENT
MAX_TEXT: int = _L.MAX_TEXT
MAX_EPOCH: int = _L.MAX_EPOCH
MIN_EPOCH: int = _L.MIN_EPOCH
MAX_URL: int = _L.MAX_URL
MIN_CLIP: int = _L.MIN_CLIP
MAX_CLIP: int = _L.MAX_CLIP
MAX_SCOPE: int = _L.MAX_SCOPE
MAX_USES: int = _L.MAX_USES
LEVELS = range(_L.LEVEL_MIN, _L.LEVEL_MAX + 1)
VOLUMES = range(_L.VOLUME_MAX + 1)
REPEATS = range(_L.REPEAT_MIN, _L.REPEAT_MAX + 1)
KINDS = ("alert", "test", "cancel")
AUDIO_TONES = ("siren", "alarm", "chime")
USES = ("alert", "ota", "daily")  # alerts.md §2, ota.md §1, broadcast.md §1
PREFIX_LENGTHS = regions.PREFIX_LENGTHS  # alerts.md §3 "Region codes": group boundaries

_ID_RE = regions.ID_RE
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# --- base64url and JSON ---------------------------------------------------------------


def b64e(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Decode canonical base64url without padding; raises ValueError on anything else, also on
    unused bits set in the last character (RFC 4648 §3.5), which terminals reject (malformed)."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    if len(text) % 4 and _B64URL.index(text[-1]) & (15 if len(text) % 4 == 2 else 3):
        raise ValueError("not canonical base64url: unused bits set in the last character")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64url: {e}") from None


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, UTF-8, as every envelope part is serialized."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def pub_bytes(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str) -> bytes:
    """The raw 32-byte public key of a key object, raw bytes, or base64url text."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw = b64d(key) if isinstance(key, str) else bytes(key)
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return raw


# --- JWS ------------------------------------------------------------------------------


def sign_jws_raw(priv: Ed25519PrivateKey, header: bytes, payload: bytes) -> str:
    """Compact JWS over header/payload bytes taken as they are (even if not JSON)."""
    signing_input = b64e(header) + "." + b64e(payload)
    sig = priv.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64e(sig)


def sign_jws(priv: Ed25519PrivateKey, header: dict[str, Any], payload: bytes | dict[str, Any]) -> str:
    """Compact JWS; dicts are serialized compactly, payload bytes are used as they are."""
    body = payload if isinstance(payload, bytes | bytearray) else json_bytes(payload)
    return sign_jws_raw(priv, json_bytes(header), bytes(body))


def decode_jws(token: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Split a compact JWS into (header object, payload bytes, signature).

    Checks the shape only (alerts.md §4 rule 2); the signature is not verified.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a compact JWS has 3 parts, got {len(parts)}")
    header_raw, payload, sig = (b64d(p) for p in parts)
    try:
        header = json.loads(header_raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")  # noqa: TRY004 - untrusted input
    return header, payload, sig


def verify_jws(pub: Ed25519PublicKey | bytes | str, token: str) -> bool:
    """True when the token's Ed25519 signature verifies under pub."""
    key = pub if isinstance(pub, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(
        pub_bytes(pub)
    )
    signing_input, _, sig = token.rpartition(".")
    try:
        key.verify(b64d(sig), signing_input.encode("ascii"))
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        return False
    return True


# --- keys, scopes, certificates -------------------------------------------------------


def check_kid(kid: object) -> str:
    """A key id: 1..64 chars of A-Z a-z 0-9 . _ : - (the spec allows any string; we stay
    within the id charset so kids are safe in file names, logs and topics)."""
    if not isinstance(kid, str) or not _ID_RE.fullmatch(kid):
        raise ValueError(f"kid {kid!r} must be 1..{MAX_KID} chars of A-Z a-z 0-9 . _ : -")
    return kid


def check_scope(scope: Iterable[object]) -> list[str]:
    """Region prefixes: digits, cut at a group boundary (2, 4, 6, 9 or 12 digits)."""
    out: list[str] = []
    for p in scope:
        if not isinstance(p, str) or not p.isdigit() or len(p) not in PREFIX_LENGTHS:
            raise ValueError(
                f"scope prefix {p!r} must be 2, 4, 6, 9 or 12 digits (a region-code prefix)"
            )
        if p not in out:
            out.append(p)
    if not out:
        raise ValueError("scope must name at least one region prefix")
    if len(out) > MAX_SCOPE:
        raise ValueError(f"scope names {len(out)} prefixes; terminals take at most {MAX_SCOPE}")
    return out


def check_use(use: Iterable[object]) -> list[str]:
    out: list[str] = []
    for u in use:
        if u not in USES:
            raise ValueError(f"use {u!r} must be one of {', '.join(USES)}")
        if u not in out:
            out.append(str(u))
    if not out:
        raise ValueError("use must name at least one of " + ", ".join(USES))
    return out


def scope_covers(scope: Iterable[str], prefix: str) -> bool:
    """alerts.md §3: a prefix lies within a scope when it starts with one of its prefixes."""
    return any(prefix.startswith(s) for s in scope)


@dataclass
class KeyPair:
    """A root (trust anchor) or issuer key; priv is None for public-only copies."""

    kind: Literal["root", "issuer"]
    kid: str
    pub: bytes
    scope: list[str]
    use: list[str]
    priv: Ed25519PrivateKey | None = None
    crt: str | None = None
    nbf: int | None = None
    exp: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def generate(
        cls,
        kind: Literal["root", "issuer"],
        kid: str,
        scope: Sequence[str],
        use: Sequence[str] = ("alert",),
    ) -> KeyPair:
        priv = Ed25519PrivateKey.generate()
        return cls(
            kind=kind,
            kid=check_kid(kid),
            pub=pub_bytes(priv),
            scope=check_scope(scope),
            use=check_use(use),
            priv=priv,
        )

    @property
    def pub_b64(self) -> str:
        return b64e(self.pub)

    def anchor(self) -> dict[str, Any]:
        """The trust-anchor entry of a terminal config (alerts.md §2), public parts only."""
        return {"kid": self.kid, "pub": self.pub_b64, "scope": list(self.scope),
                "use": list(self.use)}


def signer_problem(key: KeyPair, use: str, purpose: str, now: int) -> str | None:
    """Why every terminal would refuse what `key` signs for `use` (alerts.md §2: `purpose` names
    it in the message): no private key, the use missing from the key file or its certificate, a
    certificate that is missing, unreadable, for another key, not yet or no longer valid; None
    when the key may sign. The scope is the caller's to check (regions or an area)."""
    if key.priv is None:
        return f"key {key.kid} has no private key"
    if use not in key.use:
        return (f"key {key.kid} is not for {purpose} (use {','.join(key.use)}): sign with a key "
                f"certified with --use {use}")
    if key.kind != "issuer":
        return None
    if not key.crt:
        return f"issuer key {key.kid} has no certificate"
    try:
        _, body, _ = decode_jws(key.crt)
        cert = json.loads(body)
    except ValueError as e:
        return f"certificate of {key.kid} is unreadable: {e}"
    if not isinstance(cert, dict) or cert.get("kid") != key.kid or cert.get("pub") != key.pub_b64:
        return f"certificate of {key.kid} is for another key"
    if use not in (cert.get("use") or ()):
        return (f"certificate of {key.kid} does not grant use {use}: certify the key again with "
                f"--use {use}")
    nbf, exp = cert.get("nbf", 0), cert.get("exp", 0)
    if now < nbf:
        return f"certificate of {key.kid} is not valid before {nbf} (now {now})"
    if now >= exp:
        return f"certificate of {key.kid} expired at {exp} (now {now})"
    return None


def make_cert(
    root: KeyPair,
    kid: str,
    pub: Ed25519PublicKey | bytes | str,
    scope: Sequence[str],
    use: Sequence[str],
    nbf: int,
    exp: int,
) -> str:
    """An issuer certificate (alerts.md §2) signed by root.

    Checks shapes only, not that scope lies within root.scope: tests build
    out-of-scope certificates with it; `cx keys issuer` refuses them itself. The
    counts and the validity dates are held to the terminal's limits (firmware/limits.py).
    """
    if root.priv is None:
        raise ValueError(f"root key {root.kid!r} has no private key")
    if not 1 <= len(scope) <= MAX_SCOPE:
        raise ValueError(f"scope names {len(scope)} prefixes; terminals take 1..{MAX_SCOPE}")
    if not 1 <= len(use) <= MAX_USES:
        raise ValueError(f"use names {len(use)} entries; terminals take 1..{MAX_USES}")
    _int("nbf", nbf, MIN_EPOCH, MAX_EPOCH)
    _int("exp", exp, MIN_EPOCH, MAX_EPOCH)
    payload = {"kid": check_kid(kid), "pub": b64e(pub_bytes(pub)), "scope": list(scope),
               "use": list(use), "nbf": int(nbf), "exp": int(exp)}
    return sign_jws(root.priv, {"alg": ALG, "typ": TYP_CERT, "kid": root.kid}, payload)


# --- regions and topics ---------------------------------------------------------------


def region_prefix(code12: str) -> str:
    """alerts.md §3: drop trailing all-zero groups, cutting only at group boundaries; raises
    ValueError unless a terminal would take the code (firmware/region.py valid_code)."""
    if not isinstance(code12, str) or not regions.REGION_RE.match(code12):
        raise ValueError(f"region {code12!r} must be exactly 12 digits")
    if not regions.valid_code(code12):
        raise ValueError(f"region {code12!r} has no province (00)")
    return regions.prefix(code12)


def topics_for(payload: dict[str, Any]) -> list[str]:
    """alerts.md §6: eb/alert/<prefix> for each region, deduplicated, in region order."""
    topics: list[str] = []
    for code in payload["regions"]:
        t = "eb/alert/" + region_prefix(code)
        if t not in topics:
            topics.append(t)
    return topics


# --- alert payloads -------------------------------------------------------------------


def new_alert_id(now: float | None = None) -> str:
    """A fresh alert id, unique per issuer: UTC time plus 64 random bits."""
    t = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + secrets.token_hex(8)


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be 1..{MAX_ID} chars of A-Z a-z 0-9 . _ : -")
    return value


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer {lo}..{hi}, got {value!r}")
    return value


def make_alert_payload(
    *,
    regions: Sequence[str],
    kind: str = "alert",
    level: int | None = None,
    tone: str | None = None,
    clip: dict[str, Any] | None = None,
    issued: int | None = None,
    expires_in: int | None = None,
    expires: int | None = None,
    id: str | None = None,
    refs: Sequence[str] | None = None,
    volume: int | None = None,
    repeat: int | None = None,
    event: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """A section-3 payload; raises ValueError saying what is wrong.

    `expires` is absolute (epoch seconds) and `expires_in` relative to `issued`;
    give at most one (default: one hour). `clip` is {"url", "sha256", "bytes"}.
    Optional fields left as None are omitted, so terminals apply their defaults.
    A cancel takes `refs` and no level, audio, volume or repeat.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if issued is None:
        issued = int(time.time())
    issued = _int("issued", issued, MIN_EPOCH, MAX_EPOCH)
    alert_id = check_id(new_alert_id(issued) if id is None else id)

    if isinstance(regions, str) or not regions:
        raise ValueError(f"regions must list 1..{MAX_REGIONS} region codes")
    regions = list(regions)
    if len(regions) > MAX_REGIONS:
        raise ValueError(f"at most {MAX_REGIONS} regions, got {len(regions)}")
    for r in regions:
        region_prefix(r)

    if expires is not None and expires_in is not None:
        raise ValueError("give expires or expires_in, not both")
    if expires is None:
        expires = issued + (3600 if expires_in is None else expires_in)
    if isinstance(expires, bool) or not isinstance(expires, int) or not (
        issued < expires <= issued + MAX_EXPIRY and expires <= MAX_EPOCH
    ):
        raise ValueError(
            f"expiry must be after issued and at most 7 days ({MAX_EXPIRY} s) later, "
            f"got {expires!r} for issued {issued}"
        )

    payload: dict[str, Any] = {"id": alert_id, "kind": kind}
    if kind == "cancel":
        if level is not None or tone is not None or clip is not None:
            raise ValueError("a cancel takes no level and no audio")
        if volume is not None or repeat is not None:
            raise ValueError("a cancel takes no volume and no repeat")
        if not refs:
            raise ValueError("a cancel needs refs: the ids of the alerts to stop")
    else:
        if level is None:
            raise ValueError(f"level (1..4) is required for kind {kind}")
        payload["level"] = _int("level", level, LEVELS[0], LEVELS[-1])
        if refs:
            raise ValueError("refs are for kind cancel only")
    if event is not None:
        if not isinstance(event, str) or not 1 <= len(event) <= MAX_EVENT:
            raise ValueError(f"event must be 1..{MAX_EVENT} chars, got {event!r}")
        payload["event"] = event
    payload["regions"] = regions
    payload["issued"] = issued
    payload["expires"] = expires

    if kind != "cancel":
        if (tone is None) == (clip is None):
            raise ValueError("audio needs exactly one of tone or clip")
        if tone is not None:
            if tone not in AUDIO_TONES:
                raise ValueError(f"tone must be one of {', '.join(AUDIO_TONES)}, got {tone!r}")
            payload["audio"] = {"tone": tone}
        else:
            payload["audio"] = {"clip": _check_clip(clip)}
    if volume is not None:
        payload["volume"] = _int("volume", volume, VOLUMES[0], VOLUMES[-1])
    if repeat is not None:
        payload["repeat"] = _int("repeat", repeat, REPEATS[0], REPEATS[-1])
    if text is not None:
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise ValueError(f"text must be at most {MAX_TEXT} chars")
        payload["text"] = text
    if kind == "cancel":
        refs = list(refs or ())
        if len(refs) > MAX_REFS:
            raise ValueError(f"a cancel names at most {MAX_REFS} alerts in refs, got {len(refs)}; "
                             "send several cancels")
        payload["refs"] = [check_id(r, "ref") for r in refs]
    return payload


def _check_clip(clip: object) -> dict[str, Any]:
    if not isinstance(clip, dict):
        raise ValueError("clip must be an object with url, sha256 and bytes")  # noqa: TRY004
    url, sha, size = clip.get("url"), clip.get("sha256"), clip.get("bytes")
    # what firmware/clip.py can fetch and play; anything else would sound the siren instead
    if not isinstance(url, str) or not url.startswith("http://") or len(url) > MAX_URL or any(
        not 32 < ord(c) < 127 for c in url
    ):
        raise ValueError(f"clip url must be http://, at most {MAX_URL} printable ASCII chars "
                         f"without spaces, got {url!r}")
    if not isinstance(sha, str) or not _HEX64_RE.fullmatch(sha):
        raise ValueError(f"clip sha256 must be 64 hex digits, got {sha!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_CLIP <= size <= MAX_CLIP:
        raise ValueError(f"clip bytes must be an integer {MIN_CLIP}..{MAX_CLIP} (a 16 kHz WAV a "
                         f"terminal can cache), got {size!r}")
    return {"url": url, "sha256": sha.lower(), "bytes": size}


def sign_alert(issuer: KeyPair, payload: dict[str, Any]) -> str:
    """The envelope (alerts.md §1): crt in the header when the issuer has one,
    none when an anchor signs directly. Raises ValueError past MAX_ENVELOPE."""
    if issuer.priv is None:
        raise ValueError(f"key {issuer.kid!r} has no private key")
    header: dict[str, Any] = {"alg": ALG, "typ": TYP_ALERT, "kid": issuer.kid}
    if issuer.crt:
        header["crt"] = issuer.crt
    env = sign_jws(issuer.priv, header, payload)
    if len(env) > MAX_ENVELOPE:
        raise ValueError(f"envelope is {len(env)} bytes, over the {MAX_ENVELOPE}-byte limit")
    return env
