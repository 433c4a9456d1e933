"""OTA end to end (ota.md, docs/ota.md): an emulated terminal on the real broker takes a signed
release, downloads it over its link, stages it, switches, proves it in trial and confirms it; a
release that cannot prove itself is rolled back; refusals write nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from otahelp import Commands, Server, boots, build, sounds, terminal
from rig import Rig, Term

from tools.envelope import KeyPair

VER0 = "0.1.0"  # the factory image (firmware/version.py)


def ota_events(rig: Rig, dev: str, version: str) -> list[dict[str, Any]]:
    return [r for r in list(rig.rx.items) if r.get("_dev") == dev and r.get("ota") == version]


def wait_state(rig: Rig, t: Term, version: str, state: str, timeout: float = 90) -> dict:
    return rig.rx.wait(lambda r: r.get("_dev") == t.id and r.get("ota") == version
                       and r.get("state") == state, timeout)


def test_update_downloads_stages_switches_confirms_and_sounds(rig: Rig, ota_key: KeyPair,
                                                               server: Server, cmds: Commands,
                                                               tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "r020"
    summary = build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    ack = cmds.ota(t.id, rel, server.base)
    assert ack["ok"] is True, ack
    wait_state(rig, t, "0.2.0", "staged")
    wait_state(rig, t, "0.2.0", "trial")
    done = wait_state(rig, t, "0.2.0", "confirmed")
    assert done["reason"] is None
    states = [r["state"] for r in ota_events(rig, t.id, "0.2.0")]
    assert states[0] == "downloading" and states.index("staged") < states.index("trial")
    assert [b["version"] for b in boots(t)][-1] == "0.2.0"
    assert json.loads(t.ctl("status"))["version"] == "0.2.0"  # specs/emulator.md `status`
    fl = t.dir / "flash"
    assert sorted(p.name for p in (fl / "v").iterdir()) == ["0.2.0"], "the old one is gone"
    assert not (fl / "stage").exists()
    # every file of the manifest, as its sha256 says: the first update of a .py factory image
    # downloads them all
    assert sorted(server.fetched()) == sorted(f"{f['sha256']}.z" for f in summary["files"])
    sounds(rig, t)


def test_release_signed_by_an_alert_only_key_is_refused_and_nothing_written(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    alert_only = KeyPair.generate("root", "county-alert2", ["341122"], ["alert", "ota"])
    rel = tmp_path / "bad"
    build(rel, alert_only, "0.2.0")  # a key the terminal does not hold as an ota anchor
    server.dirs.append(rel)
    ack = cmds.ota(t.id, rel, server.base)
    assert ack["ok"] is False and ack["error"] == "unknown_key"
    refused = wait_state(rig, t, "0.2.0", "refused", 20)
    assert refused["reason"] == "unknown_key"
    fl = t.dir / "flash"
    assert sorted(p.name for p in (fl / "v").iterdir()) == [VER0]
    assert not (fl / "stage").exists() and server.requests == []
    sounds(rig, t)


def test_a_release_that_crashes_at_boot_is_rolled_back(rig: Rig, ota_key: KeyPair,
                                                      server: Server, cmds: Commands,
                                                      tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "crash"
    build(rel, ota_key, "0.2.0", replace={"terminal.py": "raise RuntimeError('boom')\n"})
    server.dirs.append(rel)
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    wait_state(rig, t, "0.2.0", "staged")
    back = wait_state(rig, t, "0.2.0", "rolled_back", 120)
    assert back["reason"] == "crash"
    vs = [b["version"] for b in boots(t)]
    assert vs[-1] == VER0 and "0.2.0" not in vs, "the trial never got as far as its boot event"
    assert sorted(p.name for p in (t.dir / "flash" / "v").iterdir()) == [VER0]
    sounds(rig, t)


def test_a_release_that_cannot_reach_the_fleet_rolls_back_no_fleet(rig: Rig, ota_key: KeyPair,
                                                                  server: Server, cmds: Commands,
                                                                  tmp_path: Path) -> None:
    t = terminal(rig, ota_key, ota_trial_s=15)
    src = (Path(__file__).resolve().parent.parent / "firmware" / "terminal.py").read_text()
    broken = src.replace('host, port = m["host"], m["port"]', 'host, port = "127.0.0.1", 9')
    assert broken != src
    rel = tmp_path / "deaf"
    build(rel, ota_key, "0.2.0", replace={"terminal.py": broken})
    server.dirs.append(rel)
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    back = wait_state(rig, t, "0.2.0", "rolled_back", 150)
    assert back["reason"] == "no_fleet"
    assert [b["version"] for b in boots(t)][-2:] == ["0.2.0", VER0]
    sounds(rig, t)


def test_bytes_that_do_not_match_end_failed_bad_hash_and_the_running_version_stays(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "r020"
    summary = build(rel, ota_key, "0.2.0")
    bad = summary["files"][3]["sha256"]
    server.corrupt.add(bad)
    server.dirs.append(rel)
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    failed = wait_state(rig, t, "0.2.0", "failed", 120)
    assert failed["reason"] == "bad_hash"
    assert server.fetched().count(f"{bad}.z") == 3, "fetched again, three times in all"
    fl = t.dir / "flash"
    assert sorted(p.name for p in (fl / "v").iterdir()) == [VER0]
    assert [b["version"] for b in boots(t)] == [VER0]
    sounds(rig, t)


def test_one_changed_module_downloads_one_file_and_a_cut_download_resumes(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    r1, r2 = tmp_path / "r020", tmp_path / "r021"
    build(r1, ota_key, "0.2.0")
    server.dirs += [r1, r2]
    assert cmds.ota(t.id, r1, server.base)["ok"] is True
    wait_state(rig, t, "0.2.0", "confirmed")
    tones = (Path(__file__).resolve().parent.parent / "firmware" / "tones.py").read_text()
    s2 = build(r2, ota_key, "0.2.1", replace={"tones.py": tones + "\nCHANGED = 1\n"})
    changed = next(f for f in s2["files"] if f["path"] == "tones.mpy")
    n = len(server.requests)
    server.cut_after = 300  # the first GET of the changed file is cut after 300 bytes
    assert cmds.ota(t.id, r2, server.base)["ok"] is True
    deadline = time.monotonic() + 30
    while len(server.requests) == n and time.monotonic() < deadline:
        time.sleep(0.05)
    server.cut_after = None
    wait_state(rig, t, "0.2.1", "confirmed")
    got = server.requests[n:]
    assert {name for name, _ in got} == {f"{changed['sha256']}.z"}, got
    assert got[0][1] == 0 and any(start == 300 for _, start in got[1:]), "resumed with Range"
    sounds(rig, t)


def test_an_alert_during_a_download_sounds_and_the_update_carries_on(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key, hold_ms=100)
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    server.rate = 8000  # a slow line: the download takes many seconds
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    wait_state(rig, t, "0.2.0", "downloading", 30)
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:  # the first file is on its way
        time.sleep(0.05)
    assert server.requests, "the download has begun"
    p = rig.send_alert(kind="alert", level=1, tone="siren", expires_in=120)
    playing = rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "playing", 30)
    assert not any(r.get("state") == "staged" for r in ota_events(rig, t.id, "0.2.0"))
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)  # 3 s siren
    server.rate = None
    wait_state(rig, t, "0.2.0", "confirmed", 120)
    assert playing["reason"] is None
    # The old version's log: the download waited while the siren played (its 3 s, less the
    # moment the download took to reach its next step), then went on to stage the release.
    log = t.log(rotated=True)
    at = next(i for i, e in enumerate(log)
              if e.get("ev") == "receipt" and e.get("alert") == p["id"] and e["status"] == "playing")
    staged = next(i for i, e in enumerate(log) if e.get("ev") == "ota_staged")
    paused = [e["ms"] for e in log[at:staged] if e.get("ev") == "ota_paused"]
    assert paused and max(paused) >= 2000, paused
