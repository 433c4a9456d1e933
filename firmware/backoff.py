# Jittered waits for every retry loop: the MQTT and 4G supervisors, the link's IP check (STYLE.md
# "one retry helper", resilience like mqtt_as).
import random


def jitter(ms, spread):
    """ms plus a random 0..spread ms (spread below 2**30: a small int on the ESP32 too)."""
    return ms + random.getrandbits(30) % (spread + 1)


class Backoff:
    """Exponential backoff: the delay starts at lo ms and doubles up to hi; each wait is drawn
    between half the delay and the delay, so a fleet that lost its broker does not return at once."""

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi
        self.delay = lo

    def reset(self):
        """After a connection that lived long enough: retry soon again."""
        self.delay = self.lo

    def next_ms(self):
        """The wait before the next attempt; doubles the delay for the one after."""
        half = self.delay // 2
        self.delay = min(self.delay * 2, self.hi)
        return jitter(half, half)
