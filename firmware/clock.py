# Wall clock with a "synced since boot" flag and a persisted last-known time (alerts.md §4, clock).
import json

import board
from fsutil import note_damage, read_json, remove, write_atomic
from limits import MAX_EPOCH
from micropython import const

PATH = "clock.json"
PERSIST_EVERY = const(600)  # s between writes of the last known time (flash wear)
MAX_FILE = const(256)  # bytes: {"t": <10 digits>} is 14
MIN_PERSISTED = const(1577836800)  # 2020-01-01: older is not a time this firmware ever wrote


def _load(log):
    # The last persisted time, or 0. A damaged value is dropped, logged and the file removed, so
    # neither a crash nor a wild time reaches rule 10.
    v, why = read_json(PATH, MAX_FILE)
    if why == "missing":
        return 0
    if why is None:
        t = v.get("t") if isinstance(v, dict) else None
        if isinstance(t, int) and not isinstance(t, bool) and MIN_PERSISTED <= t <= MAX_EPOCH:
            return t
        why = "bad time"
    note_damage(log, PATH, why)
    remove(PATH)
    return 0


class Clock:
    def __init__(self, log=None):
        self.synced = board.clock_synced()
        self.persisted = _load(log)
        self._written = 0
        self._offset = 0  # network time minus the board's clock, once set from the 4G network

    def now(self):
        """Best current time: the real clock once synced, else never earlier than the last persisted."""
        t = int(board.epoch()) + self._offset
        if not self.synced and t < self.persisted:
            return self.persisted
        return t

    def set_synced(self):
        self.synced = True
        self.persist(force=True)

    def set_network(self, t):
        """Time from the cellular network (AT+CCLK?): set into the board's clock where it can be
        (the ESP32's RTC, which TLS checks certificate dates against), else kept as an offset."""
        self._offset = 0 if board.set_epoch(t) else int(t) - int(board.epoch())
        self.set_synced()

    def persist(self, force=False):
        t = int(board.epoch()) + self._offset
        if not self.synced:
            return
        if force or t - self._written >= PERSIST_EVERY:
            try:
                write_atomic(PATH, json.dumps({"t": t}).encode())
                self._written = t
                self.persisted = t
            except OSError:
                pass
