"""The fleet store behaves the same on SQLite and on a real PostgreSQL: migrations, bounded
history, redelivery without double counting, idempotent sweeps, alarms, alert records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fleet.errors import StoreError, UnknownAlarm, UnknownDevice
from fleet.ingest import parse
from fleet.sim import heartbeat
from fleet.store import MIGRATIONS, Store, region_prefix

A, B, C = "T341122100201-01", "T341122100202-01", "T341122200101-01"
NOW = 1_800_000_000.0


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url, history_keep=5)
    s.upsert_devices([(A, A[1:13], "horn"), (B, B[1:13], "column"), (C, C[1:13], "horn")],
                     now=NOW)
    yield s
    s.close()


def hb(device: str, t: int, at: float, **fields: Any) -> Any:
    return parse(f"eb/dev/{device}/hb", json.dumps(heartbeat(device, t, hb_s=10, up=t,
                                                               **fields)).encode(), at)


def test_migrations_are_numbered_and_reopening_applies_nothing_twice(url: str) -> None:
    Store.open(url).close()
    s = Store.open(url)
    assert s.migrate() == MIGRATIONS[-1][0]
    s.close()


def test_history_is_bounded_and_redelivered_heartbeats_count_once(store: Store) -> None:
    batch = [hb(A, t, NOW + t) for t in range(8)]
    st = store.ingest(batch, NOW + 8)
    assert (st.heartbeats, st.duplicates) == (8, 0)
    again = store.ingest(batch[-3:], NOW + 9)
    assert (again.heartbeats, again.duplicates) == (0, 3)
    assert store.history_count(A) == 5
    assert [h["t"] for h in store.history(A, 10)] == [7, 6, 5, 4, 3]


def test_a_heartbeat_twice_in_one_batch_is_stored_once(store: Store) -> None:
    st = store.ingest([hb(A, 1, NOW), hb(B, 1, NOW), hb(A, 1, NOW + 0.5), hb(A, 2, NOW + 1)],
                      NOW + 1)
    assert (st.heartbeats, st.duplicates) == (3, 1)
    assert [h["t"] for h in store.history(A, 10)] == [2, 1]
    assert store.device(A).last_hb_at == NOW + 1 and store.device(B).state == "online"


def test_offline_sweep_is_idempotent_and_heartbeats_close_the_alarm(store: Store) -> None:
    store.ingest([hb(A, 1, NOW), hb(B, 1, NOW)], NOW)
    assert store.sweep(NOW + 29).went_offline == 0
    first = store.sweep(NOW + 31)
    assert (first.went_offline, first.alarms_opened) == (2, 2)
    second = store.sweep(NOW + 32)
    assert (second.went_offline, second.alarms_opened) == (0, 0)
    assert [a.device for a in store.alarms(active=True, kind="offline")] == [B, A]
    st = store.ingest([hb(A, 2, NOW + 40)], NOW + 40)
    assert st.alarms_closed == 1
    assert store.device(A).state == "online" and store.device(B).state == "offline"


def test_on_4g_alarm_opens_after_the_threshold_and_closes_back_on_ip(store: Store) -> None:
    store.on_4g_after = 60
    store.ingest([hb(C, 1, NOW, link="4g")], NOW)
    store.ingest([hb(C, 2, NOW + 30, link="4g")], NOW + 30)
    assert store.sweep(NOW + 31).alarms_opened == 0
    store.ingest([hb(C, 3, NOW + 61, link="4g")], NOW + 61)
    assert [a.kind for a in store.alarms(active=True, device=C)] == ["on_4g"]
    store.ingest([hb(C, 4, NOW + 70, link="ip")], NOW + 70)
    assert store.alarms(active=True, device=C) == []


def test_ack_moves_open_to_acked_and_the_condition_still_closes_it(store: Store) -> None:
    store.ingest([hb(A, 1, NOW, supply="battery", clock="unsynced")], NOW)
    alarms = {a.kind: a for a in store.alarms(active=True, device=A)}
    assert set(alarms) == {"power", "clock_unsynced"}
    acked = store.ack_alarm(alarms["power"].id, now=NOW + 5)
    assert (acked.state, acked.acked_at) == ("acked", NOW + 5)
    store.ingest([hb(A, 2, NOW + 10, supply="battery")], NOW + 10)
    assert store.alarms(active=True, kind="power")[0].state == "acked"  # still one, still acked
    store.ingest([hb(A, 3, NOW + 20)], NOW + 20)
    closed = store.alarms(kind="power")[0]
    assert (closed.state, closed.acked_at, closed.closed_at) == ("closed", NOW + 5, NOW + 20)
    with pytest.raises(UnknownAlarm):
        store.ack_alarm(999)


def test_unknown_devices_are_counted_and_nothing_is_stored(store: Store) -> None:
    st = store.ingest([hb("T999999999999-01", 1, NOW)], NOW)
    assert (st.heartbeats, st.bad) == (0, 1)
    assert store.history_count() == 0
    with pytest.raises(UnknownDevice):
        store.device("T999999999999-01")
    assert [(b.kind, b.device) for b in store.bad_counts()] == [
        ("unknown_device", "T999999999999-01")]


def test_record_alert_resolves_targets_from_the_registry(store: Store) -> None:
    assert region_prefix("341122100000") == "341122100"
    targets = store.record_alert("A-7", "cty", ["341122100000"], published_at=NOW)
    assert [t.device for t in targets] == [A, B]
    store.record_alert("A-7", "cty", ["341122100000"], published_at=NOW + 99)
    rec = store.alert_record("A-7")
    assert rec is not None and (rec.published_at, rec.targets) == (NOW, 2)
    assert [(t.device, t.town) for t in store.alert_targets("A-7", "cty")] == [
        (A, "341122100"), (B, "341122100")]
    assert store.alert_targets("nope") == []
    with pytest.raises(StoreError):
        store.record_alert("A-8", "cty", ["3411"])


def test_receipts_are_stored_once_per_transition(store: Store) -> None:
    ev = json.dumps({"alert": "A-7", "kid": "cty", "status": "done", "reason": None, "t": 5})
    r = parse(f"eb/dev/{A}/event", ev.encode(), NOW)
    assert store.ingest([r, r], NOW).receipts == 1
    got = store.receipts("A-7")
    assert [(x.device, x.status, x.reason) for x in got] == [(A, "done", None)]


def storage(device: str, file: str, reason: str, n: int, at: float) -> Any:
    return parse(f"eb/dev/{device}/event", json.dumps(
        {"fault": "storage", "active": True, "value": n, "file": file, "reason": reason,
         "t": int(at)}).encode(), at)


def test_storage_fault_opens_an_alarm_the_ack_closes_even_before_a_heartbeat(store: Store) -> None:
    # the terminal tells damage on its flash once; a heartbeat after it in the same batch must
    # not swallow it (it restates conditions, not events)
    st = store.ingest([storage(A, "seen.json", "lost", 1, NOW), hb(A, 1, NOW)], NOW)
    assert st.bad == 0
    (a,) = store.alarms(active=True, kind="storage")
    assert (a.device, a.count, a.detail) == (A, 1, "seen.json: lost (1 dropped)")
    store.ingest([storage(A, "clips/x.wav", "hash mismatch", 1, NOW + 1)], NOW + 1)
    (a,) = store.alarms(active=True, kind="storage")
    assert a.count == 2 and a.detail.startswith("clips/x.wav")
    store.sweep(NOW + 2)  # no condition closes it
    assert store.alarms(active=True, kind="storage")
    closed = store.ack_alarm(a.id, now=NOW + 3)
    assert closed.state == "closed"
    # a storage fault that claims to clear, or lacks its file, is not a real one
    bad = parse(f"eb/dev/{A}/event", json.dumps({"fault": "storage", "active": False, "value": 1,
                                                 "file": "seen.json", "reason": "x",
                                                 "t": 1}).encode(), NOW)
    nofile = parse(f"eb/dev/{A}/event", json.dumps({"fault": "storage", "active": True,
                                                    "value": 1, "t": 1}).encode(), NOW)
    assert store.ingest([bad, nofile], NOW + 4).bad == 2


def recovery(device: str, active: bool, at: float) -> Any:
    return parse(f"eb/dev/{device}/event", json.dumps(
        {"fault": "recovery", "active": active, "value": None, "t": int(at)}).encode(), at)


def test_recovery_mode_opens_an_alarm_its_end_leaves_for_the_admin(store: Store) -> None:
    # the button held through a boot (docs/web.md "Recovery mode"): the admin hears of it
    st = store.ingest([recovery(A, True, NOW), hb(A, 1, NOW)], NOW)
    assert st.bad == 0
    (a,) = store.alarms(active=True, kind="recovery")
    assert (a.device, a.state) == (A, "open")
    assert store.ingest([recovery(A, False, NOW + 900)], NOW + 900).bad == 0
    store.sweep(NOW + 901)
    (a,) = store.alarms(active=True, kind="recovery")
    assert store.ack_alarm(a.id, now=NOW + 902).state == "closed"
