"""`cx broadcast schedule` as a county admin runs it (subprocess, the fleet database on SQLite and
PostgreSQL, a real Mosquitto): programmes added, listed and removed, the area's schedule signed
with a key of use daily and published retained to eb/daily/<prefix> for a terminal that
subscribes late, and every refusal in one line. Keys are made at test time."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import queue
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aclbroker import AclBroker
from conftest import run_mpy
from paho.mqtt.enums import CallbackAPIVersion

from fleet.provision import Device
from tools import schedule
from tools.broker import Broker
from tools.envelope import KeyPair, decode_jws, sign_jws
from tools.keys import load_keyfile

CX = str(Path(sys.executable).parent / "cx") if (Path(sys.executable).parent / "cx").exists() \
    else (shutil.which("cx") or "cx")
COUNTY = "341122000000"
OTHER_COUNTY = "341123000000"
VILLAGE = "341122100201"
TOMORROW = (dt.datetime.now(schedule.TZINFO).date() + dt.timedelta(days=1)).isoformat()
UNTIL = (dt.datetime.now(schedule.TZINFO).date() + dt.timedelta(days=90)).isoformat()
CLIP_URL = "http://10.0.0.5/clips"


def cx(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([CX, *map(str, args)], capture_output=True, text=True, timeout=60,
                       check=False)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def refused(r: subprocess.CompletedProcess[str], code: int, *texts: str) -> str:
    """The one line of a refusal, with its exit code and the words it must name."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cx: error: "), r.stderr
    for t in texts:
        assert t in lines[0], lines[0]
    return lines[0]


def write_wav(path: Path, seconds: float, *, rate: int = 16000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * channels * int(rate * seconds))
    return path


class World:
    """Keys made with `cx keys` (a province root for alert and daily, the county's key for both,
    an alerts-only county key and a daily key of the neighbouring county), trust anchors, clips."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root, self.trust = tmp / "root.json", tmp / "trust.json"
        cx("keys", "root", "--kid", "prov-34-root", "--scope", "34", "--use", "alert,daily",
           "--out", self.root)
        self.county = self.issuer("cty-341122", "341122", "alert,daily")
        self.alert_only = self.issuer("cty-341122-alert", "341122", "alert")
        self.neighbour = self.issuer("cty-341123", "341123", "daily")
        cx("keys", "anchors", self.root, "--out", self.trust)
        self.news = write_wav(tmp / "news.wav", 10)  # 320,044 bytes: 10 s
        self.weather = write_wav(tmp / "weather.wav", 2.5)

    def issuer(self, kid: str, scope: str, use: str) -> Path:
        out = self.tmp / f"{kid}.json"
        cx("keys", "issuer", "--kid", kid, "--root", self.root, "--scope", scope, "--use", use,
           "--out", out)
        return out

    def anchors(self) -> list[dict[str, Any]]:
        return json.loads(self.trust.read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One set of keys and clips for the file; each test's database and envelopes are its own
    (tmp_path)."""
    return World(tmp_path_factory.mktemp("keys"))


def add(url: str, w: World, pid: str, days: str, start: str, *extra: str | Path,
        ok: bool = True) -> subprocess.CompletedProcess[str]:
    return cx("broadcast", "schedule", "add", "--db", url, "--area", COUNTY, "--id", pid,
              "--days", days, "--start", start, *(extra or ("--clip", w.news, "--clip-base",
                                                            CLIP_URL)), ok=ok)


def push(url: str, key: Path, *extra: str | Path, area: str = COUNTY,
         ok: bool = True) -> subprocess.CompletedProcess[str]:
    return cx("broadcast", "schedule", "push", "--db", url, "--area", area, "--key", key,
              "--from", TOMORROW, "--until", UNTIL, *extra, ok=ok)


