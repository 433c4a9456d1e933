"""The rollout rules without a broker: waves, the window, the engine's step on a store with a
clock of its own (claims, max-parallel, the ack timeout, the soak, aborts), what ingestion takes
from acknowledgements, reports and heartbeats, and the CLI's rollout, status, pause, resume and
abort."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otafleet import make_release

from fleet import ota
from fleet.ingest import Ack, Bad, OtaEvent, parse
from fleet.ota import OtaError
from fleet.sim import heartbeat
from fleet.store import Store

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC = 16:00 CST
DEVS = [f"T3411221002{i % 3:02d}-{i:02d}" for i in range(10)]
CX = str(Path(sys.executable).parent / "cx")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(str(tmp_path / "fleet.sqlite"))
    s.upsert_devices([(d, d[1:13], "horn") for d in DEVS], now=NOW)
    rel = make_release(tmp_path / "rel", "1.2.0")
    s.add_release(ota.read_release(rel))
    yield s
    s.close()


def online(s: Store, devices: list[str], at: float = NOW, **fields: Any) -> None:
    s.ingest([parse(f"eb/dev/{d}/hb", json.dumps(heartbeat(d, int(at), **fields)).encode(), at)
              for d in devices], at)


def ack(s: Store, device: str, cid: str, ok: bool, error: str | None = None,
        at: float = NOW) -> None:
    s.ingest([parse(f"eb/dev/{device}/ack", json.dumps(
        {"cid": cid, "ok": ok, "error": error}).encode(), at)], at)


def report(s: Store, device: str, state: str, reason: str | None = None,
           at: float = NOW) -> None:
    s.ingest([parse(f"eb/dev/{device}/event", json.dumps(
        {"ota": "1.2.0", "state": state, "reason": reason, "done": 0, "total": 10,
         "t": int(at)}).encode(), at)], at)


def states(s: Store) -> dict[str, str]:
    return {t["device"]: t["state"] for t in s.targets("1.2.0")}


def test_waves_are_cumulative_rounded_up_and_in_a_stable_order() -> None:
    assert ota.parse_waves("1%,10%,50%,100%") == [1, 10, 50, 100]
    for bad in ("", "10%,5%,100%", "50%", "0%,100%", "x,100%", "nan%,100%", "10%,10%,100%"):
        with pytest.raises(OtaError):
            ota.parse_waves(bad)
    devs = [f"T{i}" for i in range(20)]
    got = ota.assign_waves(devs, [1, 10, 50, 100])
    assert [sum(1 for _, w, _ in got if w == k) for k in range(4)] == [1, 1, 8, 10]
    assert got == ota.assign_waves(list(reversed(devs)), [1, 10, 50, 100])
    assert [w for _, w, _ in ota.assign_waves(["a", "b", "c"], [1, 100])] == [0, 1, 1]


def test_the_window_is_china_standard_time_and_may_span_midnight() -> None:
    w = ota.parse_window("02:00-05:00")
    day = 1_800_000_000 - 1_800_000_000 % 86400  # 00:00 UTC = 08:00 CST
    assert not ota.in_window(w, day)
    assert ota.in_window(w, day - 6 * 3600 + 60)  # 18:01 UTC = 02:01 CST
    assert not ota.in_window(w, day - 3 * 3600)  # 05:00 CST: the end is not in it
    night = ota.parse_window("22:00-04:00")
    assert ota.in_window(night, day - 9 * 3600) and ota.in_window(night, day - 5 * 3600)
    assert not ota.in_window(night, day)
    for bad in ("2-5", "02:00-02:00", "24:00-01:00", "02:00"):
        with pytest.raises(OtaError):
            ota.parse_window(bad)


def test_reports_and_the_heartbeat_ota_field_are_checked() -> None:
    d = DEVS[0]
    ev = parse(f"eb/dev/{d}/event", json.dumps({"ota": "1.2.0", "state": "rolled_back",
                                                "reason": "crash", "t": 5}).encode(), NOW)
    assert isinstance(ev, OtaEvent) and (ev.state, ev.reason) == ("rolled_back", "crash")
    for bad in ({"ota": "1.2", "state": "trial"}, {"ota": "1.2.0", "state": "nope"},
                {"ota": "1.2.0", "state": "failed", "reason": "crash"},
                {"ota": "1.2.0", "state": "confirmed", "reason": "x"}):
        assert isinstance(parse(f"eb/dev/{d}/event", json.dumps(bad).encode(), NOW), Bad)
    hb = heartbeat(d, 5, ota={"version": "1.2.0", "state": "downloading"})
    assert not isinstance(parse(f"eb/dev/{d}/hb", json.dumps(hb).encode(), NOW), Bad)
    hb["ota"] = {"version": 3}
    assert isinstance(parse(f"eb/dev/{d}/hb", json.dumps(hb).encode(), NOW), Bad)
    a = parse(f"eb/dev/{d}/ack", b'{"cid": "c-1", "ok": false, "error": "too_old"}', NOW)
    assert isinstance(a, Ack) and a.error == "too_old"


def test_step_claims_within_max_parallel_and_acks_move_the_targets(store: Store) -> None:
    online(store, DEVS)
    assert store.create_rollout("1.2.0", [100], max_parallel=3, soak=0, now=NOW) == 10
    first = store.step("a", now=NOW + 1).sends
    assert len(first) == 3 and not store.step("b", now=NOW + 1).sends  # no room left
    ack(store, first[0].device, first[0].cid, True)
    ack(store, first[1].device, first[1].cid, False, "not_for_me")
    ack(store, first[2].device, first[2].cid, False, "busy")
    got = states(store)
    assert (got[first[0].device], got[first[1].device], got[first[2].device]) == (
        "downloading", "refused", "pending")
    again = store.step("a", now=NOW + 2).sends
    assert len(again) == 2 and first[2].device not in {s.device for s in again}  # busy waits
    # no acknowledgement within the timeout: pending again, sent once more
    nxt = store.step("a", ack_timeout=10, now=NOW + 20).sends
    assert {s.device for s in again} <= {s.device for s in nxt}
    assert len(nxt) == 2  # (one place is still held by the downloading one)
    report(store, first[0].device, "confirmed")
    assert states(store)[first[0].device] == "confirmed"
    report(store, first[0].device, "downloading")  # late or repeated: never backwards
    assert states(store)[first[0].device] == "confirmed"


def test_waves_soak_abort_and_the_window(store: Store) -> None:
    online(store, DEVS)
    store.create_rollout("1.2.0", [10, 100], max_parallel=50, soak=600, now=NOW,
                         window="02:00-05:00")
    assert store.step("a", now=NOW).sends == []  # 16:00 CST: outside the window
    at = NOW + 10 * 3600 + 60  # 02:01 CST
    (s,) = store.step("a", now=at).sends
    report(store, s.device, "confirmed", at=at)
    st = store.step("a", now=at + 1)
    assert st.sends == [] and "wave 1 finished" in st.log[0]  # soaking
    assert store.step("a", now=at + 500).sends == []
    sends = store.step("a", now=at + 602).sends
    assert len(sends) == 9 and store.rollout("1.2.0").wave == 1
    for x in sends[:3]:
        report(store, x.device, "failed", "bad_hash", at=at + 603)
    for x in sends[3:]:
        online(store, [x.device], at=at + 603, v="1.2.0")  # confirmed by its heartbeat
    st = store.step("a", now=at + 604)
    assert store.rollout("1.2.0").state == "aborted" and "3 of 9" in st.log[0]


def test_only_one_live_rollout_and_its_commands(store: Store) -> None:
    with pytest.raises(OtaError, match="no release 9.9.9"):
        store.create_rollout("9.9.9", [100])
    online(store, DEVS[:2], v="1.2.0")  # already there: not a target
    assert store.create_rollout("1.2.0", [100], now=NOW) == 8
    with pytest.raises(OtaError, match="one rollout at a time|rolled out before"):
        store.create_rollout("1.2.0", [100])
    assert store.set_rollout("1.2.0", "pause") == "paused"
    assert store.step("a").sends == []
    assert store.set_rollout("1.2.0", "abort") == "aborted"
    with pytest.raises(OtaError, match="cannot resume"):
        store.set_rollout("1.2.0", "resume")


def test_the_cli_rollout_status_pause_resume_abort(tmp_path: Path, store: Store) -> None:
    db = str(tmp_path / "fleet.sqlite")

    def cx(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CX, "ota", *argv, "--db", db], capture_output=True, text=True,
                              timeout=30, check=False)

    r = cx("rollout", "1.2.0", "--waves", "20%,100%", "--soak", "0", "--window", "25:00")
    assert r.returncode == 2 and r.stderr.startswith("cx: error: --window")
    r = cx("rollout", "1.2.0", "--waves", "20%,100%", "--max-parallel", "2")
    assert r.returncode == 0 and "10 terminals in 2 waves (2, 8)" in r.stdout, r.stderr
    r = cx("status")
    assert r.returncode == 0 and "rollout 1.2.0: running, not started" in r.stdout
    assert "341122100" in r.stdout and "PENDING" in r.stdout
    s = json.loads(cx("status", "1.2.0", "--json").stdout)
    assert [w["pending"] for w in s["per_wave"]] == [2, 8]
    assert cx("pause", "1.2.0").stdout.strip() == "rollout 1.2.0: paused"
    assert cx("resume", "1.2.0").stdout.strip() == "rollout 1.2.0: running"
    assert cx("abort", "1.2.0").stdout.strip() == "rollout 1.2.0: aborted"
    r = cx("resume", "1.2.0")
    assert r.returncode == 1 and "cannot resume" in r.stderr
    r = cx("status", "--watch", "--interval", "0.1")  # an ended rollout: printed once
    assert r.returncode == 0 and r.stdout.count("rollout 1.2.0: aborted") == 1
    assert "aborted by the admin" in r.stdout
    r = cx("status", "1.9.0")
    assert r.returncode == 1 and r.stderr.strip() == "cx: error: no rollout of 1.9.0"


def test_a_silent_offline_terminal_stops_holding_its_wave_and_a_late_rollback_counts(
        store: Store) -> None:
    online(store, DEVS)
    store.create_rollout("1.2.0", [10, 100], max_parallel=1, soak=600, now=NOW)
    (s,) = store.step("a", now=NOW).sends
    ack(store, s.device, s.cid, True, at=NOW)
    store.ingest([parse(f"eb/dev/{s.device}/state", b"offline", NOW + 1)], NOW + 1)
    assert store.step("a", stall=100, now=NOW + 50).sends == []  # holds wave and place
    st = store.step("a", stall=100, now=NOW + 200)
    assert st.log and "wave 1 finished" in st.log[0] and st.sends == []
    # it comes back and reports a rollback during the soak: judged again before wave 2
    report(store, s.device, "rolled_back", "crash", at=NOW + 300)
    st = store.step("a", stall=100, now=NOW + 900)
    assert store.rollout("1.2.0").state == "aborted" and st.sends == []
    assert "wave 1: 1 of 1" in st.log[-1]


def test_empty_waves_are_not_soaked(store: Store) -> None:
    online(store, DEVS[1:], v="1.2.0")  # already there: not targets
    online(store, DEVS[:1])
    assert store.create_rollout("1.2.0", [1, 10, 50, 100], soak=3600, now=NOW) == 1
    (s,) = store.step("a", now=NOW).sends
    report(store, s.device, "confirmed")
    store.step("a", now=NOW + 1)
    assert store.rollout("1.2.0").state == "running"  # soaking after wave 1
    st = store.step("a", now=NOW + 3602)
    assert store.rollout("1.2.0").state == "done", st.log  # waves 2-4 are empty: no soak


def test_a_wave_is_aborted_as_soon_as_its_failures_alone_pass_the_threshold(
        store: Store) -> None:
    online(store, DEVS)
    store.create_rollout("1.2.0", [100], max_parallel=3, soak=0, abort_at=0.2, now=NOW)
    first = store.step("a", now=NOW).sends
    report(store, first[0].device, "rolled_back", "crash", at=NOW + 1)
    report(store, first[1].device, "failed", "bad_hash", at=NOW + 1)
    report(store, first[2].device, "confirmed", at=NOW + 1)
    more = store.step("a", now=NOW + 2).sends  # 2 of 10: not above 20 %, the wave goes on
    assert len(more) == 3 and store.rollout("1.2.0").state == "running"
    report(store, more[0].device, "rolled_back", "selftest", at=NOW + 3)
    st = store.step("a", now=NOW + 4)  # 3 of 10 whatever the other 7 do: not one more sent
    assert st.sends == [] and store.rollout("1.2.0").state == "aborted"
    assert "wave 1: 3 of 10" in st.log[-1]
    assert list(states(store).values()).count("pending") == 4
