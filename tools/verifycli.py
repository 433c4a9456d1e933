"""`cx alert verify`: would a terminal accept this envelope, and if not, which rule says no.

The verdict comes from the terminal's own verifier, firmware/alert.py, run under the pinned
`micropython` binary by a small driver script: one implementation of alerts.md §4, nothing
re-implemented here. This module only reads the inputs, runs the driver and prints.

Each run starts from an empty memory of accepted alerts (a fresh temporary folder is the
driver's flash), so rule 11 (`duplicate`) never fires; the output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cx.keys import EPOCH
from tools import firmware
from tools.cx import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, Parser

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
_DRIVER = r'''# cx alert verify driver (written by tools/verifycli.py): the terminal's verifier, once.
import json

import alert
import b64
import config
import region
import seen


class FixedClock:
    # all alert.Verifier needs of clock.Clock; clock.py itself needs board
    def __init__(self, t, synced):
        self.t = t
        self.synced = synced

    def now(self):
        return self.t


def load(name, mode):
    f = open(name, mode)
    try:
        return f.read()
    finally:
        f.close()


def part(env, i):
    # part i of the envelope as JSON, for display only (never for a decision)
    try:
        v = json.loads(b64.decode(env.split(b".")[i]))
        return v if isinstance(v, dict) else None
    except Exception:
        return None


def run():
    req = json.loads(load("request.json", "r"))
    env = load("envelope.bin", "rb")
    try:
        cfg = config.validate(req["config"])
    except config.ConfigError as e:
        return {"config_error": e.reason}
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
            out["scope"] = v._signer(d.kid, hdr.get("crt"))[1]
            if isinstance(regions, list):
                out["outside"] = [r for r in regions if isinstance(r, str)
                                  and region.valid_code(r) and not region.within(r, out["scope"])]
        except Exception:
            pass
    return out


try:
    res = run()
except Exception as e:  # MemoryError included: report it, never a bare traceback
    res = {"error": repr(e)}
f = open("result.json", "w")
f.write(json.dumps(res))
f.close()
'''


def build_parser() -> Parser:
    p = Parser(
        prog="cx alert verify",
        description="Explain whether a terminal would accept an envelope, by running the "
                    "firmware's own verifier (firmware/alert.py) under micropython.")
    p.add_argument("envelope", metavar="FILE", help="envelope file, or - for stdin")
    p.add_argument("--config", metavar="TERMINAL_CONFIG.json",
                   help="terminal config (as for cx emu run): its trust anchors and region")
    p.add_argument("--trust", metavar="ANCHORS.json", help="trust anchors (cx keys anchors)")
    p.add_argument("--region", metavar="CODE12", help="the terminal's 12-digit region code")
    p.add_argument("--now", type=EPOCH, metavar="EPOCH", help="the terminal's time (default: now)")
    p.add_argument("--unsynced", action="store_true",
                   help="clock not set since boot: rule 9 skipped, rule 10 against --now")
    p.add_argument("--json", action="store_true",
                   help="print {status, reason, rule, kid, id, payload, ...}")
    return p


def _read_envelope(name: str) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(READ_MAX + 2)
        else:
            with open(name, "rb") as f:
                data = f.read(READ_MAX + 2)
    except OSError as e:
        raise CliError(f"{name}: {e.strerror or e}", EXIT_USAGE) from None
    return data.strip()[: READ_MAX + 1]


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}", EXIT_USAGE) from None
    except ValueError as e:
        raise CliError(f"{path}: {what} is not valid JSON ({e})", EXIT_USAGE) from None


def terminal_config(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(config for firmware/config.validate, what to blame when it fails)."""
    if args.config is not None:
        if args.trust is not None or args.region is not None:
            raise CliError("give --config, or --trust and --region, not both", EXIT_USAGE)
        cfg = _read_json(args.config, "the terminal config")
        if not isinstance(cfg, dict):
            raise CliError(f"{args.config}: a terminal config is a JSON object", EXIT_USAGE)
        return cfg, args.config
    if args.trust is None or args.region is None:
        raise CliError("give --config TERMINAL_CONFIG.json, or --trust ANCHORS.json and "
                       "--region CODE12", EXIT_USAGE)
    trust = _read_json(args.trust, "the trust list")
    if not isinstance(trust, list):
        raise CliError(f"{args.trust}: a trust list is a JSON array (cx keys anchors)",
                       EXIT_USAGE)
    # id and mqtt only satisfy the terminal's config check; the verifier never reads them
    return ({"id": "cx-alert-verify", "region": args.region, "trust": trust,
             "mqtt": {"host": "localhost", "port": 1883}}, args.trust)


def _config_error(reason: str, blame: str, args: argparse.Namespace) -> CliError:
    if reason == "region":
        if args.config is None:
            return CliError(f"--region {args.region!r} must be a 12-digit region code "
                            "(province not 00)", EXIT_USAGE)
        return CliError(f"{blame}: region must be a 12-digit region code", EXIT_USAGE)
    what = "trust list" if reason.startswith("trust") else "config"
    return CliError(f"{blame}: the terminal would refuse this {what} ({reason})", EXIT_USAGE)