def retained(broker: Broker | tuple[str, int], topic: str, timeout: float = 10.0,
             login: tuple[str, str] | None = None) -> mqtt.MQTTMessage:
    """What a terminal that subscribes now (after the push) receives on `topic`."""
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    host, port = (broker.host, broker.port) if isinstance(broker, Broker) else broker
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=login[0] if login else "late")
    if login:
        c.username_pw_set(*login)
    c.on_message = lambda _c, _u, m: got.put(m)
    c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe(topic, 1)
    c.connect(host, port)
    c.loop_start()
    try:
        return got.get(timeout=timeout)
    finally:
        c.disconnect()
        c.loop_stop()


# --- keys ------------------------------------------------------------------------------------


def test_keys_are_issued_and_certified_with_use_daily(world: World, tmp_path: Path) -> None:
    key = load_keyfile(world.county)
    assert key.use == ["alert", "daily"]
    assert key.crt is not None
    cert = json.loads(decode_jws(key.crt)[1])
    assert cert["use"] == ["alert", "daily"] and cert["scope"] == ["341122"]
    assert "use:     alert,daily" in cx("keys", "show", world.county).stdout
    r = cx("keys", "root", "--kid", "r", "--scope", "34", "--use", "alert,weekly", "--out",
           tmp_path / "r.json", ok=False)
    refused(r, 2, "'weekly'", "alert, ota, daily")


# --- drafts in the fleet database ---------------------------------------------------------------


def test_programmes_are_added_listed_and_removed(url: str, world: World) -> None:
    r = add(url, world, "news", "1-5", "07:00", "--clip", world.news, "--clip-base", CLIP_URL,
            "--title", "早间新闻", "--volume", "70")
    assert "added programme news in area 341122000000: Mon-Fri 07:00 for 10 s" in r.stdout
    add(url, world, "weather", "6,7", "07:00", "--clip-url", "http://10.0.0.5/w.wav",
        "--sha256", "ab" * 32, "--bytes", "32044", "--duration", "600", "--except",
        "2027-01-01")
    out = json.loads(cx("broadcast", "schedule", "list", "--db", url, "--json").stdout)
    progs = {p["id"]: p for p in out["programmes"]}
    assert progs["news"]["audio"]["clip"] == {
        "url": f"{CLIP_URL}/news.wav", "bytes": world.news.stat().st_size,
        "sha256": hashlib.sha256(world.news.read_bytes()).hexdigest()}
    assert progs["news"]["days"] == [1, 2, 3, 4, 5] and progs["news"]["volume"] == 70
    assert progs["weather"]["duration"] == 600 and progs["weather"]["except"] == ["2027-01-01"]
    assert out["pushed"] == {}
    text = cx("broadcast", "schedule", "list", "--db", url, "--area", COUNTY).stdout
    assert "早间新闻" in text and "Sat,Sun" in text and "600s" in text

    # the same id again: refused unless --replace
    refused(add(url, world, "news", "1-5", "08:00", ok=False), 1, "news", "--replace")
    add(url, world, "news", "1-5", "08:00", "--clip", world.news, "--clip-base", CLIP_URL,
        "--replace")
    r = cx("broadcast", "schedule", "remove", "--db", url, "--area", COUNTY, "--id", "weather")
    assert "removed programme weather" in r.stdout and "1 left" in r.stdout
    refused(cx("broadcast", "schedule", "remove", "--db", url, "--area", COUNTY, "--id",
               "weather", ok=False), 1, "no programme weather")
    out = json.loads(cx("broadcast", "schedule", "list", "--db", url, "--json").stdout)
    assert [(p["id"], p["start"]) for p in out["programmes"]] == [("news", "08:00")]


def test_overlapping_programmes_are_refused_when_added(url: str, world: World) -> None:
    add(url, world, "news", "1-5", "07:00")  # 10 s
    line = refused(add(url, world, "weather", "5-7", "07:00", ok=False), 1, "news", "weather",
                   "overlap on Friday")
    assert "07:00" in line
    add(url, world, "after", "1-5", "07:00", "--clip", world.weather, "--clip-base", CLIP_URL,
        ok=False)
    add(url, world, "late", "1-5", "07:01")  # after the 10 s: fine
    # Sunday 23:59 for 120 s runs into Monday 00:00 (the week wraps)
    add(url, world, "midnight", "7", "23:59", "--clip-url", "http://10.0.0.5/m.wav",
        "--sha256", "cd" * 32, "--bytes", "45", "--duration", "120")
    refused(add(url, world, "monday", "1", "00:00", ok=False), 1, "midnight", "monday",
            "overlap on Sunday")
    ids = [p["id"] for p in json.loads(cx("broadcast", "schedule", "list", "--db", url,
                                          "--json").stdout)["programmes"]]
    assert sorted(ids) == ["late", "midnight", "news"]


