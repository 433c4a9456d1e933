"""`cx broadcast schedule add|list|remove|push|show`: a county admin's daily-broadcast schedules
(docs/broadcast.md, "The county's commands"). The drafts of each area's programmes live in the
fleet database (fleet/store/schedules.py); `push` signs the area's whole schedule with a key of
use daily and publishes it retained, QoS 1, to eb/daily/<prefix> with `cx alert send`'s broker
options and publishing code (cx/alert.py); `show` checks an envelope by broadcast.md §3. The
library is tools/schedule.py; this module reads the command line and prints.

Exit codes (cx.common.ExitCode): 0 ok (show: accepted), 1 failure (a refused programme or key,
an envelope a terminal would not accept), 2 usage, 3 database or broker unreachable, 4 broker
login or publish not authorized.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from cx import alert
from cx.common import (
    CliError,
    ExitCode,
    db_option,
    db_url,
    dump,
    epoch_utc,
    json_option,
    number,
    table,
    when,
)
from cx.keys import EPOCH, signing_key
from fleet.errors import FleetError, StoreUnavailable
from fleet.store import Store
from fleet.store.schedules import Push
from tools import regions, schedule
from tools.envelope import MAX_CLIP, MIN_CLIP, region_prefix
from tools.schedule import ScheduleError

TIERS = {2: "province", 4: "city", 6: "county", 9: "town", 12: "village"}
READ_MAX = 65536  # bytes of an envelope `show` reads; anything longer is too_large anyway
SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _fail(e: FleetError) -> CliError:
    return CliError(str(e), ExitCode.UNREACHABLE if isinstance(e, StoreUnavailable)
                    else ExitCode.FAILURE)


def _open(args: argparse.Namespace, create: bool) -> Store:
    try:
        return Store.open(db_url(args), create=create)
    except FleetError as e:
        raise _fail(e) from None


def _usage(e: ValueError) -> CliError:
    return CliError(str(e), ExitCode.USAGE)


def _area(text: str) -> str:
    """--area: one 12-digit region code (a terminal would take it)."""
    try:
        region_prefix(text)
    except ValueError as e:
        pad = (text + "0" * 12)[:12] if text.isdigit() and len(text) in (2, 4, 6, 9) else None
        hint = f" (for the {TIERS[len(text)]} {text}: {pad})" if pad else ""
        raise CliError(f"--area: {e}{hint}", ExitCode.USAGE) from None
    return text


def _dates(text: str | None, option: str) -> list[str]:
    out = [d.strip() for d in (text or "").split(",") if d.strip()]
    try:
        schedule.check_dates(out, option)
    except ScheduleError as e:
        raise _usage(e) from None
    return out


def fmt_days(days: list[int]) -> str:
    """[1, 2, 3, 4, 5] -> Mon-Fri; [1, 3, 5] -> Mon,Wed,Fri; all seven -> daily."""
    if sorted(days) == list(range(1, 8)):
        return "daily"
    days, runs = sorted(days), []
    start = prev = days[0]
    for d in [*days[1:], 99]:
        if d != prev + 1:
            runs.append(SHORT[start - 1] if start == prev else
                        f"{SHORT[start - 1]}{'-' if prev - start > 1 else ','}{SHORT[prev - 1]}")
            start = d
        prev = d
    return ",".join(runs)


def _rows(progs: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    return [[a, p["id"], fmt_days(p["days"]), p["start"], f"{schedule.programme_length(p)}s"
             + ("" if p.get("duration") else " (clip)"), p.get("volume", schedule.DEFAULT_VOLUME),
             p.get("title"), p["audio"]["clip"]["url"]] for a, p in progs]


HEADERS = ("area", "id", "days", "start", "length", "volume", "title", "clip")


# --- add / list / remove --------------------------------------------------------------------------


def _clip(args: argparse.Namespace) -> tuple[str, str, int]:
    """(url, sha256, bytes) from --clip FILE with --clip-url or --clip-base, or from --clip-url
    with --sha256 and --bytes."""
    if args.clip is None:
        missing = [f for f, v in (("--clip-url", args.clip_url), ("--sha256", args.sha256),
                                  ("--bytes", args.bytes)) if v is None]
        if args.clip_base is not None:
            raise CliError("--clip-base names where --clip FILE is served: give --clip too",
                           ExitCode.USAGE)
        if missing:
            raise CliError(f"give --clip FILE.wav, or --clip-url with --sha256 and --bytes "
                           f"(missing {', '.join(missing)})", ExitCode.USAGE)
        return args.clip_url, args.sha256, args.bytes
    if args.sha256 is not None or args.bytes is not None:
        raise CliError("give --clip FILE (sha256 and bytes are read from it) or --sha256 and "
                       "--bytes, not both", ExitCode.USAGE)
    if (args.clip_url is None) == (args.clip_base is None):
        raise CliError("with --clip FILE, give where terminals fetch it: --clip-url URL or "
                       "--clip-base URL (the folder it is served from)", ExitCode.USAGE)
    try:
        with open(args.clip, "rb") as f:
            data = f.read(MAX_CLIP + 1)
    except OSError as e:
        raise CliError(f"--clip {args.clip}: {e.strerror or e}", ExitCode.USAGE) from None
    why = schedule.wav_problem(data)
    if why is not None:
        raise CliError(f"--clip {args.clip}: {why}; terminals play RIFF WAV, 16-bit mono PCM at "
                       f"{schedule.WAV_RATE} Hz", ExitCode.USAGE)
    if len(data) > MAX_CLIP:
        raise CliError(f"--clip {args.clip}: over {MAX_CLIP} bytes, the most a terminal caches "
                       "per clip (about 32 s): cut it, or give a longer --duration to repeat "
                       "it", ExitCode.USAGE)
    url = args.clip_url or args.clip_base.rstrip("/") + "/" + Path(args.clip).name
    return url, hashlib.sha256(data).hexdigest(), len(data)


def cmd_add(args: argparse.Namespace) -> int:
    area = _area(args.area)
    url, sha, nbytes = _clip(args)
    try:
        days = schedule.parse_days(args.days)
        prog = schedule.make_programme(
            id=args.id, days=days, start=args.start, url=url, sha256=sha, nbytes=nbytes,
            duration=args.duration, volume=args.volume, title=args.title,
            except_=_dates(args.except_, "--except"))
    except ScheduleError as e:
        raise _usage(e) from None
    store = _open(args, create=True)
    try:
        replaced = store.add_programme(area, prog, replace=args.replace)
        n = len(store.programmes(area))
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if args.json:
        dump({"area": area, "programme": prog, "replaced": replaced, "programmes": n})
    else:
        print(f"{'replaced' if replaced else 'added'} programme {prog['id']} in area {area}: "
              f"{fmt_days(prog['days'])} {prog['start']} for {schedule.programme_length(prog)} s, "
              f"clip {url} ({nbytes} bytes); {n} programme(s) in the area: 'cx broadcast "
              f"schedule push --area {area} ...' publishes them")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    area = _area(args.area) if args.area else None
    store = _open(args, create=False)
    try:
        progs = store.programmes(area)
        pushes = store.last_pushes([area] if area else None)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if args.json:
        dump({"programmes": [{"area": a, **p} for a, p in progs],
              "pushed": {a: p.to_json() for a, p in pushes.items()}})
        return 0
    if progs:
        table(HEADERS, _rows(progs))
    else:
        print(f"no programmes{f' in area {area}' if area else ''}")
    for a, p in sorted(pushes.items()):
        state = f"published {when(p.published_at)}" if p.published_at else "signed, not published"
        print(f"area {a}: last pushed version {p.version} ({p.programmes} programme(s), "
              f"{p.from_date} .. {p.until_date}, kid {p.kid}) to {p.topic}, {state}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    area = _area(args.area)
    store = _open(args, create=False)
    try:
        gone = store.remove_programme(area, args.id)
        n = len(store.programmes(area))
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if not gone:
        raise CliError(f"area {area} has no programme {args.id} (see 'cx broadcast schedule "
                       f"list --area {area}')")
    if args.json:
        dump({"area": area, "removed": args.id, "programmes": n})
    else:
        print(f"removed programme {args.id} from area {area}; {n} left (terminals keep the "
              "last pushed schedule until the next push)")
    return 0


# --- push -----------------------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    area = _area(args.area)
    if not args.broker and not args.out:
        raise CliError("give --broker HOST:PORT to publish, --out FILE to write the envelope, "
                       "or both", ExitCode.USAGE)
    if args.out and Path(args.out).exists():
        raise CliError(f"--out {args.out} exists: give a new file (an envelope is never written "
                       "over)", ExitCode.USAGE)
    except_ = _dates(args.except_, "--except")
    broker = alert.destination(args)
    key = signing_key(args.key, args.crt)
    now = int(time.time())
    try:
        schedule.check_signer(key, area, now)
    except schedule.OutOfScope as e:
        raise _usage(e) from None
    except schedule.SignerError as e:
        raise CliError(str(e)) from None
    store = _open(args, create=False)
    try:
        progs = [p for _, p in store.programmes(area)]
        if not progs and not args.clear:
            raise CliError(f"area {area} has no programmes: pushing would clear its schedule on "
                           "every terminal; give --clear to do that, or add programmes first")
        version = args.version or store.next_schedule_version(area)
        sid = f"daily-{region_prefix(area)}-v{version}"
        issued = now if args.issued is None else args.issued
        try:
            payload = schedule.make_payload(id=sid, area=area, version=version, issued=issued,
                                            from_=args.from_, until=args.until,
                                            programmes=progs, except_=except_)
            env = schedule.sign_schedule(key, payload)
        except ScheduleError as e:
            raise _usage(e) from None
        if schedule.local_date(now) > dt.date.fromisoformat(args.until):
            raise CliError(f"--until {args.until} is before today ({schedule.local_date(now)}, "
                           f"{schedule.TZ}): terminals would reject the schedule as expired",
                           ExitCode.USAGE)
        topic = schedule.topic_for(area)
        store.record_push(Push(area, version, key.kid, sid, issued, args.from_, args.until,
                               len(progs), topic, env, time.time(), None))
        if args.out:
            with open(args.out, "x", encoding="ascii") as f:
                f.write(env + "\n")
        if broker is not None:
            alert.publish(env, [topic], broker[0], broker[1], args.timeout, broker[2],
                          retain=True, what="schedule")
            store.mark_published(area, version)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    summary = {"area": area, "topic": topic, "version": version, "id": sid, "kid": key.kid,
               "programmes": len(progs), "envelope_bytes": len(env),
               "published": broker is not None, "out": args.out}
    if args.json:
        dump(summary)
    else:
        where = (f"published retained to {topic}" if broker else f"not published ({topic})") + \
                (f", written to {args.out}" if args.out else "")
        print(f"schedule {sid} of area {area}: version {version}, {len(progs)} programme(s), "
              f"{args.from_} .. {args.until}, kid {key.kid}, {len(env)} bytes; {where}")
    return 0


# --- show -----------------------------------------------------------------------------------------


def _read(name: str) -> bytes:
    try:
        if name == "-":
            return sys.stdin.buffer.read(READ_MAX + 1)
        with open(name, "rb") as f:
            return f.read(READ_MAX + 1)
    except OSError as e:
        raise CliError(f"{name}: {e.strerror or e}", ExitCode.USAGE) from None


def _trust(path: str | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    try:
        trust = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise CliError(f"--trust {path}: {e.strerror or e}", ExitCode.USAGE) from None
    except ValueError as e:
        raise CliError(f"--trust {path}: not JSON ({e})", ExitCode.USAGE) from None
    if not isinstance(trust, list):
        raise CliError(f"--trust {path}: a trust list is a JSON array (cx keys anchors)",
                       ExitCode.USAGE)
    return trust


def _print_verdict(v: schedule.Verdict, now: int, region: str | None, synced: bool) -> None:
    print(v.status if v.reason is None else f"{v.status}: {v.reason}")
    if v.reason is not None:
        print(f"  rule {v.rule} failed: {schedule.RULES[v.reason][1]}")
        print(f"  because  {v.detail}")
    else:
        print("  passed every rule of broadcast.md §3 checked here")
    notes = []
    if 4 in v.skipped:
        notes.append("rules 4-6 (key, certificate, signature) not checked: give --trust "
                     "ANCHORS.json")
    if 10 in v.skipped:
        notes.append("rule 10 skipped: clock unsynced")
    if 12 in v.skipped:
        notes.append("rule 12 (not_for_me) not checked: give --region CODE12")
    notes.append("rule 13 (stale) needs the version a terminal holds: not checked")
    p = v.payload if v.payload is not None else v.claimed
    rows: list[tuple[str, str]] = [("signer", str(v.kid or "(not read)"))]
    if v.scope:
        rows.append(("scope", ",".join(v.scope)))
    if p is not None:
        if v.payload is None:
            rows.append(("payload", "NOT VERIFIED: the fields below are as written"))
        area = p.get("area")
        ok = isinstance(area, str) and regions.valid_code(area)
        tier = TIERS.get(len(regions.prefix(area))) if isinstance(area, str) and ok else None
        rows += [("id", str(p.get("id"))),
                 ("area", f"{area}" + (f" ({tier}), topic {schedule.topic_for(str(area))}"
                                       if tier else "")),
                 ("version", str(p.get("version"))), ("issued", epoch_utc(p.get("issued"))),
                 ("valid", f"{p.get('from')} .. {p.get('until')}, tz {p.get('tz')}"
                  + (f", except {', '.join(map(str, p['except']))}" if p.get("except") else ""))]
    rows.append(("now", epoch_utc(now) + ("" if synced else ", clock unsynced")
                 + (f", terminal {region}" if region else "")))
    for k, val in rows:
        print(f"  {k:<8} {val}")
    for n in notes:
        print(f"  note: {n}")
    progs = p.get("programmes") if p is not None else None
    if isinstance(progs, list) and v.reason != "bad_field":
        print(f"programmes ({len(progs)}):")
        if progs:
            table(HEADERS[1:], [r[1:] for r in _rows([("", q) for q in progs])])


def cmd_show(args: argparse.Namespace) -> int:
    env = _read(args.file)
    trust = _trust(args.trust)
    if args.region is not None and not regions.valid_code(args.region):
        raise CliError(f"--region {args.region!r} must be a 12-digit region code",
                       ExitCode.USAGE)
    now = int(time.time()) if args.now is None else args.now
    v = schedule.verify_schedule(env, trust, now, region=args.region, synced=not args.unsynced)
    if args.json:
        dump({"status": v.status, "reason": v.reason, "rule": v.rule, "detail": v.detail,
              "kid": v.kid, "scope": v.scope, "payload": v.payload, "claimed": v.claimed,
              "skipped": v.skipped, "now": now})
    else:
        _print_verdict(v, now, args.region, not args.unsynced)
    return ExitCode.OK if v.status == "accepted" else ExitCode.FAILURE


# --- the parser -----------------------------------------------------------------------------------


def _register_add(sub: Any, parents: list[Any]) -> None:
    """`add`, on the `cx broadcast schedule` subparsers."""
    p = sub.add_parser("add", parents=parents, help="add a programme to an area's schedule")
    p.add_argument("--area", required=True, metavar="CODE12",
                   help="the area's 12-digit region code, e.g. 341122000000 (a county)")
    p.add_argument("--id", required=True, metavar="PROG",
                   help="programme id, unique in the area: 1..32 chars of A-Z a-z 0-9 . _ : -")
    p.add_argument("--days", required=True, help="ISO weekdays, 1 Monday .. 7 Sunday: 1-5, "
                                                 "1,3,5 or 1-7")
    p.add_argument("--start", required=True, metavar="HH:MM", help="local start time (+08:00)")
    p.add_argument("--clip", metavar="FILE.wav",
                   help="the clip (16 kHz 16-bit mono WAV): sha256 and bytes read from it")
    p.add_argument("--clip-url", metavar="URL", help="http:// URL terminals fetch the clip from")
    p.add_argument("--clip-base", metavar="URL",
                   help="with --clip: the http:// folder it is served from (URL = base/FILE)")
    p.add_argument("--sha256", metavar="HEX", help="without --clip: the clip's sha256")
    p.add_argument("--bytes", type=number(int, MIN_CLIP + 1, MAX_CLIP), metavar="N",
                   help="without --clip: the clip's size in bytes")
    p.add_argument("--duration", type=number(int, 1, schedule.MAX_DURATION), metavar="S",
                   help="seconds it plays, the clip repeated to fill them (default: the clip "
                        "once)")
    p.add_argument("--volume", type=number(int, 0, 100), help="0..100 (default 60)")
    p.add_argument("--title", help="at most 64 chars, shown and logged")
    p.add_argument("--except", dest="except_", metavar="DATES",
                   help="local dates it does not play, comma-separated YYYY-MM-DD")
    p.add_argument("--replace", action="store_true", help="replace the programme with this id")
    p.set_defaults(func=cmd_add)


def _register_push(sub: Any, parents: list[Any]) -> None:
    """`push`, on the `cx broadcast schedule` subparsers."""
    p = sub.add_parser("push", parents=parents,
                       help="sign the area's schedule and publish it retained (or --out it)")
    p.add_argument("--area", required=True, metavar="CODE12", help="the area's region code")
    p.add_argument("--key", required=True, metavar="KEYFILE",
                   help="key with use daily whose scope covers the area")
    p.add_argument("--crt", metavar="FILE", help="the key's certificate, instead of its own")
    p.add_argument("--from", dest="from_", required=True, metavar="YYYY-MM-DD",
                   help="first local date the schedule is valid")
    p.add_argument("--until", required=True, metavar="YYYY-MM-DD",
                   help="last local date (at most 366 days after --from)")
    p.add_argument("--except", dest="except_", metavar="DATES",
                   help="holidays, comma-separated YYYY-MM-DD: no programme plays")
    p.add_argument("--version", type=number(int, 1, schedule.MAX_VERSION),
                   help="the schedule's version (default: one above the area's last push)")
    p.add_argument("--issued", type=EPOCH, metavar="EPOCH", help="issue time (default now)")
    p.add_argument("--clear", action="store_true",
                   help="push even with no programmes: clears the area's schedule")
    p.add_argument("--out", metavar="FILE", help="write the envelope to FILE (a new file)")
    p.add_argument("--broker", metavar="HOST:PORT", help="publish retained, QoS 1, to it")
    p.add_argument("--timeout", type=alert.TIMEOUT, default=alert.DEFAULT_TIMEOUT,
                   metavar="SECONDS", help=f"seconds to wait for the broker (default "
                                           f"{alert.DEFAULT_TIMEOUT:g})")
    alert.add_broker_login(p)
    p.set_defaults(func=cmd_push)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bc = subparsers.add_parser("broadcast", help="daily-broadcast schedules and live "
                                                 "announcements (docs/broadcast.md)")
    sub = bc.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sc = sub.add_parser("schedule", help="an area's programmes: add, list, remove, push, show")
    ss = sc.add_subparsers(dest="action", metavar="ACTION", required=True)
    db, js = db_option(), json_option()
    _register_add(ss, [db, js])

    p = ss.add_parser("list", parents=[db, js], help="the programmes and last push of areas")
    p.add_argument("--area", metavar="CODE12", help="one area (default: all)")
    p.set_defaults(func=cmd_list)

    p = ss.add_parser("remove", parents=[db, js], help="remove a programme from an area")
    p.add_argument("--area", required=True, metavar="CODE12")
    p.add_argument("--id", required=True, metavar="PROG")
    p.set_defaults(func=cmd_remove)

    _register_push(ss, [db, js])
    from cx import broadcast_status, live

    live.register(sub)
    broadcast_status.register(sub)

    p = ss.add_parser("show", parents=[js], help="check a schedule envelope as a terminal "
                                                 "would (broadcast.md §3) and list it")
    p.add_argument("file", metavar="FILE", help="envelope file, or - for stdin")
    p.add_argument("--trust", metavar="ANCHORS.json",
                   help="trust anchors (cx keys anchors): without them rules 4-6 are skipped")
    p.add_argument("--region", metavar="CODE12", help="a terminal's region code (rule 12)")
    p.add_argument("--now", type=EPOCH, metavar="EPOCH", help="the terminal's time (default now)")
    p.add_argument("--unsynced", action="store_true", help="clock not set: rule 10 skipped")
    p.set_defaults(func=cmd_show)
