"""`cx alert`: sign an alert with an issuer (or root) key and publish it (alerts.md §1, §6), or
map a CAP 1.2 alert and send that (`from-cap`); `verify` and `status` live in cx/alert_verify.py
and cx/alert_status.py. The libraries: tools/envelope.py signs, tools/alertsend.py checks the
signer and publishes, tools/cap.py maps CAP and tools/capaudio.py its audio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cx import alert_status, alert_verify
from cx.common import CliError, ExitCode, broker_login, db_url_if_any, host_port, number
from cx.keys import EPOCH
from tools import alertsend, cap, capaudio
from tools.alertsend import DEFAULT_TIMEOUT, OutOfScope, PublishRefused, SignerError
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
    make_alert_payload,
    sign_alert,
    topics_for,
)
from tools.keys import KeyFileError, load_keyfile
from tools.mqttsession import (
    BrokerAuth,
    BrokerUnavailable,
    ConnectRefused,
    NotAuthorized,
)

DEFAULT_EXPIRES = 3600  # s
MAX_TIMEOUT = 3600.0  # s: an hour is already no timeout (and paho's keepalive, 2x it, <= 65535)
TIMEOUT = number(float, 0, MAX_TIMEOUT, lo_open=True)
"""--timeout of `cx alert send` and `cx alert from-cap`."""
TEST_DEFAULT_LEVEL = 4
TEST_DEFAULT_TONE = "chime"
CRED_ENV = "CX_ALERT_CRED"


# --- shared by send and from-cap (and cx demo) --------------------------------------------


def check_signer(key: KeyPair, regions: list[str], now: int) -> None:
    """tools.alertsend.check_signer, its refusal as one line: a region outside the key's scope
    is a usage error, anything else a failure."""
    try:
        alertsend.check_signer(key, regions, now)
    except OutOfScope as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    except SignerError as e:
        raise CliError(str(e)) from None


def publish(envelope: str, topics: list[str], host: str, port: int,
            timeout: float = DEFAULT_TIMEOUT, auth: BrokerAuth | None = None, *,
            retain: bool = False, what: str = "alert") -> None:
    """tools.alertsend.publish (also for `cx broadcast schedule push`: retained): exit 3 when
    the broker is unreachable, 4 when it refuses the login or a publish as not authorized, 1 for
    any other refusal."""
    try:
        alertsend.publish(envelope, topics, host, port, timeout, auth, retain=retain, what=what)
    except NotAuthorized as e:
        raise CliError(str(e), ExitCode.NOT_AUTHORIZED) from None
    except ConnectRefused as e:
        raise CliError(str(e), ExitCode.FAILURE) from None
    except BrokerUnavailable as e:
        raise CliError(str(e), ExitCode.UNREACHABLE) from None
    except PublishRefused as e:
        raise CliError(str(e), ExitCode.NOT_AUTHORIZED if e.not_authorized
                       else ExitCode.FAILURE) from None


Destination = tuple[str, int, BrokerAuth | None]
"""Where `dispatch` publishes: host, port and the login (None: anonymous, plain MQTT)."""


def destination(args: argparse.Namespace) -> Destination | None:
    """--broker HOST:PORT with its login (--cred, default $CX_ALERT_CRED; --cafile); None when
    the envelope is only printed. A credential file that is missing or not a credential is a
    usage error, found before anything is signed or fetched."""
    if not args.broker:
        return None
    host, port = host_port(args.broker)
    return host, port, broker_login(args.cred or os.environ.get(CRED_ENV) or None, args.cafile)


def add_broker_login(p: argparse.ArgumentParser) -> None:
    """--cred and --cafile, named as for `cx fleet serve` and `cx fleet cmd`."""
    p.add_argument("--cred", metavar="FILE",
                   help="broker login: the dispatcher.cred written by 'cx fleet broker-config', "
                        f"the only user allowed to publish alerts (default ${CRED_ENV})")
    p.add_argument("--cafile", metavar="FILE", help="CA certificate: connect with TLS")


def _load_key(path: str) -> KeyPair:
    try:
        return load_keyfile(path)
    except KeyFileError as e:
        raise CliError(str(e)) from None


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
        summary["targets"] = alert_status.record(url, payload["id"], key.kid,
                                                 payload["regions"], summary["published_at"])
    if args.json:
        print(json.dumps(summary))
    else:
        recorded = (f"; {summary['targets']} registered terminals targeted (cx alert status "
                    f"{payload['id']})") if "targets" in summary else ""
        print(f"sent {payload['kind']} {payload['id']} (kid {key.kid}, {len(envelope)} bytes) "
              f"to {', '.join(topics)}{recorded}")
    return 0


# --- cx alert send --------------------------------------------------------------------


def _audio(args: argparse.Namespace) -> tuple[str | None, dict[str, Any] | None]:
    clip_flags = [f for f, v in (("--clip-url", args.clip_url), ("--clip-sha256", args.clip_sha256),
                                 ("--clip-bytes", args.clip_bytes), ("--clip-file", args.clip_file))
                  if v is not None]
    if args.tone and clip_flags:
        raise CliError(f"give --tone or a clip ({', '.join(clip_flags)}), not both",
                       ExitCode.USAGE)
    if not clip_flags:
        return args.tone, None
    if args.clip_url is None:
        raise CliError("a clip needs --clip-url", ExitCode.USAGE)
    if args.clip_file is not None:
        if args.clip_sha256 is not None or args.clip_bytes is not None:
            raise CliError("give --clip-file or --clip-sha256/--clip-bytes, not both",
                           ExitCode.USAGE)
        try:
            data = Path(args.clip_file).read_bytes()
        except OSError as e:
            raise CliError(f"{args.clip_file}: {e.strerror or e}") from None
        return None, {"url": args.clip_url, "sha256": hashlib.sha256(data).hexdigest(),
                      "bytes": len(data)}
    if args.clip_sha256 is None or args.clip_bytes is None:
        raise CliError("a clip needs --clip-sha256 and --clip-bytes (or --clip-file)",
                       ExitCode.USAGE)
    return None, {"url": args.clip_url, "sha256": args.clip_sha256, "bytes": args.clip_bytes}


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


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
        raise CliError(str(e), ExitCode.USAGE) from None
    broker = destination(args)
    key = _load_key(args.key)
    if not args.unchecked:
        check_signer(key, regions, int(time.time()))
    return dispatch(args, key, payload, broker)


# --- cx alert from-cap ----------------------------------------------------------------


def cmd_from_cap(args: argparse.Namespace) -> int:
    broker = destination(args)
    try:
        with open(args.file, "rb") as f:
            data = f.read(cap.MAX_CAP_FILE + 1)
    except OSError as e:
        raise CliError(f"{args.file}: {e.strerror or e}") from None
    key = _load_key(args.key)
    now = int(time.time())
    # Everything is mapped, checked, fetched and signed before the first alert is sent, so a
    # refusal (exit 1) means that nothing was sent.
    try:
        caps = cap.map_cap(data, key.scope)
        many = len(caps) > 1
        cap.check_times(caps, now)
        resources = {cap.resource_key(c.audio): c.audio for c in caps if c.audio is not None}
        if args.clip_file is not None and not resources:
            raise CliError("--clip-file given, but the CAP has no audio resource to check it "
                           "against", ExitCode.USAGE)
        if args.clip_file is not None and len(resources) > 1:
            raise CliError(f"--clip-file stands for one audio resource, and the CAP has "
                           f"{len(resources)}: " + ", ".join(str(r.uri) for r in
                                                          resources.values()), ExitCode.USAGE)
        check_signer(key, [r for c in caps for r in c.regions], now)
        try:
            clips = {k: capaudio.clip_for(res, args.clip_file, args.timeout)
                     for k, res in resources.items()}
        except capaudio.ClipFileError as e:
            raise CliError(str(e)) from None
        payloads: list[dict[str, Any]] = []
        for c in caps:
            try:
                payload = cap.payload_for(c, clips[cap.resource_key(c.audio)] if c.audio
                                          else None)
                sign_alert(key, payload)  # over 8192 bytes, say, before anything is sent
            except ValueError as e:  # CapError too
                raise cap.CapError(f"alert {c.identifier}: {e}" if many else str(e)) from None
            payloads.append(payload)
    except cap.CapError as e:
        raise CliError(f"{args.file}: {e}", ExitCode.FAILURE) from None
    done: list[str] = []
    for payload in payloads:
        try:
            dispatch(args, key, payload, broker)
        except CliError as e:
            if done:
                raise CliError(f"{e}; before it, {len(done)} of the {len(payloads)} alerts of "
                               f"{args.file} went out ({', '.join(done)}); none after it was "
                               "tried", e.code) from None
            raise
        done.append(payload["id"])
    if many:  # stdout stays one line per alert; say on stderr why there are several
        print(f"cx: {args.file} makes {len(caps)} alerts: "
              + ", ".join(f"{c.identifier} ({c.origin})" for c in caps), file=sys.stderr)
    return 0


def _register_from_cap(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("from-cap", help="map an OASIS CAP 1.2 alert, sign it and publish it "
                       "(or --print it)")
    p.add_argument("file", metavar="FILE", help="the CAP 1.2 XML document")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="issuer (or root) key file")
    p.add_argument("--clip-file", metavar="F", help="local copy of the CAP audio resource "
                   "(checked against its <size> and <digest>) instead of fetching its uri")
    p.add_argument("--timeout", type=TIMEOUT, default=capaudio.FETCH_TIMEOUT, metavar="SECONDS",
                   help=f"seconds for the broker and for fetching audio (default "
                   f"{capaudio.FETCH_TIMEOUT:g})")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (one a line when the CAP makes several alerts)")
    p.add_argument("--db", help="fleet store to record the alert in, for cx alert status "
                                "(default $CX_FLEET_DB, or ./fleet.sqlite when it exists)")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--broker", metavar="HOST:PORT", help="publish QoS 1 to this broker")
    dest.add_argument("--print", action="store_true",
                      help="print the envelope (one a line), send nothing")
    add_broker_login(p)
    p.set_defaults(func=cmd_from_cap)


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

    _register_from_cap(sub)
    alert_verify.register(sub)
    alert_status.register(sub)
