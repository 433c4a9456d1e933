"""A one-way network delay for the emulated 4G module (tools/emu/modem.py, `modem latency`).

Bytes handed to a `DelayLine` come out of it `delay` seconds later, in the order they went in (a
TCP stream is never reordered: with jitter, a segment waits for the one before it), on a thread
of its own, so neither the AT side nor the socket side of the model waits for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class DelayLine:
    def __init__(self, out: Callable[[bytes], None], name: str) -> None:
        self._out = out
        self._q: deque[tuple[float, bytes]] = deque()
        self._cv = threading.Condition()
        self._last = 0.0
        self._stopped = False
        self.queued = 0  # bytes inside
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def busy(self) -> bool:
        with self._cv:
            return bool(self._q)

    def put(self, data: bytes, delay: float) -> None:
        """`data` leaves after `delay` s, never before what went in earlier (b"": end of stream)."""
        with self._cv:
            due = max(time.monotonic() + delay, self._last)
            self._last = due
            self._q.append((due, data))
            self.queued += len(data)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._q.clear()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._q or self._q[0][0] > time.monotonic()):
                    self._cv.wait(self._q[0][0] - time.monotonic() if self._q else None)
                if self._stopped:
                    return
                _, data = self._q.popleft()
                self.queued -= len(data)
            try:
                self._out(data)
            except OSError:
                pass  # the socket went away meanwhile: what was in flight is lost, as on a network
