# The key chain of alerts.md §2 for one use (`alert`; `ota` per ota.md §1; `daily` later):
# trust anchors, issuer certificates, the verified-certificate cache and the signer's scope.
import binascii
import json

import b64
import ed25519
import region
from limits import (
    MAX_CLIP_FIELD,
    MAX_ENVELOPE,
    MAX_EPOCH,
    MAX_ID,
    MAX_KID,
    MAX_SCOPE,
    MAX_URL,
    MAX_USES,
    MIN_EPOCH,
)
from micropython import const

_MAX_CERTS = const(8)  # verified certificates cached by their exact bytes (alerts.md §2)


class Reject(Exception):
    """A failed rule: status plus reason code (alerts.md §4; ota.md §3 has no status). The chain
    raises it with "rejected" and "unknown_key" (rule 4) or "bad_cert" (rule 5)."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


_MAX_DEPTH = const(32)  # nesting of a JSON text we parse; deeper is an attack, not an alert


def _deep(raw):
    # True when brackets outside strings nest deeper than _MAX_DEPTH (run only after a
    # MemoryError: thousands of "[" cost the parser a list each)
    depth = 0
    quoted = escaped = False
    for c in raw:
        if quoted:
            if escaped:
                escaped = False
            elif c == 92:  # backslash
                escaped = True
            elif c == 34:  # quote
                quoted = False
        elif c == 34:
            quoted = True
        elif c == 91 or c == 123:  # [ {
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif c == 93 or c == 125:
            depth -= 1
    return False


def json_obj(raw):
    """A JSON object from bytes, or None (bad JSON, bad UTF-8, not an object, absurd nesting).
    A MemoryError on a text of sane nesting escapes: the heap's fault, retried by the caller."""
    try:
        v = json.loads(raw)
    except MemoryError:
        if isinstance(raw, (bytes, bytearray, memoryview)) and _deep(raw):
            return None
        raise
    except Exception:  # bad JSON, bad UTF-8, recursion depth
        return None
    return v if isinstance(v, dict) else None


