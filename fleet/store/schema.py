"""The store's schema: numbered migrations, written once for both databases, and applying them."""

from __future__ import annotations

import time

from fleet.store.transaction import Transaction

# Written once for both databases: `{pk}` is the only word that differs. Times are epoch
# seconds (DOUBLE PRECISION); ids and codes are TEXT; JSON bodies are TEXT.

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "registry, history, receipts, alarms, bad messages, alerts", [
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            region TEXT NOT NULL,
            town TEXT NOT NULL,
            profile TEXT NOT NULL,
            provisioned_at DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL,
            state_since DOUBLE PRECISION,
            state_reason TEXT,
            version TEXT,
            last_hb TEXT,
            last_hb_at DOUBLE PRECISION,
            last_t BIGINT,
            seen_at DOUBLE PRECISION,
            due_at DOUBLE PRECISION,
            link TEXT,
            link_since DOUBLE PRECISION,
            line TEXT,
            supply TEXT,
            clock TEXT,
            hb_s INTEGER,
            first_seen DOUBLE PRECISION)""",
        "CREATE INDEX devices_region ON devices (region)",
        "CREATE INDEX devices_due ON devices (state, due_at)",
        """CREATE TABLE heartbeats (
            seq {pk},
            device TEXT NOT NULL,
            t BIGINT NOT NULL,
            up BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL)""",
        # Redelivery after a crash (QoS 1) must not count a heartbeat twice.
        "CREATE UNIQUE INDEX heartbeats_once ON heartbeats (device, t, up)",
        "CREATE INDEX heartbeats_device ON heartbeats (device, seq)",
        """CREATE TABLE receipts (
            seq {pk},
            alert TEXT NOT NULL,
            kid TEXT NOT NULL,
            device TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            t BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL)""",
        "CREATE UNIQUE INDEX receipts_once ON receipts (device, alert, kid, status, reason, t)",
        "CREATE INDEX receipts_alert ON receipts (alert, kid)",
        """CREATE TABLE alarms (
            id {pk},
            device TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            count INTEGER NOT NULL,
            opened_at DOUBLE PRECISION NOT NULL,
            acked_at DOUBLE PRECISION,
            closed_at DOUBLE PRECISION)""",
        # At most one open-or-acked alarm per (device, kind), whoever tries to open it.
        "CREATE UNIQUE INDEX alarms_active ON alarms (device, kind) WHERE state <> 'closed'",
        "CREATE INDEX alarms_state ON alarms (state)",
        """CREATE TABLE bad_messages (
            kind TEXT NOT NULL,
            device TEXT NOT NULL,
            topic TEXT NOT NULL,
            count BIGINT NOT NULL,
            last_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, device, topic))""",
        """CREATE TABLE alerts (
            id TEXT NOT NULL,
            kid TEXT NOT NULL,
            regions TEXT NOT NULL,
            published_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (id, kid))""",
        """CREATE TABLE alert_targets (
            alert TEXT NOT NULL,
            kid TEXT NOT NULL,
            device TEXT NOT NULL,
            region TEXT NOT NULL,
            PRIMARY KEY (alert, kid, device))""",
    ]),
    (2, "OTA releases, rollouts and their targets", [
        # The release as `cx ota upload` read it (release.json and manifest.jws); the files are
        # in the content-addressed folder, not here.
        """CREATE TABLE ota_releases (
            version TEXT PRIMARY KEY,
            manifest TEXT NOT NULL,
            min_version TEXT,
            regions TEXT NOT NULL,
            issued BIGINT,
            kid TEXT,
            files TEXT NOT NULL,
            zbytes BIGINT NOT NULL,
            uploaded_at DOUBLE PRECISION NOT NULL)""",
        # One rollout per version; `wave` is the wave started last (-1: none yet).
        """CREATE TABLE ota_rollouts (
            version TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            waves TEXT NOT NULL,
            region TEXT NOT NULL,
            only_ip INTEGER NOT NULL,
            win TEXT,
            max_parallel INTEGER NOT NULL,
            abort_at DOUBLE PRECISION NOT NULL,
            soak DOUBLE PRECISION NOT NULL,
            wave INTEGER NOT NULL,
            wave_started_at DOUBLE PRECISION,
            wave_done_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            reason TEXT)""",
        """CREATE TABLE ota_targets (
            version TEXT NOT NULL,
            device TEXT NOT NULL,
            town TEXT NOT NULL,
            wave INTEGER NOT NULL,
            ord INTEGER NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            cid TEXT,
            instance TEXT,
            sent_at DOUBLE PRECISION,
            sends INTEGER NOT NULL,
            not_before DOUBLE PRECISION NOT NULL,
            done BIGINT,
            total BIGINT,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (version, device))""",
        "CREATE INDEX ota_targets_state ON ota_targets (version, state, wave)",
        "CREATE INDEX ota_targets_device ON ota_targets (device, state)",
    ]),
    (3, "daily-broadcast programme drafts and schedule pushes", [
        # An area's programmes as `cx broadcast schedule add` checked them: `body` is the
        # programme object of broadcast.md §2 (JSON); `area` a 12-digit region code.
        """CREATE TABLE schedule_programmes (
            area TEXT NOT NULL,
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            added_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (area, id))""",
        # Every schedule `cx broadcast schedule push` signed, so the next one of the area has a
        # higher version; published_at NULL: signed (--out) but not published.
        """CREATE TABLE schedule_pushes (
            area TEXT NOT NULL,
            version BIGINT NOT NULL,
            kid TEXT NOT NULL,
            schedule_id TEXT NOT NULL,
            issued BIGINT NOT NULL,
            from_date TEXT NOT NULL,
            until_date TEXT NOT NULL,
            programmes INTEGER NOT NULL,
            topic TEXT NOT NULL,
            envelope TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            published_at DOUBLE PRECISION,
            PRIMARY KEY (area, version))""",
    ]),
    (4, "daily-broadcast receipts: schedules, programmes, live announcements", [
        # One row per receipt of broadcast.md §4 and §7 (fleet/store/daily.py). `kind` is
        # schedule, programme or live; `name` the schedule id, `<schedule id>/<programme id>` or
        # the stream id. Absent text fields are '' (as in `receipts`), so the unique index
        # makes a redelivered receipt change nothing.
        """CREATE TABLE daily_receipts (
            seq {pk},
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            kid TEXT NOT NULL,
            device TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            t BIGINT NOT NULL,
            day TEXT NOT NULL,
            start TEXT NOT NULL,
            area TEXT,
            version BIGINT,
            chunks BIGINT,
            silent BIGINT,
            refused BIGINT,
            received_at DOUBLE PRECISION NOT NULL)""",
        ("CREATE UNIQUE INDEX daily_receipts_once ON daily_receipts (device, kind, name, kid, "
         "status, reason, t, day, start)"),
        "CREATE INDEX daily_receipts_name ON daily_receipts (kind, name, day)",
    ]),
]


def migrate(tx: Transaction) -> int:
    """Apply the migrations not applied yet (one instance at a time); returns the schema
    version."""
    d = tx.dialect
    d.migration_lock(tx.cursor)
    tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
               "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
    done = {r[0] for r in tx.execute("SELECT version FROM schema_migrations")}
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        for sql in statements:
            tx.execute(sql.replace("{pk}", d.pk))
        tx.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time()))
    return MIGRATIONS[-1][0]
