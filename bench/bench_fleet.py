"""Fleet ingestion and offline detection: `cx fleet serve` against a simulated fleet of 10,000.

(1) Ingestion. 10,000 devices registered (Store.upsert_devices); a private Mosquitto; heartbeats
    (fleet-protocol.md, pre-encoded JSON, `eb/dev/<id>/hb`) published as fast as the broker takes
    them from a CPython simulator (paho, several connections, one process each), a fixed count.
    For each configuration, on a fresh broker:
      bare   only a bare paho subscriber (one per service instance, own process) on the same
             shared subscription `$share/fleet/eb/dev/+/hb`, counting what it receives;
      served then `cx fleet serve` (1 instance on SQLite, or 2 on PostgreSQL sharing the group),
             the same count again; rows appearing in `heartbeats` (polled every 0.1 s).
    Rate = messages / (first publish .. last one received or stored). QoS 0 (the protocol's) and
    QoS 1; QoS 1 once more at Mosquitto's default max_inflight_messages (20).
(2) Offline detection. 9,995 devices over simulator connections plus 5 FakeTerminals (own
    connection, last will), all with hb_s 10; one service on SQLite (sweep every 2 s). 20 silenced
    devices: time from each one's last heartbeat to its `offline` alarm in the store, minus the
    3 x hb_s rule. Then the 5 FakeTerminals drop their TCP connection: time to the alarm.

    .venv/bin/python bench/bench_fleet.py [--count 100000] [--conns 2] [--no-pg] [--no-write]

This file is the run (main); fleet_common.py holds the constants and simulator processes,
fleet_measure.py the measurements, fleet_report.py the section's text and tables.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_common import DETECT_HB_S, N_DEV, Children
from fleet_measure import (
    detection,
    inflight_probe,
    ingestion,
    isolation,
    qos1_default_inflight,
    register,
    sqlite_count,
)
from fleet_report import report
from report import write_section

TITLE = "Fleet ingestion and offline detection"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000, help="heartbeats per ingestion run")
    ap.add_argument("--conns", type=int, default=2, help="publisher connections (processes)")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL runs")
    ap.add_argument("--no-detect", action="store_true", help="skip offline detection")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/ alone")
    args = ap.parse_args()

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    kids = Children()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    pg = None
    with tempfile.TemporaryDirectory(prefix="cx-bench-fleet-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            print(f"(1) ingestion, {args.count:,} heartbeats per run, {args.conns} publisher "
                  "connections", flush=True)
            sq = tmp / "ingest.sqlite"
            results["reg_sqlite"] = register(str(sq))
            count = sqlite_count(sq)
            results["sqlite"] = ingestion(kids, tmp, str(sq), count, ["bench-sqlite"],
                                          args.count, args.conns, "SQLite, 1 instance")
            results["sqlite_rows"] = count()
            results["inflight20"] = qos1_default_inflight(kids, tmp, str(sq), count, args.conns)
            results["probe"] = inflight_probe(tmp)
            results["iso_sqlite"] = isolation(str(tmp / "iso.sqlite"))
            print(f"  writer alone, SQLite: {results['iso_sqlite']}", flush=True)
            if not args.no_pg:
                import psycopg
                from pg import PgCluster

                pg = PgCluster()
                url = pg.create_db("fleet_bench")
                results["reg_pg"] = register(url)
                pconn = psycopg.connect(url, autocommit=True)

                def pcount() -> int:
                    return int(pconn.execute("SELECT COUNT(*) FROM heartbeats").fetchone()[0])

                results["pg"] = ingestion(kids, tmp, url, pcount, ["bench-pg-1", "bench-pg-2"],
                                          args.count, args.conns, "PostgreSQL, 2 instances")
                results["pg_rows"] = pcount()
                results["pg_max_per_dev"] = int(pconn.execute(
                    "SELECT MAX(n) FROM (SELECT COUNT(*) n FROM heartbeats GROUP BY device) x"
                ).fetchone()[0])
                pconn.close()
                results["iso_pg"] = isolation(pg.create_db("fleet_iso"))
                print(f"  writer alone, PostgreSQL: {results['iso_pg']}", flush=True)
            load_mid = os.getloadavg()
            if not args.no_detect:
                print(f"(2) offline detection, {N_DEV} devices, hb_s {DETECT_HB_S}", flush=True)
                results["detect"] = detection(kids, tmp)
            load_end = os.getloadavg()
        except KeyboardInterrupt:
            print("interrupted: stopping simulator, services, broker, PostgreSQL",
                  file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            kids.end()
            if pg is not None:
                pg.destroy()

    text = report(args, results, load_before, load_mid, load_end)
    print(text)
    if not args.no_write:
        write_section(TITLE, text)
        print(f"wrote {TITLE!r} to docs/benchmarks.md")

if __name__ == "__main__":
    main()
