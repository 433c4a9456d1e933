# Priority arbitration of accepted alerts: preempt, wait, resume, cancel (alerts.md §5).
import asyncio

from micropython import const

MAX_WAITING = const(16)  # alerts queued behind the one playing; beyond, the lowest is dropped


# a fleet self-test yields to every alert and test, the operator's own items (firmware/local.py)
# to everything (alerts.md §5: local broadcast below alerts and tests)
# and below them live announcements and scheduled programmes (docs/broadcast.md §5)
_KIND_RANK = {"alert": 0, "test": 1, "selftest": 2, "live": 3, "daily": 4, "local": 5}
# the operator starts it again; a programme's time has passed; a live announcement went on
# without the terminal (docs/broadcast.md §5)
_NO_RESUME = ("local", "daily", "live")


def tier(scope):
    """An issuer's tier: its shortest scope prefix, the smaller the higher (province 2, county 6,
    town 9, village 12 digits)."""
    shortest = 12
    for s in scope:
        if len(s) < shortest:
            shortest = len(s)
    return shortest


def rank(item):
    """Sort key, smallest plays first: alert before test (before a local self-test), lower level,
    higher issuer tier (shorter scope prefix), later issued."""
    p = item.payload
    return (_KIND_RANK.get(p["kind"], 0), p.get("level") or 4, tier(item.scope), -p["issued"])


class Arbiter:
    def __init__(self, player, receipt, clock, log):
        self.player = player
        self.receipt = receipt  # receipt(item, status, reason): the terminal's receipts
        self.clock = clock
        self.log = log
        self.current = None
        self.waiting = []
        self.resumable = None  # preempted and still valid: resumes from its start if nothing waits
        self._task = None
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run())

    def _say(self, item, status, reason):
        # An item with its own `report` (a local self-test) is told there; the rest are receipts.
        (item.report or self.receipt)(item, status, reason)

    def submit(self, item):
        """An accepted alert or test: payload, id, kid, scope, and report (None: receipts)."""
        cur = self.current
        if cur is not None and rank(item) < rank(cur):
            self.log("preempt", alert=cur.id, by=item.id)
            cur.preempted_by = item  # a programme's receipt says by what (docs/broadcast.md §4)
            self._say(cur, "preempted", None)
            if cur.payload["kind"] not in _NO_RESUME:
                self.resumable = cur
            self.current = None
            if self._task:
                self._task.cancel()
        self.waiting.append(item)
        self.waiting.sort(key=rank)
        while len(self.waiting) > MAX_WAITING:
            dropped = self.waiting.pop()
            self._say(dropped, "cancelled", "queue_full")
        self._wake.set()

    def cancel(self, c):
        """A verified cancel: stop and forget each referenced alert it may address."""
        refs = c.payload["refs"]
        for item in self._all():
            if item.id in refs and self._may_cancel(c, item):
                self.log("cancel", alert=item.id, by=c.id)
                self._say(item, "cancelled", None)
                if item is self.current:
                    self.current = None
                    if self._task:
                        self._task.cancel()
                elif item is self.resumable:
                    self.resumable = None
                else:
                    self.waiting.remove(item)

    def stop(self, item, reason="stopped"):
        """Stop `item` (playing or waiting) at once: its report hears `cancelled` `reason`. For
        the operator's own items (firmware/local.py) and a live stream a higher tier's displaces
        (firmware/live.py) only: alerts end by a cancel alone."""
        if item is self.current:
            self.current = None
            if self._task:
                self._task.cancel()
        elif item in self.waiting:
            self.waiting.remove(item)
        else:
            return
        self.log("stop", alert=item.id)
        self._say(item, "cancelled", reason)

    def _all(self):
        out = list(self.waiting)
        if self.current is not None:
            out.append(self.current)
        if self.resumable is not None:
            out.append(self.resumable)
        return out

    @staticmethod
    def _may_cancel(c, item):
        # same issuer, or an issuer whose scope covers the target issuer's scope (§3 refs)
        if c.kid == item.kid:
            return True
        for s in item.scope:
            covered = False
            for cs in c.scope:
                if s.startswith(cs):
                    covered = True
            if not covered:
                return False
        return True

    def _next(self):
        now = self.clock.now()
        while self.waiting:
            item = self.waiting.pop(0)
            if now < item.payload["expires"]:
                return item
            self._say(item, "cancelled", "expired")
        item, self.resumable = self.resumable, None
        if item is not None:
            if now < item.payload["expires"]:
                self.log("resume", alert=item.id)
                return item
            self._say(item, "cancelled", "expired")
        return None

    async def _run(self):
        while True:
            item = self._next()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.current = item
            self._task = asyncio.create_task(self._play(item))
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            if self.current is item:
                self.current = None

    async def _play(self, item):
        def playing(reason):
            self._say(item, "playing", reason)

        err = await self.player.play(item.payload, playing)
        if self.current is item:
            self._say(item, "done", err)

    def deinit(self):
        self._runner.cancel()
        if self._task:
            self._task.cancel()
