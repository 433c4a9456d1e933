"""Daily-broadcast receipts (docs/broadcast.md §4, §7) from the wire to `cx broadcast status`:
each one a terminal can send parses to a `DailyReceipt`, anything else is wrong_types; the store
keeps them once on SQLite and PostgreSQL; the command reports them per town through the real
`cx` entry point, with its refusals in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.ingest import Bad, DailyReceipt, parse
from fleet.model import BadKind
from fleet.store import Store

CX = str(Path(sys.executable).parent / "cx") if (Path(sys.executable).parent / "cx").exists() \
    else (shutil.which("cx") or "cx")
A, B, C = "T341122100201-01", "T341122100202-01", "T341122200101-01"
"""A and B in town 341122100, C in town 341122200."""
NOW = 1_800_000_000.0
DAY = "2026-12-03"


def prog(status: str, reason: str | None = None, *, name: str = "cty/news", day: str = DAY,
         **more: Any) -> dict[str, Any]:
    return {"programme": name, "kid": "county", "date": day, "start": "07:00",
            "status": status, "reason": reason, "t": 1_790_000_000, **more}


def live(status: str, reason: str | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"live": "live-1", "kid": "county", "status": status,
                            "reason": reason, "t": 1_790_000_000}
    if status in ("done", "preempted"):
        body.update(chunks=150, silent=2, refused=0)
    return {**body, **more}


def sched(status: str, reason: str | None = None, **more: Any) -> dict[str, Any]:
    return {"schedule": "cty", "kid": "county", "area": "341122000000", "version": 3,
            "status": status, "reason": reason, "t": 1_790_000_000, **more}


def msg(body: dict[str, Any], device: str = A, at: float = NOW) -> Any:
    return parse(f"eb/dev/{device}/event", json.dumps(body).encode(), at)


# ---- parsing


@pytest.mark.parametrize("body", [
    prog("playing"), prog("done"), prog("done", "play_failed"),
    *(prog("preempted", r) for r in ("alert", "higher_tier", "live")),
    *(prog("skipped", r) for r in ("no_clip", "late", "higher_tier", "busy", "clock_unsynced")),
    live("accepted"), live("playing"), live("done", "ended"), live("done", "stalled"),
    live("preempted", "alert"), live("preempted", "higher_tier"), live("ignored", "not_for_me"),
    live("ignored", "busy"), live("rejected", "bad_signature"),
    {"live": None, "kid": None, "status": "rejected", "reason": "malformed", "t": 5},
    sched("accepted"), sched("rejected", "bad_tz"), sched("ignored", "stale"),
    sched("ignored", "duplicate"), sched("ignored", "not_for_me"),
    {"schedule": None, "kid": None, "area": None, "version": None, "status": "rejected",
     "reason": "unknown_key", "t": 1},
])
def test_every_daily_receipt_the_terminal_sends_parses(body: dict[str, Any]) -> None:
    r = msg(body)
    assert isinstance(r, DailyReceipt), (body, r)
    kind = next(k for k in ("programme", "live", "schedule") if k in body)
    assert (r.device, r.kind, r.name, r.kid, r.status, r.reason, r.t) == (
        A, kind, body[kind], body["kid"], body["status"], body["reason"], body["t"])
    if kind == "programme":
        assert (r.date, r.start) == (DAY, "07:00")
    if kind == "live" and body["status"] in ("done", "preempted"):
        assert (r.chunks, r.silent, r.refused) == (150, 2, 0)
    if kind == "schedule" and body["area"]:
        assert (r.area, r.version) == ("341122000000", 3)


@pytest.mark.parametrize("body", [
    prog("sounding"), prog("playing", "no_clip"), prog("preempted"), prog("skipped"),
    prog("skipped", "stale"), prog("done", "ended"), prog("accepted"), prog("cancelled"),
    prog("done", name="no-slash"), prog("done", name="a/b/c"), prog("done", name="x" * 65 + "/p"),
    prog("done", name="s/" + "p" * 33), prog("done", name=None), prog("done", day="2026-13-01"),
    prog("done", day="2026-12-3"), prog("done", day=None), prog("done", start="24:00"),
    prog("done", start="7:00"), prog("done", kid=None), prog("done", kid="k" * 65),
    prog("done", t=-1), prog("done", t=2**32), prog("done", t="1"), prog("done", reason=7),
    live("done"), live("done", "play_failed"), live("preempted", "live"), live("skipped", "busy"),
    live("ignored", "stale"), live("rejected", "bad_tz"), live("cancelled"),
    live("done", "ended", chunks=-1), live("done", "ended", silent="2"),
    {"live": "live-1", "kid": "county", "status": "done", "reason": "ended", "t": 1},
    live("playing", live=None), live("accepted", live="has space"),
    live("accepted", kid=None), live("rejected", "bad_signature", kid=None),
    sched("accepted", "stale"), sched("rejected"), sched("playing"), sched("ignored", "busy"),
    sched("accepted", area="3411"), sched("accepted", version=-1), sched("accepted", schedule=None),
])
def test_a_daily_receipt_no_terminal_sends_is_wrong_types(body: dict[str, Any]) -> None:
    r = msg(body)
    assert isinstance(r, Bad) and r.kind == BadKind.WRONG_TYPES, (body, r)


# ---- storage


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    s.upsert_devices([(A, A[1:13], "horn"), (B, B[1:13], "column"), (C, C[1:13], "horn")],
                     now=NOW)
    yield s
    s.close()


def test_daily_receipts_are_stored_once_and_read_back_per_programme(store: Store) -> None:
    batch = [msg(prog("playing"), A), msg(prog("done"), A, NOW + 1),
             msg(prog("skipped", "no_clip"), B), msg(prog("done", day="2026-12-02"), C),
             msg(prog("done", name="cty/weather"), C), msg(live("done", "ended"), C),
             msg(sched("accepted"), A)]
    st = store.ingest(batch, now=NOW)
    assert st.daily == 7 and st.bad == 0
    # QoS 1 redelivery after a crash: nothing stored twice
    assert store.ingest(batch, now=NOW + 5).daily == 0
    rows = store.daily_receipts("programme", "cty/news", DAY)
    assert [(r.device, r.town, r.status, r.reason) for r in rows] == [
        (A, "341122100", "playing", None), (A, "341122100", "done", None),
        (B, "341122100", "skipped", "no_clip")]
    assert [r.date for r in store.daily_receipts("programme", "cty/news")] == [
        DAY, DAY, DAY, "2026-12-02"]
    assert store.daily_dates("programme", "cty/news") == ["2026-12-02", DAY]
    (lv,) = store.daily_receipts("live", "live-1")
    assert (lv.device, lv.town, lv.reason, lv.chunks, lv.silent, lv.refused, lv.date) == (
        C, "341122200", "ended", 150, 2, 0, None)
    assert store.daily_receipts("programme", "cty/none") == []


def test_a_daily_receipt_of_an_unknown_terminal_is_counted_not_stored(store: Store) -> None:
    st = store.ingest([msg(prog("done"), "T341122999999-01")], now=NOW)
    assert st.daily == 0 and st.bad == 1
    assert [(b.kind, b.topic) for b in store.bad_counts()] == [("unknown_device", "event")]
    assert store.daily_receipts("programme", "cty/news") == []


# ---- cx broadcast status


def cx(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *map(str, args)], capture_output=True, text=True, timeout=60,
                          check=False)


def refused(r: subprocess.CompletedProcess[str], code: int, *texts: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cx: error: "), r.stderr
    for t in texts:
        assert t in lines[0], lines[0]


def test_broadcast_status_reports_per_town_through_cx(store: Store, url: str) -> None:
    store.ingest([msg(prog("playing"), A), msg(prog("done"), A, NOW + 1),
                  msg(prog("skipped", "no_clip"), B), msg(prog("playing"), C),
                  msg(prog("preempted", "alert"), C, NOW + 2),
                  msg(prog("done", day="2026-12-02"), A), msg(prog("done", day="2026-12-02"), B),
                  msg(live("playing"), A), msg(live("done", "ended"), A, NOW + 1)], now=NOW)
    r = cx("broadcast", "status", "cty/news", "--db", url, "--json")
    assert r.returncode == 1, r.stderr  # not every terminal played it to its end
    s = json.loads(r.stdout)
    assert (s["kind"], s["date"], s["dates"], s["terminals"]) == (
        "programme", DAY, ["2026-12-02", DAY], 3)
    assert s["counts"] == {"done": 1, "preempted": 1, "skipped": 1}
    assert s["towns"] == {"341122100": {"done": 1, "skipped": 1}, "341122200": {"preempted": 1}}
    assert s["reasons"] == {"341122100": {"skipped no_clip": 1},
                            "341122200": {"preempted alert": 1}}
    text = cx("broadcast", "status", "cty/news", "--db", url)
    assert text.returncode == 1 and "Traceback" not in text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == ("programme cty/news on 2026-12-03: 3 terminals reported, done 1, "
                        "preempted 1, skipped 1")
    town = next(ln for ln in lines if ln.startswith("341122100 "))
    assert town.split()[:6] == ["341122100", "2", "0", "1", "0", "1"]
    assert town.endswith("skipped no_clip 1")
    assert any(B in ln and "skipped (no_clip)" in ln for ln in lines)
    # an earlier day that played everywhere: exit 0
    ok = cx("broadcast", "status", "cty/news", "--date", "2026-12-02", "--db", url, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["towns"] == {"341122100": {"done": 2}}
    lv = cx("broadcast", "status", "live-1", "--db", url, "--json")
    assert lv.returncode == 0, lv.stderr
    assert json.loads(lv.stdout)["counts"] == {"done": 1}


def test_broadcast_status_refusals_are_one_line(store: Store, url: str, tmp_path: Path) -> None:
    store.ingest([msg(prog("done"), A)], now=NOW)
    refused(cx("broadcast", "status", "cty/other", "--db", url), 1, "no receipts", "cty/other")
    refused(cx("broadcast", "status", "cty/news", "--date", "2026-12-01", "--db", url), 1,
            "2026-12-01", DAY)
    refused(cx("broadcast", "status", "live-9", "--db", url), 1, "live stream 'live-9'")
    refused(cx("broadcast", "status", "a b", "--db", url), 2, "neither")
    refused(cx("broadcast", "status", "live-1", "--date", DAY, "--db", url), 2, "--date")
    refused(cx("broadcast", "status", "cty/news", "--date", "3 Dec", "--db", url), 2, "3 Dec")
    refused(cx("broadcast", "status", "cty/news", "--db", tmp_path / "none.sqlite"), 3,
            "no fleet database")
