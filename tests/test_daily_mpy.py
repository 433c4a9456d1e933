"""The schedule verifier and the local calendar (firmware/daily.py, docs/broadcast.md §2-§3) on the
MicroPython unix port: every rule's reason in its order, certificates with use `daily`, the store
on flash across a restart, and dates in China Standard Time computed without the port's clock."""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_mpy

from tools.envelope import KeyPair, b64e, sign_jws
from tools.keys import new_issuer

REGION = "341122100201"
NOW = int(time.time())
TZ = 8 * 3600
TODAY = (NOW + TZ) // 86400


def day(z: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=z)).isoformat()


CLIP = {"url": "http://127.0.0.1:9/c.wav", "sha256": "ab" * 32, "bytes": 44 + 32000 * 60}


def prog(pid: str = "news", start: str = "07:00", **kw: Any) -> dict[str, Any]:
    return {"id": pid, "days": [1, 2, 3, 4, 5], "start": start, "audio": {"clip": dict(CLIP)},
            **kw}


def payload(**kw: Any) -> dict[str, Any]:
    p = {"id": "cty-1", "area": "341122000000", "version": 1, "issued": NOW, "tz": "+08:00",
         "from": day(TODAY - 1), "until": day(TODAY + 30), "programmes": [prog()]}
    p.update(kw)
    return p


class Keys:
    def __init__(self) -> None:
        self.root = KeyPair.generate("root", "prov-34-daily", ["34"], ["alert", "daily"])
        self.alert_only = KeyPair.generate("root", "prov-34-alert", ["34"], ["alert"])
        self.county = new_issuer(self.root, "county-341122-daily", ["341122"], ["daily"],
                                 NOW - 3600, NOW + 86400)
        self.warn = new_issuer(self.root, "county-341122-warn", ["341122"], ["alert"],
                               NOW - 3600, NOW + 86400)

    def sign(self, k: KeyPair, p: dict[str, Any] | bytes, typ: str = "eb-schedule") -> str:
        hdr: dict[str, Any] = {"alg": "EdDSA", "typ": typ, "kid": k.kid}
        if k.crt:
            hdr["crt"] = k.crt
        assert k.priv is not None
        return sign_jws(k.priv, hdr, p)


SCRIPT = """
import json, os
os.chdir(%(dir)r)
import daily
class Clock:
    synced = True
    def now(self):
        return %(now)d
def log(ev, **f):
    pass
cases = json.loads(open("cases.json").read())
trust = json.loads(open("trust.json").read())
s = daily.Schedules(trust, %(region)r, Clock(), log)
out = []
for env in cases:
    v = s.check(env.encode())
    out.append([v.status, v.reason, v.id])
again = daily.Schedules(trust, %(region)r, Clock(), log)
for name in again.stored():  # as the terminal reads them back at boot
    again.load_one(name)
held = sorted([x.id, x.version] for x in again.all())
print("RESULT " + json.dumps({"verdicts": out, "held": held}))
"""


def run(tmp: Path, keys: Keys, cases: list[str]) -> dict[str, Any]:
    (tmp / "cases.json").write_text(json.dumps(cases))
    (tmp / "trust.json").write_text(json.dumps([keys.root.anchor(), keys.alert_only.anchor()]))
    r = run_mpy(SCRIPT % {"dir": str(tmp), "now": NOW, "region": REGION}, cwd=tmp)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout[-1500:] + r.stderr[-1500:]
    return json.loads(line[7:])


def test_every_rule_gives_its_reason_in_order_and_the_newest_version_is_kept(
        tmp_path: Path) -> None:
    k = Keys()
    good = k.sign(k.county, payload())
    h, pl, _sig = good.split(".")
    cases = [
        ("x" * 16385, ("rejected", "too_large", None)),
        ("only.two", ("rejected", "malformed", None)),
        (k.sign(k.county, payload(), typ="eb-alert"), ("rejected", "bad_alg", None)),
        (k.sign(k.alert_only, payload()), ("rejected", "unknown_key", None)),
        (k.sign(k.warn, payload()), ("rejected", "bad_cert", None)),  # a warning key, no daily
        (f"{h}.{pl}.{b64e(bytes(64))}", ("rejected", "bad_signature", None)),
        # two programmes of one schedule at 07:00 (a 60-second clip each) overlap
        (k.sign(k.county, payload(programmes=[prog("a", "07:00"), prog("b", "07:00")])),
         ("rejected", "bad_field", "cty-1")),
        (k.sign(k.county, payload(tz="+09:00")), ("rejected", "bad_tz", "cty-1")),
        (k.sign(k.county, payload(area="341123000000")), ("rejected", "out_of_scope", "cty-1")),
        (k.sign(k.county, payload(issued=NOW + 600)), ("rejected", "not_yet_valid", "cty-1")),
        (k.sign(k.county, payload(**{"from": day(TODAY - 9), "until": day(TODAY - 1)})),
         ("rejected", "expired", "cty-1")),
        (k.sign(k.county, payload(area="341122101000")), ("ignored", "not_for_me", "cty-1")),
        (good, ("accepted", None, "cty-1")),
        (good, ("ignored", "duplicate", "cty-1")),
        (k.sign(k.county, payload(id="cty-1b")), ("ignored", "stale", "cty-1b")),
        (k.sign(k.county, payload(id="cty-2", version=2)), ("accepted", None, "cty-2")),
    ]
    out = run(tmp_path, k, [c for c, _ in cases])
    assert [tuple(v) for v in out["verdicts"]] == [w for _, w in cases]
    # a restart finds the newest version on flash, verified again
    assert out["held"] == [["cty-2", 2]]


