"""OTA in the store: releases (`cx ota upload`), rollouts and their targets (`cx ota rollout`,
`pause`, `resume`, `abort`, `status`), the rollout engine's step (`OtaRecords.step`: waves,
aborts, and claiming each command send with one conditional UPDATE) and what ingestion applies
from acknowledgements, OTA reports and heartbeats (`apply_ota`).

All state is here, so any number of `cx ota serve` instances may run one rollout: a step locks
the rollout's row (PostgreSQL `FOR UPDATE`, SQLite's write lock), and a target goes from
`pending` to `sent` only through `UPDATE … WHERE state = 'pending'`, so no two instances ever
send a terminal the same update. A `sent` target with no acknowledgement after the timeout goes
back to `pending`: an instance killed between the claim and the publish loses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet import ota
from fleet.ota import (
    ACTIVE,
    BUSY,
    FINAL,
    PENDING,
    RANK,
    SENT,
    TARGET_STATES,
    OtaError,
    Release,
)
from fleet.store.core import Core
from fleet.store.registry import region_filter
from fleet.store.transaction import Transaction
from tools.regions import covers

BUSY_RETRY = 30.0
"""Seconds before a terminal that answered `busy` is sent the command again."""
STALL = 1800.0
"""Seconds an update in flight on an offline terminal that says nothing holds its wave."""
ABORTED_TRACKED = 86400.0
"""Seconds after an abort during which reports still move its targets."""
_IN = ",".join(f"'{s}'" for s in ACTIVE)
_FINAL = ",".join(f"'{s}'" for s in FINAL)
_ROLLOUT_COLS = ("version, state, waves, region, only_ip, win, max_parallel, abort_at, soak, "
                 "wave, wave_started_at, wave_done_at, created_at, ended_at, reason")


@dataclass
class Rollout:
    version: str
    state: str
    waves: list[float]
    region: str
    only_ip: bool
    window: str | None
    max_parallel: int
    abort_at: float
    soak: float
    wave: int
    wave_started_at: float | None
    wave_done_at: float | None
    created_at: float
    ended_at: float | None
    reason: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Rollout:
        r = list(row)
        r[2] = json.loads(r[2])
        r[4] = bool(r[4])
        return cls(*r)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Send:
    """A command the engine claimed and must now publish."""

    device: str
    cid: str
    version: str


@dataclass
class Step:
    """What one engine step did: commands to publish, lines for the log."""

    sends: list[Send] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    reset: int = 0


class OtaRecords(Core):
    """Releases, rollouts, targets, and the engine's step."""

    # ---- releases

    def add_release(self, r: Release, now: float | None = None) -> bool:
        """Record a release (again: nothing changes); False when it was recorded already. A
        different release under a version already recorded is refused."""
        now = time.time() if now is None else now
        with self.transaction() as tx:
            row = tx.execute("SELECT manifest FROM ota_releases WHERE version = ?",
                             (r.version,)).fetchone()
            if row is not None:
                if row[0] != r.manifest:
                    raise OtaError(f"another release {r.version} was uploaded before (a "
                                   "different manifest): give the new build its own version")
                return False
            tx.execute("INSERT INTO ota_releases (version, manifest, min_version, regions, "
                       "issued, kid, files, zbytes, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                       "?, ?)", (r.version, r.manifest, r.min_version, json.dumps(r.regions),
                                 r.issued, r.kid, json.dumps(r.files), r.zbytes, now))
        return True

    def release(self, version: str) -> Release:
        with self.transaction(write=False) as tx:
            row = tx.execute("SELECT version, manifest, min_version, regions, issued, kid, "
                             "files, zbytes FROM ota_releases WHERE version = ?",
                             (version,)).fetchone()
        if row is None:
            raise OtaError(f"no release {version} (upload it with 'cx ota upload DIR')")
        v, man, mv, regions, issued, kid, files, zb = row
        return Release(v, man, mv, json.loads(regions), issued, kid, json.loads(files), zb)

    # ---- rollouts

    def create_rollout(self, version: str, waves: list[float], *, region: str = "",
                       only_ip: bool = False, window: str | None = None, max_parallel: int = 50,
                       abort_at: float = 0.2, soak: float = 3600.0,
                       now: float | None = None) -> int:
        """Start a rollout of an uploaded release: its targets are the registered terminals in
        `region` (a prefix) that a region of the release covers and whose last heartbeat's `v`
        differs, put in waves. Returns the number of targets."""
        now = time.time() if now is None else now
        rel = self.release(version)
        ota.parse_window(window)
        where, params = region_filter(region)
        with self.transaction() as tx:
            live = tx.execute("SELECT version, state FROM ota_rollouts WHERE state IN "
                              "('running', 'paused')").fetchone()
            if live is not None:
                raise OtaError(f"the rollout of {live[0]} is {live[1]}: abort it first (one "
                               "rollout at a time)")
            if tx.execute("SELECT 1 FROM ota_rollouts WHERE version = ?",
                          (version,)).fetchone():
                raise OtaError(f"{version} was rolled out before; 'cx ota status {version}' "
                               "shows how it went")
            rows = tx.execute(f"SELECT id, region FROM devices d WHERE (version IS NULL OR "
                              f"version <> ?){where} ORDER BY id", [version, *params]).fetchall()
            devices = {d: reg for d, reg in rows if any(covers(c, reg) for c in rel.regions)}
            if not devices:
                raise OtaError(f"no registered terminal{' in ' + region if region else ''} "
                               f"needs {version} (regions {', '.join(rel.regions)})")
            tx.execute(f"INSERT INTO ota_rollouts ({_ROLLOUT_COLS}) VALUES (?, 'running', ?, "
                       "?, ?, ?, ?, ?, ?, -1, NULL, NULL, ?, NULL, NULL)",
                       (version, json.dumps(waves), region, int(only_ip), window, max_parallel,
                        abort_at, soak, now))
            tx.executemany("INSERT INTO ota_targets (version, device, town, wave, ord, state, "
                           "sends, not_before, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, "
                           "0, ?)", [(version, d, ota.town(devices[d]), w, i, now)
                                     for d, w, i in ota.assign_waves(sorted(devices), waves)])
        return len(devices)

    def rollout(self, version: str | None = None) -> Rollout:
        """The rollout of `version`; None: the live one, else the latest."""
        with self.transaction(write=False) as tx:
            if version is not None:
                row = tx.execute(f"SELECT {_ROLLOUT_COLS} FROM ota_rollouts WHERE version = ?",
                                 (version,)).fetchone()
            else:
                row = tx.execute(f"SELECT {_ROLLOUT_COLS} FROM ota_rollouts ORDER BY CASE WHEN "
                                 "state IN ('running', 'paused') THEN 0 ELSE 1 END, created_at "
                                 "DESC LIMIT 1").fetchone()
        if row is None:
            raise OtaError(f"no rollout of {version}" if version else "no rollout yet")
        return Rollout.from_row(row)

    def set_rollout(self, version: str, action: str, now: float | None = None) -> str:
        """`pause`, `resume` or `abort`; returns the new state."""
        now = time.time() if now is None else now
        want = {"pause": ("paused", ("running",)), "resume": ("running", ("paused",)),
                "abort": ("aborted", ("running", "paused"))}[action]
        with self.transaction() as tx:
            row = tx.execute("SELECT state FROM ota_rollouts WHERE version = ?",
                             (version,)).fetchone()
            if row is None:
                raise OtaError(f"no rollout of {version}")
            if row[0] == want[0]:
                return row[0]
            if row[0] not in want[1]:
                raise OtaError(f"the rollout of {version} is {row[0]}: cannot {action} it")
            tx.execute("UPDATE ota_rollouts SET state = ?, ended_at = ?, reason = ? WHERE "
                       "version = ?", (want[0], now if action == "abort" else None,
                                       "aborted by the admin" if action == "abort" else None,
                                       version))
        return want[0]

    # ---- the engine's step

    def step(self, instance: str, *, ack_timeout: float = 60.0, stall: float = STALL,
             now: float | None = None, new_cid: Any = None) -> Step:
        """One step of the engine on the running rollout: sent targets unacknowledged past
        `ack_timeout` back to pending; a finished wave judged (abort) and, after its soak, the
        next started; then as many sends claimed as `max_parallel` leaves room for. A target in
        flight whose terminal is offline and has said nothing for `stall` seconds holds neither
        its wave nor a place (it still moves if the terminal comes back and reports)."""
        now = time.time() if now is None else now
        out = Step()
        # in flight and not stalled, on `t` joined with its device `d`
        flying = (f"(t.state IN ({_IN}) AND NOT (d.state = 'offline' AND t.updated_at < "
                  f"{float(now - stall)!r}))")
        with self.transaction() as tx:
            row = tx.execute(f"SELECT {_ROLLOUT_COLS} FROM ota_rollouts WHERE state = 'running' "
                             f"ORDER BY created_at LIMIT 1{tx.dialect.for_update}").fetchone()
            if row is None:
                return out
            r = Rollout.from_row(row)
            v = r.version
            out.reset = tx.execute(
                "UPDATE ota_targets SET state = 'pending', cid = NULL WHERE version = ? AND "
                "state = 'sent' AND sent_at < ?", (v, now - ack_timeout)).rowcount
            window = ota.parse_window(r.window)
            self._waves(tx, r, now, window, flying, out)
            if r.state != "running" or r.wave < 0 or not ota.in_window(window, now):
                return out
            active = tx.execute(f"SELECT COUNT(*) FROM ota_targets t JOIN devices d ON d.id = "
                                f"t.device WHERE t.version = ? AND {flying}",
                                (v,)).fetchone()[0]
            room = r.max_parallel - active
            if room <= 0:
                return out
            link = " AND COALESCE(d.link, '') <> '4g'" if r.only_ip else ""
            devices = [d for (d,) in tx.execute(
                f"SELECT t.device FROM ota_targets t JOIN devices d ON d.id = t.device WHERE "
                f"t.version = ? AND t.state = 'pending' AND t.wave <= ? AND t.not_before <= ? "
                f"AND d.state = 'online'{link} ORDER BY t.wave, t.ord LIMIT ?",
                (v, r.wave, now, room)).fetchall()]
            for dev in devices:
                cid = new_cid() if new_cid else f"ota-{dev}-{int(now * 1000)}"
                claimed = tx.execute(
                    "UPDATE ota_targets SET state = 'sent', cid = ?, instance = ?, sent_at = ?, "
                    "sends = sends + 1, updated_at = ? WHERE version = ? AND device = ? AND "
                    "state = 'pending'", (cid, instance, now, now, v, dev)).rowcount
                if claimed == 1:
                    out.sends.append(Send(dev, cid, v))
        return out

    def _waves(self, tx: Transaction, r: Rollout, now: float, window: tuple[int, int] | None,
               flying: str, out: Step) -> None:
        """Judge the current wave and start the next (as many as are ready in this step)."""
        v, last = r.version, len(r.waves) - 1
        link = " AND COALESCE(d.link, '') <> '4g'" if r.only_ip else ""
        while r.state == "running":
            if r.wave >= 0 and r.wave_done_at is None:
                # Finished: nothing in flight, nothing pending that could be sent now (a
                # terminal offline, or held on 4G, is sent its command when it can be).
                busy = tx.execute(
                    f"SELECT COUNT(*) FROM ota_targets t JOIN devices d ON d.id = t.device "
                    f"WHERE t.version = ? AND t.wave = ? AND ({flying} OR (t.state = "
                    f"'pending' AND d.state = 'online'{link}))", (v, r.wave)).fetchone()[0]
                if busy:
                    # Its failures can only grow: once they alone pass abort_at, no outcome
                    # still to come saves the wave, and the rest of it is not sent.
                    self._judge(tx, r, now, out)
                    return
                r.wave_done_at = now
                tx.execute("UPDATE ota_rollouts SET wave_done_at = ? WHERE version = ?",
                           (now, v))
                n, bad = self._judge(tx, r, now, out)
                if r.state != "running":
                    return
                out.log.append(f"rollout {v}: wave {r.wave + 1} finished ({n - bad} of {n} "
                               "without failure)")
            if r.wave == last:
                left = tx.execute(f"SELECT COUNT(*) FROM ota_targets WHERE version = ? AND "
                                  f"state NOT IN ({_FINAL})", (v,)).fetchone()[0]
                if not left:
                    r.state = "done"
                    tx.execute("UPDATE ota_rollouts SET state = 'done', ended_at = ? WHERE "
                               "version = ?", (now, v))
                    out.log.append(f"rollout {v} done")
                return
            ready = r.created_at if r.wave < 0 else (r.wave_done_at or now) + r.soak
            if now < ready or not ota.in_window(window, now):
                return
            if r.wave >= 0:  # judged again after the soak: a late rollback counts too
                self._judge(tx, r, now, out)
                if r.state != "running":
                    return
            r.wave += 1
            r.wave_started_at, r.wave_done_at = now, None
            tx.execute("UPDATE ota_rollouts SET wave = ?, wave_started_at = ?, wave_done_at = "
                       "NULL WHERE version = ?", (r.wave, now, v))
            n = tx.execute("SELECT COUNT(*) FROM ota_targets WHERE version = ? AND wave = ?",
                           (v, r.wave)).fetchone()[0]
            out.log.append(f"rollout {v}: wave {r.wave + 1} of {last + 1} started ({n} "
                           "terminals)")
            if n == 0:  # (fewer targets than waves) nothing to wait for, nor to soak
                r.wave_done_at = now - r.soak
                tx.execute("UPDATE ota_rollouts SET wave_done_at = ? WHERE version = ?",
                           (r.wave_done_at, v))

    @staticmethod
    def _judge(tx: Transaction, r: Rollout, now: float, out: Step) -> tuple[int, int]:
        """Abort the rollout when its current wave's (failed + rolled_back) / targets is above
        `abort_at`; returns (targets, failed + rolled back)."""
        n, bad = tx.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state IN ('failed', 'rolled_back') THEN 1 "
            "ELSE 0 END), 0) FROM ota_targets WHERE version = ? AND wave = ?",
            (r.version, r.wave)).fetchone()
        if n and bad / n > r.abort_at:
            r.state = "aborted"
            r.reason = (f"wave {r.wave + 1}: {bad} of {n} failed or rolled back "
                        f"({bad / n:.0%} > {r.abort_at:.0%})")
            tx.execute("UPDATE ota_rollouts SET state = 'aborted', ended_at = ?, reason = ? "
                       "WHERE version = ?", (now, r.reason, r.version))
            out.log.append(f"rollout {r.version} aborted: {r.reason}")
        return n, bad

    # ---- status

    def rollout_status(self, version: str | None = None) -> dict[str, Any]:
        """The rollout with counts of target states per wave and per town, and the reasons of
        failures, rollbacks and refusals."""
        r = self.rollout(version)
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT wave, town, state, COALESCE(reason, ''), COUNT(*) FROM "
                              "ota_targets WHERE version = ? GROUP BY wave, town, state, reason",
                              (r.version,)).fetchall()
        waves = [{"wave": i + 1, "percent": p, "targets": 0, **{s: 0 for s in TARGET_STATES}}
                 for i, p in enumerate(r.waves)]
        towns: dict[str, dict[str, Any]] = {}
        reasons: dict[str, int] = {}
        for wave, tn, state, reason, n in rows:
            t = towns.setdefault(tn, {"town": tn, "targets": 0,
                                      **{s: 0 for s in TARGET_STATES}})
            for acc in (waves[wave], t):
                acc["targets"] += n
                acc[state] += n
            if reason:
                reasons[f"{state}:{reason}"] = reasons.get(f"{state}:{reason}", 0) + n
        return {**r.to_json(), "targets": sum(w["targets"] for w in waves), "per_wave": waves,
                "per_town": [towns[k] for k in sorted(towns)], "reasons": dict(sorted(
                    reasons.items()))}

    def targets(self, version: str) -> list[dict[str, Any]]:
        """Every target of a rollout (tests, `--json` users): device, wave, state, reason,
        sends."""
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT device, wave, state, reason, sends, instance FROM "
                              "ota_targets WHERE version = ? ORDER BY wave, ord",
                              (version,)).fetchall()
        return [dict(zip(("device", "wave", "state", "reason", "sends", "instance"), r,
                         strict=True)) for r in rows]


