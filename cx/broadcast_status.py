"""`cx broadcast status ID`: did a daily programme (or a live announcement) play in every town?
Per town, how many terminals reported `playing`, `done`, `preempted` or `skipped` and why, from
the receipts the fleet stored (broadcast.md §4, §6, §7; fleet/store/daily.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections import Counter
from typing import Any

from cx.common import CliError, ExitCode, db_option, db_url, dump, json_option
from fleet.errors import FleetError, StoreUnavailable
from fleet.store import Store
from fleet.store.daily import DailyRow

_PROGRAMME = re.compile(r"[A-Za-z0-9._:-]{1,64}/[A-Za-z0-9._:-]{1,32}")
_LIVE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A terminal's outcome is its most advanced receipt (a redelivered `playing` after `done` does
# not undo it).
_ORDER = {"accepted": 1, "playing": 2, "done": 3, "preempted": 3, "skipped": 3, "ignored": 3,
          "rejected": 3}
COLUMNS = ("playing", "done", "preempted", "skipped")


def _fail(e: FleetError) -> CliError:
    return CliError(str(e), ExitCode.UNREACHABLE if isinstance(e, StoreUnavailable)
                    else ExitCode.FAILURE)


def _kind(ident: str) -> str:
    if _PROGRAMME.fullmatch(ident):
        return "programme"
    if _LIVE.fullmatch(ident):
        return "live"
    raise CliError(f"{ident!r} is neither a programme <schedule id>/<programme id> nor a live "
                   "stream id", ExitCode.USAGE)


def _date(s: str) -> str:
    try:
        if len(s) == 10 and dt.date.fromisoformat(s):
            return s
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{s!r} is not a date YYYY-MM-DD")


def status(url: str, ident: str, date: str | None = None) -> dict[str, Any]:
    """The report of programme or live stream `ident` (a programme: of `date`, default the
    latest date it has receipts of); CliError when nothing was received of it."""
    kind = _kind(ident)
    if kind == "live" and date is not None:
        raise CliError("--date is for programmes: a live stream has one day", ExitCode.USAGE)
    try:
        store = Store.open(url, create=False)
    except FleetError as e:
        raise _fail(e) from None
    try:
        dates = store.daily_dates(kind, ident) if kind == "programme" else []
        day = date or (dates[-1] if dates else None)
        rows = store.daily_receipts(kind, ident, day)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if not rows:
        what = f"programme {ident!r}" if kind == "programme" else f"live stream {ident!r}"
        if date is not None and dates:
            raise CliError(f"no receipts of {what} on {date} in {url} (it has receipts of "
                           f"{', '.join(dates[-5:])})")
        raise CliError(f"no receipts of {what} in {url} (an id of cx broadcast schedule list, "
                       "or a stream of cx broadcast live?)")
    return _report(kind, ident, day, dates, rows)


def _report(kind: str, ident: str, day: str | None, dates: list[str],
            rows: list[DailyRow]) -> dict[str, Any]:
    last: dict[str, DailyRow] = {}
    for r in rows:
        cur = last.get(r.device)
        if cur is None or _ORDER.get(r.status, 0) >= _ORDER.get(cur.status, 0):
            last[r.device] = r
    towns: dict[str, Counter[str]] = {}
    reasons: dict[str, Counter[str]] = {}
    for r in last.values():
        towns.setdefault(r.town, Counter())[r.status] += 1
        if r.reason:
            reasons.setdefault(r.town, Counter())[f"{r.status} {r.reason}"] += 1
    terminals = [{"device": r.device, "town": r.town, "status": r.status, "reason": r.reason,
                  "start": r.start, "chunks": r.chunks, "silent": r.silent,
                  "refused": r.refused}
                 for r in sorted(last.values(), key=lambda r: (r.town, r.device))]
    return {
        "id": ident, "kind": kind, "date": day, "dates": dates, "terminals": len(last),
        "counts": dict(sorted(Counter(r.status for r in last.values()).items())),
        "towns": {t: dict(sorted(c.items())) for t, c in sorted(towns.items())},
        "reasons": {t: dict(sorted(c.items())) for t, c in sorted(reasons.items())},
        "devices": terminals,
        "all_done": all(_done(r) for r in terminals),
    }


def _done(r: dict[str, Any]) -> bool:
    """Played to its end: `done` with no fault (a live stream's `ended`)."""
    return r["status"] == "done" and r["reason"] in (None, "ended")


def show(s: dict[str, Any]) -> str:
    head = f"programme {s['id']} on {s['date']}" if s["kind"] == "programme" \
        else f"live {s['id']}"
    out = [f"{head}: {s['terminals']} terminals reported, "
           + ", ".join(f"{k} {v}" for k, v in s["counts"].items()), "",
           f"{'town':12} {'terminals':>9} " + " ".join(f"{c:>9}" for c in COLUMNS)
           + f" {'other':>5}  reasons"]
    for town, c in s["towns"].items():
        other = sum(v for k, v in c.items() if k not in COLUMNS)
        why = ", ".join(f"{k} {v}" for k, v in s["reasons"].get(town, {}).items())
        out.append(f"{town:12} {sum(c.values()):>9} "
                   + " ".join(f"{c.get(k, 0):>9}" for k in COLUMNS) + f" {other:>5}  {why}")
    bad = [r for r in s["devices"] if not _done(r)]
    if bad:
        out += ["", "not done:"]
        for r in bad:
            why = f" ({r['reason']})" if r["reason"] else ""
            out.append(f"  {r['device']:20} {r['town']:12} {r['status']}{why}")
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    s = status(db_url(args), args.id, args.date)
    if args.json:
        dump(s)
    else:
        print(show(s), flush=True)
    return 0 if s["all_done"] else ExitCode.FAILURE


def register(sub: Any) -> None:
    p = sub.add_parser("status", parents=[db_option(), json_option()],
                       help="per town: terminals that played, were preempted or skipped a "
                            "programme (or a live stream) and why")
    p.add_argument("id", metavar="ID",
                   help="<schedule id>/<programme id>, or a live stream id")
    p.add_argument("--date", type=_date, metavar="YYYY-MM-DD",
                   help="the programme's local date (default: the latest with receipts)")
    p.set_defaults(func=cmd_status)
