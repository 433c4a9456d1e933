"""The fleet side of OTA (../shared/specs/ota.md, docs/ota.md "Rollouts"): the vocabulary of a
rollout's targets, reading a release directory made by `cx ota build`, the content-addressed file
folder the file server serves, waves and the maintenance window. Pure functions and files; the
database is fleet/store/ota.py, the file server fleet/ota_http.py, the engine fleet/ota_engine.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from tools.regions import REGION_RE

# ---------------------------------------------------------------------------- vocabulary

PENDING, SENT = "pending", "sent"
DOWNLOADING, STAGED, TRIAL = "downloading", "staged", "trial"
CONFIRMED, ROLLED_BACK, FAILED, REFUSED = "confirmed", "rolled_back", "failed", "refused"
TARGET_STATES = (PENDING, SENT, DOWNLOADING, STAGED, TRIAL, CONFIRMED, ROLLED_BACK, FAILED,
                 REFUSED)
ACTIVE = (SENT, DOWNLOADING, STAGED, TRIAL)
"""Targets holding one of the rollout's `--max-parallel` places."""
FINAL = (CONFIRMED, ROLLED_BACK, FAILED, REFUSED)
RANK = {PENDING: 0, SENT: 1, DOWNLOADING: 2, STAGED: 3, TRIAL: 4,
        **{s: 5 for s in FINAL}}
"""A target's state only moves up this order (reports may arrive out of order)."""

REFUSE_REASONS = frozenset({
    "too_large", "malformed", "bad_alg", "unknown_key", "bad_cert", "bad_signature",
    "bad_field", "out_of_scope", "not_for_me", "same_version", "downgrade", "too_old",
    "no_space"})
"""ota.md §3, rules 1 to 13."""
EVENT_REASONS: dict[str, frozenset[str | None]] = {
    "refused": frozenset(REFUSE_REASONS),
    DOWNLOADING: frozenset({None}),
    STAGED: frozenset({None}),
    TRIAL: frozenset({None}),
    CONFIRMED: frozenset({None}),
    ROLLED_BACK: frozenset({"crash", "watchdog", "no_fleet", "selftest"}),
    FAILED: frozenset({"bad_hash", "unreachable", "no_space", "io"}),
}
"""ota.md §4: each report state and the reasons it may carry (None: `reason` null)."""
BUSY = "busy"
"""An acknowledgement's error when an update is already under way (docs/ota.md): not a refusal,
the command is sent again later."""

ROLLOUT_STATES = ("running", "paused", "aborted", "done")
LIVE = ("running", "paused")

VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\Z")
SHA_RE = re.compile(r"[0-9a-f]{64}\Z")
MANIFEST_MAX = 16384
CST = 8 * 3600
"""China Standard Time, UTC+8 (no daylight saving): the zone of `--window`."""


class OtaError(FleetError):
    """A release, rollout option or rollout command that cannot be used (one line)."""


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def check_version(v: str) -> str:
    if not VERSION_RE.match(v):
        raise OtaError(f"bad version {v!r}: MAJOR.MINOR.PATCH, each 0..9999 without leading "
                       "zeros")
    return v


def town(region: str) -> str:
    """A region's town: its first 9 digits."""
    return region[:9]


# ---------------------------------------------------------------------------- waves, window


def parse_waves(text: str) -> list[float]:
    """`1%,10%,50%,100%`: cumulative percentages, rising, the last 100."""
    out: list[float] = []
    for part in text.split(","):
        p = part.strip().removesuffix("%").strip()
        try:
            v = float(p)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or not 0 < v <= 100 or (out and v <= out[-1]):
            raise OtaError(f"--waves {text!r}: give rising percentages up to 100, such as "
                           "1%,10%,50%,100%")
        out.append(v)
    if not out or out[-1] != 100 or len(out) > 100:
        raise OtaError(f"--waves {text!r}: the last wave must be 100% (at most 100 waves)")
    return out


def assign_waves(devices: list[str], waves: list[float]) -> list[tuple[str, int, int]]:
    """(device, wave, order) for each device: a stable order (by the sha256 of the id, so the
    first waves spread over towns and the same terminals go first in every rollout), cut at the
    cumulative percentages (rounded up, so a 1 % first wave of 20 terminals is one terminal)."""
    order = sorted(devices, key=lambda d: (hashlib.sha256(d.encode()).hexdigest(), d))
    n = len(order)
    cuts = [min(n, math.ceil(n * p / 100 - 1e-9)) for p in waves]
    out, w = [], 0
    for i, dev in enumerate(order):
        while i >= cuts[w]:
            w += 1
        out.append((dev, w, i))
    return out


def parse_window(text: str | None) -> tuple[int, int] | None:
    """`02:00-05:00` (China Standard Time) as (start, end) minutes of the day; None: any time."""
    if not text:
        return None
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", text.strip())
    if not m:
        raise OtaError(f"--window {text!r}: give HH:MM-HH:MM (China Standard Time), such as "
                       "02:00-05:00")
    a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if a == b:
        raise OtaError(f"--window {text!r}: start and end are the same")
    return a, b


def in_window(window: tuple[int, int] | None, now: float) -> bool:
    """Whether `now` (epoch s) lies in the window; a window may span midnight (22:00-04:00)."""
    if window is None:
        return True
    m = int((now + CST) % 86400) // 60
    a, b = window
    return a <= m < b if a < b else m >= a or m < b