def run_firmware(env: bytes, cfg: dict[str, Any], now: int, synced: bool) -> tuple[dict, str]:
    """The driver's result object and whatever the firmware printed."""
    signed = [r for r, (n, _) in RULES.items() if n > SIGNATURE_RULE]
    request = {"config": cfg, "now": now, "synced": synced, "signed_reasons": signed}
    try:
        return firmware.run(_DRIVER, {"request.json": json.dumps(request), "envelope.bin": env},
                            "the firmware verifier", TIMEOUT)
    except firmware.NoMicroPython as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except firmware.FirmwareError as e:
        raise CliError(str(e)) from None


# --- output ---------------------------------------------------------------------------


def _utc(t: object) -> str:
    if isinstance(t, bool) or not isinstance(t, int):
        return repr(t)
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) + f" ({t})"
    except (OverflowError, OSError, ValueError):
        return str(t)


def _signer(kid: str | None, crt_kid: str | None) -> str:
    if kid is None:
        return "(not read)"
    return kid + (f" (certified by {crt_kid})" if crt_kid else " (trust anchor)")


def _header_cert(env: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """(anchor kid, certificate payload) named in the header's crt, for display only:
    read without verifying, like everything shown under "not verified"."""
    from tools.envelope import decode_jws

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


def print_human(res: dict[str, Any], rule: int | None, region: str, now: int, synced: bool,
                env: bytes, fw_out: str) -> None:
    status, reason = res["status"], res["reason"]
    print(status if reason is None else f"{status}: {reason}")
    if rule is not None and reason in RULES:
        print(f"  rule {rule} failed: {RULES[reason][1]}")
    else:
        print("  passed every rule of alerts.md §4 that a single run can check")
    verified = res["payload"] is not None
    p = res["payload"] if verified else res["claimed"]
    anchor, cert = _header_cert(env)
    rows: list[tuple[str, str]] = [("signer", _signer(res["kid"], anchor))]
    if res.get("scope"):
        rows.append(("scope", ", ".join(map(str, res["scope"]))))
    if cert is not None:
        scope = cert.get("scope")
        scope = ", ".join(map(str, scope)) if isinstance(scope, list) else repr(scope)
        valid = f"{_utc(cert.get('nbf'))} .. {_utc(cert.get('exp'))}"
        rows.append(("cert", f"for {cert.get('kid')}, scope {scope}, valid {valid}"))
    if p is not None:
        if not verified:
            rows.append(("payload", "NOT VERIFIED: the fields below are as written"))
        aid = res["id"] if res["id"] is not None else p.get("id")
        rows.append(("id", str(aid)))
        kind, level = p.get("kind"), p.get("level")
        what = str(kind)
        if level is not None:
            what += f", level {level}" + (f" ({LEVELS[level]})" if level in LEVELS else "")
        rows.append(("kind", what))
        regions = p.get("regions")
        if isinstance(regions, list):
            rows.append(("regions", ", ".join(map(str, regions)) or "(none)"))
            if res.get("outside"):
                rows.append(("outside", ", ".join(res["outside"]) + " (not within the scope)"))
        rows.append(("issued", _utc(p.get("issued"))))
        rows.append(("expires", _utc(p.get("expires"))))
        covers = res.get("covers") or []
        rows.append(("covers", (", ".join(covers) if covers else "none") +
                     f" (terminal {region})"))
    else:
        rows.append(("id", "(payload not readable)"))
        rows.append(("terminal", region))
    clock = "synced" if synced else "unsynced: rule 9 skipped, rule 10 against this time"
    rows.append(("now", f"{_utc(now)}, clock {clock}"))
    for k, v in rows:
        print(f"  {k:<9} {v}")
    print(f"  note: {NOT_REMEMBERED}")
    if fw_out:
        for line in fw_out.splitlines():
            print(f"  firmware said: {line}")


def verify(args: argparse.Namespace) -> int:
    cfg, blame = terminal_config(args)
    env = _read_envelope(args.envelope)
    now = int(time.time()) if args.now is None else args.now
    synced = not args.unsynced
    res, fw_out = run_firmware(env, cfg, now, synced)
    if "config_error" in res:
        raise _config_error(res["config_error"], blame, args)
    reason = res["reason"]
    rule = RULES[reason][0] if reason in RULES else None
    if args.json:
        print(json.dumps({
            "status": res["status"], "reason": reason, "rule": rule, "kid": res["kid"],
            "id": res["id"], "payload": res["payload"], "scope": res["scope"],
            "covers": res["covers"], "region": cfg["region"], "now": now, "synced": synced,
            "remembered": False}, ensure_ascii=False))
        for line in fw_out.splitlines():
            print(f"firmware said: {line}", file=sys.stderr)
    else:
        print_human(res, rule, cfg["region"], now, synced, env, fw_out)
    return EXIT_OK if res["status"] == "accepted" else EXIT_FAILURE


def main(argv: list[str]) -> int:
    """Entry point for `cx alert verify` (tools.alertcli delegates here)."""
    try:
        return verify(build_parser().parse_args(argv))
    except CliError as e:
        print(f"cx: error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
