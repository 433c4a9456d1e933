# The operator button: a polled level, debounced, each release classified short or long
# (docs/web.md "Button"). The pin comes in as a reading function: board.button().
import asyncio
import time

from micropython import const

POLL_MS = const(10)  # how often the level is read
DEBOUNCE_MS = const(30)  # a level must hold this long to count: contact bounce is shorter
LONG_MS = const(2000)  # a press held this long (or longer) is "long"


class Button:
    """Button(read, on_press): read() is True while the button is down (board.button());
    on_press("short" | "long") is called at each debounced release. `pressed` is the debounced
    level, `down_ms` when the current press began (ticks), `releases` counts releases since
    start; consume() makes the current press end without an on_press (recovery mode took it)."""

    def __init__(self, read, on_press, long_ms=LONG_MS, debounce_ms=DEBOUNCE_MS):
        self._read = read
        self._on_press = on_press
        self.long_ms = long_ms
        self.debounce_ms = debounce_ms
        self.pressed = False
        self.down_ms = 0
        self.releases = 0
        self._raw = False
        self._raw_ms = 0  # when the raw level last changed
        self._consumed = False

    def consume(self):
        self._consumed = True

    def poll(self, now):
        """One reading at ticks `now`; returns "short", "long" or None (also given to on_press)."""
        raw = bool(self._read())
        if raw != self._raw:
            self._raw = raw
            self._raw_ms = now
            return None
        if raw == self.pressed or time.ticks_diff(now, self._raw_ms) < self.debounce_ms:
            return None
        self.pressed = raw
        if raw:
            self.down_ms = self._raw_ms  # the press began when the level first went down
            self._consumed = False
            return None
        held = time.ticks_diff(self._raw_ms, self.down_ms)
        self.releases += 1
        if self._consumed:
            self._consumed = False
            return None
        kind = "long" if held >= self.long_ms else "short"
        self._on_press(kind)
        return kind

    async def run(self):
        while True:
            try:
                self.poll(time.ticks_ms())
            except Exception as e:  # a failing press handler must not stop the button
                print("button:", repr(e))
            await asyncio.sleep_ms(POLL_MS)