def split(jws):
    """A compact JWS (alerts.md §1) -> (signing input, header bytes, payload b64, signature
    bytes), or None when it is not three base64url parts. The payload is not decoded here."""
    parts = jws.split(b".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        header = b64.decode(parts[0])
        sig = b64.decode(parts[2])
        b64.decode(parts[1])  # payload must be base64url too; parsed only after the signature
    except b64.B64Error:
        return None
    return jws[: len(parts[0]) + 1 + len(parts[1])], header, parts[1], sig


def valid_id(s, most=MAX_ID):
    """An id (alerts.md §3; a schedule's, a programme's, a stream's): 1..most chars of
    A-Z a-z 0-9 . _ :"""
    if not isinstance(s, str) or not 1 <= len(s) <= most:
        return False
    for c in s:
        if not (c.isalpha() and ord(c) < 128 or c.isdigit() or c in "._:-"):
            return False
    return True


def clip_ok(c, least=0):
    """A clip object {"url", "sha256", "bytes"} as alerts.md §3 writes it, `bytes` above least;
    its sha256 is lower-cased in place."""
    if not isinstance(c, dict):
        return False
    url, sha, n = c.get("url"), c.get("sha256"), c.get("bytes")
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL:
        return False
    if not isinstance(sha, str) or len(sha) != 64:
        return False
    try:
        binascii.unhexlify(sha)
    except ValueError:
        return False
    c["sha256"] = sha.lower()
    return is_int(n) and least < n <= MAX_CLIP_FIELD  # type: ignore[operator]


def valid_kid(kid):
    return isinstance(kid, str) and 1 <= len(kid) <= MAX_KID


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def epoch(v):
    # an epoch second the terminal can hold: limits.py MIN_EPOCH..MAX_EPOCH
    return is_int(v) and MIN_EPOCH <= v <= MAX_EPOCH


def str_list(v, lo, hi):
    return isinstance(v, list) and lo <= len(v) <= hi and all(isinstance(x, str) for x in v)


def in_scope(regions, scope):
    """Every region code lies within the signer's scope (alerts.md §4 rule 8, ota.md §3 rule 8)."""
    for r in regions:
        if not region.within(r, scope):
            return False
    return True


class Chain:
    """The anchors of one use and the certificates they issued. signer() answers rules 4 and 5."""

    def __init__(self, trust, use, clock):
        # anchors with this use (config's "trust", alerts.md §2): kid -> (pub bytes, scope)
        self.use = use
        self.anchors = {}
        for a in trust:
            if use in a.get("use", ()):
                try:
                    pub = b64.decode(a["pub"])
                except b64.B64Error:
                    continue  # a broken anchor in config trusts nothing
                if len(pub) == 32:
                    self.anchors[a["kid"]] = (pub, a["scope"])
        self.clock = clock
        self._certs = {}  # crt bytes -> (kid, pub, scope, nbf, exp)

    def signer(self, kid, crt):
        """(pub, scope) of the key `kid` (already valid_kid) that signed, with its optional crt
        (the header's value, unchecked). Raises Reject."""
        if crt is None:
            a = self.anchors.get(kid)
            if a is None:
                raise Reject("rejected", "unknown_key")
            return a
        if not isinstance(crt, str) or len(crt) > MAX_ENVELOPE:
            raise Reject("rejected", "bad_cert")
        raw = crt.encode()
        c = self._certs.get(raw)
        if c is None:
            c = self._verify_cert(raw)
            if len(self._certs) >= _MAX_CERTS:
                self._certs.pop(next(iter(self._certs)))
            self._certs[raw] = c
        ckid, pub, scope, nbf, exp = c
        now = self.clock.now()
        if not nbf <= now < exp or ckid != kid:
            raise Reject("rejected", "bad_cert")
        return pub, scope

    def _verify_cert(self, raw):
        # Everything about the certificate but its validity time and kid match, which signer()
        # checks on every use (the cache keeps a certificate across its nbf and exp).
        parts = split(raw)
        if parts is None:
            raise Reject("rejected", "bad_cert")
        signing_input, hdr_raw, payload_b64, sig = parts
        hdr = json_obj(hdr_raw)
        if hdr is None:
            raise Reject("rejected", "bad_cert")
        anchor = self.anchors.get(hdr.get("kid")) if isinstance(hdr.get("kid"), str) else None
        if anchor is None:  # rule 4: the crt's anchor must be known, with this use
            raise Reject("rejected", "unknown_key")
        if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-cert":
            raise Reject("rejected", "bad_cert")
        if len(sig) != 64 or not ed25519.verify(anchor[0], signing_input, sig):
            raise Reject("rejected", "bad_cert")
        c = json_obj(b64.decode(payload_b64))
        if c is None:
            raise Reject("rejected", "bad_cert")
        kid, pub, scope, use = c.get("kid"), c.get("pub"), c.get("scope"), c.get("use")
        nbf, exp = c.get("nbf"), c.get("exp")
        if not (valid_kid(kid) and isinstance(pub, str)
                and isinstance(scope, list) and str_list(scope, 1, MAX_SCOPE)
                and all(s.isdigit() and 2 <= len(s) <= 12 for s in scope)
                and isinstance(use, list) and str_list(use, 1, MAX_USES) and self.use in use
                and epoch(nbf) and epoch(exp)):
            raise Reject("rejected", "bad_cert")
        try:
            pub = b64.decode(pub)
        except b64.B64Error:
            raise Reject("rejected", "bad_cert")
        if len(pub) != 32:
            raise Reject("rejected", "bad_cert")
        for s in scope:  # each certificate prefix lies within the anchor's scope
            ok = False
            for a in anchor[1]:
                if s.startswith(a):
                    ok = True
            if not ok:
                raise Reject("rejected", "bad_cert")
        return kid, pub, scope, nbf, exp