@pytest.mark.parametrize("change", [
    {"programmes": [prog("a", "07:00"), prog("a", "09:00")]},  # one id twice
    {"programmes": [prog(days=[1, 8])]},
    {"programmes": [prog(days=[2, 2])]},
    {"programmes": [prog(start="24:00")]},
    {"programmes": [prog(start="7:00")]},
    {"programmes": [prog(volume=101)]},
    {"programmes": [prog(duration=0)]},
    {"programmes": [prog(duration=7201)]},
    {"programmes": [prog(audio={"tone": "siren"})]},  # a programme never sounds like a warning
    {"programmes": [prog(audio={"clip": dict(CLIP, bytes=44)})]},
    {"programmes": [prog(audio={"clip": dict(CLIP, sha256="zz" * 32)})]},
    {"programmes": [prog(**{"except": ["2026-02-30"]})]},
    {"programmes": [prog()] * 33},
    {"from": day(TODAY), "until": day(TODAY - 1)},
    {"from": day(TODAY - 1), "until": day(TODAY + 366)},
    {"version": 0},
    {"area": "34112200000"},
    # Sunday 23:30 for two hours runs into Monday's 00:30
    {"programmes": [prog("late", "23:30", days=[7], duration=7200),
                    prog("early", "00:30", days=[1], duration=600)]},
], ids=lambda c: json.dumps(c)[:40])
def test_bad_fields_are_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    k = Keys()
    out = run(tmp_path, k, [k.sign(k.county, payload(**change))])
    assert out["verdicts"][0][:2] == ["rejected", "bad_field"], out


CAL = """
import json, daily
out = []
for z in %(days)s:
    out.append([daily.date_str(z), daily.weekday(z), daily.parse_date(daily.date_str(z))])
bad = [daily.parse_date(s) for s in ["2026-02-29", "2026-13-01", "2026-1-01", "2026-12-32",
                                     "1999-12-31", "abcd-ef-gh", None]]
hm = [daily.parse_hm(s) for s in ["00:00", "07:05", "23:59", "24:00", "07:60", "7:05"]]
print("RESULT " + json.dumps({"days": out, "bad": bad, "hm": hm,
                              "local": daily.local_day(%(epoch)d)}))
"""


def test_local_dates_and_weekdays_match_the_calendar(tmp_path: Path) -> None:
    days = [days_of(2000, 1, 1), days_of(2024, 2, 29), days_of(2026, 12, 31),
            days_of(2099, 12, 31), TODAY] + list(range(TODAY, TODAY + 400, 37))
    # 2026-12-02 16:30 UTC is 2026-12-03 00:30 in China
    epoch = int(datetime.datetime(2026, 12, 2, 16, 30, tzinfo=datetime.UTC).timestamp())
    r = run_mpy(CAL % {"days": json.dumps(days), "epoch": epoch}, cwd=tmp_path)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout + r.stderr
    out = json.loads(line[7:])
    for z, (text, wd, back) in zip(days, out["days"], strict=True):
        d = datetime.date(1970, 1, 1) + datetime.timedelta(days=z)
        assert (text, wd, back) == (d.isoformat(), d.isoweekday(), z)
    assert out["bad"] == [None] * 7
    assert out["hm"] == [0, 425, 1439, None, None, None]
    assert out["local"] == [days_of(2026, 12, 3), 30 * 60]


def days_of(y: int, m: int, d: int) -> int:
    return (datetime.date(y, m, d) - datetime.date(1970, 1, 1)).days


def test_the_stored_schedule_is_its_exact_bytes(tmp_path: Path) -> None:
    k = Keys()
    env = k.sign(k.county, payload())
    out = run(tmp_path, k, [env])
    assert out["verdicts"][0][0] == "accepted"
    files = list((tmp_path / "daily").iterdir())
    assert [f.read_bytes() for f in files] == [env.encode()]
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == hashlib.sha256(
        env.encode()).hexdigest()
