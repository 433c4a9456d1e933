"""The store's limits and defaults: history kept, the alarm thresholds, the assumed interval."""

HISTORY_KEEP = 100
"""Heartbeats kept per device; older ones are deleted in the transaction that adds new ones."""
TRIM_SLACK_DIV = 10
"""A device's history is trimmed back to `history_keep` once it has `history_keep // 10` new
heartbeats (from this instance) since its last trim, not at every heartbeat: the bound is
`history_keep` plus less than a tenth, per instance, and trimming costs a tenth."""
ON_4G_AFTER = 3600.0
"""Seconds on the 4G fallback before an `on_4g` alarm opens (`--on-4g-after`)."""
OFFLINE_AFTER = 3
"""Heartbeat intervals of silence before a device is offline."""
DEFAULT_HB_S = 60
"""Interval assumed for a device that never said (fleet-protocol.md default on IP)."""
