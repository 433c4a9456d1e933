"""Retrying in `cx fleet serve`: the jittered backoff of every reconnection (broker, database,
writer restarts) and what the log says about a broker outage while it lasts."""

from __future__ import annotations

import random
import socket
import ssl
import time
from collections.abc import Callable

BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds between reconnection attempts (broker, database, writer restarts), before jitter
(`backoff`): the last step repeats while the failure lasts."""
REPEAT_EVERY = 300.0
"""Seconds between log lines about a broker failure that goes on unchanged once the retries
are at the last BACKOFF step (one line per attempt before that, and whenever the reason
changes): a broker away all night costs a line every 5 minutes, not every 30 s."""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (0 for the first): its BACKOFF step, less up to
    half at random, so instances that lost the same broker or database do not come back in
    step."""
    return BACKOFF[min(attempt, len(BACKOFF) - 1)] * (0.5 + random.random() / 2)


def why(e: Exception) -> str:
    """Why a connection attempt failed, for the log: `connection refused`, `timed out`…"""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({e.verify_message}); check --cafile"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name: {(e.strerror or str(e)).lower()}"
    text = (e.strerror if isinstance(e, OSError) else None) or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


def span(seconds: float) -> str:
    """A duration for the log: `2.5 s`, `40 s`, `3 min`, `5 h`."""
    s = int(seconds)
    return f"{seconds:.1f} s" if seconds < 10 else f"{s} s" if s < 120 else \
        f"{s // 60} min" if s < 7200 else f"{s // 3600} h"


class Outage:
    """Failed attempts to reach the broker since it was last connected, and what of them the
    log says (REPEAT_EVERY)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self.attempts = 0
        self._since = 0.0
        self._said = ""
        self._said_at = 0.0
        self._quiet = False  # the last line said the failure would be repeated less often

    def failed(self, what: str, wait: float) -> None:
        now = time.monotonic()
        if not self.attempts:
            self._since = now
        self.attempts += 1
        capped = self.attempts >= len(BACKOFF)  # this wait is the last step: it repeats
        if capped and self._quiet and what == self._said and now - self._said_at < REPEAT_EVERY:
            return
        self._quiet = capped
        more = "" if self.attempts == 1 else \
            f"attempt {self.attempts} in {span(now - self._since)}, "
        quiet = f", logged every {REPEAT_EVERY / 60:g} min while unchanged" if capped else ""
        self._log(f"{what}; {more}retrying in {wait:.1f} s{quiet}")
        self._said, self._said_at = what, now

    def ended(self) -> str:
        """Connected: what the outage was (for the 'connected' line), and forget it."""
        if not self.attempts:
            return ""
        n, took = self.attempts, span(time.monotonic() - self._since)
        self.attempts, self._said, self._quiet = 0, "", False
        return f" after {n} failed attempt{'s' if n > 1 else ''} in {took}"