@pytest.mark.parametrize(("flags", "names"), [
    (["--start", "24:00"], ["start", "'24:00'"]),
    (["--start", "7:00"], ["start", "HH:MM"]),
    (["--days", "0-5"], ["days"]),
    (["--days", "1,8"], ["days"]),
    (["--except", "2026-02-30"], ["--except[0]", "2026-02-30"]),
    (["--volume", "101"], ["--volume"]),
    (["--duration", "7201"], ["--duration"]),
    (["--title", "x" * 65], ["title", "64"]),
    (["--id", "has space"], ["id"]),
])
def test_bad_programme_fields_are_refused_naming_the_field(world: World, tmp_path: Path,
                                                          flags: list[str],
                                                          names: list[str]) -> None:
    argv = {"--id": "news", "--days": "1-5", "--start": "07:00"}
    extra = []
    for i in range(0, len(flags), 2):
        if flags[i] in argv:
            argv[flags[i]] = flags[i + 1]
        else:
            extra += flags[i:i + 2]
    r = cx("broadcast", "schedule", "add", "--db", tmp_path / "f.sqlite", "--area", COUNTY,
           *[x for kv in argv.items() for x in kv], "--clip", world.news, "--clip-base",
           CLIP_URL, *extra, ok=False)
    refused(r, 2, *names)


def test_a_clip_that_is_not_a_terminals_wav_is_refused(world: World, tmp_path: Path) -> None:
    db = tmp_path / "f.sqlite"
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    stereo = write_wav(tmp_path / "stereo.wav", 1, channels=2)
    cd = write_wav(tmp_path / "cd.wav", 1, rate=44100)
    for f, why in ((text, "not a RIFF WAVE file"), (stereo, "not 16-bit mono PCM"),
                   (cd, "44100 Hz")):
        r = cx("broadcast", "schedule", "add", "--db", db, "--area", COUNTY, "--id", "x",
               "--days", "1", "--start", "07:00", "--clip", f, "--clip-base", CLIP_URL,
               ok=False)
        refused(r, 2, f"--clip {f}", why)
    refused(cx("broadcast", "schedule", "add", "--db", db, "--area", COUNTY, "--id", "x",
               "--days", "1", "--start", "07:00", "--clip", world.news, ok=False), 2,
            "--clip-url", "--clip-base")
    refused(cx("broadcast", "schedule", "add", "--db", db, "--area", "341122", "--id", "x",
               "--days", "1", "--start", "07:00", "--clip", world.news, "--clip-base",
               CLIP_URL, ok=False), 2, "12 digits", "341122000000")


# --- push: sign, publish retained, verify -------------------------------------------------------


