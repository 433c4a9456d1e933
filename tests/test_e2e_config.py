"""A corrupt config on the device: fall back to the last good copy and keep sounding; with no good
copy, boot, report the fault and stay silent rather than trusting anything."""

from __future__ import annotations

import json
import time

from rig import Rig


def test_corrupt_config_falls_back_to_last_good_copy_and_still_sounds(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200)
    flash = t.dir / "flash"
    good = (flash / "config.json").read_bytes()
    assert json.loads((flash / "config.bak").read_bytes()) == json.loads(good)
    t.stop()
    (flash / "config.json").write_bytes(good[: len(good) // 2])  # torn write
    n = len(t.events())
    t.start(wait=False)
    t.wait_online(since=n)
    log = t.log()
    restored = [e for e in log if e.get("ev") == "config_restored"]
    assert restored and restored[-1]["reason"] == "not JSON"
    assert "fault" in [e["value"] for e in t.events()[n:] if e["dev"] == "led"]
    assert (flash / "config.json").read_bytes() == (flash / "config.bak").read_bytes()
    assert (flash / "config.json.bad").read_bytes() == good[: len(good) // 2]
    p = rig.send_alert(level=2, tone="siren")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 20)


def test_no_good_config_boots_reports_fault_and_stays_silent(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200)
    flash = t.dir / "flash"
    t.stop()
    (flash / "config.json").write_text('{"id": "T1", "trust": "everyone"}')
    (flash / "config.bak").write_bytes(b"\x00" * 40)
    n = len(t.events())
    t.start(wait=False)
    t.wait_event(lambda e: e["dev"] == "led" and e["value"] == "fault", 15, since=n)
    p = rig.send_alert(level=1, tone="siren")
    time.sleep(4)
    assert rig.rx.for_alert(p["id"]) == []
    after = t.events()[n:]
    assert [e for e in after if e["dev"] in ("amp", "audio", "link")] == []
    assert [e["value"]["cause"] for e in after if e["dev"] == "boot"] == ["power"], "no crash loop"
    fault = [e for e in t.log() if e.get("ev") == "fault"]
    assert fault and fault[-1]["reason"] == "no_valid_config"
    assert "config_invalid" in [e.get("ev") for e in t.log()]
    assert "Traceback" not in t.console()
