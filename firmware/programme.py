# Scheduled programmes (docs/broadcast.md §2, §4, §5): when each accepted schedule's programmes
# are due in local time, which tier wins a moment, the arbiter items that play them, their
# clips fetched ahead of time, and a receipt for every play.
import asyncio

import daily
from fsutil import size
from micropython import const

LATE_S = const(60)  # a programme found running later than this after its start is not begun
TICK_MS = const(1000)  # how often the planner looks at the clock
FETCH_RETRY_MS = const(600000)  # a clip that could not be fetched is tried again after this
MAX_DONE = const(256)  # occurrences remembered as handled (a day holds at most 32 x 8 x 2)


class Occurrence:
    """One programme on one local date: [start, end) in epoch seconds."""

    def __init__(self, s, g, z, start, end):
        self.s = s
        self.g = g
        self.z = z
        self.start = start
        self.end = end
        self.key = "%s/%s/%s/%d" % (s.kid, s.id, g["id"], z)

    def order(self):
        # who wins a moment (§5): the higher tier, then the earlier start, then the smaller id
        return (self.s.tier, self.start, self.g["id"])


class _Item:
    # an arbiter item (arbiter.py rank: below alerts, tests and live, above the operator's own)
    def __init__(self, o, path, report):
        s, g = o.s, o.g
        self.o = o
        self.id = "daily-" + g["id"]
        self.kid = s.kid
        self.scope = [s.prefix]
        self.report = report
        self.preempted_by = None
        self.payload = {"id": self.id, "kind": "daily", "level": 4, "issued": o.start,
                        "expires": o.end, "until": o.end, "audio": {"file": path},
                        "volume": g["volume"], "repeat": 1}


class Programmes:
    def __init__(self, schedules, arbiter, clips, clock, log, send_event):
        self.schedules = schedules
        self.arbiter = arbiter
        self.clips = clips
        self.clock = clock
        self.log = log
        self._send = send_event
        self._done = []  # keys of occurrences handled (played, skipped), oldest first
        self._fetch_due = {}  # sha256 -> ticks when a failed fetch may be tried again
        self._wake = asyncio.Event()

    def accepted(self, s):
        """A schedule was just accepted: fetch its clips now rather than at the next tick."""
        self._wake.set()

    def occurrences(self, z, now):
        """The programmes of local date z whose interval holds now (objects only for those: the
        planner asks every second)."""
        out = []
        base = z * 86400 - daily.TZ_OFFSET
        wd = daily.weekday(z)
        for s in self.schedules.held.values():
            if not s.first <= z <= s.last or z in s.skip:
                continue
            for g, start, n, skip in s.plan:
                t0 = base + start
                if t0 <= now < t0 + n and wd in g["days"] and z not in skip:
                    out.append(Occurrence(s, g, z, t0, t0 + n))
        return out

    async def run(self):
        # the planner's tick and the clip fetches are two tasks: a download over a slow 4G link
        # never holds a programme's start
        asyncio.create_task(self._fetch_task())
        while True:
            try:
                self._tick()
            except MemoryError:
                pass  # the next tick tries again: a programme is never worth a crash
            except Exception as e:
                self.log("programme_error", error=repr(e))
            await asyncio.sleep_ms(TICK_MS)

    async def _fetch_task(self):
        while True:
            try:
                await self._prefetch()
            except MemoryError:
                pass
            except Exception as e:
                self.log("programme_error", where="fetch", error=repr(e))
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), TICK_MS * 10)
            except asyncio.TimeoutError:
                pass

    def _tick(self):
        now = self.clock.now()
        z = daily.local_day(now)[0]
        occs = self.occurrences(z - 1, now) + self.occurrences(z, now)
        for o in occs:
            if o.key in self._done:
                continue
            path = self._cached(o.g)
            if not self.clock.synced:
                self._skip(o, "clock_unsynced")
            elif path is None and now - o.start > LATE_S:
                self._skip(o, "no_clip")
            elif path is None:
                continue  # its fetch may still finish within LATE_S (prefetch below)
            elif now - o.start > LATE_S:
                self._skip(o, "late")
            elif self._higher(o, occs, now):
                self._skip(o, "higher_tier")
            else:
                self._mark(o)
                self.log("programme", schedule=o.s.id, programme=o.g["id"], tier=o.s.tier)
                self.arbiter.submit(_Item(o, path, self._report))

    def _higher(self, o, occs, now):
        for x in occs:
            if x is not o and x.start <= now < x.end and x.order() < o.order():
                return True
        return False

    def _cached(self, g):
        c = g["audio"]["clip"]
        try:
            path = self.clips.path(c["sha256"])
            if size(path) == c["bytes"]:
                return path
        except Exception:
            pass
        return None

    async def _prefetch(self):
        # every clip of every held schedule, before it is due (both links may be down then)
        import time

        pinned = set()  # evicted last from the clip cache, never for another programme's clip
        for s in self.schedules.all():
            for g in s.p["programmes"]:
                pinned.add(g["audio"]["clip"]["sha256"])
        self.clips.pinned = pinned
        for s in self.schedules.all():
            for g in s.p["programmes"]:
                c = g["audio"]["clip"]
                if self._cached(g) is not None:
                    continue
                due = self._fetch_due.get(c["sha256"])
                if due is not None and time.ticks_diff(due, time.ticks_ms()) > 0:
                    continue
                if self.arbiter.current is not None and self.arbiter.current.payload["kind"] \
                        in ("alert", "test"):
                    return  # never while a warning or a test sounds: its clip may need the link
                try:
                    await self.clips.fetch(c["url"], c["sha256"], c["bytes"])
                    self._fetch_due.pop(c["sha256"], None)
                    self.log("programme_clip", programme=g["id"], sha256=c["sha256"])
                except Exception as e:
                    self._fetch_due[c["sha256"]] = time.ticks_add(time.ticks_ms(),
                                                                  FETCH_RETRY_MS)
                    self.log("programme_clip_failed", programme=g["id"],
                             reason=getattr(e, "reason", repr(e)))

    def _mark(self, o):
        self._done.append(o.key)
        if len(self._done) > MAX_DONE:
            self._done.pop(0)

    def _skip(self, o, reason):
        self._mark(o)
        self._say(o, "skipped", reason)

    def _report(self, item, status, reason):
        o = item.o
        if status == "preempted":
            by = item.preempted_by
            k = by.payload.get("kind") if by is not None else None
            reason = "higher_tier" if k == "daily" else ("live" if k == "live" else "alert")
        elif status == "cancelled":
            # the arbiter dropped it: expired while a warning or test held the horn, or stopped
            status, reason = "skipped", "busy"
        elif status == "done" and reason is not None:
            reason = "play_failed"
        self._say(o, status, reason)

    def _say(self, o, status, reason):
        self.log("programme_" + status, schedule=o.s.id, programme=o.g["id"], reason=reason)
        self._send({"programme": o.s.id + "/" + o.g["id"], "kid": o.s.kid,
                    "date": daily.date_str(o.z), "start": o.g["start"], "status": status,
                    "reason": reason, "t": self.clock.now()})
