"""`cx fleet …`: parse, call the fleet library, print (tables for people, --json for scripts).
`cx fleet provision` and `cx fleet broker-config` are cx/provision.py's.

Exit codes (cx.common.ExitCode): 0 ok, 1 failure (unknown id, refused or unanswered command),
2 usage, 3 broker or database unreachable, 4 the broker refused the login or the command (not
authorized), 141 stdout closed before everything was written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cx import provision
from cx.common import (
    CliError,
    ExitCode,
    age,
    broker_address,
    broker_login,
    db_option,
    db_url,
    db_url_if_any,
    dump,
    json_option,
    number,
    table,
    when,
)
from fleet.command import OPS, BrokerAuth, send_command
from fleet.errors import (
    BrokerUnavailable,
    CommandRefused,
    FleetError,
    NotAuthorized,
    StoreUnavailable,
)
from fleet.model import Device
from fleet.service import Service, default_instance
from fleet.store import ON_4G_AFTER, Store, retention

STATES = ("online", "offline", "new", "fault")
HOUR, DAY = 3600, 86400
MAX_ROWS = 1_000_000  # --history, --limit: more than any screen; keeps the number an SQL integer
MAX_ROW_ID = 2**63 - 1  # alarm ids: BIGINT in both stores
MAX_KEEP_DAYS = 36500  # --keep-*, --older-than: a century; the cutoff date must stay printable
WAIT = number(float, 0, HOUR, lo_open=True)  # --wait of cx fleet cmd
KEEP_DAYS = number(float, 0, MAX_KEEP_DAYS, lo_open=True, words={"forever": None, "never": None})


def _auth(args: argparse.Namespace) -> BrokerAuth | None:
    return broker_login(args.cred or os.environ.get("CX_FLEET_CRED"), args.cafile)


def _fail(e: FleetError) -> CliError:
    if isinstance(e, NotAuthorized):
        return CliError(str(e), ExitCode.NOT_AUTHORIZED)
    code = ExitCode.UNREACHABLE if isinstance(e, (StoreUnavailable, BrokerUnavailable)) else \
        ExitCode.FAILURE
    return CliError(str(e), code)


def _open(args: argparse.Namespace, create: bool = False) -> Store:
    try:
        return Store.open(db_url(args), create=create)
    except FleetError as e:
        raise _fail(e) from None


def _with_store(fn: Callable[[argparse.Namespace, Store], int]) -> Callable[..., int]:
    def handler(args: argparse.Namespace) -> int:
        store = _open(args)
        try:
            return fn(args, store)
        except FleetError as e:
            raise _fail(e) from None
        finally:
            store.close()

    return handler


# ---------------------------------------------------------------------------------- commands


def _check_sqlite(args: argparse.Namespace) -> None:
    # A SQLite file that cannot be opened or created (no such folder, not writable) is a typo,
    # not an outage: refused at once. A PostgreSQL server that is down is retried by the service.
    if "://" in db_url(args):
        return
    _open(args, create=True).close()


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = broker_address(args.broker)
    _check_sqlite(args)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    retention.configure(_policy(args) if args.prune_every > 0 else None,
                        args.prune_every or retention.SERVE_EVERY)
    svc = Service(db_url(args), host, port, instance=args.instance,
                  sweep_every=args.sweep_every, on_4g_after=args.on_4g_after, auth=_auth(args))
    svc.log(f"starting (client id cx-fleet-{svc.instance}, database {db_url(args)})")
    svc.run(stop)
    t = svc.totals
    svc.log(f"stopped: {t.stored} messages stored ({t.heartbeats} heartbeats, {t.receipts} "
            f"receipts, {t.bad} bad), {t.acked} acknowledged, {t.dropped} dropped")
    return 0


def _device_row(d: Device, now: float) -> list[Any]:
    return [d.id, d.town, d.state, age(d.state_since, now), d.version, d.link, d.line,
            d.supply, age(d.last_hb_at, now), ",".join(d.alarms) or None]


@_with_store
def cmd_devices(args: argparse.Namespace, store: Store) -> int:
    devices = store.devices(args.region, args.state)
    if args.json:
        dump([d.to_json() for d in devices])
        return 0
    now = time.time()
    table(("id", "town", "state", "since", "version", "link", "line", "supply", "last hb",
            "alarms"), [_device_row(d, now) for d in devices])
    return 0


@_with_store
def cmd_show(args: argparse.Namespace, store: Store) -> int:
    d = store.device(args.id)
    history = store.history(args.id, args.history)
    alarms = store.alarms(active=True, device=args.id)
    if args.json:
        dump({"device": d.to_json(), "history": history,
               "alarms": [a.to_json() for a in alarms]})
        return 0
    now = time.time()
    for key, val in (("id", d.id), ("region", d.region), ("town", d.town),
                     ("profile", d.profile),
                     ("state", f"{d.state} for {age(d.state_since, now)}"
                      + (f" ({d.state_reason})" if d.state_reason else "")),
                     ("firmware", d.version),
                     ("link", f"{d.link or '-'} for {age(d.link_since, now)}"),
                     ("line", d.line), ("supply", d.supply), ("clock", d.clock),
                     ("heartbeat", f"every {d.hb_s or '-'} s, last {age(d.last_hb_at, now)} ago"),
                     ("first seen", when(d.first_seen))):
        print(f"{key:<11}{'-' if val is None else val}")
    if d.last_hb:
        print(f"{'last hb':<11}{json.dumps(d.last_hb, separators=(',', ':'))}")
    print()
    if alarms:
        table(("alarm", "kind", "state", "opened", "detail"),
               [[a.id, a.kind, a.state, when(a.opened_at), a.detail] for a in alarms])
    else:
        print("no open alarms")
    print()
    table(("received", "t", "up", "link", "rssi", "line", "supply", "heap"),
           [[when(h["received_at"]), h.get("t"), h.get("up"), h.get("link"), h.get("rssi"),
             h.get("line"), h.get("supply"), h.get("heap")] for h in history])
    return 0


@_with_store
def cmd_alarms(args: argparse.Namespace, store: Store) -> int:
    alarms = store.alarms(active=args.open, device=args.device, kind=args.kind, limit=args.limit)
    if args.json:
        dump([a.to_json() for a in alarms])
        return 0
    table(("id", "device", "kind", "state", "opened", "acked", "closed", "count", "detail"),
           [[a.id, a.device, a.kind, a.state, when(a.opened_at), when(a.acked_at),
             when(a.closed_at), a.count, a.detail] for a in alarms])
    return 0


@_with_store
def cmd_ack(args: argparse.Namespace, store: Store) -> int:
    a = store.ack_alarm(args.alarm)
    if args.json:
        dump(a.to_json())
    else:
        print(f"alarm {a.id} ({a.kind} on {a.device}): {a.state}")
    return 0


@_with_store
def cmd_report(args: argparse.Namespace, store: Store) -> int:
    rep = store.report(args.region)
    if args.json:
        dump(rep.to_json())
        return 0
    table(("town", "terminals", "online", "offline", "faults", "on 4g", "firmware"),
           [[t.town, t.terminals, t.online, t.offline, t.faults, t.on_4g,
             " ".join(f"{v}:{n}" for v, n in t.versions.items())] for t in rep.towns])
    tot = [sum(getattr(t, f) for t in rep.towns)
           for f in ("terminals", "online", "offline", "faults", "on_4g")]
    print(f"total: {tot[0]} terminals, {tot[1]} online, {tot[2]} offline, {tot[3]} with faults, "
          f"{tot[4]} on 4G")
    print()
    if rep.bad:
        table(("bad message", "device", "topic", "count", "last"),
               [[b.kind, b.device or "-", b.topic or "-", b.count, when(b.last_at)]
                for b in rep.bad])
    else:
        print("no bad messages")
    return 0


_UNSET: Any = object()  # a --keep-* / --older-than not given


def _policy(args: argparse.Namespace) -> retention.Policy:
    """--keep-* over --older-than (prune only) over the defaults."""
    base: Any = getattr(args, "older_than", _UNSET)
    d = retention.DEFAULT

    def pick(value: Any, default: float | None) -> float | None:
        if value is not _UNSET:
            return value
        return default if base is _UNSET else base

    return retention.Policy(pick(args.keep_alerts, d.alerts_days),
                            pick(args.keep_alarms, d.alarms_days),
                            pick(args.keep_bad, d.bad_days),
                            pick(args.keep_daily, d.daily_days))


def _rule(days: float | None, now: float, text: str) -> str:
    """`text` with {cut} as the cutoff time, or "kept forever"."""
    if days is None:
        return "kept forever"
    return text.format(cut=when(now - days * retention.DAY))


@_with_store
def cmd_prune(args: argparse.Namespace, store: Store) -> int:
    policy = _policy(args)
    now = time.time()
    st = retention.prune(store, policy, now, dry_run=args.dry_run)
    if args.json:
        dump({"dry_run": st.dry_run, "now": now,
               "policy": {"alerts_days": policy.alerts_days, "alarms_days": policy.alarms_days,
                          "bad_days": policy.bad_days, "daily_days": policy.daily_days},
               "tables": st.tables(), "total": st.total})
        return 0
    alerts = _rule(policy.alerts_days, now, "published before {cut}, no receipt since")
    rules = {"alerts": alerts,
             "alert_targets": "of those alerts" if policy.alerts_days else alerts,
             "receipts": _rule(policy.alerts_days, now, "of those alerts, or of unrecorded "
                               "alerts and received before {cut}"),
             "alarms": _rule(policy.alarms_days, now, "closed before {cut} (open and acked: "
                             "never)"),
             "bad_messages": _rule(policy.bad_days, now, "last counted before {cut}"),
             "daily_receipts": _rule(policy.daily_days, now, "programme, live and schedule "
                                     "receipts received before {cut}")}
    table(("table", "would delete" if st.dry_run else "deleted", "rule"),
           [[t, n, rules[t]] for t, n in st.tables().items()])
    print(f"total: {st.total} rows" + (" would be deleted (dry run: nothing was)"
                                        if st.dry_run else " deleted"))
    return 0


def _parse_args(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"command argument {pair!r} must be key=value", ExitCode.USAGE)
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def cmd_cmd(args: argparse.Namespace) -> int:
    host, port = broker_address(args.broker)
    cargs = _parse_args(args.args)
    if db_url_if_any(args) is not None:
        store = _open(args)
        try:
            store.device(args.id)
        except FleetError as e:
            raise _fail(e) from None
        finally:
            store.close()
    try:
        ack = send_command(host, port, args.id, args.op, cargs, wait=args.wait, auth=_auth(args))
    except CommandRefused as e:
        if args.json:
            dump(e.ack)
        raise CliError(f"{args.id} refused {args.op}: {e.ack.get('error')}") from None
    except FleetError as e:
        raise _fail(e) from None
    if args.json:
        dump(ack)
    else:
        result = ack.get("result")
        print(f"{args.id}: {args.op} ok" + (f" {json.dumps(result)}" if result is not None else ""))
    return 0


# ---------------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = db_option()
    mq = argparse.ArgumentParser(add_help=False)
    mq.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default $CX_BROKER)")
    mq.add_argument("--cred", metavar="FILE", help="broker login, the fleet.cred written by "
                    "'cx fleet broker-config' (default $CX_FLEET_CRED)")
    mq.add_argument("--cafile", metavar="FILE", help="CA certificate: connect with TLS")
    js = json_option()
    keep = argparse.ArgumentParser(add_help=False)
    d = retention.DEFAULT
    for flag, default, what in (
            ("--keep-alerts", d.alerts_days, "alert records and their receipts"),
            ("--keep-alarms", d.alarms_days, "closed alarms (open ones are always kept)"),
            ("--keep-bad", d.bad_days, "bad-message counters not counted since"),
            ("--keep-daily", d.daily_days, "programme, live and schedule receipts")):
        keep.add_argument(flag, type=KEEP_DAYS, default=_UNSET, metavar="DAYS",
                          help=f"days to keep {what} (default {default:g}; 'forever')")

    p = subparsers.add_parser("fleet", help="fleet service administration",
                              description="The county fleet: ingestion service, registry, "
                                          "alarms, reports and device commands.")
    sub = p.add_subparsers(dest="fleet_cmd", metavar="COMMAND", required=True)

    s = sub.add_parser("serve", parents=[db, mq, keep],
                       help="ingest heartbeats, states, events; raise alarms")
    s.add_argument("--instance", metavar="NAME", default=None,
                   help=f"stable name of this instance, MQTT client id cx-fleet-NAME "
                        f"(default the host name, {default_instance()})")
    s.add_argument("--on-4g-after", type=number(float, 0, 30 * DAY, lo_open=True),
                   default=ON_4G_AFTER, metavar="S",
                   help=f"seconds on 4G before an on_4g alarm, at most 30 days (default "
                        f"{ON_4G_AFTER:g})")
    s.add_argument("--sweep-every", type=number(float, 0.1, HOUR), default=2.0, metavar="S",
                   help="seconds between offline sweeps, 0.1..3600 (default 2)")
    s.add_argument("--prune-every", type=number(float, 0, 30 * DAY),
                   default=retention.SERVE_EVERY, metavar="S",
                   help=f"seconds between retention runs, with the --keep-* ages, at most 30 "
                        f"days (default {retention.SERVE_EVERY:g}; 0: never delete anything)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("devices", parents=[db, js], help="list terminals and their state")
    s.add_argument("--region", metavar="PREFIX", help="only regions starting with PREFIX")
    s.add_argument("--state", choices=STATES,
                   help="online, offline, new (never heard), fault (line, power, 4G, clock alarm)")
    s.set_defaults(func=cmd_devices)

    s = sub.add_parser("show", parents=[db, js], help="one terminal: state, history, alarms")
    s.add_argument("id", metavar="ID")
    s.add_argument("--history", type=number(int, 1, MAX_ROWS), default=10, metavar="N",
                   help="recent heartbeats shown, at least 1 (default 10)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("alarms", parents=[db, js], help="alarms, newest first")
    s.add_argument("--open", action="store_true", help="only open or acknowledged alarms")
    s.add_argument("--device", metavar="ID", help="only this terminal's")
    s.add_argument("--kind", help="only this kind (offline, line, power, on_4g, rejected, "
                                  "clock_unsynced, storage, recovery)")
    s.add_argument("--limit", type=number(int, 1, MAX_ROWS), default=200, metavar="N",
                   help="at most N, at least 1 (default 200)")
    s.set_defaults(func=cmd_alarms)

    s = sub.add_parser("ack", parents=[db, js], help="acknowledge an alarm")
    s.add_argument("alarm", type=number(int, 1, MAX_ROW_ID), metavar="ALARM_ID")
    s.set_defaults(func=cmd_ack)

    s = sub.add_parser("report", parents=[db, js],
                       help="per town: terminals, online, faults, on 4G, firmware; bad messages")
    s.add_argument("--region", metavar="PREFIX", help="only regions starting with PREFIX")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("prune", parents=[db, keep, js],
                       help="delete old alert records, receipts, closed alarms, counters, "
                            "daily-broadcast receipts",
                       description="Apply the retention policy (docs/admin.md, Retention): what "
                                   "'cx fleet serve' also does every hour. Open alarms and the "
                                   "records of alerts with recent receipts are never deleted.")
    s.add_argument("--older-than", type=KEEP_DAYS, default=_UNSET, metavar="DAYS",
                   help="one age for every kind (a --keep-* given too wins for its kind)")
    s.add_argument("--dry-run", action="store_true",
                   help="count what would be deleted, delete nothing")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("cmd", parents=[db, mq, js],
                       help="send a command to a terminal, print its ack")
    s.add_argument("id", metavar="ID")
    s.add_argument("op", metavar="OP", help=f"one of {', '.join(OPS)} (others are sent as is)")
    s.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="arguments; values are JSON when they parse (volume=80), else strings")
    s.add_argument("--wait", type=WAIT, default=10.0, metavar="S",
                   help="seconds to wait for the acknowledgement, at most 3600 (default 10)")
    s.set_defaults(func=cmd_cmd)

    provision.register_into(sub)
