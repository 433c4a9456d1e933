# The 13 rules of ota.md §3 for a release manifest, in order, first failure wins: what the agent
# runs before any byte is written, and what `cx ota verify` runs on the host (tools/release.py).
import binascii

import b64
import ed25519
import region
import trust
from limits import (
    MAX_FILE_BYTES,
    MAX_MANIFEST,
    MAX_OTA_FILES,
    MAX_OTA_PATH,
    MAX_REGIONS,
    MAX_VERSION_PART,
)

PRODUCT = "cunxiang-terminal"
MARGIN = 65536  # bytes of flash left free beyond an update's needs (rule 13, docs/ota.md)
_PATH_CHARS = "_.-/"  # beside A-Z a-z 0-9


def version(s):
    """(MAJOR, MINOR, PATCH) of a version string (each 0..9999, no leading zeros), or None."""
    if not isinstance(s, str) or not 5 <= len(s) <= 14:
        return None
    parts = s.split(".")
    if len(parts) != 3:
        return None
    out = []
    for p in parts:
        if not p or not p.isdigit() or (len(p) > 1 and p[0] == "0") or len(p) > 4:
            return None
        out.append(int(p))
    if max(out) > MAX_VERSION_PART:
        return None
    return tuple(out)


def valid_path(p):
    """A manifest path: 1..64 of A-Z a-z 0-9 _ . - /, relative, no `..` or empty segment."""
    if not isinstance(p, str) or not 1 <= len(p) <= MAX_OTA_PATH or p[0] == "/":
        return False
    for c in p:
        if not (c.isalpha() and ord(c) < 128 or c.isdigit() or c in _PATH_CHARS):
            return False
    for seg in p.split("/"):
        if not seg or seg == "..":
            return False
    return True


def _sha(s):
    if not isinstance(s, str) or len(s) != 64 or s.lower() != s:
        return False
    try:
        binascii.unhexlify(s)
    except ValueError:
        return False
    return True


def fields_ok(p):
    """Rule 7: the payload's fields (§1). Unknown fields are ignored."""
    if not isinstance(p.get("product"), str) or version(p.get("version")) is None:
        return False
    mv = p.get("min_version")
    if mv is not None and version(mv) is None:
        return False
    if not trust.epoch(p.get("issued")):
        return False
    regions = p.get("regions")
    if not trust.str_list(regions, 1, MAX_REGIONS) or not all(region.valid_code(r) for r in regions):
        return False
    files = p.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_OTA_FILES:
        return False
    seen = set()
    for f in files:
        if not isinstance(f, dict) or not valid_path(f.get("path")) or not _sha(f.get("sha256")):
            return False
        n = f.get("bytes")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_FILE_BYTES \
                or f["path"] in seen:
            return False
        seen.add(f["path"])
    dg = p.get("downgrade", False)
    return isinstance(dg, bool)


def claimed_version(jws):
    """The version a refused manifest claims, read without trusting it, only to label the report
    (as alert receipts name an unverified id); None when it cannot be read (docs/ota.md)."""
    try:
        o = trust.json_obj(b64.decode(jws.split(b".")[1]))
    except Exception:
        return None
    v = o.get("version") if o is not None else None
    return v if version(v) is not None else None


def to_fetch(files, held):
    """The manifest's files whose sha256 the running version does not hold (`held`: a set)."""
    return [f for f in files if f["sha256"] not in held]


def check(jws, chain, running, my_region, free_bytes=None, held=None):
    """(reason or None, payload or None) for manifest bytes `jws`, by rules 1-13 in order.
    chain: trust.Chain(trust, "ota", clock); running: this terminal's version string;
    free_bytes: flash free (None: rule 13 not checked); held: sha256s the running version holds.
    The payload is returned once rule 7 passed, so a caller can say what a refusal was about."""
    if len(jws) > MAX_MANIFEST:  # rule 1
        return "too_large", None
    parts = trust.split(jws)  # rule 2
    if parts is None:
        return "malformed", None
    signing_input, hdr_raw, payload_b64, sig = parts
    hdr = trust.json_obj(hdr_raw)
    if hdr is None:
        return "malformed", None
    if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-ota":  # rule 3
        return "bad_alg", None
    kid = hdr.get("kid")
    if not trust.valid_kid(kid):
        return "unknown_key", None
    try:
        pub, scope = chain.signer(kid, hdr.get("crt"))  # rules 4, 5 (the chain's use is ota)
    except trust.Reject as r:
        return r.reason, None
    if len(sig) != 64 or not ed25519.verify(pub, signing_input, sig):  # rule 6
        return "bad_signature", None
    p = trust.json_obj(b64.decode(payload_b64))  # parsed only once the signature holds
    if p is None or not fields_ok(p):  # rule 7
        return "bad_field", None
    if not trust.in_scope(p["regions"], scope):  # rule 8
        return "out_of_scope", p
    mine = False
    for r in p["regions"]:  # rule 9
        if region.covers(r, my_region):
            mine = True
    if p["product"] != PRODUCT or not mine:
        return "not_for_me", p
    new = version(p["version"]) or (0, 0, 0)  # valid: rule 7
    cur = version(running) or (0, 0, 0)  # a terminal that cannot name its version takes any
    if new == cur:  # rule 10
        return "same_version", p
    if new < cur and p.get("downgrade") is not True:  # rule 11
        return "downgrade", p
    mv = p.get("min_version")
    if mv is not None and cur < (version(mv) or (0, 0, 0)):  # rule 12
        return "too_old", p
    if free_bytes is not None:  # rule 13: compressed in stage/ plus inflated, and a margin
        need = 0
        for f in to_fetch(p["files"], held or ()):
            need += 2 * f["bytes"]
        if free_bytes < need + MARGIN:
            return "no_space", p
    return None, p
