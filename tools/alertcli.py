"""`cx alert`: sign an alert with an issuer (or root) key and publish it (alerts.md §1, §6).

`cx alert verify` is delegated to tools.verifycli.main(argv) once that module exists.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cx.keys import EPOCH
from tools import alertstatus
from tools.cx import (
    EXIT_FAILURE,
    EXIT_NOT_AUTHORIZED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    db_url_if_any,
    host_port,
    number,
)
from tools.envelope import (
    AUDIO_TONES,
    KINDS,
    LEVELS,
    MAX_CLIP,
    MAX_EXPIRY,
    MIN_CLIP,
    REPEATS,
    VOLUMES,
    KeyPair,
    decode_jws,
    make_alert_payload,
    region_prefix,
    scope_covers,
    sign_alert,
    topics_for,
)
from tools.keys import KeyFileError, load_keyfile
from tools.mqttsession import (
    BadCredential,
    BrokerAuth,
    BrokerUnavailable,
    ConnectRefused,
    NotAuthorized,
    Session,
    not_authorized,
)

DEFAULT_EXPIRES = 3600  # s
DEFAULT_TIMEOUT = 10.0  # s: connect + every PUBACK
MAX_TIMEOUT = 3600.0  # s: an hour is already no timeout (and paho's keepalive, 2x it, <= 65535)
TIMEOUT = number(float, 0, MAX_TIMEOUT, lo_open=True)
"""--timeout of `cx alert send` and `cx alert from-cap`."""
TEST_DEFAULT_LEVEL = 4
TEST_DEFAULT_TONE = "chime"
CRED_ENV = "CX_ALERT_CRED"


# --- library-ish helpers (used by tests and other tools) ------------------------------


def check_signer(key: KeyPair, regions: list[str], now: int) -> None:
    """Refuse what every terminal would reject: out of scope, bad or expired certificate."""
    if key.priv is None:
        raise CliError(f"key {key.kid} has no private key")
    if "alert" not in key.use:
        raise CliError(f"key {key.kid} is not for alerts (use {','.join(key.use)})")
    if key.kind == "issuer":
        if not key.crt:
            raise CliError(f"issuer key {key.kid} has no certificate")
        try:
            _, body, _ = decode_jws(key.crt)
            cert = json.loads(body)
        except ValueError as e:
            raise CliError(f"certificate of {key.kid} is unreadable: {e}") from None
        if cert.get("kid") != key.kid or cert.get("pub") != key.pub_b64:
            raise CliError(f"certificate of {key.kid} is for another key")
        nbf, exp = cert.get("nbf", 0), cert.get("exp", 0)
        if now < nbf:
            raise CliError(f"certificate of {key.kid} is not valid before {nbf} (now {now})")
        if now >= exp:
            raise CliError(f"certificate of {key.kid} expired at {exp} (now {now})")
    for r in regions:
        if not scope_covers(key.scope, region_prefix(r)):
            raise CliError(f"region {r} lies outside key {key.kid}'s scope "
                           f"{','.join(key.scope)}", EXIT_USAGE)


LOGIN_HINT = "check --cred (the dispatcher.cred of 'cx fleet broker-config')"


def publish(envelope: str, topics: list[str], host: str, port: int,
            timeout: float = DEFAULT_TIMEOUT, auth: BrokerAuth | None = None) -> None:
    """Publish QoS 1 to every topic and wait for each PUBACK (tools/mqttsession.py). CliError(3)
    when unreachable, CliError(4) when the broker refuses the login or a publish."""
    try:
        with Session(host, port, auth, name="cx-alert", timeout=timeout,
                     login_hint=LOGIN_HINT) as s:
            refused = s.publish(topics, envelope)
    except NotAuthorized as e:
        raise CliError(str(e), EXIT_NOT_AUTHORIZED) from None
    except ConnectRefused as e:
        raise CliError(str(e), EXIT_FAILURE) from None
    except BrokerUnavailable as e:
        raise CliError(str(e), EXIT_UNREACHABLE) from None
    if refused:
        sent = len(topics) - len(refused)
        code = EXIT_NOT_AUTHORIZED if any(not_authorized(rc) for _, rc in refused) \
            else EXIT_FAILURE
        raise CliError(f"broker {s.where} refused the alert on "
                       f"{', '.join(t for t, _ in refused)}: {refused[0][1]} ({s.user}; only "
                       f"the dispatcher credential may publish alerts)"
                       + (f"; {sent} other topic(s) were sent" if sent else ""), code)


Destination = tuple[str, int, BrokerAuth | None]
"""Where `dispatch` publishes: host, port and the login (None: anonymous, plain MQTT)."""


def destination(args: argparse.Namespace) -> Destination | None:
    """--broker HOST:PORT with its login (--cred, default $CX_ALERT_CRED; --cafile); None when
    the envelope is only printed. A credential file that is missing or not a credential is a
    usage error, found before anything is signed or fetched."""
    if not args.broker:
        return None
    host, port = host_port(args.broker)
    try:
        auth = BrokerAuth.from_files(args.cred or os.environ.get(CRED_ENV) or None, args.cafile)
    except BadCredential as e:
        raise CliError(str(e), EXIT_USAGE) from None
    return host, port, auth


def add_broker_login(p: argparse.ArgumentParser) -> None:
    """--cred and --cafile, named as for `cx fleet serve` and `cx fleet cmd`."""
    p.add_argument("--cred", metavar="FILE",
                   help="broker login: the dispatcher.cred written by 'cx fleet broker-config', "
                        f"the only user allowed to publish alerts (default ${CRED_ENV})")
    p.add_argument("--cafile", metavar="FILE", help="CA certificate: connect with TLS")


def _audio(args: argparse.Namespace) -> tuple[str | None, dict[str, Any] | None]:
    clip_flags = [f for f, v in (("--clip-url", args.clip_url), ("--clip-sha256", args.clip_sha256),
                                 ("--clip-bytes", args.clip_bytes), ("--clip-file", args.clip_file))
                  if v is not None]
    if args.tone and clip_flags:
        raise CliError(f"give --tone or a clip ({', '.join(clip_flags)}), not both", EXIT_USAGE)
    if not clip_flags:
        return args.tone, None
    if args.clip_url is None:
        raise CliError("a clip needs --clip-url", EXIT_USAGE)
    if args.clip_file is not None:
        if args.clip_sha256 is not None or args.clip_bytes is not None:
            raise CliError("give --clip-file or --clip-sha256/--clip-bytes, not both", EXIT_USAGE)
        try:
            data = Path(args.clip_file).read_bytes()
        except OSError as e:
            raise CliError(f"{args.clip_file}: {e.strerror or e}") from None
        return None, {"url": args.clip_url, "sha256": hashlib.sha256(data).hexdigest(),
                      "bytes": len(data)}
    if args.clip_sha256 is None or args.clip_bytes is None:
        raise CliError("a clip needs --clip-sha256 and --clip-bytes (or --clip-file)", EXIT_USAGE)
    return None, {"url": args.clip_url, "sha256": args.clip_sha256, "bytes": args.clip_bytes}


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


# --- cx alert send / verify -----------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    tone, clip = _audio(args)
    level = args.level
    if args.kind == "test":
        level = TEST_DEFAULT_LEVEL if level is None else level
        if tone is None and clip is None:
            tone = TEST_DEFAULT_TONE
    regions = _csv(args.regions) or []
    try:
        payload = make_alert_payload(
            regions=regions, kind=args.kind, level=level, tone=tone, clip=clip,
            issued=args.issued, expires_in=args.expires, id=args.id, refs=_csv(args.refs),
            volume=args.volume, repeat=args.repeat, event=args.event, text=args.text)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    broker = destination(args)
    try:
        key = load_keyfile(args.key)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    if not args.unchecked:
        check_signer(key, regions, int(time.time()))
    return dispatch(args, key, payload, broker)


def dispatch(args: argparse.Namespace, key: Any, payload: dict[str, Any],
             broker: Destination | None) -> int:
    """Sign, then print (--print) or publish and record the alert; the one output of
    `cx alert send` and `cx alert from-cap` (uses args.json, args.timeout, args.db)."""
    try:
        envelope = sign_alert(key, payload)
    except ValueError as e:
        raise CliError(str(e)) from None
    topics = topics_for(payload)
    summary: dict[str, Any] = {"id": payload["id"], "kid": key.kid, "topics": topics,
                               "envelope_bytes": len(envelope)}
    if broker is None:
        if args.json:
            print(json.dumps({**summary, "envelope": envelope}))
        else:
            print(envelope)
        return 0
    publish(envelope, topics, broker[0], broker[1], args.timeout, broker[2])
    summary["published_at"] = int(time.time())
    url = db_url_if_any(args)
    if url is not None:  # for `cx alert status`: who should have heard it
        summary["targets"] = alertstatus.record(url, payload["id"], key.kid,
                                                payload["regions"], summary["published_at"])
    if args.json:
        print(json.dumps(summary))
    else:
        recorded = (f"; {summary['targets']} registered terminals targeted (cx alert status "
                    f"{payload['id']})") if "targets" in summary else ""
        print(f"sent {payload['kind']} {payload['id']} (kid {key.kid}, {len(envelope)} bytes) "
              f"to {', '.join(topics)}{recorded}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        verifycli = importlib.import_module("tools.verifycli")
    except ModuleNotFoundError as e:
        if e.name not in ("tools.verifycli", "tools"):
            raise
        print("cx alert verify: not available yet", file=sys.stderr)
        return EXIT_USAGE
    return int(verifycli.main(list(args.extra)) or 0)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    alert = subparsers.add_parser("alert", help="sign, send and verify alerts")
    sub = alert.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("send", help="sign an alert and publish it (or --print it)")
    p.add_argument("--key", required=True, help="issuer (or root) key file")
    p.add_argument("--regions", required=True, help="12-digit region codes, comma-separated")
    p.add_argument("--kind", choices=KINDS, default="alert")
    p.add_argument("--level", type=number(int, LEVELS[0], LEVELS[-1]),
                   help="1 red .. 4 blue (required for alert; test: 4)")
    p.add_argument("--tone", choices=AUDIO_TONES, help="audio tone (test default: chime)")
    p.add_argument("--clip-url", help="audio clip URL")
    p.add_argument("--clip-sha256", help="clip sha256, 64 hex digits")
    p.add_argument("--clip-bytes", type=number(int, MIN_CLIP, MAX_CLIP),
                   help=f"clip size in bytes, {MIN_CLIP}..{MAX_CLIP} (a terminal plays no bigger "
                        "clip)")
    p.add_argument("--clip-file", help="local copy of the clip: sha256 and size taken from it")
    p.add_argument("--expires", type=number(int, 1, MAX_EXPIRY), default=DEFAULT_EXPIRES,
                   metavar="SECONDS",
                   help=f"lifetime after --issued (default {DEFAULT_EXPIRES}, at most 7 days)")
    p.add_argument("--id", help="alert id (default: generated, unique)")
    p.add_argument("--refs", help="cancel: ids of the alerts to stop, comma-separated")
    p.add_argument("--volume", type=number(int, VOLUMES[0], VOLUMES[-1]),
                   help="0..100 (default by level)")
    p.add_argument("--repeat", type=number(int, REPEATS[0], REPEATS[-1]),
                   help="1..20 (default 1)")
    p.add_argument("--event", help="event-type code, at most 16 chars")
    p.add_argument("--text", help="text shown and logged, at most 1024 chars")
    p.add_argument("--issued", type=EPOCH, metavar="EPOCH", help="issue time (default now)")
    p.add_argument("--unchecked", action="store_true",
                   help="skip the key scope/certificate checks (to craft envelopes for tests)")
    p.add_argument("--timeout", type=TIMEOUT, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"seconds to wait for the broker, at most {MAX_TIMEOUT:g} (default "
                        f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--db", help="fleet store to record the alert in, for cx alert status "
                                "(default $CX_FLEET_DB, or ./fleet.sqlite when it exists)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--broker", metavar="HOST:PORT", help="publish QoS 1 to this broker")
    dest.add_argument("--print", action="store_true", help="print the envelope, send nothing")
    add_broker_login(p)
    p.set_defaults(func=cmd_send)

    from tools import cap  # here, not at the top: tools.cap imports this module

    cap.register(sub)

    p = sub.add_parser("verify", add_help=False,
                       help="verify an envelope as a terminal would (tools.verifycli)")
    p.set_defaults(func=cmd_verify, accepts_extra=True)
    alertstatus.register(sub)
