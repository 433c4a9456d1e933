"""Retention, importable here for `fleet.cli`; it lives in the store: fleet/store/retention.py."""

from fleet.store.retention import (
    ALARMS_DAYS,
    ALERTS_DAYS,
    BACKLOG_EVERY,
    BAD_DAYS,
    BATCH,
    DAY,
    DEFAULT,
    SERVE,
    SERVE_BUDGET,
    SERVE_EVERY,
    Policy,
    PruneStats,
    Schedule,
    configure,
    maybe_prune,
    prune,
)

__all__ = [
    "ALARMS_DAYS", "ALERTS_DAYS", "BACKLOG_EVERY", "BAD_DAYS", "BATCH", "DAY", "DEFAULT", "SERVE",
    "SERVE_BUDGET", "SERVE_EVERY", "Policy", "PruneStats", "Schedule", "configure",
    "maybe_prune", "prune",
]
