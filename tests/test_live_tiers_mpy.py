"""A third live stream while two are held (docs/broadcast.md §7), on the MicroPython unix port: the
real firmware/live.py and firmware/arbiter.py, a player that plays each item until it is stopped.
A stream of a higher tier than a held one takes the place of the lowest-tier held stream (of two
there, the one not playing, then the one issued earlier), which is reported `cancelled`
`higher_tier`; one of equal or lower tier is `ignored` `busy`. Every receipt sent parses at the
fleet (fleet/ingest.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import run_mpy

from fleet.ingest import DailyReceipt, parse
from tools import live
from tools.envelope import KeyPair

REGION = "341122100201"
NOW = int(time.time())

SCRIPT = """
import asyncio, json, os
os.chdir(%(dir)r)
import arbiter, live
class Clock:
    synced = True
    def now(self):
        return %(now)d
class Seen:
    def __init__(self):
        self.keys = set()
    def has(self, kid, key, now):
        return (kid, key) in self.keys
    def add(self, kid, key, expires, tag, now):
        self.keys.add((kid, key))
class Player:
    async def play(self, payload, on_playing):
        on_playing(None)
        await asyncio.sleep(3600)  # until stopped or preempted
class Alert:
    def __init__(self, ev):
        self.id = "warning-1"
        self.kid = "county-341122-warn"
        self.scope = ["341122"]
        self.preempted_by = None
        self.payload = {"id": self.id, "kind": "alert", "level": 1, "issued": %(now)d,
                        "expires": %(now)d + 3600, "audio": {"tone": "siren"}, "volume": 100}
        self.report = lambda item, status, reason: ev.append([item.id, status, reason])
trust = json.loads(open("trust.json").read())
async def main():
    out = []
    for steps in json.loads(open("cases.json").read()):
        ev = []
        arb = arbiter.Arbiter(Player(), None, Clock(), lambda *a, **k: None)
        L = live.Live(trust, %(region)r, Seen(), Clock(), arb, lambda *a, **k: None,
                      lambda e, ev=ev: ev.append([e["live"], e["status"], e["reason"]]))
        got = []
        for kind, env in steps:
            del ev[:]
            if kind == "alert":
                arb.submit(Alert(ev))
            else:
                L._jws(env.encode())
            await asyncio.sleep_ms(30)  # the arbiter starts what it chose
            cur = arb.current
            got.append([list(ev), sorted(s.id for s in L.streams.values()),
                        cur.id if cur is not None else None])
        out.append(got)
        arb.deinit()
    print("RESULT " + json.dumps(out))
asyncio.run(main())
"""


def key(kid: str, scope: str) -> KeyPair:
    return KeyPair.generate("root", kid, [scope], ["daily"])


PROVINCE = key("prov-34-live", "34")
COUNTY = key("county-341122-live", "341122")
TOWN = key("town-341122100-live", "341122100")
VILLAGE = key("village-341122100201-live", "341122100201")
KEYS = [(PROVINCE, "340000000000"), (COUNTY, "341122000000"), (TOWN, "341122100000"),
        (VILLAGE, REGION)]  # each key's stream: to its whole area


def stream(k: KeyPair, sid: str, issued: int = NOW) -> tuple[str, str]:
    area = next(a for x, a in KEYS if x is k)
    return "header", live.Stream(k, [area], sid=sid, now=issued).header


def run(tmp_path: Path, cases: list[list[tuple[str, str | None]]]) -> list[Any]:
    (tmp_path / "trust.json").write_text(json.dumps([k.anchor() for k, _a in KEYS]))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    r = run_mpy(SCRIPT % {"dir": str(tmp_path), "now": NOW, "region": REGION})
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(line[7:])


def test_a_higher_tier_takes_the_place_of_the_lowest_held_stream(tmp_path: Path) -> None:
    a, b, c, d = run(tmp_path, [
        [stream(COUNTY, "c1"), stream(VILLAGE, "v1", NOW - 5), stream(VILLAGE, "v2", NOW - 9),
         stream(TOWN, "t1"), stream(TOWN, "t2"), stream(VILLAGE, "v1", NOW - 5),
         stream(PROVINCE, "p1")],
        # a warning holds the horn, both held streams wait: of two at the lowest tier, the one
        # issued earlier goes
        [("alert", None), stream(VILLAGE, "v1", NOW - 10), stream(VILLAGE, "v2", NOW - 5),
         stream(TOWN, "t1")],
        # of two at the lowest tier, the one waiting goes, never the one playing (the new one
        # then preempts that one by the ladder, docs/broadcast.md §5)
        [stream(VILLAGE, "v1"), stream(VILLAGE, "v2", NOW - 5), stream(TOWN, "t1")],
        # the same tier, issued later: the newer plays first, the older is preempted `newer`
        [stream(VILLAGE, "v1", NOW - 10), stream(VILLAGE, "v2", NOW - 2)],
    ])
    assert a == [
        [[["c1", "accepted", None], ["c1", "playing", None]], ["c1"], "live-c1"],
        [[["v1", "accepted", None]], ["c1", "v1"], "live-c1"],
        [[["v2", "ignored", "busy"]], ["c1", "v1"], "live-c1"],  # a village again: equal
        [[["v1", "cancelled", "higher_tier"], ["t1", "accepted", None]], ["c1", "t1"], "live-c1"],
        [[["t2", "ignored", "busy"]], ["c1", "t1"], "live-c1"],  # no held stream below a town
        [[], ["c1", "t1"], "live-c1"],  # a displaced stream's header again: nothing
        [[["t1", "cancelled", "higher_tier"], ["p1", "accepted", None],
          ["c1", "preempted", "higher_tier"], ["p1", "playing", None]], ["p1"], "live-p1"],
    ], a
    assert b == [
        [[["warning-1", "playing", None]], [], "warning-1"],
        [[["v1", "accepted", None]], ["v1"], "warning-1"],
        [[["v2", "accepted", None]], ["v1", "v2"], "warning-1"],
        [[["v1", "cancelled", "higher_tier"], ["t1", "accepted", None]], ["t1", "v2"],
         "warning-1"],
    ], b
    assert c == [
        [[["v1", "accepted", None], ["v1", "playing", None]], ["v1"], "live-v1"],
        [[["v2", "accepted", None]], ["v1", "v2"], "live-v1"],
        [[["v2", "cancelled", "higher_tier"], ["t1", "accepted", None],
          ["v1", "preempted", "higher_tier"], ["t1", "playing", None]], ["t1"], "live-t1"],
    ], c
    assert d == [
        [[["v1", "accepted", None], ["v1", "playing", None]], ["v1"], "live-v1"],
        [[["v2", "accepted", None], ["v1", "preempted", "newer"], ["v2", "playing", None]],
         ["v2"], "live-v2"],
    ], d
    # the fleet takes every receipt the terminal sent (the reasons are parsed exactly)
    for case in (a, b, c, d):
        for events, _held, _cur in case:
            for sid, status, reason in events:
                if sid == "warning-1":
                    continue
                body = {"live": sid, "kid": "county", "status": status, "reason": reason,
                        "t": NOW}
                if status in ("done", "preempted", "cancelled"):
                    body.update(chunks=0, silent=0, refused=0)
                got = parse("eb/dev/T341122100201-01/event", json.dumps(body).encode(), NOW)
                assert isinstance(got, DailyReceipt) and got.reason == reason, (body, got)