def test_push_publishes_the_schedule_retained_for_a_late_subscriber(
        url: str, world: World, tmp_path: Path, broker: Broker) -> None:
    add(url, world, "news", "1-5", "07:00", "--clip", world.news, "--clip-base", CLIP_URL,
        "--title", "早间新闻")
    add(url, world, "weather", "1-7", "18:30", "--clip", world.weather, "--clip-base", CLIP_URL,
        "--duration", "300")
    out = tmp_path / "s1.jws"
    r = push(url, world.county, "--except", "2027-01-01", "--broker", broker.address, "--out",
             out)
    assert "version 1, 2 programme(s)" in r.stdout
    assert "published retained to eb/daily/341122" in r.stdout

    msg = retained(broker, "eb/daily/341122")
    assert msg.retain and msg.qos == 1
    env = msg.payload.decode()
    assert env == out.read_text().strip()
    v = schedule.verify_schedule(env, world.anchors(), int(time.time()), region=VILLAGE)
    assert (v.status, v.reason, v.kid) == ("accepted", None, "cty-341122")
    assert v.payload is not None
    p = v.payload
    assert (p["area"], p["version"], p["tz"], p["from"], p["until"], p["except"]) == (
        COUNTY, 1, "+08:00", TOMORROW, UNTIL, ["2027-01-01"])
    assert [q["id"] for q in p["programmes"]] == ["news", "weather"]
    hdr = decode_jws(env)[0]
    assert hdr["typ"] == "eb-schedule" and hdr["kid"] == "cty-341122" and "crt" in hdr

    # the next push carries a higher version, and replaces the retained message
    cx("broadcast", "schedule", "remove", "--db", url, "--area", COUNTY, "--id", "weather")
    r = push(url, world.county, "--broker", broker.address, "--json")
    summary = json.loads(r.stdout)
    assert summary | {"id": None} == {
        "area": COUNTY, "topic": "eb/daily/341122", "version": 2, "id": None,
        "kid": "cty-341122", "programmes": 1, "envelope_bytes": summary["envelope_bytes"],
        "published": True, "out": None}
    p2 = schedule.verify_schedule(retained(broker, "eb/daily/341122").payload,
                                  world.anchors(), int(time.time())).payload
    assert p2 is not None and p2["version"] == 2 and len(p2["programmes"]) == 1
    listed = json.loads(cx("broadcast", "schedule", "list", "--db", url, "--json").stdout)
    assert listed["pushed"][COUNTY]["version"] == 2
    assert listed["pushed"][COUNTY]["published_at"] is not None

    # a version not above the last is refused before anything is signed or sent
    refused(push(url, world.county, "--version", "2", "--broker", broker.address, ok=False),
            1, "version 2 already")


def test_show_explains_the_verdict_rule_by_rule(world: World, tmp_path: Path) -> None:
    db = tmp_path / "f.sqlite"
    add(str(db), world, "news", "1-5", "07:00")
    out = tmp_path / "s.jws"
    push(str(db), world.county, "--out", out)
    r = cx("broadcast", "schedule", "show", out, "--trust", world.trust, "--region", VILLAGE)
    assert r.stdout.startswith("accepted\n")
    assert "area     341122000000 (county), topic eb/daily/341122" in r.stdout
    assert any(ln.split()[:3] == ["news", "Mon-Fri", "07:00"] for ln in r.stdout.splitlines())

    r = cx("broadcast", "schedule", "show", out, "--trust", world.trust, "--region",
           "341123100201", ok=False)
    assert r.returncode == 1 and r.stdout.startswith("ignored: not_for_me\n  rule 12 failed")

    env = out.read_text().strip()
    h, p, s = env.split(".")
    tampered = tmp_path / "t.jws"
    tampered.write_text(f"{h}.{p}.{s[:-2]}{'A' if s[-2] != 'A' else 'B'}{s[-1]}")
    r = cx("broadcast", "schedule", "show", tampered, "--trust", world.trust, ok=False)
    assert r.stdout.startswith("rejected: bad_signature\n  rule 6 failed")

    r = subprocess.run([CX, "broadcast", "schedule", "show", "-", "--json"], input=env,
                       capture_output=True, text=True, timeout=60, check=False)
    got = json.loads(r.stdout)
    assert r.returncode == 1 and got["status"] == "unverified" and got["skipped"] == [4, 5, 6, 12]
    assert got["claimed"]["programmes"][0]["id"] == "news"