# ---------------------------------------------------------------------------- ingestion


def _from(state: str) -> str:
    """The states a target may move to `state` from (up the order; progress repeats)."""
    ok = [s for s in TARGET_STATES if RANK[s] < RANK[state] or (s == state and s not in FINAL)]
    return ",".join(f"'{s}'" for s in ok)


def apply_ota(tx: Transaction, acks: Sequence[Any], events: Sequence[Any],
              heartbeats: Sequence[Any], now: float) -> None:
    """What a batch says about rollout targets: command acknowledgements (by cid), OTA reports
    (by version) and heartbeats (`v` equal to a rollout's version: confirmed; `ota`: progress).
    Nothing to do, and one cheap query, when no rollout is under way."""
    if not (acks or events or heartbeats):
        return
    # Rollouts whose targets may still move: live ones, and for a day those aborted (updates
    # under way still report). A batch costs one query when there is none.
    versions = {v for (v,) in tx.execute(
        "SELECT version FROM ota_rollouts WHERE state IN ('running', 'paused') OR (state = "
        "'aborted' AND ended_at > ?)", (now - ABORTED_TRACKED,))}
    if not versions:
        return
    for a in acks:
        if a.cid is None:
            continue
        if a.ok:
            tx.execute("UPDATE ota_targets SET state = 'downloading', updated_at = ? WHERE "
                       "device = ? AND cid = ? AND state = 'sent'", (now, a.device, a.cid))
        elif a.error == BUSY:
            tx.execute("UPDATE ota_targets SET state = 'pending', cid = NULL, not_before = ?, "
                       "updated_at = ? WHERE device = ? AND cid = ? AND state = 'sent'",
                       (now + BUSY_RETRY, now, a.device, a.cid))
        else:
            tx.execute("UPDATE ota_targets SET state = 'refused', reason = ?, updated_at = ? "
                       "WHERE device = ? AND cid = ? AND state IN ('pending', 'sent')",
                       (a.error or "refused", now, a.device, a.cid))
    for e in events:
        if e.version in versions:
            tx.execute(f"UPDATE ota_targets SET state = ?, reason = ?, done = COALESCE(?, done), "
                       f"total = COALESCE(?, total), updated_at = ? WHERE device = ? AND "
                       f"version = ? AND state IN ({_from(e.state)})",
                       (e.state, e.reason, e.done, e.total, now, e.device, e.version))
    hbs = [h for h in heartbeats if h.body.get("v") in versions
           or isinstance(h.body.get("ota"), dict)]
    if not hbs:
        return
    # Only the heartbeats of terminals with a target still moving: one query for the batch,
    # not an UPDATE per heartbeat of every terminal already updated.
    cond, params = tx.dialect.id_in("device", sorted({h.device for h in hbs}))
    moving = {(d, v) for d, v in tx.execute(
        f"SELECT device, version FROM ota_targets WHERE {cond} AND state NOT IN ({_FINAL})",
        params) if v in versions}
    for h in hbs:
        b = h.body
        if (h.device, b.get("v")) in moving:
            tx.execute(f"UPDATE ota_targets SET state = 'confirmed', reason = NULL, updated_at = "
                       f"? WHERE device = ? AND version = ? AND state NOT IN ({_FINAL})",
                       (now, h.device, b["v"]))
        o = b.get("ota")
        if isinstance(o, dict) and (h.device, o.get("version")) in moving \
                and o.get("state") in ACTIVE and o.get("state") != SENT:
            tx.execute(f"UPDATE ota_targets SET state = ?, updated_at = ? WHERE device = ? AND "
                       f"version = ? AND state IN ({_from(o['state'])})",
                       (o["state"], now, h.device, o["version"]))

__all__ = ["BUSY_RETRY", "PENDING", "OtaRecords", "Rollout", "Send", "Step", "apply_ota"]
