"""Would a terminal accept this envelope, and if not, which rule says no (`cx alert verify`:
cx/alert_verify.py reads the inputs and prints).

The verdict comes from the terminal's own verifier, firmware/alert.py, run under the pinned
`micropython` binary by a small driver script: one implementation of alerts.md §4, nothing
re-implemented here. This module only runs the driver and names the rule.

Each run starts from an empty memory of accepted alerts (a fresh temporary folder is the
driver's flash), so rule 11 (`duplicate`) never fires; the output says so.
"""

from __future__ import annotations

import json
from typing import Any

from tools import firmware
from tools.envelope import decode_jws

TIMEOUT = 60.0  # s for the whole micropython run (a verify takes ~10 ms, start-up ~100 ms)
READ_MAX = 65536  # bytes of envelope handed to the terminal; anything longer is too_large anyway

# alerts.md §4: reason code -> (rule number, the check that failed)
RULES: dict[str, tuple[int, str]] = {
    "too_large": (1, "the envelope is at most 8192 bytes"),
    "malformed": (2, "three base64url parts, and the header is a JSON object"),
    "bad_alg": (3, "alg is EdDSA and typ is eb-alert"),
    "unknown_key": (4, "the key is known: a trust anchor (no crt) or the crt's anchor"),
    "bad_cert": (5, "the certificate is valid (alerts.md §2) and its kid equals the header kid"),
    "bad_signature": (6, "the alert signature verifies"),
    "bad_field": (7, "the payload is a JSON object whose fields are valid (alerts.md §3)"),
    "out_of_scope": (8, "every region lies within the signer's scope"),
    "not_yet_valid": (9, "issued <= now + 300"),
    "expired": (10, "now < expires"),
    "duplicate": (11, "(issuer kid, id) not accepted before"),
    "not_for_me": (12, "some region covers this terminal"),
}
SIGNATURE_RULE = 6  # from rule 7 on, the payload has been verified
LEVELS = {1: "red", 2: "orange", 3: "yellow", 4: "blue"}
NOT_REMEMBERED = ("rule 11 (duplicate) is not checked: nothing is remembered between runs of "
                  "cx alert verify")

# Runs inside micropython with firmware/ on MICROPYPATH and the temporary folder as cwd.
_DRIVER = r'''# cx alert verify driver (written by tools/alertverify.py): the terminal's verifier, once.

import alert
import region
import seen


def run():
    req, cfg, bad = read_request()
    if bad is not None:
        return {"config_error": bad}
    env = load("envelope.bin", "rb")
    v = alert.Verifier(cfg["trust"], cfg["region"], seen.Seen(),
                       FixedClock(req["now"], req["synced"]))
    d = v.check(env)
    # from rule 7 on the signature has verified: the payload is the issuer's
    verified = d.status == alert.ACCEPTED or d.reason in req["signed_reasons"]
    p = d.payload
    if p is None and len(env) <= alert.MAX_ENVELOPE:
        p = part(env, 1)
    out = {"status": d.status, "reason": d.reason, "kid": d.kid, "id": d.id,
           "payload": p if verified else None, "claimed": None if verified else p,
           "scope": d.scope, "covers": None, "outside": None}
    regions = p.get("regions") if p is not None else None
    if isinstance(regions, list):
        out["covers"] = [r for r in regions
                         if region.valid_code(r) and region.covers(r, cfg["region"])]
    if verified and d.scope is None:
        # the signer is known: its scope, by the verifier's own code (rules 4, 5)
        try:
            hdr = part(env, 0)
            out["scope"] = v.chain.signer(d.kid, hdr.get("crt"))[1]
            if isinstance(regions, list):
                out["outside"] = [r for r in regions if isinstance(r, str)
                                  and region.valid_code(r) and not region.within(r, out["scope"])]
        except Exception:
            pass
    return out

'''


def run_firmware(env: bytes, cfg: dict[str, Any], now: int, synced: bool) -> tuple[dict, str]:
    """The driver's result object and whatever the firmware printed. Raises
    firmware.NoMicroPython without the micropython binary, firmware.FirmwareError when the run
    fails."""
    signed = [r for r, (n, _) in RULES.items() if n > SIGNATURE_RULE]
    request = {"config": cfg, "now": now, "synced": synced, "signed_reasons": signed}
    return firmware.run(_DRIVER, {"request.json": json.dumps(request), "envelope.bin": env},
                        "the firmware verifier", TIMEOUT)


def rule_number(reason: str | None) -> int | None:
    """The number of the alerts.md §4 rule a reason code names (None: accepted, or unknown)."""
    return RULES[reason][0] if reason is not None and reason in RULES else None


def header_cert(env: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """(anchor kid, certificate payload) named in the header's crt, for display only:
    read without verifying, like everything shown under "not verified"."""
    try:
        hdr, _, _ = decode_jws(env.decode("ascii"))
        crt = hdr.get("crt")
        if not isinstance(crt, str):
            return None, None
        chdr, body, _ = decode_jws(crt)
        cert = json.loads(body)
        kid = chdr.get("kid")
        return (kid if isinstance(kid, str) else None), (cert if isinstance(cert, dict) else None)
    except (ValueError, UnicodeDecodeError):
        return None, None