def test_a_schedule_naming_another_time_zone_is_rejected_bad_tz(world: World,
                                                                tmp_path: Path) -> None:
    key = load_keyfile(world.county)
    assert key.priv is not None
    payload = schedule.make_payload(id="s1", area=COUNTY, version=1, issued=int(time.time()),
                                    from_=TOMORROW, until=UNTIL, programmes=[])
    with pytest.raises(schedule.ScheduleError, match="tz") as e:
        schedule.check_payload({**payload, "tz": "+00:00"})
    assert e.value.reason == "bad_tz"
    with pytest.raises(schedule.ScheduleError, match="tz"):
        schedule.sign_schedule(key, {**payload, "tz": "Asia/Shanghai"})
    env = sign_jws(key.priv, {"alg": "EdDSA", "typ": "eb-schedule", "kid": key.kid,
                              "crt": key.crt}, {**payload, "tz": "+00:00"})
    f = tmp_path / "tz.jws"
    f.write_text(env)
    r = cx("broadcast", "schedule", "show", f, "--trust", world.trust, ok=False)
    assert r.stdout.startswith("rejected: bad_tz\n  rule 8 failed: tz is +08:00")


def test_payload_checks_name_the_field() -> None:
    base = schedule.make_payload(id="s1", area=COUNTY, version=1, issued=1796000000,
                                 from_="2026-12-07", until="2027-03-31", programmes=[
                                     schedule.make_programme(
                                         id="news", days=[1, 2], start="07:00",
                                         url="http://h/n.wav", sha256="ab" * 32, nbytes=32044)])
    prog = base["programmes"][0]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"until": "2026-12-06"}, "until"),
        ({"until": "2027-12-31"}, "until"),
        ({"from": "2026-13-01"}, "from"),
        ({"version": 0}, "version"),
        ({"version": True}, "version"),
        ({"area": "341122"}, "area"),
        ({"except": ["2027-1-1"]}, "except[0]"),
        ({"programmes": [prog, prog]}, "programmes[1].id"),
        ({"programmes": [{**prog, "days": [1, 1]}]}, "programmes[0] (news).days"),
        ({"programmes": [{**prog, "start": "12:60"}]}, "programmes[0] (news).start"),
        ({"programmes": [{**prog, "audio": {"tone": "siren"}}]}, "programmes[0] (news).audio"),
        ({"programmes": [{**prog, "id": "b", "start": "07:00", "days": [2]}, prog]},
         "programmes"),
    ]
    for change, where in cases:
        with pytest.raises(schedule.ScheduleError) as e:
            schedule.check_payload({**base, **change})
        assert e.value.field == where and e.value.reason == "bad_field", (change, str(e.value))
        assert str(e.value).startswith(where) and "\n" not in str(e.value)
    # a clip of 32,044 bytes is 1 s: a programme at 07:00:01 on the same day does not overlap
    later = {**prog, "id": "later", "start": "07:01"}
    assert schedule.check_payload({**base, "programmes": [prog, later]})
    assert schedule.clip_seconds(32044) == 1 and schedule.clip_seconds(32045) == 2


# --- refused signers ----------------------------------------------------------------------------


def test_a_key_without_use_daily_is_refused(world: World, tmp_path: Path) -> None:
    db = str(tmp_path / "f.sqlite")
    add(db, world, "news", "1-5", "07:00")
    refused(push(db, world.alert_only, "--out", tmp_path / "x.jws", ok=False), 1,
            "cty-341122-alert", "not for daily")
    # a key file that claims daily whose certificate does not grant it
    doc = json.loads(world.alert_only.read_text())
    doc["use"] = ["alert", "daily"]
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    refused(push(db, forged, "--out", tmp_path / "x.jws", ok=False), 1,
            "does not grant use daily")
    # a root of use alert only cannot certify a daily key
    alert_root = tmp_path / "aroot.json"
    cx("keys", "root", "--kid", "aroot", "--scope", "34", "--out", alert_root)
    refused(cx("keys", "issuer", "--kid", "x", "--root", alert_root, "--scope", "341122",
               "--use", "daily", "--out", tmp_path / "x.json", ok=False), 2,
            "use daily is not granted")
    assert not (tmp_path / "x.jws").exists()
    out = json.loads(cx("broadcast", "schedule", "list", "--db", db, "--json").stdout)
    assert out["pushed"] == {}  # nothing was signed


