"""bench/ota_swarm.py, the simulated terminals of bench_ota_rollout.py, against the real parts
(Mosquitto, `cx fleet serve`, the engine, the file server): what it says on the wire is what
the fleet understands, so the benchmark's figures are those of a rollout that really happens."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otafleet import until
from otafleet_rig import Rig

from fleet import ota

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ota_swarm

ctx = mp.get_context("fork")


@pytest.fixture
def rig(tmp_path: Path, broker: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, broker, str(tmp_path / "fleet.sqlite"), 30)
    yield r
    r.close()


def test_a_swarm_of_30_is_online_updated_once_each_and_its_rollbacks_abort(rig: Rig) -> None:
    ready, out, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    bad = [d for d, w, _ in ota.assign_waves(sorted(rig.devices), [50, 100]) if w == 0][:3]
    p = ctx.Process(target=ota_swarm.child, daemon=True, args=(
        (rig.broker.host, rig.broker.port),
        [(d, "rollback" if d in bad else "confirm") for d in rig.devices], 30, 1e6, 0.05,
        ready, stop, out))
    p.start()
    try:
        assert ready.get(timeout=30)[0] == "ready"
        until(lambda: all(rig.store.device(d).state == "online" for d in rig.devices),
              what="30 swarm terminals online")
        rig.store.create_rollout("1.2.0", [50, 100], max_parallel=4, soak=0)
        rig.engine("a")
        rig.wait_state("done", timeout=60)
    finally:
        stop.set()
        kind, recs = out.get(timeout=30)
        p.join(10)
    assert kind == "records"
    targets = {t["device"]: t for t in rig.store.targets("1.2.0")}
    assert {d: t["state"] for d, t in targets.items() if t["state"] != "confirmed"} == {
        d: "rolled_back" for d in bad}  # 3 of 15 in wave 1: 20 %, not above: no abort
    for d, rec in recs.items():
        assert [op for _, op in rec.commands] == ["ota"], d
        states = [s for _, s in rec.reports]
        assert states[0] == "downloading" and states[-1] == (
            "rolled_back" if d in bad else "confirmed"), (d, states)
    assert rig.http.served == 2 * 30 and rig.http.peak <= 4  # every file fetched over HTTP
    assert all(rig.store.device(d).version == "1.2.0" for d in rig.devices if d not in bad)
