"""The fleet resolves alert targets with the same region prefixes as terminals (alerts.md §3)."""

from __future__ import annotations

import pytest

from fleet.store import Store, region_prefix
from tools.envelope import region_prefix as envelope_prefix

# Each code with the prefix it targets: trailing all-zero groups go, cut only at group boundaries.
CODES = {"340000000000": "34", "341100000000": "3411", "341122000000": "341122",
         "341122100000": "341122100", "341122100201": "341122100201", "340011000000": "340011",
         "341122100200": "341122100200"}


@pytest.mark.parametrize(("code", "prefix"), CODES.items())
def test_fleet_prefix_matches_the_envelope_tools(code: str, prefix: str) -> None:
    assert region_prefix(code) == prefix
    assert envelope_prefix(code) == prefix


def test_county_alert_targets_every_terminal_of_the_county(tmp_path) -> None:
    store = Store.open(str(tmp_path / "f.sqlite"))
    try:
        for code in ("341122100201", "341122200101", "341123100201"):
            store.upsert_device(f"T{code}-01", code)
        got = {t.device for t in store.record_alert("A1", "k", ["341122000000"])}
        assert got == {"T341122100201-01", "T341122200101-01"}
    finally:
        store.close()
