"""`cx alert verify`: would a terminal accept this envelope, and if not, which rule says no
(tools/alertverify.py runs the terminal's own verifier; this module reads the inputs and prints).

It parses its own arguments (`cx alert verify` hands them over untouched), so its flags and help
are those of `build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cx.common import CliError, ExitCode, Parser, epoch_utc
from cx.keys import EPOCH
from tools import firmware
from tools.alertverify import (
    LEVELS,
    NOT_REMEMBERED,
    READ_MAX,
    RULES,
    header_cert,
    rule_number,
    run_firmware,
)


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
        raise CliError(f"{name}: {e.strerror or e}", ExitCode.USAGE) from None
    return data.strip()[: READ_MAX + 1]


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}", ExitCode.USAGE) from None
    except ValueError as e:
        raise CliError(f"{path}: {what} is not valid JSON ({e})", ExitCode.USAGE) from None


def terminal_config(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(config for firmware/config.validate, what to blame when it fails)."""
    if args.config is not None:
        if args.trust is not None or args.region is not None:
            raise CliError("give --config, or --trust and --region, not both", ExitCode.USAGE)
        cfg = _read_json(args.config, "the terminal config")
        if not isinstance(cfg, dict):
            raise CliError(f"{args.config}: a terminal config is a JSON object", ExitCode.USAGE)
        return cfg, args.config
    if args.trust is None or args.region is None:
        raise CliError("give --config TERMINAL_CONFIG.json, or --trust ANCHORS.json and "
                       "--region CODE12", ExitCode.USAGE)
    trust = _read_json(args.trust, "the trust list")
    if not isinstance(trust, list):
        raise CliError(f"{args.trust}: a trust list is a JSON array (cx keys anchors)",
                       ExitCode.USAGE)
    # id and mqtt only satisfy the terminal's config check; the verifier never reads them
    return ({"id": "cx-alert-verify", "region": args.region, "trust": trust,
             "mqtt": {"host": "localhost", "port": 1883}}, args.trust)


def _config_error(reason: str, blame: str, args: argparse.Namespace) -> CliError:
    if reason == "region":
        if args.config is None:
            return CliError(f"--region {args.region!r} must be a 12-digit region code "
                            "(province not 00)", ExitCode.USAGE)
        return CliError(f"{blame}: region must be a 12-digit region code", ExitCode.USAGE)
    what = "trust list" if reason.startswith("trust") else "config"
    return CliError(f"{blame}: the terminal would refuse this {what} ({reason})", ExitCode.USAGE)


def _verdict(env: bytes, cfg: dict[str, Any], now: int, synced: bool) -> tuple[dict, str]:
    try:
        return run_firmware(env, cfg, now, synced)
    except firmware.NoMicroPython as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    except firmware.FirmwareError as e:
        raise CliError(str(e)) from None


# --- output ---------------------------------------------------------------------------




def _signer(kid: str | None, crt_kid: str | None) -> str:
    if kid is None:
        return "(not read)"
    return kid + (f" (certified by {crt_kid})" if crt_kid else " (trust anchor)")


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
    anchor, cert = header_cert(env)
    rows: list[tuple[str, str]] = [("signer", _signer(res["kid"], anchor))]
    if res.get("scope"):
        rows.append(("scope", ", ".join(map(str, res["scope"]))))
    if cert is not None:
        scope = cert.get("scope")
        scope = ", ".join(map(str, scope)) if isinstance(scope, list) else repr(scope)
        valid = f"{epoch_utc(cert.get('nbf'))} .. {epoch_utc(cert.get('exp'))}"
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
        rows.append(("issued", epoch_utc(p.get("issued"))))
        rows.append(("expires", epoch_utc(p.get("expires"))))
        covers = res.get("covers") or []
        rows.append(("covers", (", ".join(covers) if covers else "none") +
                     f" (terminal {region})"))
    else:
        rows.append(("id", "(payload not readable)"))
        rows.append(("terminal", region))
    clock = "synced" if synced else "unsynced: rule 9 skipped, rule 10 against this time"
    rows.append(("now", f"{epoch_utc(now)}, clock {clock}"))
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
    res, fw_out = _verdict(env, cfg, now, synced)
    if "config_error" in res:
        raise _config_error(res["config_error"], blame, args)
    reason = res["reason"]
    number = rule_number(reason)
    if args.json:
        print(json.dumps({
            "status": res["status"], "reason": reason, "rule": number, "kid": res["kid"],
            "id": res["id"], "payload": res["payload"], "scope": res["scope"],
            "covers": res["covers"], "region": cfg["region"], "now": now, "synced": synced,
            "remembered": False}, ensure_ascii=False))
        for line in fw_out.splitlines():
            print(f"firmware said: {line}", file=sys.stderr)
    else:
        print_human(res, number, cfg["region"], now, synced, env, fw_out)
    return ExitCode.OK if res["status"] == "accepted" else ExitCode.FAILURE


def cmd_verify(args: argparse.Namespace) -> int:
    return verify(build_parser().parse_args(list(args.extra)))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `verify` to the `cx alert` subparsers; it parses its own arguments (build_parser)."""
    p = sub.add_parser("verify", add_help=False,
                       help="verify an envelope as a terminal would (firmware/alert.py)")
    p.set_defaults(func=cmd_verify, accepts_extra=True)