def test_a_key_whose_scope_does_not_cover_the_area_is_refused(world: World, tmp_path: Path,
                                                              broker: Broker) -> None:
    db = str(tmp_path / "f.sqlite")
    add(db, world, "news", "1-5", "07:00")
    refused(push(db, world.neighbour, "--broker", broker.address, ok=False), 2,
            "area 341122000000", "outside", "cty-341123")
    # and a terminal would say out_of_scope to a schedule signed past the check
    key = load_keyfile(world.neighbour)
    env = schedule.sign_schedule(key, schedule.make_payload(
        id="s", area=COUNTY, version=1, issued=int(time.time()), from_=TOMORROW, until=UNTIL,
        programmes=[]))
    v = schedule.verify_schedule(env, world.anchors(), int(time.time()))
    assert (v.status, v.reason, v.rule) == ("rejected", "out_of_scope", 9)


def test_push_refusals_of_dates_and_empty_areas(world: World, tmp_path: Path) -> None:
    db = str(tmp_path / "f.sqlite")
    cx("broadcast", "schedule", "list", "--db", db, ok=False)  # no such database: not created
    assert not Path(db).exists()
    add(db, world, "news", "1-5", "07:00")
    for flags, names in ((["--from", "2026-12-32"], ["from", "2026-12-32"]),
                         (["--until", "2020-01-01"], ["until"]),
                         (["--except", "tomorrow"], ["--except[0]", "tomorrow"])):
        argv = {"--from": TOMORROW, "--until": UNTIL, "--except": "2027-01-01"}
        argv[flags[0]] = flags[1]
        r = cx("broadcast", "schedule", "push", "--db", db, "--area", COUNTY, "--key",
               world.county, *[x for kv in argv.items() for x in kv], "--out",
               tmp_path / "x.jws", ok=False)
        refused(r, 2, *names)
    refused(push(db, world.county, ok=False), 2, "--broker", "--out")
    cx("broadcast", "schedule", "remove", "--db", db, "--area", COUNTY, "--id", "news")
    refused(push(db, world.county, "--out", tmp_path / "x.jws", ok=False), 1,
            "no programmes", "--clear")
    push(db, world.county, "--out", tmp_path / "x.jws", "--clear")
    v = schedule.verify_schedule((tmp_path / "x.jws").read_bytes(), world.anchors(),
                                 int(time.time()))
    assert v.status == "accepted" and v.payload is not None and v.payload["programmes"] == []


def test_a_root_with_use_daily_may_sign_directly() -> None:
    root = KeyPair.generate("root", "cty-341122-root", ["341122"], ["daily"])
    env = schedule.sign_schedule(root, schedule.make_payload(
        id="s", area=VILLAGE, version=7, issued=int(time.time()), from_=TOMORROW, until=UNTIL,
        programmes=[]))
    assert "crt" not in decode_jws(env)[0]
    v = schedule.verify_schedule(env, [root.anchor()], int(time.time()), region=VILLAGE)
    assert v.status == "accepted"
    alert_anchor = {**root.anchor(), "use": ["alert"]}
    v = schedule.verify_schedule(env, [alert_anchor], int(time.time()))
    assert (v.status, v.reason, v.rule) == ("rejected", "unknown_key", 4)


# --- the terminal agrees ------------------------------------------------------------------------

TERMINAL = """
import json
import daily
class Clock:
    synced = True
    def now(self):
        return %(now)d
s = daily.Schedules(json.loads(open("trust.json").read()), %(region)r, Clock(), lambda *a, **k: 0)
out = []
for env in json.loads(open("cases.json").read()):
    v = s.check(env.encode())
    out.append([v.status, v.reason])
    s.held.clear()
print("RESULT " + json.dumps(out))
"""


def terminal_verdicts(tmp: Path, trust: list[dict[str, Any]], envs: list[str],
                      now: int) -> list[tuple[str, str | None]]:
    """What firmware/daily.py (the terminal's verifier, on MicroPython) says of each envelope."""
    (tmp / "cases.json").write_text(json.dumps(envs))
    (tmp / "trust.json").write_text(json.dumps(trust))
    r = run_mpy(TERMINAL % {"now": now, "region": VILLAGE}, cwd=tmp)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout[-1500:] + r.stderr[-1500:]
    return [(a, b) for a, b in json.loads(line[7:])]


