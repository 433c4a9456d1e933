"""Region codes (统计用区划代码), prefixes and ids on the host: the terminal's own rules
(firmware/region.py, alerts.md §3), plus the checks a host makes before it stores or signs one.
The one place fleet/, the signing tools and the broker ACLs take them from."""

from __future__ import annotations

import re

from tools.firmware import load

_R = load("region")
_L = load("limits")

ID_RE = re.compile(rf"[A-Za-z0-9._:-]{{1,{_L.MAX_ID}}}\Z")
"""An alert id, a key id, a device id: 1..64 chars of A-Z a-z 0-9 . _ : - (alerts.md §3)."""
REGION_RE = re.compile(r"\d{12}\Z")
"""A 12-digit region code (its province may still be 00: see valid_code)."""
PREFIX_RE = re.compile(r"\d{0,12}\Z")
"""A region prefix as a filter: empty (everything) up to a whole code."""
PREFIX_LENGTHS = (2, 4, 6, 9, 12)
"""Group boundaries: province 2, city 2, county 2, town 3, village 3."""


def valid_code(code: object) -> bool:
    """A 12-digit code whose province is not 00 (firmware/region.py)."""
    return bool(_R.valid_code(code))


def prefix(code: str) -> str:
    """alerts.md §3: the code without its trailing all-zero groups, cut at group boundaries."""
    return str(_R.prefix(code))


def prefixes(code: str) -> list[str]:
    """The five topic prefixes of a terminal's code, shortest first (alerts.md §6)."""
    return [str(p) for p in _R.prefixes(code)]


def covers(region_code: str, terminal_code: str) -> bool:
    return bool(_R.covers(region_code, terminal_code))


def within(region_code: str, scope: list[str]) -> bool:
    return bool(_R.within(region_code, scope))
