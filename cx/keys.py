"""`cx keys`: make root and issuer keys, print trust anchors, show a key file (tools/keys.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cx.common import CliError, ExitCode, number
from tools.envelope import MAX_EPOCH, MIN_EPOCH, KeyPair, check_kid, check_scope, check_use
from tools.keys import (
    DAY,
    NBF_BACKDATE,
    KeyFileError,
    describe,
    fmt_time,
    keypair_to_json,
    load_keyfile,
    new_issuer,
    save_keyfile,
    write_private,
)

MAX_DAYS = 36500  # --days: a century is already no expiry; more is a typo
EPOCH = number(int, MIN_EPOCH, MAX_EPOCH)
"""--nbf, --exp, --issued, --now: epoch seconds a terminal accepts (firmware/limits.py)."""
T = TypeVar("T")



def signing_key(path: str, crt: str | None = None) -> KeyPair:
    """A key file (`cx keys`), with --crt FILE as its certificate instead of its own: what
    `cx broadcast schedule push` and `cx broadcast live` sign with."""
    try:
        key = load_keyfile(path)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    if crt is not None:
        try:
            key.crt = Path(crt).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"--crt {crt}: {getattr(e, 'strerror', None) or e}",
                           ExitCode.USAGE) from None
    return key


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _usage(fn: Callable[..., T], *a: Any) -> T:
    try:
        return fn(*a)
    except ValueError as e:
        raise CliError(str(e), ExitCode.USAGE) from None


def _load(path: str) -> KeyPair:
    try:
        return load_keyfile(path)
    except KeyFileError as e:
        raise CliError(str(e)) from None


def _save(path: str, kp: KeyPair, force: bool) -> None:
    try:
        save_keyfile(path, kp, force=force)
    except KeyFileError as e:
        raise CliError(str(e)) from None


def cmd_root(args: argparse.Namespace) -> int:
    kid = _usage(check_kid, args.kid)
    scope = _usage(check_scope, _csv(args.scope))
    use = _usage(check_use, _csv(args.use))
    kp = KeyPair.generate("root", kid, scope, use)
    _save(args.out, kp, args.force)
    print(f"root {kp.kid}: scope {','.join(kp.scope)}, use {','.join(kp.use)} -> {args.out}")
    return 0


def cmd_issuer(args: argparse.Namespace) -> int:
    kid = _usage(check_kid, args.kid)
    scope = _usage(check_scope, _csv(args.scope))
    use = _usage(check_use, _csv(args.use))
    if args.days is not None and args.exp is not None:
        raise CliError("give --days or --exp, not both", ExitCode.USAGE)
    now = int(time.time())
    nbf = args.nbf if args.nbf is not None else now - NBF_BACKDATE
    exp = args.exp if args.exp is not None else nbf + (args.days or 365) * DAY
    root = _load(args.root)
    kp = _usage(new_issuer, root, kid, scope, use, nbf, exp)
    _save(args.out, kp, args.force)
    print(f"issuer {kp.kid}: scope {','.join(kp.scope)}, use {','.join(kp.use)}, "
          f"certified by {root.kid}, valid {fmt_time(nbf)} .. {fmt_time(exp)} -> {args.out}")
    return 0


def cmd_anchors(args: argparse.Namespace) -> int:
    anchors: dict[str, dict[str, Any]] = {}
    for path in args.roots:
        kp = _load(path)
        if kp.kind != "root":
            raise CliError(f"{path} is an issuer key; trust anchors come from root keys",
                           ExitCode.USAGE)
        prev = anchors.get(kp.kid)
        if prev is not None and prev["pub"] != kp.pub_b64:
            raise CliError(f"two different roots share kid {kp.kid}")
        anchors[kp.kid] = kp.anchor()
    text = json.dumps(list(anchors.values()), indent=2) + "\n"
    if args.out:
        try:
            write_private(args.out, text, force=args.force, mode=0o644)
        except KeyFileError as e:
            raise CliError(str(e)) from None
        print(f"{len(anchors)} trust anchor(s) -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    kp = _load(args.file)
    if args.json:
        doc = keypair_to_json(kp)
        doc.pop("priv", None)
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(describe(kp)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser("keys", help="make and inspect root and issuer keys")
    sub = keys.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("root", help="make a root key (trust anchor)")
    p.add_argument("--kid", required=True, help="key id, e.g. prov-34-root-2026")
    p.add_argument("--scope", required=True, help="region prefixes, comma-separated: 34[,35]")
    p.add_argument("--use", default="alert",
                   help="what the key signs, comma-separated: alert, ota (releases), daily "
                        "(broadcast schedules); e.g. alert,daily (default alert)")
    p.add_argument("--out", required=True, help="key file to write (0600)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_root)

    p = sub.add_parser("issuer", help="make an issuer key certified by a root")
    p.add_argument("--kid", required=True, help="key id, e.g. cty-341122-2026")
    p.add_argument("--root", required=True, help="root key file that certifies it")
    p.add_argument("--scope", required=True, help="region prefixes within the root's scope")
    p.add_argument("--use", default="alert",
                   help="what the key signs, comma-separated: alert, ota (releases), daily "
                        "(broadcast schedules); e.g. alert,daily (default alert)")
    p.add_argument("--days", type=number(int, 1, MAX_DAYS),
                   help=f"validity in days from --nbf, 1..{MAX_DAYS} (default 365)")
    p.add_argument("--nbf", type=EPOCH, metavar="EPOCH",
                   help="valid from, epoch s (default now - 5 min)")
    p.add_argument("--exp", type=EPOCH, metavar="EPOCH",
                   help="valid until, epoch s (instead of --days)")
    p.add_argument("--out", required=True, help="key file to write (0600)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_issuer)

    p = sub.add_parser("anchors", help="print the trust anchors of root keys for a terminal config")
    p.add_argument("roots", nargs="+", metavar="ROOTFILE")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=cmd_anchors)

    p = sub.add_parser("show", help="summarize a key file (never the private key)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="public parts as JSON")
    p.set_defaults(func=cmd_show)