# ---------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class Release:
    version: str
    manifest: str
    min_version: str | None
    regions: list[str]
    issued: int | None
    kid: str | None
    files: list[dict[str, Any]]
    zbytes: int

    def shas(self) -> list[str]:
        return sorted({f["sha256"] for f in self.files})

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "min_version": self.min_version,
                "regions": self.regions, "issued": self.issued, "kid": self.kid,
                "files": self.files, "zbytes": self.zbytes}


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def manifest_payload(jws: str) -> dict[str, Any]:
    """The payload of a compact JWS, not verified (the terminal verifies it)."""
    parts = jws.strip().split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        obj = json.loads(_b64url(parts[1]))
    except (ValueError, binascii.Error):
        raise OtaError("manifest.jws is not a compact JWS with a JSON payload") from None
    if not isinstance(obj, dict):
        raise OtaError("manifest.jws: its payload is not a JSON object")
    return obj


def read_release(folder: Path) -> Release:
    """Read and check a release directory (release.json, manifest.jws, files/<sha256>.z): every
    file present, its zlib stream inflating to the bytes and sha256 release.json names, and the
    manifest naming the same version and files. Raises OtaError naming what is wrong."""
    try:
        meta = json.loads((folder / "release.json").read_text(encoding="utf-8"))
        manifest = (folder / "manifest.jws").read_text(encoding="ascii").strip()
    except FileNotFoundError as e:
        raise OtaError(f"{folder} is not a release directory (no {Path(e.filename).name}; "
                       "make one with 'cx ota build')") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OtaError(f"{folder}: release.json or manifest.jws is unreadable ({e})") from None
    except OSError as e:
        raise OtaError(f"cannot read the release {folder}: {e.strerror or e}") from None
    if not isinstance(meta, dict):
        raise OtaError(f"{folder}/release.json is not a JSON object")
    version = check_version(str(meta.get("version")))
    if len(manifest) > MANIFEST_MAX:
        raise OtaError(f"{folder}/manifest.jws is over {MANIFEST_MAX} bytes")
    regions, files = meta.get("regions"), meta.get("files")
    if (not isinstance(regions, list) or not 1 <= len(regions) <= 64
            or not all(isinstance(r, str) and REGION_RE.match(r) for r in regions)):
        raise OtaError(f"{folder}/release.json: regions must be 1..64 twelve-digit codes")
    if not isinstance(files, list) or not 1 <= len(files) <= 256:
        raise OtaError(f"{folder}/release.json: files must list 1..256 files")
    clean = []
    for f in files:
        if (not isinstance(f, dict) or not isinstance(f.get("path"), str)
                or not isinstance(f.get("sha256"), str) or not SHA_RE.match(f["sha256"])
                or not all(isinstance(f.get(k), int) and f[k] >= 0 for k in ("bytes", "zbytes"))):
            raise OtaError(f"{folder}/release.json: bad file entry {f!r}")
        clean.append({k: f[k] for k in ("path", "bytes", "sha256", "zbytes")})
    payload = manifest_payload(manifest)
    if payload.get("version") != version:
        raise OtaError(f"{folder}: manifest.jws is for version {payload.get('version')!r}, "
                       f"release.json for {version}")
    named = payload.get("files")
    if isinstance(named, list) and {x.get("sha256") for x in named if isinstance(x, dict)} != \
            {f["sha256"] for f in clean}:
        raise OtaError(f"{folder}: manifest.jws and release.json name different files")
    for f in clean:
        check_file(folder / "files" / f"{f['sha256']}.z", f["sha256"], f["bytes"])
    mv = meta.get("min_version")
    return Release(version, manifest, mv if isinstance(mv, str) else None, list(regions),
                   meta.get("issued") if isinstance(meta.get("issued"), int) else None,
                   meta.get("kid") if isinstance(meta.get("kid"), str) else None, clean,
                   sum(os.path.getsize(folder / "files" / f"{s}.z")
                       for s in {f["sha256"] for f in clean}))


def check_file(path: Path, sha: str, size: int) -> None:
    """`path` is a zlib stream of `size` bytes whose sha256 is `sha`; OtaError otherwise."""
    h, n = hashlib.sha256(), 0
    d = zlib.decompressobj()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(65536):
                out = d.decompress(chunk)
                h.update(out)
                n += len(out)
        out = d.flush()
        h.update(out)
        n += len(out)
        complete = d.eof
    except FileNotFoundError:
        raise OtaError(f"the release lacks files/{path.name}") from None
    except zlib.error:
        raise OtaError(f"files/{path.name} is not a zlib stream") from None
    except OSError as e:
        raise OtaError(f"cannot read {path}: {e.strerror or e}") from None
    if not complete or h.hexdigest() != sha or n != size:
        raise OtaError(f"files/{path.name} does not inflate to the {size} bytes of sha256 "
                       f"{sha[:12]}…: the release is damaged, build it again")


def copy_files(folder: Path, release: Release, store: Path) -> int:
    """Copy the release's files into the content-addressed folder `store` (`<sha256>.z`, each
    written to a temporary name and renamed); returns how many were new."""
    new = 0
    for sha in release.shas():
        dest = store / f"{sha}.z"
        src = folder / "files" / f"{sha}.z"
        if dest.exists() and dest.stat().st_size == src.stat().st_size:
            continue
        tmp = store / f".{sha}.z.tmp"
        with open(src, "rb") as a, open(tmp, "wb") as b:
            while chunk := a.read(1 << 20):
                b.write(chunk)
            b.flush()
            os.fsync(b.fileno())
        os.replace(tmp, dest)
        new += 1
    return new
