# Amplifier relay: warm-up before the first sample, hold after the last (alerts.md §5).
import asyncio
import time

# (warmup_ms, hold_ms) defaults per output profile (alerts.md §5; config key "profile")
PROFILES = {"horn": (500, 2000), "column": (100, 1000)}


class Amplifier:
    """Owns the relay pin. Every on() is matched by one release(); the relay opens hold_ms after
    the last outstanding on() was released, so a preempted player releasing late can never
    switch off the amplifier under the one that replaced it."""

    def __init__(self, relay_pin, warmup_ms, hold_ms):
        # the pin's power-on state is the board's business (board.amp_pin() starts it open)
        self._pin = relay_pin
        self.warmup_ms = warmup_ms
        self.hold_ms = hold_ms
        self.is_on = False
        self._closed_at = 0
        self._users = 0
        self._off = None

    async def on(self):
        """Close the relay if open, then wait until warmup_ms have passed since it closed."""
        self._users += 1
        self._cancel_off()
        if not self.is_on:
            self._pin.value(1)
            self.is_on = True
            self._closed_at = time.ticks_ms()
        left = self.warmup_ms - time.ticks_diff(time.ticks_ms(), self._closed_at)
        if left > 0:
            await asyncio.sleep_ms(left)

    def release(self):
        """Open the relay after hold_ms, unless on() is called again meanwhile."""
        if self._users > 0:
            self._users -= 1
        if self._users or not self.is_on:
            return
        self._cancel_off()
        self._off = asyncio.create_task(self._off_later())

    def off_now(self):
        """Open at once (shutdown, fault); forgets every outstanding on()."""
        self._cancel_off()
        self._users = 0
        self._open()

    async def _off_later(self):
        await asyncio.sleep_ms(self.hold_ms)
        self._off = None
        if not self._users:
            self._open()

    def _open(self):
        self._pin.value(0)
        self.is_on = False

    def _cancel_off(self):
        t = self._off
        if t is not None:
            self._off = None
            t.cancel()
