"""Two rollout engines on one PostgreSQL database (the throwaway cluster of tests/pg.py) share
one rollout: every terminal is sent its update exactly once, whichever engine claims it; and an
engine killed between its claim and its publish loses nothing (the claim times out back to
pending and the other engine sends it)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg
import pytest
from otafleet import until
from otafleet_rig import Rig

from fleet.store import Store


@pytest.fixture
def rig(tmp_path: Path, broker: Any, cluster: pg.PgCluster) -> Iterator[Rig]:
    r = Rig(tmp_path, broker, cluster.create_db(f"ota{abs(hash(str(tmp_path))) % 10**9}"), 20)
    yield r
    r.close()


def test_two_engines_send_each_terminal_exactly_one_command(rig: Rig) -> None:
    terms = rig.connect(rig.devices)
    for t in terms:
        t.ota_step = 0.05
    rig.store.create_rollout("1.2.0", [10, 50, 100], max_parallel=4, soak=0)
    a, b = rig.engine("a"), rig.engine("b")
    rig.wait_state("done", timeout=60)
    targets = rig.store.targets("1.2.0")
    assert all(t["state"] == "confirmed" and t["sends"] == 1 for t in targets), targets
    assert all(len(rig.ota_commands(d)) == 1 for d in rig.devices)
    assert a.sent + b.sent == 20
    assert {t["instance"] for t in targets} <= {"a", "b"}


def test_a_claim_whose_publish_never_happened_is_sent_again_after_the_timeout(rig: Rig) -> None:
    rig.connect(rig.devices[:5])
    rig.store.create_rollout("1.2.0", [100], max_parallel=5, soak=0, region="341122100201")
    # an instance that claimed and died before publishing: its claims are in the database only
    dead = Store.open(rig.url)
    try:
        claimed = dead.step("dead", ack_timeout=0.5).sends
    finally:
        dead.close()
    online = [d for d in rig.devices[:5] if d.startswith("T341122100201")]
    assert sorted(s.device for s in claimed) == sorted(online)
    rig.engine("a", ack_timeout=0.5)
    until(lambda: all(t["state"] == "confirmed" for t in rig.store.targets("1.2.0")
                      if t["device"] in online), what="the dead instance's claims sent again")
    assert all(len(rig.ota_commands(d)) == 1 for d in online)


def test_cx_ota_serve_killed_mid_rollout_loses_nothing(rig: Rig) -> None:
    """`cx ota serve` dies with SIGKILL (no clean-up of any kind) while a wave is under way; a
    second instance started afterwards finishes the rollout: every target confirmed, a terminal
    sent its command twice at most if the kill fell between its publish and its record (the
    terminal's acknowledgement says the same update is already under way, ota.md §2)."""
    terms = rig.connect(rig.devices)
    for t in terms:
        t.ota_step = 0.3
    rig.store.create_rollout("1.2.0", [100], max_parallel=4, soak=0)
    a = rig.cx_serve("a", ack_timeout=5, base=rig.base)  # files from the rig's own server
    until(lambda: sum(t["state"] == "confirmed" for t in rig.store.targets("1.2.0")) >= 4,
          60, "a first few confirmed")
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    targets = rig.store.targets("1.2.0")
    assert not all(t["state"] == "confirmed" for t in targets), "killed too late to prove it"
    rig.cx_serve("b", ack_timeout=5, base=rig.base)
    rig.wait_state("done", timeout=120)
    targets = rig.store.targets("1.2.0")
    assert all(t["state"] == "confirmed" for t in targets), targets
    twice = [d for d in rig.devices if len(rig.ota_commands(d)) > 1]
    assert all(len(rig.ota_commands(d)) >= 1 for d in rig.devices)
    assert len(twice) <= 4, twice  # at most the places that were in flight at the kill
    assert {t["instance"] for t in targets} <= {"a", "b"}
    assert any(t["instance"] == "b" for t in targets)
