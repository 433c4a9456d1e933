"""The emulator contract (specs/emulator.md): flash that survives restarts, ctl commands, reboots
on watchdog/crash/power cut, a WAV that is valid at any moment, fleets, and bad flags."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import wave
from pathlib import Path

import pytest
from conftest import ROOT
from rig import CX, Rig

from cx.emu import derive
from tools.emu.run import EmuError


def boots(t) -> list[dict]:
    return [e["value"] for e in t.events() if e["dev"] == "boot"]


def micropython_pid(t) -> int:
    return int(json.loads(t.ctl("status"))["pid"])


def test_first_boot_records_power_cause_and_version(rig: Rig) -> None:
    t = rig.terminal("t1")
    assert boots(t) == [{"cause": "power", "version": "0.1.0"}]
    st = json.loads(t.ctl("status"))
    assert st["version"] == "0.1.0" and st["boots"] == 1 and st["cause"] == "power"
    fl = t.dir / "flash"  # docs/ota.md "Flash layout": the factory version in v/0.1.0/
    assert (fl / "main.py").read_text() == (ROOT / "agent" / "selector.py").read_text()
    assert (fl / "v" / "0.1.0" / "board_emu.py").exists() and (fl / "board.txt").read_text() == "emu\n"
    assert json.loads((fl / "ota.json").read_text())["run"] == "0.1.0"
    assert not (fl / "alert.py").exists(), "no firmware file on the flash root"
    assert json.loads((t.dir / "flash" / "config.json").read_text())["id"] == t.id


def test_hung_firmware_is_rebooted_by_the_watchdog(rig: Rig) -> None:
    t = rig.terminal("t1", wdt_ms=2000)
    n = len(t.events())
    os.kill(micropython_pid(t), signal.SIGSTOP)  # a hung CPU: nothing feeds the watchdog
    e = t.wait_event(lambda e: e["dev"] == "boot", 15, since=n)
    assert e["value"]["cause"] == "watchdog"
    t.wait_online(since=n)


def test_crashed_firmware_restarts_with_crash_cause(rig: Rig) -> None:
    t = rig.terminal("t1")
    n = len(t.events())
    os.kill(micropython_pid(t), signal.SIGSEGV)
    e = t.wait_event(lambda e: e["dev"] == "boot", 15, since=n)
    assert e["value"]["cause"] == "crash"
    t.wait_online(since=n)


def test_power_cut_keeps_flash_and_sounds_again(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200)
    (t.dir / "flash" / "marker.txt").write_text("kept")
    n = len(t.events())
    assert t.ctl("power-cut") == "ok"
    t.wait_event(lambda e: e["dev"] == "boot" and e["value"]["cause"] == "power", 15, since=n)
    t.wait_online(since=n)
    assert (t.dir / "flash" / "marker.txt").read_text() == "kept"
    p = rig.send_alert(kind="test", level=4, tone="chime")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 20)


def test_reset_exit_code_reboots_with_reset_cause(tmp_path: Path) -> None:
    # board.reset() exits with code 3; the supervisor must reboot with cause "reset".
    from tools.emu.run import Terminal

    d = tmp_path / "t"
    (d / "flash").mkdir(parents=True)
    src = Path(__file__).resolve().parent.parent / "hardware" / "board_emu.py"
    (d / "flash" / "board.py").write_text(src.read_text())
    (d / "flash" / "main.py").write_text(
        "import board, os\n"
        "board.event('boot', {'cause': board.boot_cause()})\n"
        "if board.boot_cause() == 'power':\n    board.reset()\n"
        "import time\nwhile True:\n    time.sleep(1)\n")
    term = Terminal(d, quiet=True)
    import threading

    th = threading.Thread(target=term.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 15
        causes: list[str] = []
        while time.monotonic() < deadline and len(causes) < 2:
            p = d / "hw" / "events.jsonl"
            if p.exists():
                causes = [json.loads(x)["value"]["cause"] for x in p.read_text().splitlines()]
            time.sleep(0.1)
        assert causes[:2] == ["power", "reset"]
    finally:
        term.stop()
        th.join(5)


def test_press_and_adc_reach_the_firmware(rig: Rig) -> None:
    t = rig.terminal("t1")
    assert t.ctl("press") == "ok"
    assert t.ctl("press", "--long") == "ok"
    assert t.ctl("adc", "supply_mv", "10900") == "ok"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = t.log()
        kinds = [e["kind"] for e in log if e.get("ev") == "button"]
        supplies = [e["supply_mv"] for e in log if e.get("ev") == "analog"]
        if kinds == ["short", "long"] and 10900 in supplies:
            break
        time.sleep(0.2)
    assert kinds == ["short", "long"]
    assert 10900 in supplies


def test_adc_values_survive_a_reboot(rig: Rig) -> None:
    t = rig.terminal("t1")
    t.ctl("adc", "line_ma", "0")
    t.ctl("adc", "line_ma", "345")
    n = len(t.events())
    t.ctl("power-cut")
    t.wait_online(since=n)
    t.wait_event(lambda e: True, 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        boot_idx = max(i for i, e in enumerate(t.log()) if e.get("ev") == "boot")
        after = [e for e in t.log()[boot_idx:] if e.get("ev") == "analog"]
        if after and after[-1]["line_ma"] == 345:
            break
        time.sleep(0.2)
    assert after and after[-1]["line_ma"] == 345


def test_speaker_wav_is_valid_while_it_grows(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200)
    rig.send_alert(level=2, tone="siren", repeat=2)
    wav = t.dir / "hw" / "speaker.wav"
    seen = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not seen or seen[-1] < 16000 * 5):
        if wav.exists():
            size = wav.stat().st_size
            with wave.open(str(wav), "rb") as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
                n = w.getnframes()
            assert 44 + 2 * n <= os.path.getsize(wav)
            assert size >= 44
            seen.append(n)
        time.sleep(0.05)
    assert len(set(seen)) > 5, "read many times while growing"
    assert seen == sorted(seen)
    assert seen[-1] >= 16000 * 5


def test_ctl_errors_are_one_line(rig: Rig, tmp_path: Path) -> None:
    r = subprocess.run([CX, "emu", "ctl", str(tmp_path / "nothing"), "press"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no running terminal" in r.stderr
    t = rig.terminal("t1")
    for bad in (["adc", "x"], ["adc", "x", "high"], ["dance"]):
        r = subprocess.run([CX, "emu", "ctl", str(t.dir), *bad], capture_output=True, text=True)
        assert r.returncode == 1, bad
        assert r.stderr.startswith("cx: error:") and r.stderr.count("\n") == 1


def test_bad_run_flags_exit_nonzero_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text("{not json")
    r = subprocess.run([CX, "emu", "run", "--dir", str(tmp_path / "d"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and r.stderr.count("\n") == 1
    cfg.write_text(json.dumps({"id": "x"}))
    r = subprocess.run([CX, "emu", "run", "--dir", str(tmp_path / "d"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "region" in r.stderr
    r = subprocess.run([CX, "emu", "run", "--dir", str(tmp_path / "d"), "--config", str(cfg),
                        "--heap", "lots"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--heap" in r.stderr


def test_heap_sizes_parse_as_documented() -> None:
    from cx.emu import HEAP, heap_text

    assert [heap_text(HEAP(x)) for x in ("96k", "128k", "1m", "1M")] == ["96k", "128k", "1m", "1m"]
    for bad in ("", "k", "0k", "-1m", "1g", "lots", "8k", "65m"):
        with pytest.raises(argparse.ArgumentTypeError):
            HEAP(bad)


def test_fleet_derives_ids_and_regions() -> None:
    tpl = {"id": "x", "region": "341122100201", "trust": [], "mqtt": {}}
    assert derive(tpl, 0)["region"] == "341122100201"
    assert derive(tpl, 5) | {} == dict(tpl, region="341122100206", id="T341122100206-01")
    with pytest.raises(EmuError):
        derive(tpl, 900)


def test_fleet_runs_n_terminals_that_each_sound(rig: Rig, tmp_path: Path) -> None:
    tpl = tmp_path / "tpl.json"
    tpl.write_text(json.dumps(rig.config(hold_ms=200)))
    fleet_dir = tmp_path / "fleet"
    out = open(tmp_path / "fleet.out", "wb")
    p = subprocess.Popen([CX, "emu", "fleet", "--count", "3", "--dir", str(fleet_dir),
                          "--config-template", str(tpl)], stdout=out, stderr=subprocess.STDOUT)
    try:
        ids = ["T341122100201-01", "T341122100202-01", "T341122100203-01"]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            ok = [(fleet_dir / i / "hw" / "events.jsonl").exists() and
                  '"link", "value": "ip"' in (fleet_dir / i / "hw" / "events.jsonl").read_text()
                  for i in ids]
            if all(ok):
                break
            time.sleep(0.2)
        assert all(ok)
        for k, i in enumerate(ids):  # and each holds its subscriptions
            rig.wait_answering(i, derive(json.loads(tpl.read_text()), k)["region"])
        a = rig.send_alert(kind="test", level=4, tone="chime")
        for i in ids:
            rig.rx.wait(lambda r, i=i: r["_dev"] == i and r.get("alert") == a["id"]
                        and r["status"] == "done", 30)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(20)
        out.close()
    assert p.returncode == 0
    assert not (fleet_dir / ids[0] / "ctl.sock").exists()
