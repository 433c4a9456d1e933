"""`cx alert status ID`: did the warning sound everywhere it was sent? Per terminal, per town,
and how fast (from the fleet store: the alert's record and the terminals' receipts). Also
`record`, what `cx alert send --db` and `cx demo` store of a published alert."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from cx.common import CliError, ExitCode, db_url_if_any, number
from fleet.errors import FleetError
from fleet.store import Store

# A terminal's outcome is its most advanced receipt: done beats playing beats accepted.
_ORDER = {"accepted": 1, "playing": 2, "preempted": 3, "done": 4, "cancelled": 4, "ignored": 5,
          "rejected": 5}


def record(url: str, alert_id: str, kid: str, regions: list[str], published_at: float) -> int:
    """Store what `cx alert send` published; returns how many registered terminals it targets."""
    try:
        store = Store.open(url)
    except FleetError as e:
        raise CliError(f"sent, but not recorded for delivery reports: {e}") from None
    try:
        return len(store.record_alert(alert_id, kid, regions, published_at))
    except FleetError as e:
        raise CliError(f"sent, but not recorded for delivery reports: {e}") from None
    finally:
        store.close()


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def status(url: str, alert_id: str, kid: str | None = None) -> dict[str, Any]:
    try:
        store = Store.open(url, create=False)
    except FleetError as e:
        raise CliError(str(e)) from None
    try:
        rec = store.alert_record(alert_id, kid)
        if rec is None:
            raise CliError(f"no alert {alert_id!r} recorded in {url} (sent with cx alert send "
                           "and a fleet store?)")
        targets = store.alert_targets(rec.id, rec.kid)
        receipts = store.receipts(rec.id, rec.kid)
    finally:
        store.close()
    by_dev: dict[str, Any] = {}
    playing_at: dict[str, float] = {}
    for r in receipts:
        cur = by_dev.get(r.device)
        if cur is None or _ORDER.get(r.status, 0) >= _ORDER.get(cur.status, 0):
            by_dev[r.device] = r
        if r.status == "playing" and r.device not in playing_at:
            playing_at[r.device] = r.received_at
    rows = []
    for tg in targets:
        r = by_dev.get(tg.device)
        st = r.status if r else "silent"
        rows.append({"device": tg.device, "town": tg.town, "status": st,
                     "reason": r.reason if r else None})
    towns: dict[str, Counter[str]] = {}
    for row in rows:
        towns.setdefault(row["town"], Counter())[row["status"]] += 1
    lat = [max(0.0, t - rec.published_at) * 1000 for d, t in playing_at.items()]
    return {
        "id": rec.id, "kid": rec.kid, "regions": rec.regions, "published_at": rec.published_at,
        "targets": len(targets), "counts": dict(Counter(r["status"] for r in rows)),
        "towns": {t: dict(c) for t, c in sorted(towns.items())},
        "latency_ms": {"n": len(lat), "p50": _pct(lat, 50), "p90": _pct(lat, 90),
                       "p99": _pct(lat, 99), "max": max(lat) if lat else None},
        "terminals": rows,
        "outside_targets": sorted(d for d in by_dev if d not in {t.device for t in targets}),
    }


def _show(s: dict[str, Any]) -> str:
    out = [(f"alert {s['id']} (kid {s['kid']}), regions {', '.join(s['regions'])}, published "
           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['published_at']))}"),
           f"targets {s['targets']}: " + ", ".join(f"{k} {v}" for k, v in
                                                   sorted(s["counts"].items()))]
    lat = s["latency_ms"]
    if lat["n"]:
        out.append(f"publish → playing: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, "
                   f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms ({lat['n']} terminals)")
    out.append("")
    out.append(f"{'town':12} {'terminals':>9} {'done':>5} {'playing':>7} {'accepted':>8} "
               f"{'rejected':>8} {'silent':>6} {'other':>5}")
    for town, c in s["towns"].items():
        known = ("done", "playing", "accepted", "rejected", "silent")
        other = sum(v for k, v in c.items() if k not in known)
        out.append(f"{town:12} {sum(c.values()):>9} {c.get('done', 0):>5} "
                   f"{c.get('playing', 0):>7} {c.get('accepted', 0):>8} "
                   f"{c.get('rejected', 0):>8} {c.get('silent', 0):>6} {other:>5}")
    bad = [r for r in s["terminals"] if r["status"] not in ("done",)]
    if bad:
        out.append("")
        out.append("not done:")
        for r in bad:
            why = f" ({r['reason']})" if r["reason"] else ""
            out.append(f"  {r['device']:20} {r['status']}{why}")
    return "\n".join(out)


def cmd_status(args: argparse.Namespace) -> int:
    url = db_url_if_any(args)
    if url is None:
        raise CliError("no fleet store: give --db URL or set CX_FLEET_DB", ExitCode.USAGE)
    while True:
        s = status(url, args.id, args.kid)
        if args.json:
            print(json.dumps(s), flush=True)
        else:
            if args.watch:
                print("\033[2J\033[H", end="")
            print(_show(s), flush=True)
        if not args.watch:
            break
        time.sleep(args.interval)
    return 0 if s["counts"].get("done", 0) == s["targets"] else ExitCode.FAILURE


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="delivery report of a sent alert: per terminal and town")
    p.add_argument("id", help="the alert id")
    p.add_argument("--kid", help="the issuer, when several used the same id")
    p.add_argument("--db", help="fleet store (default $CX_FLEET_DB or ./fleet.sqlite)")
    p.add_argument("--json", action="store_true", help="one JSON object (per refresh)")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=number(float, 0.1, 3600), default=2.0, metavar="S",
                   help="--watch refresh, 0.1..3600 s (default 2)")
    p.set_defaults(func=cmd_status)