def test_the_terminal_accepts_what_push_signs_and_agrees_with_show(world: World,
                                                                   tmp_path: Path) -> None:
    db = str(tmp_path / "f.sqlite")
    add(db, world, "news", "1-5", "07:00", "--clip", world.news, "--clip-base", CLIP_URL,
        "--title", "早间新闻", "--except", "2027-01-01")
    add(db, world, "weather", "1-7", "23:58", "--clip", world.weather, "--clip-base", CLIP_URL,
        "--duration", "240", "--volume", "40")  # runs past midnight, into Monday on Sunday
    add(db, world, "monday", "1", "00:03", "--clip", world.weather, "--clip-base", CLIP_URL)
    out = tmp_path / "s.jws"
    push(db, world.county, "--except", "2027-01-01,2027-02-17", "--out", out)
    pushed = out.read_text().strip()

    key = load_keyfile(world.county)
    neighbour = load_keyfile(world.neighbour)
    assert key.priv is not None
    now = int(time.time())
    good = schedule.verify_schedule(pushed, world.anchors(), now).payload
    assert good is not None

    def signed(k: KeyPair = key, **change: Any) -> str:
        assert k.priv is not None
        return sign_jws(k.priv, {"alg": "EdDSA", "typ": "eb-schedule", "kid": k.kid,
                                 "crt": k.crt}, {**good, **change})

    prog = good["programmes"][0]
    envs = [
        pushed,
        signed(tz="+00:00"),
        signed(until="2026-02-30"),
        signed(programmes=[prog, {**prog, "id": "again", "days": [1]}]),
        signed(programmes=[{**prog, "audio": {"clip": prog["audio"]["clip"], "x": 1}}]),
        signed(programmes=[{**prog, "audio": {"clip": {**prog["audio"]["clip"], "bytes": 44}}}
                           ]),
        signed(**{"from": "1999-12-31"}),
        signed(neighbour),
        signed(issued=now + 3600),
        signed(area="341122101000"),
    ]
    host = [(v.status, v.reason) for v in
            (schedule.verify_schedule(e, world.anchors(), now, region=VILLAGE) for e in envs)]
    assert host[0] == ("accepted", None) and host[1] == ("rejected", "bad_tz")
    assert host[2:7] == [("rejected", "bad_field")] * 5
    assert host[7:] == [("rejected", "out_of_scope"), ("rejected", "not_yet_valid"),
                        ("ignored", "not_for_me")]
    assert terminal_verdicts(tmp_path, world.anchors(), envs, now) == host


def test_on_the_fleets_broker_only_the_dispatcher_pushes_and_terminals_read(
        world: World, tmp_path: Path) -> None:
    """`cx fleet broker-config`'s ACL: the dispatcher writes eb/daily/#, a terminal reads the
    eb/daily/<prefix> of its code and cannot write there."""
    a, b = Device("T341122100201-01", VILLAGE), Device("T341122100202-01", "341122100202")
    (tmp_path / "acl").mkdir()
    acl = AclBroker(tmp_path / "acl", [a, b], trust=world.anchors())
    try:
        db = str(tmp_path / "f.sqlite")
        add(db, world, "news", "1-5", "07:00")
        stolen = tmp_path / "device.cred"
        stolen.write_text(json.dumps({"user": b.id, "password": acl.password(b)}))
        r = push(db, world.county, "--broker", acl.terminals, "--cred", stolen, ok=False)
        refused(r, 4, "schedule", "eb/daily/341122")
        r = push(db, world.county, "--broker", acl.services, "--cred",
                 acl.tmp / "conf" / "dispatcher.cred")
        assert "version 2" in r.stdout  # the refused push used version 1
        msg = retained(("127.0.0.1", acl.port), "eb/daily/341122",
                       login=(a.id, acl.password(a)))
        v = schedule.verify_schedule(msg.payload, world.anchors(), int(time.time()),
                                     region=VILLAGE)
        assert msg.retain and v.status == "accepted" and v.payload is not None
        assert v.payload["version"] == 2
    finally:
        acl.stop()
