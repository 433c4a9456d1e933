"""Daily-broadcast schedules in the store (`cx broadcast schedule`): each area's programme drafts
(`add_programme`, `programmes`, `remove_programme`) and the schedules pushed from them, one row
per (area, version), so the next push of an area carries a higher version (broadcast.md §2:
terminals keep only the highest version per area and signer).

The drafts are checked as they are added (tools/schedule.py: fields, at most 32 per area, no two
overlapping), so a push finds an area that signs; the push checks the whole schedule again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.errors import StoreError
from fleet.store.core import Core
from tools import schedule
from tools.regions import REGION_RE


@dataclass
class Push:
    """A schedule signed for an area (published, or only written to a file)."""

    area: str
    version: int
    kid: str
    schedule_id: str
    issued: int
    from_date: str
    until_date: str
    programmes: int
    topic: str
    envelope: str
    created_at: float
    published_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "envelope"}


_PUSH_COLS = ("area, version, kid, schedule_id, issued, from_date, until_date, programmes, topic, "
              "envelope, created_at, published_at")


def _area(area: str) -> str:
    if not isinstance(area, str) or not REGION_RE.match(area):
        raise StoreError(f"area {area!r} must be a 12-digit region code")
    return area


class ScheduleRecords(Core):
    """Programme drafts per area and the schedules pushed from them."""

    # ---- drafts

    def add_programme(self, area: str, programme: dict[str, Any], *, replace: bool = False,
                      now: float | None = None) -> bool:
        """Add a programme to the area's drafts (`replace`: instead of the one with its id);
        True when it replaced one. Refused (StoreError, one line) when the id is taken, the
        area would have more than 32, or it overlaps another of the area's programmes."""
        now = time.time() if now is None else now
        try:
            schedule.check_programme(programme, "programme")
        except schedule.ScheduleError as e:
            raise StoreError(str(e)) from None
        pid = programme["id"]
        with self.transaction() as tx:
            rows = tx.execute("SELECT id, body FROM schedule_programmes WHERE area = ?",
                              (_area(area),)).fetchall()
            others = [json.loads(b) for i, b in rows if i != pid]
            exists = len(others) < len(rows)
            if exists and not replace:
                raise StoreError(f"area {area} has a programme {pid} already: remove it first, "
                                 "or give --replace")
            if len(others) >= schedule.MAX_PROGRAMMES:
                raise StoreError(f"area {area} has {len(others)} programmes, the most one "
                                 "schedule carries: remove one first")
            clash = schedule.overlap([*others, programme])
            if clash:
                raise StoreError(f"area {area}: {clash}")
            body = json.dumps(programme, ensure_ascii=False)
            if exists:
                tx.execute("UPDATE schedule_programmes SET body = ?, updated_at = ? WHERE "
                           "area = ? AND id = ?", (body, now, area, pid))
            else:
                tx.execute("INSERT INTO schedule_programmes (area, id, body, added_at, "
                           "updated_at) VALUES (?, ?, ?, ?, ?)", (area, pid, body, now, now))
        return exists

    def programmes(self, area: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(area, programme) of one area or of all, by area, then first start, then id."""
        sql, params = "SELECT area, body FROM schedule_programmes", []
        if area is not None:
            sql, params = sql + " WHERE area = ?", [_area(area)]
        with self.transaction(write=False) as tx:
            rows = tx.execute(sql, params).fetchall()
        out = [(a, json.loads(b)) for a, b in rows]
        out.sort(key=lambda r: (r[0], min(r[1]["days"]), r[1]["start"], r[1]["id"]))
        return out

    def remove_programme(self, area: str, programme_id: str) -> bool:
        """Remove one programme from the area's drafts; False when there was none."""
        with self.transaction() as tx:
            return tx.execute("DELETE FROM schedule_programmes WHERE area = ? AND id = ?",
                              (_area(area), programme_id)).rowcount == 1

    def schedule_areas(self) -> list[str]:
        """Every area with drafts or pushes."""
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT area FROM schedule_programmes UNION SELECT area FROM "
                              "schedule_pushes").fetchall()
        return sorted(a for (a,) in rows)

    # ---- pushes

    def next_schedule_version(self, area: str) -> int:
        """One above the area's last pushed version (1 for the first)."""
        with self.transaction(write=False) as tx:
            row = tx.execute("SELECT MAX(version) FROM schedule_pushes WHERE area = ?",
                             (_area(area),)).fetchone()
        return int(row[0] or 0) + 1

    def record_push(self, p: Push) -> None:
        """Remember a signed schedule before it is published. Refused when its version is not
        above every version recorded for the area (another push came first: push again)."""
        with self.transaction() as tx:
            row = tx.execute("SELECT MAX(version) FROM schedule_pushes WHERE area = ?",
                             (_area(p.area),)).fetchone()
            if row[0] is not None and p.version <= int(row[0]):
                raise StoreError(f"area {p.area} was pushed with version {row[0]} already: a "
                                 f"schedule with version {p.version} would be ignored (stale); "
                                 "push again, or give a higher --version")
            tx.execute(f"INSERT INTO schedule_pushes ({_PUSH_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?)",
                       (p.area, p.version, p.kid, p.schedule_id, p.issued, p.from_date,
                        p.until_date, p.programmes, p.topic, p.envelope, p.created_at,
                        p.published_at))

    def mark_published(self, area: str, version: int, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self.transaction() as tx:
            tx.execute("UPDATE schedule_pushes SET published_at = ? WHERE area = ? AND "
                       "version = ?", (at, area, version))

    def last_pushes(self, areas: Sequence[str] | None = None) -> dict[str, Push]:
        """The latest push of each area (of `areas`, or of all)."""
        with self.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {_PUSH_COLS} FROM schedule_pushes p WHERE version = "
                              "(SELECT MAX(version) FROM schedule_pushes q WHERE q.area = "
                              "p.area)").fetchall()
        out = {r[0]: Push(*r) for r in rows}
        return out if areas is None else {a: out[a] for a in areas if a in out}


__all__ = ["Push", "ScheduleRecords"]
