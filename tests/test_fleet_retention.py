"""Retention on SQLite and a real PostgreSQL (fleet/store/retention.py, `cx fleet prune`): old
alert records go with their targets and receipts, recent ones and open alarms stay, a dry run
deletes nothing and counts what a run deletes, small batches and budgets add up to the same."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cx.main import main as cx
from fleet.ingest import parse
from fleet.sim import heartbeat
from fleet.store import Store, retention

A, B, C = "T341122100201-01", "T341122100202-01", "T341122200101-01"
DAY = 86400.0
# What the default policy (365 days alerts, 90 closed alarms, 90 counters) lets go in `world`.
GONE = {"alerts": 1, "alert_targets": 3, "receipts": 4, "alarms": 1, "bad_messages": 1}


def receipt(device: str, alert: str, kid: str, status: str, at: float) -> Any:
    ev = {"alert": alert, "kid": kid, "status": status, "t": int(at),
          "reason": "expired" if status == "rejected" else None}
    return parse(f"eb/dev/{device}/event", json.dumps(ev).encode(), at)


def hb(device: str, at: float, **fields: Any) -> Any:
    return parse(f"eb/dev/{device}/hb",
                 json.dumps(heartbeat(device, int(at), **fields)).encode(), at)


@pytest.fixture
def world(url: str) -> Iterator[tuple[Store, float]]:
    """A year and more of a county, stored in arrival order, ages in days before `now`:
    alert OLD (-400, receipts -400): goes whole; alert LATE (-400) has a receipt at -10: kept
    whole; alert NEW (-30): kept; receipts of an unrecorded province alert at -380 (goes) and -20;
    line alarms closed at -100 (goes) and -10, open since -500; a power alarm acknowledged at
    -500; a rejected alarm open since -10; bad-message counters last counted -100 (goes), -5."""
    now = time.time()
    s = Store.open(url)
    s.upsert_devices([(A, A[1:13], "horn"), (B, B[1:13], "horn"), (C, C[1:13], "horn")],
                     now=now - 600 * DAY)

    def at(days: float) -> float:
        return now - days * DAY

    s.record_alert("OLD", "cty", ["341122000000"], at(400))
    s.record_alert("LATE", "cty", ["341122000000"], at(400))
    s.record_alert("NEW", "cty", ["341122000000"], at(30))
    stream = [
        (at(500), hb(C, at(500), line="open", supply="battery")),
        (at(400), receipt(A, "OLD", "cty", "accepted", at(400))),
        (at(400), receipt(A, "OLD", "cty", "done", at(400) + 5)),
        (at(400), receipt(B, "OLD", "cty", "done", at(400) + 6)),
        (at(400), receipt(A, "LATE", "cty", "done", at(400) + 7)),
        (at(380), receipt(A, "PROV-1", "prov", "done", at(380))),
        (at(200), hb(A, at(200), line="open")),
        (at(100), hb(A, at(100))),
        (at(100), parse(f"eb/dev/{A}/hb", b"not json", at(100))),
        (at(50), hb(B, at(50), line="open")),
        (at(30), receipt(A, "NEW", "cty", "done", at(30))),
        (at(30), receipt(C, "NEW", "cty", "done", at(30) + 1)),
        (at(20), receipt(B, "PROV-2", "prov", "done", at(20))),
        (at(10), hb(B, at(10))),
        (at(10), receipt(B, "LATE", "cty", "rejected", at(10))),
        (at(5), parse(f"eb/dev/{B}/hb", b"not json", at(5))),
    ]
    for when, rec in stream:
        s.ingest([rec], when)
    power = s.alarms(kind="power")[0]
    s.ack_alarm(power.id, now=at(500))
    yield s, now
    s.close()


def counts(s: Store) -> dict[str, int]:
    with s.transaction(write=False) as tx:
        return {t: int(tx.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in GONE}


def test_dry_run_counts_what_would_go_and_deletes_nothing(world: tuple[Store, float]) -> None:
    s, now = world
    before = counts(s)
    st = retention.prune(s, now=now, dry_run=True)
    assert st.tables() == GONE and st.dry_run and not st.more
    assert counts(s) == before


def test_old_records_go_recent_ones_and_open_alarms_stay(world: tuple[Store, float]) -> None:
    s, now = world
    before = counts(s)
    st = retention.prune(s, now=now)
    assert st.tables() == GONE and not st.dry_run
    assert counts(s) == {t: before[t] - GONE[t] for t in GONE}
    assert s.alert_record("OLD") is None and s.alert_targets("OLD") == [] \
        and s.receipts("OLD") == []
    late = s.alert_record("LATE")  # its last receipt is recent: the whole report stays
    assert late is not None and late.targets == 3
    assert [(r.device, r.status) for r in s.receipts("LATE")] == [(A, "done"), (B, "rejected")]
    assert s.alert_record("NEW") is not None and len(s.receipts("NEW")) == 2
    assert [r.alert for r in s.receipts(kid="prov")] == ["PROV-2"]
    alarms = {(a.device, a.kind, a.state) for a in s.alarms()}
    assert alarms == {(B, "line", "closed"), (C, "line", "open"), (C, "power", "acked"),
                      (B, "rejected", "open")}
    assert [(b.device, b.kind) for b in s.bad_counts()] == [(B, "not_json")]


def test_a_second_run_deletes_nothing(world: tuple[Store, float]) -> None:
    s, now = world
    retention.prune(s, now=now)
    after = counts(s)
    assert retention.prune(s, now=now).total == 0
    assert counts(s) == after


def test_small_batches_within_a_budget_add_up_to_one_run(world: tuple[Store, float],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s, now = world
    monkeypatch.setattr(retention, "BATCH", 1)
    total = {t: 0 for t in GONE}
    runs = 0
    while True:
        runs += 1
        st = retention.prune(s, now=now, budget=1)
        for t, n in st.tables().items():
            total[t] += n
        if not st.more:
            break
    assert total == GONE and runs > 1
    assert retention.prune(s, now=now, dry_run=True).total == 0


def test_policy_keeps_each_kind_as_long_as_asked(world: tuple[Store, float]) -> None:
    s, now = world
    st = retention.prune(s, retention.Policy(alerts_days=None, alarms_days=None, bad_days=3),
                         now=now, dry_run=True)
    assert st.tables() == {"alerts": 0, "alert_targets": 0, "receipts": 0, "alarms": 0,
                           "bad_messages": 2}
    # 15 days: NEW and PROV-2 become old too; LATE's receipt at -10 still holds it.
    st = retention.prune(s, retention.Policy(alerts_days=15, alarms_days=5), now=now)
    assert (st.alerts, st.receipts, st.alarms) == (2, 7, 2)
    with pytest.raises(ValueError):
        retention.Policy(alerts_days=0)


def test_cx_fleet_prune_reports_per_table(world: tuple[Store, float], url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = world
    assert cx(["fleet", "prune", "--db", url, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["TABLE", "WOULD", "DELETE"]
    assert "receipts       4" in out and "total: 10 rows would be deleted (dry run" in out
    assert cx(["fleet", "prune", "--db", url, "--keep-alarms", "forever", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tables"] == {**GONE, "alarms": 0} and got["policy"]["alarms_days"] is None
    assert cx(["fleet", "prune", "--db", url, "--older-than", "7", "--keep-bad", "1",
               "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["policy"] == {"alerts_days": 7, "alarms_days": 7, "bad_days": 1}
    assert got["tables"]["alarms"] == 2 and got["tables"]["bad_messages"] == 1
    assert counts(s)["alerts"] == 0  # LATE too: its last receipt (10 days) is older than 7


def test_cx_fleet_prune_refuses_a_bad_age(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cx(["fleet", "prune", "--db", url, "--older-than", "0"]) == 2
    assert "--older-than: must be a number > 0 and <= 36500, or 'forever'" in \
        capsys.readouterr().err


def test_serve_hook_prunes_once_per_period_and_says_so(world: tuple[Store, float],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = world
    monkeypatch.setattr(retention, "_next_run", {})
    monkeypatch.setattr(retention, "SERVE", retention.Schedule())
    lines: list[str] = []
    st = retention.maybe_prune(s, lines.append)
    assert st is not None and st.tables() == GONE
    assert lines == [("retention: deleted 1 alerts, 3 alert_targets, 4 receipts, 1 alarms, "
                      "1 bad_messages")]
    assert retention.maybe_prune(s, lines.append) is None  # not due for an hour
    retention.configure(None)
    monkeypatch.setattr(retention, "_next_run", {})
    assert retention.maybe_prune(s, lines.append) is None  # --prune-every 0


def test_cx_fleet_serve_prunes_with_its_options(world: tuple[Store, float], url: str,
                                                broker: Any, tmp_path: Path) -> None:
    """The running service applies the policy given on its command line (its writer process
    gets it), and `--prune-every 0` keeps everything."""
    from fleet.sim import ServeProcess

    s, _ = world
    before = counts(s)
    keep = ServeProcess(url, broker.address, "keep", str(tmp_path / "keep.log"),
                        "--prune-every", "0")
    keep.wait_for("storing into")
    time.sleep(1.0)
    assert "retention" not in keep.stop()
    kept = counts(s)  # (the sweep may have opened offline alarms: those are new, not old)
    assert {t: kept[t] for t in GONE if t != "alarms"} == \
        {t: before[t] for t in GONE if t != "alarms"}
    svc = ServeProcess(url, broker.address, "prune", str(tmp_path / "prune.log"),
                       "--keep-alarms", "7")
    out = svc.wait_for("retention: deleted")
    assert "2 alarms" in out and "1 alerts" in out, out
    assert "Traceback" not in svc.stop()
    after = counts(s)
    assert (after["alerts"], after["receipts"]) == (before["alerts"] - 1, before["receipts"] - 4)
