"""The pipe between `cx fleet serve`'s receiver (fleet/service.py) and its writer process
(fleet/writer.py): the kinds of message each side sends and how each is built.

A message is a tuple, its `Kind` first, pickled by multiprocessing. The receiver sends batches
and, when stopping, `STOP`; the writer answers each stored batch (`STORED`) and says what its
sweeps did, what to log and, last, that it stopped.
"""

from __future__ import annotations

import enum
from typing import Any

Message = tuple[Any, ...]
Entry = tuple[str, bytes | bytearray, float]
"""A message of a batch as the writer gets it: (topic, payload, received_at)."""


class Kind(enum.StrEnum):
    """What a pipe message is; the fields that follow it are given per member."""

    BATCH = "batch"
    """receiver → writer: (n, [Entry], acked): batch number n, its messages, and whether any
    of them waits for an acknowledgement (QoS 1)."""
    STOP = "stop"
    """receiver → writer: (): store what was sent, then stop."""
    STORED = "stored"
    """writer → receiver: ([n], {IngestStats field: count}): these batches are committed."""
    SWEEP = "sweep"
    """writer → receiver: (went_offline, alarms_opened, alarms_closed) of a sweep that did
    something."""
    LOG = "log"
    """writer → receiver: (text,): a line for the service's log."""
    STOPPED = "stopped"
    """writer → receiver: (): the writer stored what it could and ends; nothing follows."""


def batch(n: int, entries: list[Entry], acked: bool) -> Message:
    return (Kind.BATCH, n, entries, acked)


def stop() -> Message:
    return (Kind.STOP,)


def stored(ns: list[int], stats: dict[str, int]) -> Message:
    return (Kind.STORED, ns, stats)


def sweep(went_offline: int, alarms_opened: int, alarms_closed: int) -> Message:
    return (Kind.SWEEP, went_offline, alarms_opened, alarms_closed)


def log(text: str) -> Message:
    return (Kind.LOG, text)


def stopped() -> Message:
    return (Kind.STOPPED,)
