"""The fleet store: registry, heartbeat history, receipts, alarms, bad-message counters and alert
records behind one narrow interface, `Store`. One schema, numbered migrations and the same SQL on
SQLite (a file path, the default) and PostgreSQL (`postgresql://…`); only `dialects` differs.

Concurrency: every write is one transaction; several service instances may share a PostgreSQL
database (row updates are guarded by arrival time, alarm inserts by a partial unique index, so
sweeps and batches are idempotent). SQLite serialises writers (BEGIN IMMEDIATE, WAL).

Modules: `core` (connection, `Store.transaction()`), `dialects`, `schema`, `registry`,
`ingestion`, `alarms`, `reports`, `alerts`, `ota`, `schedules`, `daily`, `retention`, `limits`.
"""

from fleet.store.alarms import SweepStats
from fleet.store.alerts import AlertRecords
from fleet.store.daily import DailyRecords
from fleet.store.ingestion import Ingestion, IngestStats
from fleet.store.limits import (
    DEFAULT_HB_S,
    HISTORY_KEEP,
    OFFLINE_AFTER,
    ON_4G_AFTER,
    TRIM_SLACK_DIV,
)
from fleet.store.ota import OtaRecords
from fleet.store.reports import Reports
from fleet.store.schedules import ScheduleRecords
from fleet.store.schema import MIGRATIONS
from fleet.store.transaction import Transaction
from tools.regions import prefix as region_prefix


class Store(Ingestion, Reports, AlertRecords, OtaRecords, ScheduleRecords, DailyRecords):
    """The fleet database. `Store.open(url)` connects and migrates; one Store per thread.

    Connection and `transaction()`: core; `upsert_devices`, `device`, `devices`, `history`:
    registry; `ingest`: ingestion; `sweep`, `alarms`, `ack_alarm`: alarms; `report`,
    `bad_counts`: reports; `record_alert`, `alert_record`, `alert_targets`, `receipts`: alerts;
    `add_release`, `create_rollout`, `set_rollout`, `step`, `rollout_status`: ota;
    `add_programme`, `programmes`, `remove_programme`, `record_push`, `last_pushes`: schedules;
    `daily_receipts`, `daily_dates`: daily.
    """


__all__ = [
    "DEFAULT_HB_S", "HISTORY_KEEP", "MIGRATIONS", "OFFLINE_AFTER", "ON_4G_AFTER", "TRIM_SLACK_DIV",
    "IngestStats", "Store", "SweepStats", "Transaction", "region_prefix",
]
