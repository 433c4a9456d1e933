"""`cx ota`: build a release from this checkout (ota.md §1-2), explain whether a terminal would
take one (its own rules, agent/otacheck.py, run under micropython), and say what an update from
one release to another downloads. The library is tools/release.py; this module reads the command
line and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cx import ota_fleet
from cx.common import CliError, ExitCode, dump, epoch_utc, folder, table
from cx.keys import EPOCH
from tools import firmware, release, terminal_files
from tools.keys import KeyFileError, load_keyfile
from tools.release import RULES, ReleaseError


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]




def _kib(n: int) -> str:
    return f"{n} B" if n < 10240 else f"{n / 1024:.1f} KiB"


# --- cx ota build ---------------------------------------------------------------------------


def _empty_folder(path: Path) -> bool:
    """--out made ready before the compile (a path that cannot be used costs none): created if
    missing, refused unless empty. True when this run created it."""
    existed = path.exists()
    folder(path, "--out")
    try:
        if any(path.iterdir()):
            raise CliError(f"--out {path} is not empty: give a new or empty folder (a release "
                           "folder holds one release)", ExitCode.USAGE)
    except OSError as e:
        raise CliError(f"--out {path}: {e.strerror or e}", ExitCode.USAGE) from None
    return not existed


def cmd_build(args: argparse.Namespace) -> int:
    try:
        release.check_version(args.version)
        if args.min_version is not None:
            release.check_version(args.min_version, "--min-version")
    except ReleaseError as e:
        raise CliError(f"--{e}" if str(e).startswith("version") else str(e),
                       ExitCode.USAGE) from None
    codes = _csv(args.regions)
    try:
        key = load_keyfile(args.key)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    now = int(time.time())
    issued = now if args.issued is None else args.issued
    try:
        crt = release.read_cert(args.crt) if args.crt is not None else None
        # the signer and the regions first: a refusal costs no compile
        _, scope = release.check_signer(key, crt, now)
        release.check_regions(codes, scope, key.kid)
    except ReleaseError as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    out = Path(args.out)
    made = _empty_folder(out)
    try:
        jws, blobs, summary = release.build(
            terminal_files.release_files(), key, version=args.version,
            min_version=args.min_version, regions_=codes, issued=issued, now=now, crt=crt,
            downgrade=True if args.downgrade else None)
    except ReleaseError as e:
        if made:
            out.rmdir()  # a refused build leaves nothing behind
        raise CliError(str(e)) from None
    release.write(out, jws, blobs, summary)
    if args.json:
        dump({**summary, "manifest_bytes": len(jws), "out": str(out)})
    else:
        total = sum(f["bytes"] for f in summary["files"])
        print(f"release {summary['version']} (kid {key.kid}, {len(summary['files'])} files, "
              f"{_kib(total)}, {_kib(summary['zbytes'])} compressed, manifest {len(jws)} bytes) "
              f"for {','.join(codes)} -> {out}")
    return ExitCode.OK


# --- cx ota verify --------------------------------------------------------------------------


def _read_trust(path: str) -> list[Any]:
    try:
        trust = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}", ExitCode.USAGE) from None
    except ValueError as e:
        raise CliError(f"{path}: the trust list is not valid JSON ({e})", ExitCode.USAGE) from None
    if not isinstance(trust, list):
        raise CliError(f"{path}: a trust list is a JSON array (cx keys anchors)", ExitCode.USAGE)
    return trust


def _rule_lines(reason: str | None) -> list[str]:
    """One line per rule of ota.md §3: ok, FAILED (the first failure), not reached, or not
    checked here (13: the terminal's free flash)."""
    failed = release.rule_number(reason)
    lines = []
    for n, text in sorted(RULES.values()):
        if n > release.CHECKED:
            state = "not checked here"
            text += " (needs the terminal's flash)"
        elif failed is None or n < failed:
            state = "ok"
        elif n == failed:
            state = "FAILED"
            text += f": {reason}"
        else:
            state = "not reached"
        lines.append(f"  rule {n:>2} {state:<16} {text}")
    return lines


def print_verdict(res: dict[str, Any], args: argparse.Namespace, now: int, fw_out: str) -> None:
    reason = res["reason"]
    print("accepted" if reason is None else f"refused: {reason}")
    for line in _rule_lines(reason):
        print(line)
    hdr = res.get("header") or {}
    p = res["payload"] if res["payload"] is not None else res["claimed"]
    rows: list[tuple[str, str]] = []
    kid = hdr.get("kid")
    if kid is not None:
        rows.append(("signer", f"{kid} (certified)" if hdr.get("crt") else f"{kid} (trust anchor)"))
    if res.get("scope"):
        rows.append(("scope", ", ".join(map(str, res["scope"]))))
    if p is not None:
        if res["payload"] is None:
            rows.append(("payload", "NOT VERIFIED: the fields below are as written"))
        rows.append(("product", str(p.get("product"))))
        rows.append(("version", f"{p.get('version')} (running {args.running})"
                     + (", downgrade" if p.get("downgrade") is True else "")))
        if p.get("min_version") is not None:
            rows.append(("min", str(p.get("min_version"))))
        regions = p.get("regions")
        if isinstance(regions, list):
            rows.append(("regions", ", ".join(map(str, regions)) or "(none)"))
        if res.get("outside"):
            rows.append(("outside", ", ".join(res["outside"]) + " (not within the scope)"))
        covers = res.get("covers") or []
        rows.append(("covers", (", ".join(covers) if covers else "none")
                     + f" (terminal {args.region})"))
        rows.append(("issued", epoch_utc(p.get("issued"))))
        files = p.get("files")
        if isinstance(files, list):
            total = sum(f.get("bytes", 0) for f in files if isinstance(f, dict)
                        and isinstance(f.get("bytes"), int))
            rows.append(("files", f"{len(files)}, {_kib(total)}"))
    else:
        rows.append(("payload", "(not readable)"))
        rows.append(("terminal", args.region))
    rows.append(("now", epoch_utc(now)))
    for k, v in rows:
        print(f"  {k:<9} {v}")
    for line in fw_out.splitlines():
        print(f"  firmware said: {line}")


def cmd_verify(args: argparse.Namespace) -> int:
    if release.parse_version(args.running) is None:
        raise CliError(f"--running {args.running!r} must be MAJOR.MINOR.PATCH (the terminal's "
                       "version, as its heartbeat's v says)", ExitCode.USAGE)
    trust = _read_trust(args.trust)
    try:
        manifest = release.read_manifest(args.release)
    except ReleaseError as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    now = int(time.time()) if args.now is None else args.now
    try:
        res, fw_out = release.check_with_firmware(manifest, trust, args.running, args.region, now)
    except firmware.NoMicroPython as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    except firmware.FirmwareError as e:
        raise CliError(str(e)) from None
    if "config_error" in res:
        why = res["config_error"]
        if why == "region":
            raise CliError(f"--region {args.region!r} must be a 12-digit region code (province "
                           "not 00)", ExitCode.USAGE)
        raise CliError(f"{args.trust}: the terminal would refuse this trust list ({why})",
                       ExitCode.USAGE)
    reason = res["reason"]
    if args.json:
        dump({"status": "accepted" if reason is None else "refused", "reason": reason,
              "rule": release.rule_number(reason), "checked": list(range(1, release.CHECKED + 1)),
              "not_checked": [13], "kid": (res.get("header") or {}).get("kid"),
              "payload": res["payload"], "scope": res["scope"], "covers": res["covers"],
              "region": args.region, "running": args.running, "now": now})
        for line in fw_out.splitlines():
            print(f"firmware said: {line}", file=sys.stderr)
    else:
        print_verdict(res, args, now, fw_out)
    return ExitCode.OK if reason is None else ExitCode.FAILURE


# --- cx ota diff ----------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        old, new = release.read_summary(args.old), release.read_summary(args.new)
    except ReleaseError as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    d = release.diff(old, new)
    if args.json:
        dump(d)
        return ExitCode.OK
    print(f"{d['old']} -> {d['new']}: {d['count']} of {d['full_count']} files to download, "
          f"{_kib(d['zbytes'])} of {_kib(d['full_zbytes'])} compressed ({d['percent']:g} %)")
    if d["files"]:
        table(["path", "bytes", "zbytes", "sha256"],
              [(f["path"], f["bytes"], f["zbytes"], f["sha256"][:16]) for f in d["files"]])
    return ExitCode.OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ota = subparsers.add_parser("ota", help="build, verify and compare OTA releases")
    sub = ota.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("build", help="build and sign a release of this checkout (ota.md §1-2)")
    p.add_argument("--version", required=True, metavar="V", help="MAJOR.MINOR.PATCH, e.g. 1.4.0")
    p.add_argument("--min-version", metavar="V",
                   help="terminals below this version refuse it (too_old)")
    p.add_argument("--regions", required=True, metavar="R1,R2",
                   help="12-digit region codes, comma-separated, within the key's scope")
    p.add_argument("--key", required=True, metavar="KEY.json",
                   help="root or issuer key file with use ota (cx keys --use ota)")
    p.add_argument("--crt", metavar="CRT", help="the issuer certificate (default: the key's)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="new or empty folder: manifest.jws, files/<sha256>.z, release.json")
    p.add_argument("--downgrade", action="store_true",
                   help="let terminals on a higher version install it")
    p.add_argument("--issued", type=EPOCH, metavar="EPOCH", help="issue time (default now)")
    p.add_argument("--json", action="store_true", help="print release.json and the folder")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="would a terminal take this release, rule by rule "
                       "(agent/otacheck.py under micropython)")
    p.add_argument("release", metavar="DIR|MANIFEST", help="release folder or manifest.jws")
    p.add_argument("--trust", required=True, metavar="ANCHORS.json",
                   help="the terminal's trust anchors (cx keys anchors)")
    p.add_argument("--running", required=True, metavar="VERSION",
                   help="the version the terminal runs")
    p.add_argument("--region", required=True, metavar="CODE12",
                   help="the terminal's 12-digit region code")
    p.add_argument("--now", type=EPOCH, metavar="EPOCH", help="the terminal's time (default now)")
    p.add_argument("--json", action="store_true",
                   help="print {status, reason, rule, kid, payload, ...}")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("diff", help="what a terminal on OLD downloads to update to NEW")
    p.add_argument("old", metavar="OLD", help="release folder or its release.json")
    p.add_argument("new", metavar="NEW", help="release folder or its release.json")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_diff)

    ota_fleet.register_into(sub)  # upload, serve, rollout, status, pause, resume, abort
