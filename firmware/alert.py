# Alert envelope verification: the twelve acceptance rules of alerts.md §4, first failure wins.
import binascii
import hashlib
import json

import b64
import ed25519
import region
from limits import (
    LEVEL_MAX, LEVEL_MIN, MAX_CLIP_FIELD, MAX_ENVELOPE, MAX_EPOCH, MAX_EVENT, MAX_FUTURE, MAX_ID,
    MAX_KID, MAX_LIFETIME, MAX_REFS, MAX_REGIONS, MAX_SCOPE, MAX_TEXT, MAX_URL, MAX_USES,
    MIN_EPOCH, REPEAT_MAX, REPEAT_MIN, VOLUME_MAX,
)
from micropython import const

MAX_CERTS = const(8)  # verified certificates cached by their exact bytes

KINDS = ("alert", "test", "cancel")
TONES = ("siren", "alarm", "chime")
DEFAULT_VOLUME = (100, 90, 80, 70)  # by level 1..4; test plays at 50 (§3)
TEST_VOLUME = const(50)

# status, reason codes (§4, §6)
ACCEPTED = "accepted"
REJECTED = "rejected"
IGNORED = "ignored"


class Reject(Exception):
    """A failed rule: status plus reason code; kid and id when they could be read."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _epoch(v):
    # an epoch second the terminal can hold: limits.py MIN_EPOCH..MAX_EPOCH
    return _is_int(v) and MIN_EPOCH <= v <= MAX_EPOCH


def _json_obj(raw):
    try:
        v = json.loads(raw)
    except Exception:  # bad JSON, bad UTF-8, recursion depth, MemoryError on absurd nesting
        return None
    return v if isinstance(v, dict) else None


def _split(env):
    """Three base64url parts -> (signing input, header bytes, payload b64, signature bytes)."""
    parts = env.split(b".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise Reject(REJECTED, "malformed")
    try:
        header = b64.decode(parts[0])
        sig = b64.decode(parts[2])
        b64.decode(parts[1])  # payload must be base64url too; parsed only after the signature
    except b64.B64Error:
        raise Reject(REJECTED, "malformed")
    return env[: len(parts[0]) + 1 + len(parts[1])], header, parts[1], sig


def valid_id(s):
    """An alert id (alerts.md §3): 1..64 chars of A-Z a-z 0-9 . _ : -"""
    if not isinstance(s, str) or not 1 <= len(s) <= MAX_ID:
        return False
    for c in s:
        if not (c.isalpha() and ord(c) < 128 or c.isdigit() or c in "._:-"):
            return False
    return True


def _str_list(v, lo, hi):
    return isinstance(v, list) and lo <= len(v) <= hi and all(isinstance(x, str) for x in v)


def _prefixes_ok(scope):
    return _str_list(scope, 1, MAX_SCOPE) and all(s.isdigit() and 2 <= len(s) <= 12 for s in scope)


class Verdict:
    """What the verifier decided about one envelope."""

    def __init__(self, status, reason=None, kid=None, aid=None, payload=None, scope=None, h=None):
        self.status = status
        self.reason = reason
        self.kid = kid
        self.id = aid
        self.payload = payload
        self.scope = scope  # the signer's scope prefixes
        self.hash = h


class Verifier:
    def __init__(self, trust, my_region, seen, clock):
        # anchors usable for alerts (§2): kid -> (pub bytes, scope)
        self.anchors = {}
        for a in trust:
            if "alert" in a.get("use", ()):
                try:
                    pub = b64.decode(a["pub"])
                except b64.B64Error:
                    continue  # a broken anchor in config trusts nothing
                if len(pub) == 32:
                    self.anchors[a["kid"]] = (pub, a["scope"])
        self.region = my_region
        self.seen = seen
        self.clock = clock
        self._certs = {}  # crt bytes -> (kid, pub, scope, nbf, exp)

    def check(self, env):
        """Verdict for one envelope (bytes). Never raises on bad input."""
        kid = aid = None
        try:
            if len(env) > MAX_ENVELOPE:  # rule 1
                raise Reject(REJECTED, "too_large")
            h = binascii.hexlify(hashlib.sha256(env).digest()[:8]).decode()
            if self.seen.has_bytes(h, self.clock.now()):
                # identical bytes to an accepted envelope: answered without verifying (§4)
                return self._dup_of_bytes(env, h)
            signing_input, hdr_raw, payload_b64, sig = _split(env)  # rule 2
            hdr = _json_obj(hdr_raw)
            if hdr is None:
                raise Reject(REJECTED, "malformed")
            if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-alert":  # rule 3
                raise Reject(REJECTED, "bad_alg")
            kid = hdr.get("kid")
            if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID:
                kid = None
                raise Reject(REJECTED, "unknown_key")
            pub, scope = self._signer(kid, hdr.get("crt"))  # rules 4, 5
            if len(sig) != 64 or not ed25519.verify(pub, signing_input, sig):  # rule 6
                raise Reject(REJECTED, "bad_signature")
            p = _json_obj(b64.decode(payload_b64))  # only now: §4 "not parsed before"
            if p is None:
                raise Reject(REJECTED, "bad_field")
            if valid_id(p.get("id")):
                aid = p["id"]
            self._fields(p)  # rule 7
            for r in p["regions"]:  # rule 8
                if not region.within(r, scope):
                    raise Reject(REJECTED, "out_of_scope")
            now = self.clock.now()
            if self.clock.synced and p["issued"] > now + MAX_FUTURE:  # rule 9
                raise Reject(REJECTED, "not_yet_valid")
            if now >= p["expires"]:  # rule 10 (against the persisted time while unsynced)
                raise Reject(REJECTED, "expired")
            if self.seen.has(kid, aid, now):  # rule 11
                raise Reject(IGNORED, "duplicate")
            mine = False
            for r in p["regions"]:  # rule 12
                if region.covers(r, self.region):
                    mine = True
            if not mine:
                raise Reject(IGNORED, "not_for_me")
            self.seen.add(kid, aid, p["expires"], h, now)
            return Verdict(ACCEPTED, None, kid, aid, p, scope, h)
        except Reject as r:
            return Verdict(r.status, r.reason, kid, aid)
        except MemoryError:
            return Verdict(REJECTED, "malformed", kid, aid)
        except Exception as e:  # a verifier bug must not take the terminal down; it is logged
            print("verifier error", repr(e))
            return Verdict(REJECTED, "malformed", kid, aid)

    def _dup_of_bytes(self, env, h):
        # The id and kid are read without verifying only to label the receipt; these bytes
        # were verified when first accepted.
        kid = aid = None
        try:
            parts = env.split(b".")
            o = _json_obj(b64.decode(parts[0]))
            kid = o.get("kid") if o else None
            o = _json_obj(b64.decode(parts[1]))
            aid = o.get("id") if o else None
        except Exception:
            pass
        return Verdict(IGNORED, "duplicate", kid, aid, None, None, h)

    def _signer(self, kid, crt):
        """(pub, scope) of the key that signed the alert, after rules 4 and 5."""
        if crt is None:
            a = self.anchors.get(kid)
            if a is None:
                raise Reject(REJECTED, "unknown_key")
            return a
        if not isinstance(crt, str) or len(crt) > MAX_ENVELOPE:
            raise Reject(REJECTED, "bad_cert")
        raw = crt.encode()
        c = self._certs.get(raw)
        if c is None:
            c = self._verify_cert(raw)
            if len(self._certs) >= MAX_CERTS:
                self._certs.pop(next(iter(self._certs)))
            self._certs[raw] = c
        ckid, pub, scope, nbf, exp = c
        now = self.clock.now()
        if not nbf <= now < exp or ckid != kid:
            raise Reject(REJECTED, "bad_cert")
        return pub, scope

    def _verify_cert(self, raw):
        try:
            signing_input, hdr_raw, payload_b64, sig = _split(raw)
        except Reject:
            raise Reject(REJECTED, "bad_cert")
        hdr = _json_obj(hdr_raw)
        if hdr is None:
            raise Reject(REJECTED, "bad_cert")
        anchor = self.anchors.get(hdr.get("kid")) if isinstance(hdr.get("kid"), str) else None
        if anchor is None:  # rule 4: the crt's anchor must be known, with use "alert"
            raise Reject(REJECTED, "unknown_key")
        if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-cert":
            raise Reject(REJECTED, "bad_cert")
        if len(sig) != 64 or not ed25519.verify(anchor[0], signing_input, sig):
            raise Reject(REJECTED, "bad_cert")
        c = _json_obj(b64.decode(payload_b64))
        if c is None:
            raise Reject(REJECTED, "bad_cert")
        kid, pub, scope, use = c.get("kid"), c.get("pub"), c.get("scope"), c.get("use")
        nbf, exp = c.get("nbf"), c.get("exp")
        if not (isinstance(kid, str) and 1 <= len(kid) <= MAX_KID and isinstance(pub, str)
                and isinstance(scope, list) and _prefixes_ok(scope)
                and isinstance(use, list) and _str_list(use, 1, MAX_USES) and "alert" in use
                and _epoch(nbf) and _epoch(exp)):
            raise Reject(REJECTED, "bad_cert")
        try:
            pub = b64.decode(pub)
        except b64.B64Error:
            raise Reject(REJECTED, "bad_cert")
        if len(pub) != 32:
            raise Reject(REJECTED, "bad_cert")
        for s in scope:  # each certificate prefix lies within the anchor's scope
            ok = False
            for a in anchor[1]:
                if s.startswith(a):
                    ok = True
            if not ok:
                raise Reject(REJECTED, "bad_cert")
        return kid, pub, scope, nbf, exp

    def _fields(self, p):
        """Rule 7: the payload's fields (§3). Fills defaults for volume and repeat."""
        bad = Reject(REJECTED, "bad_field")
        if not valid_id(p.get("id")):
            raise bad
        kind = p.get("kind")
        if kind not in KINDS:
            raise bad
        lvl = p.get("level")
        if kind != "cancel" or lvl is not None:
            if not _is_int(lvl) or not LEVEL_MIN <= lvl <= LEVEL_MAX:
                raise bad
        ev = p.get("event")
        if ev is not None and (not isinstance(ev, str) or len(ev) > MAX_EVENT):
            raise bad
        regions = p.get("regions")
        if not _str_list(regions, 1, MAX_REGIONS) or not all(region.valid_code(r) for r in regions):
            raise bad
        issued, expires = p.get("issued"), p.get("expires")
        if not _epoch(issued) or not _epoch(expires):
            raise bad
        if not issued < expires <= issued + MAX_LIFETIME:
            raise bad
        if kind == "cancel":
            refs = p.get("refs")
            if not isinstance(refs, list) or not 1 <= len(refs) <= MAX_REFS:
                raise bad
            for r in refs:
                if not valid_id(r):
                    raise bad
        else:
            self._audio(p.get("audio"))
        vol = p.get("volume")
        if vol is None:
            p["volume"] = TEST_VOLUME if kind == "test" else DEFAULT_VOLUME[(lvl or 4) - 1]
        elif not _is_int(vol) or not 0 <= vol <= VOLUME_MAX:
            raise bad
        rep = p.get("repeat")
        if rep is None:
            p["repeat"] = 1
        elif not _is_int(rep) or not REPEAT_MIN <= rep <= REPEAT_MAX:
            raise bad
        text = p.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
            raise bad

    def _audio(self, a):
        bad = Reject(REJECTED, "bad_field")
        if not isinstance(a, dict) or ("tone" in a) == ("clip" in a):
            raise bad
        if "tone" in a:
            if a["tone"] not in TONES:
                raise bad
            return
        c = a["clip"]
        if not isinstance(c, dict):
            raise bad
        url, sha, n = c.get("url"), c.get("sha256"), c.get("bytes")
        if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL:
            raise bad
        if not isinstance(sha, str) or len(sha) != 64:
            raise bad
        try:
            binascii.unhexlify(sha)
        except ValueError:
            raise bad
        c["sha256"] = sha.lower()
        if not _is_int(n) or not 0 < n <= MAX_CLIP_FIELD:  # type: ignore[operator]
            raise bad
