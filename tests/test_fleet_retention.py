"""Retention on SQLite and a real PostgreSQL (fleet/store/retention.py, `cx fleet prune`): old
alert records go with their targets and receipts, old daily-broadcast receipts go while
`cx broadcast status` still reports the recent ones, recent ones and open alarms stay, a dry
run deletes nothing and counts what a run deletes, small batches and budgets add up to the
same."""

from __future__ import annotations

import datetime as dt
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
# What the default policy (365 days alerts, 90 closed alarms, 90 counters, 90 daily receipts)
# lets go in `world`.
GONE = {"alerts": 1, "alert_targets": 3, "receipts": 4, "alarms": 1, "bad_messages": 1,
        "daily_receipts": 5}


def receipt(device: str, alert: str, kid: str, status: str, at: float) -> Any:
    ev = {"alert": alert, "kid": kid, "status": status, "t": int(at),
          "reason": "expired" if status == "rejected" else None}
    return parse(f"eb/dev/{device}/event", json.dumps(ev).encode(), at)


def daily(device: str, kind: str, name: str, status: str, at: float,
          reason: str | None = None) -> Any:
    """A programme receipt (of the local date of `at`, 07:00) or a live or schedule one."""
    ev: dict[str, Any] = {kind: name, "kid": "county", "status": status, "reason": reason,
                          "t": int(at)}
    if kind == "programme":
        ev.update(date=dt.date.fromtimestamp(at).isoformat(), start="07:00")
    elif kind == "schedule":
        ev.update(area="341122000000", version=1)
    elif status == "done":
        ev.update(chunks=150, silent=0, refused=0)
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
    -500; a rejected alarm open since -10; bad-message counters last counted -100 (goes), -5;
    daily receipts: schedule cty accepted at -200, programme cty/news at -100 (A playing and
    done, B skipped) and live stream live-old at -95 (all go), cty/news at -30 (A, B done) and
    live-new playing at -5."""
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
        (at(200), daily(A, "schedule", "cty", "accepted", at(200))),
        (at(100), daily(A, "programme", "cty/news", "playing", at(100))),
        (at(100), daily(A, "programme", "cty/news", "done", at(100) + 300)),
        (at(100), daily(B, "programme", "cty/news", "skipped", at(100), "no_clip")),
        (at(100), hb(A, at(100))),
        (at(100), parse(f"eb/dev/{A}/hb", b"not json", at(100))),
        (at(95), daily(C, "live", "live-old", "done", at(95), "ended")),
        (at(50), hb(B, at(50), line="open")),
        (at(30), receipt(A, "NEW", "cty", "done", at(30))),
        (at(30), receipt(C, "NEW", "cty", "done", at(30) + 1)),
        (at(30), daily(A, "programme", "cty/news", "done", at(30))),
        (at(30), daily(B, "programme", "cty/news", "done", at(30) + 1)),
        (at(20), receipt(B, "PROV-2", "prov", "done", at(20))),
        (at(10), hb(B, at(10))),
        (at(10), receipt(B, "LATE", "cty", "rejected", at(10))),
        (at(5), parse(f"eb/dev/{B}/hb", b"not json", at(5))),
        (at(5), daily(C, "live", "live-new", "playing", at(5))),
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


def row(out: str, table: str) -> list[str]:
    """The words of `table`'s line in the output of `cx fleet prune`."""
    return next(ln.split() for ln in out.splitlines() if ln.split()[:1] == [table])


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
                           "bad_messages": 2, "daily_receipts": 5}
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
    assert row(out, "receipts")[1] == "4" and "total: 15 rows would be deleted (dry run" in out
    assert cx(["fleet", "prune", "--db", url, "--keep-alarms", "forever", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tables"] == {**GONE, "alarms": 0} and got["policy"]["alarms_days"] is None
    assert cx(["fleet", "prune", "--db", url, "--older-than", "7", "--keep-bad", "1",
               "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["policy"] == {"alerts_days": 7, "alarms_days": 7, "bad_days": 1,
                             "daily_days": 7}
    assert got["tables"]["alarms"] == 2 and got["tables"]["bad_messages"] == 1
    assert got["tables"]["daily_receipts"] == 2  # cty/news of 30 days ago (the rest: above)
    assert counts(s)["alerts"] == 0  # LATE too: its last receipt (10 days) is older than 7


def test_cx_fleet_prune_refuses_a_bad_age(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cx(["fleet", "prune", "--db", url, "--older-than", "0"]) == 2
    assert "--older-than: must be a number > 0 and <= 36500, or 'forever'" in \
        capsys.readouterr().err


def status(url: str, ident: str, capsys: pytest.CaptureFixture[str],
           *more: str) -> tuple[int, Any]:
    """`cx broadcast status IDENT --json`: exit code and report (or the error line)."""
    code = cx(["broadcast", "status", ident, "--db", url, "--json", *more])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out else out.err.strip()


def test_old_daily_receipts_go_and_broadcast_status_reports_what_stays(
        world: tuple[Store, float], url: str, capsys: pytest.CaptureFixture[str]) -> None:
    s, now = world
    old_day = dt.date.fromtimestamp(now - 100 * DAY).isoformat()
    new_day = dt.date.fromtimestamp(now - 30 * DAY).isoformat()
    code, rep = status(url, "cty/news", capsys, "--date", old_day)
    assert code == 1 and rep["counts"] == {"done": 1, "skipped": 1}  # before: there
    before = counts(s)
    st = retention.prune(s, now=now)
    assert st.daily_receipts == 5
    assert counts(s)["daily_receipts"] == before["daily_receipts"] - 5
    code, rep = status(url, "cty/news", capsys)  # the latest day: all played it
    assert code == 0 and (rep["date"], rep["dates"], rep["terminals"]) == (new_day, [new_day], 2)
    assert rep["towns"] == {"341122100": {"done": 2}}
    code, err = status(url, "cty/news", capsys, "--date", old_day)
    assert code == 1 and f"no receipts of programme 'cty/news' on {old_day}" in err
    assert status(url, "live-old", capsys)[0] == 1
    code, rep = status(url, "live-new", capsys)
    assert rep["counts"] == {"playing": 1}


def test_daily_receipts_are_pruned_in_batches_within_a_budget(
        world: tuple[Store, float], monkeypatch: pytest.MonkeyPatch) -> None:
    s, now = world
    monkeypatch.setattr(retention, "BATCH", 2)
    only_daily = retention.Policy(alerts_days=None, alarms_days=None, bad_days=None)
    st = retention.prune(s, only_daily, now=now, budget=1)
    assert (st.daily_receipts, st.total, st.more) == (2, 2, True)
    st = retention.prune(s, only_daily, now=now, budget=2)
    assert (st.daily_receipts, st.more) == (3, False)
    assert retention.prune(s, now=now, dry_run=True).daily_receipts == 0
    assert counts(s)["daily_receipts"] == 3  # cty/news of 30 days ago, live-new
    with pytest.raises(ValueError):
        retention.Policy(daily_days=0)
    with pytest.raises(ValueError):
        retention.Policy(daily_days=-1)


def test_cx_fleet_prune_keep_daily(world: tuple[Store, float], url: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = world
    before = counts(s)
    assert cx(["fleet", "prune", "--db", url, "--keep-daily", "20", "--dry-run"]) == 0
    line = row(capsys.readouterr().out, "daily_receipts")
    assert line[1] == "7" and "received before" in " ".join(line)
    assert counts(s) == before
    assert cx(["fleet", "prune", "--db", url, "--older-than", "7", "--keep-daily", "forever",
               "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["policy"]["daily_days"] is None and got["tables"]["daily_receipts"] == 0
    assert got["tables"]["alarms"] == 2  # the other kinds went by --older-than
    assert counts(s)["daily_receipts"] == before["daily_receipts"]
    assert cx(["fleet", "prune", "--db", url, "--keep-daily", "forever"]) == 0
    assert row(capsys.readouterr().out, "daily_receipts")[1:] == ["0", "kept", "forever"]
    assert cx(["fleet", "prune", "--db", url, "--keep-daily", "0"]) == 2
    assert "--keep-daily: must be a number > 0 and <= 36500, or 'forever'" in \
        capsys.readouterr().err
    assert cx(["fleet", "prune", "--db", url, "--keep-daily", "20"]) == 0
    assert row(capsys.readouterr().out, "daily_receipts")[1] == "7"
    assert counts(s)["daily_receipts"] == before["daily_receipts"] - 7


def test_serve_hook_prunes_once_per_period_and_says_so(world: tuple[Store, float],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = world
    monkeypatch.setattr(retention, "_next_run", {})
    monkeypatch.setattr(retention, "SERVE", retention.Schedule())
    lines: list[str] = []
    st = retention.maybe_prune(s, lines.append)
    assert st is not None and st.tables() == GONE
    assert lines == [("retention: deleted 1 alerts, 3 alert_targets, 4 receipts, 1 alarms, "
                      "1 bad_messages, 5 daily_receipts")]
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
                       "--keep-alarms", "7", "--keep-daily", "20")
    out = svc.wait_for("retention: deleted")
    assert "2 alarms" in out and "1 alerts" in out and "7 daily_receipts" in out, out
    assert "Traceback" not in svc.stop()
    after = counts(s)
    assert (after["alerts"], after["receipts"]) == (before["alerts"] - 1, before["receipts"] - 4)
    assert after["daily_receipts"] == before["daily_receipts"] - 7  # live-new (5 days) stays
