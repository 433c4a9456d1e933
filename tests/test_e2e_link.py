"""The link manager through the emulator and the real broker: IP cut and restored, 4G fallback,
hysteresis, both paths down (issue 3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rig import Rig


@pytest.fixture
def rig(tmp_path: Path, broker):
    r = Rig(tmp_path, broker)
    yield r
    r.close()


def links(t, since: int = 0) -> list[str]:
    return [e["value"] for e in t.events()[since:] if e["dev"] == "link"]


def test_ip_cut_is_noticed_and_terminal_reconnects_when_ip_returns(rig: Rig) -> None:
    t = rig.terminal("t1", hold_ms=200, reconnect_max_ms=1000)
    n = len(t.events())
    t0 = time.monotonic()
    assert t.ctl("link", "ip", "down") == "ok"
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "none", 10, since=n)
    assert time.monotonic() - t0 < 4.5, "a dead line is noticed within two probe periods"
    drops = [e for e in t.log() if e.get("ev") == "disconnect"]
    assert drops[-1]["reason"] == "probe_timeout"
    p = rig.send_alert(kind="test", level=4, tone="chime")  # published while the line is cut
    time.sleep(2)
    assert rig.rx.for_alert(p["id"]) == []
    assert t.ctl("link", "ip", "up") == "ok"
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "ip", 15, since=n)
    # the persistent session delivers what was published meanwhile, exactly once
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 20)
    time.sleep(1)
    assert rig.rx.statuses(p["id"]) == ["accepted", "playing", "done"]


def test_link_ctl_rejects_bad_arguments(rig: Rig) -> None:
    import subprocess

    from rig import CX

    t = rig.terminal("t1")
    for bad in (["link"], ["link", "wifi", "down"], ["link", "ip", "sideways"]):
        r = subprocess.run([CX, "emu", "ctl", str(t.dir), *bad], capture_output=True, text=True)
        assert r.returncode == 1 and "usage: link ip|4g up|down" in r.stderr
