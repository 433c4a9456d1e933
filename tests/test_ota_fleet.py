"""Rollouts end to end: the real Mosquitto, `cx fleet serve` storing what the terminals say,
fake terminals answering `ota` (and fetching the files from the file server), and the engine:
four waves in order within --max-parallel; a bad release aborted after its first wave; pause
and resume; a terminal offline at its wave's start, and one held on 4G, updated when they can
be. (Two engines on one PostgreSQL database: tests/test_ota_fleet_pg.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otafleet import until
from otafleet_rig import Rig

from fleet.ota import FINAL


@pytest.fixture
def rig(tmp_path: Path, broker: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, broker, str(tmp_path / "fleet.sqlite"), 20)
    yield r
    r.close()


def max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    n = best = 0
    for _, d in edges:
        n += d
        best = max(best, n)
    return best


def test_four_waves_over_20_terminals_in_order_within_max_parallel(rig: Rig) -> None:
    terms = rig.connect(rig.devices)
    for t in terms:
        t.ota_step = 0.05
    n = rig.store.create_rollout("1.2.0", [5, 10, 50, 100], max_parallel=3, soak=0)
    assert n == 20
    rig.cx_serve("a")  # `cx ota serve` itself: file server and engine
    rig.wait_state("done", timeout=60)
    targets = rig.store.targets("1.2.0")
    assert [sum(1 for t in targets if t["wave"] == w) for w in range(4)] == [1, 1, 8, 10]
    assert all(t["state"] == "confirmed" and t["sends"] == 1 for t in targets), targets
    for d in rig.devices:
        cmds = rig.ota_commands(d)
        assert len(cmds) == 1, (d, cmds)
        assert cmds[0]["args"]["base"].startswith("http://127.0.0.1:")
        assert [e["state"] for e in rig.terminals[d].ota_events] == [
            "downloading", "staged", "trial", "confirmed"]  # files fetched and checked
    wave = {t["device"]: t["wave"] for t in targets}
    spans = {d: (rig.terminals[d].ota_started, rig.terminals[d].ota_ended) for d in rig.devices}
    for w in range(1, 4):
        first = min(spans[d][0] for d in rig.devices if wave[d] == w)
        last_before = max(spans[d][1] for d in rig.devices if wave[d] == w - 1)
        assert first > last_before, f"wave {w + 1} began before wave {w} ended"
    assert 2 <= max_overlap(list(spans.values())) <= 3
    s = rig.store.rollout_status("1.2.0")
    assert [w["confirmed"] for w in s["per_wave"]] == [1, 1, 8, 10]
    assert [t["targets"] for t in s["per_town"]] == [5, 5, 5, 5]
    assert all(rig.store.device(d).version == "1.2.0" for d in rig.devices)


def test_a_bad_release_is_aborted_after_wave_1_and_later_waves_get_nothing(rig: Rig) -> None:
    rig.connect(rig.devices, behaviour="rollback")
    rig.store.create_rollout("1.2.0", [5, 50, 100], max_parallel=5, soak=0)
    e = rig.engine("a")
    rig.wait_state("aborted")
    r = rig.store.rollout("1.2.0")
    assert r.reason == "wave 1: 1 of 1 failed or rolled back (100% > 20%)"
    targets = rig.store.targets("1.2.0")
    first = [t for t in targets if t["wave"] == 0]
    assert [t["state"] for t in first] == ["rolled_back"]
    assert all(t["state"] == "pending" and t["sends"] == 0 for t in targets if t["wave"] > 0)
    assert e.sent == 1
    assert sum(len(rig.ota_commands(d)) for d in rig.devices) == 1
    s = rig.store.rollout_status("1.2.0")
    assert s["reasons"] == {"rolled_back:selftest": 1}
    # an aborted rollout cannot be resumed; steps go on sending nothing
    steps = e.steps
    until(lambda: e.steps >= steps + 5, what="more engine steps")
    assert e.sent == 1


def test_pause_holds_the_commands_and_resume_sends_them(rig: Rig) -> None:
    town = [d for d in rig.devices if d.startswith("T341122100201")]
    rig.connect(town)
    rig.store.create_rollout("1.2.0", [100], max_parallel=2, soak=0, region="341122100201")
    assert rig.store.set_rollout("1.2.0", "pause") == "paused"
    e = rig.engine("a")
    until(lambda: e.steps >= 10, what="engine steps while paused")
    assert e.sent == 0
    assert rig.store.set_rollout("1.2.0", "resume") == "running"
    targets = [t["device"] for t in rig.store.targets("1.2.0")]
    assert sorted(targets) == sorted(town)
    until(lambda: all(s["state"] == "confirmed" for s in rig.store.targets("1.2.0")),
          what="every target confirmed")
    assert all(len(rig.ota_commands(d)) == 1 for d in targets)
    rig.wait_state("done")


def test_an_offline_terminal_and_one_on_4g_are_updated_when_they_can_be(rig: Rig) -> None:
    online, late, on_4g = rig.devices[:4], rig.devices[4], rig.devices[5]
    rig.connect(online)
    (g4,) = rig.connect([on_4g], link="4g")
    rig.store.create_rollout("1.2.0", [50, 100], max_parallel=5, soak=0, only_ip=True,
                             region="34112210")
    e = rig.engine("a")
    others = [d for d in rig.devices[6:] if d.startswith("T34112210")]
    # every terminal that can be reached is updated; the rest wait, the rollout runs on
    until(lambda: {t["device"] for t in rig.store.targets("1.2.0")
                   if t["state"] == "confirmed"} == set(online),
          what="the online IP terminals confirmed")
    until(lambda: rig.store.rollout("1.2.0").wave == 1, what="the last wave started")
    assert rig.state() == "running"
    assert rig.ota_commands(on_4g) == []
    g4.fields["link"] = "ip"
    g4.heartbeat(qos=1)
    rig.connect([late])
    until(lambda: all(t["state"] == "confirmed" for t in rig.store.targets("1.2.0")
                      if t["device"] in (late, on_4g)), what="late and 4G terminals confirmed")
    assert len(rig.ota_commands(late)) == len(rig.ota_commands(on_4g)) == 1
    rig.connect(others)
    rig.wait_state("done")
    assert e.sent == len(rig.store.targets("1.2.0"))


def test_refusals_and_failures_are_recorded_with_their_reason(rig: Rig) -> None:
    town = [d for d in rig.devices if d.startswith("T341122100201")]
    rig.connect(town[:2], behaviour="refuse:not_for_me")
    rig.connect(town[2:4], behaviour="fail")
    rig.connect(town[4:])
    rig.store.create_rollout("1.2.0", [100], max_parallel=5, soak=0, region="341122100201")
    rig.engine("a")
    rig.wait_state("aborted")
    # The abort comes as soon as the failures alone pass 20 %, maybe before the fifth terminal's
    # confirmation; reports still move the targets of an aborted rollout, so wait for it.
    until(lambda: all(t["state"] in FINAL for t in rig.store.targets("1.2.0")),
          what=f"every target final: {rig.store.targets('1.2.0')}")
    got = {t["device"]: (t["state"], t["reason"]) for t in rig.store.targets("1.2.0")}
    assert got == {**{d: ("refused", "not_for_me") for d in town[:2]},
                   **{d: ("failed", "unreachable") for d in town[2:4]},
                   town[4]: ("confirmed", None)}
    # refusals are not failures: 2 failed of 5 (40 %) is what aborts it
    assert rig.store.rollout("1.2.0").reason == "wave 1: 2 of 5 failed or rolled back (40% > 20%)"
