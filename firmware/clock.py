# Wall clock with a "synced since boot" flag and a persisted last-known time (alerts.md §4, clock).
import json

import board
from fsutil import read_bytes, write_atomic
from micropython import const

PATH = "clock.json"
PERSIST_EVERY = const(600)  # s between writes of the last known time (flash wear)


class Clock:
    def __init__(self):
        self.synced = board.clock_synced()
        self.persisted = 0
        try:
            self.persisted = int(json.loads(read_bytes(PATH) or b"{}")["t"])
        except Exception:
            pass
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
