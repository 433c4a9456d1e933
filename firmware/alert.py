# Alert envelope verification: the twelve acceptance rules of alerts.md §4, first failure wins;
# the key chain (rules 4, 5) is trust.py's, with use "alert".
import binascii
import hashlib

import b64
import ed25519
import region
import trust
from limits import (
    LEVEL_MAX,
    LEVEL_MIN,
    MAX_ENVELOPE,
    MAX_EVENT,
    MAX_FUTURE,
    MAX_LIFETIME,
    MAX_REFS,
    MAX_REGIONS,
    MAX_TEXT,
    REPEAT_MAX,
    REPEAT_MIN,
    VOLUME_MAX,
)
from micropython import const
from trust import Reject

KINDS = ("alert", "test", "cancel")
TONES = ("siren", "alarm", "chime")
DEFAULT_VOLUME = (100, 90, 80, 70)  # by level 1..4; test plays at 50 (§3)
TEST_VOLUME = const(50)

# status, reason codes (§4, §6)
ACCEPTED = "accepted"
REJECTED = "rejected"
IGNORED = "ignored"


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

    report = None  # the arbiter tells an alert's playing/done/... as receipts (see Arbiter._say)


class Verifier:
    def __init__(self, anchors, my_region, seen, clock):
        # the config's "trust" list; only anchors with use "alert" count (§2)
        self.chain = trust.Chain(anchors, "alert", clock)
        self.region = my_region
        self.seen = seen
        self.clock = clock

    def check(self, env):
        """Verdict for one envelope (bytes). Never raises on bad input; MemoryError is the one
        exception that escapes, with nothing remembered of the envelope, so it can be retried."""
        kid = aid = None
        try:
            if len(env) > MAX_ENVELOPE:  # rule 1
                raise Reject(REJECTED, "too_large")
            h = binascii.hexlify(hashlib.sha256(env).digest()[:8]).decode()
            if self.seen.has_bytes(h, self.clock.now()):
                # identical bytes to an accepted envelope: answered without verifying (§4)
                return self._dup_of_bytes(env, h)
            parts = trust.split(env)  # rule 2
            if parts is None:
                raise Reject(REJECTED, "malformed")
            signing_input, hdr_raw, payload_b64, sig = parts
            hdr = trust.json_obj(hdr_raw)
            if hdr is None:
                raise Reject(REJECTED, "malformed")
            if hdr.get("alg") != "EdDSA" or hdr.get("typ") != "eb-alert":  # rule 3
                raise Reject(REJECTED, "bad_alg")
            kid = hdr.get("kid")
            if not trust.valid_kid(kid):
                kid = None
                raise Reject(REJECTED, "unknown_key")
            pub, scope = self.chain.signer(kid, hdr.get("crt"))  # rules 4, 5
            if len(sig) != 64 or not ed25519.verify(pub, signing_input, sig):  # rule 6
                raise Reject(REJECTED, "bad_signature")
            p = trust.json_obj(b64.decode(payload_b64))  # only now: §4 "not parsed before"
            if p is None:
                raise Reject(REJECTED, "bad_field")
            if trust.valid_id(p.get("id")):
                aid = p["id"]
            self._fields(p)  # rule 7
            if not trust.in_scope(p["regions"], scope):  # rule 8
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
            v = Verdict(ACCEPTED, None, kid, aid, p, scope, h)  # before add: nothing can fail after
            self.seen.add(kid, aid, p["expires"], h, now)
            return v
        except Reject as r:
            return Verdict(r.status, r.reason, kid, aid)
        except MemoryError:
            raise  # no verdict: the heap's fault, not the envelope's (intake.py collects, retries)
        except Exception as e:  # a verifier bug must not take the terminal down; it is logged
            print("verifier error", repr(e))
            return Verdict(REJECTED, "malformed", kid, aid)

    def _dup_of_bytes(self, env, h):
        # The id and kid are read without verifying only to label the receipt; these bytes
        # were verified when first accepted.
        kid = aid = None
        try:
            parts = env.split(b".")
            o = trust.json_obj(b64.decode(parts[0]))
            kid = o.get("kid") if o else None
            o = trust.json_obj(b64.decode(parts[1]))
            aid = o.get("id") if o else None
        except Exception:
            pass
        return Verdict(IGNORED, "duplicate", kid, aid, None, None, h)

    def _fields(self, p):
        """Rule 7: the payload's fields (§3). Fills defaults for volume and repeat."""
        bad = Reject(REJECTED, "bad_field")
        if not trust.valid_id(p.get("id")):
            raise bad
        kind = p.get("kind")
        if kind not in KINDS:
            raise bad
        lvl = p.get("level")
        if (kind != "cancel" or lvl is not None) and (
                not trust.is_int(lvl) or not LEVEL_MIN <= lvl <= LEVEL_MAX):
            raise bad
        ev = p.get("event")
        if ev is not None and (not isinstance(ev, str) or len(ev) > MAX_EVENT):
            raise bad
        regions = p.get("regions")
        if not trust.str_list(regions, 1, MAX_REGIONS) or not all(region.valid_code(r) for r in regions):
            raise bad
        issued, expires = p.get("issued"), p.get("expires")
        if not trust.epoch(issued) or not trust.epoch(expires):
            raise bad
        if not issued < expires <= issued + MAX_LIFETIME:
            raise bad
        if kind == "cancel":
            refs = p.get("refs")
            if not isinstance(refs, list) or not 1 <= len(refs) <= MAX_REFS:
                raise bad
            for r in refs:
                if not trust.valid_id(r):
                    raise bad
        else:
            self._audio(p.get("audio"))
        vol = p.get("volume")
        if vol is None:
            p["volume"] = TEST_VOLUME if kind == "test" else DEFAULT_VOLUME[(lvl or 4) - 1]
        elif not trust.is_int(vol) or not 0 <= vol <= VOLUME_MAX:
            raise bad
        rep = p.get("repeat")
        if rep is None:
            p["repeat"] = 1
        elif not trust.is_int(rep) or not REPEAT_MIN <= rep <= REPEAT_MAX:
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
        if not trust.clip_ok(a["clip"]):
            raise bad
