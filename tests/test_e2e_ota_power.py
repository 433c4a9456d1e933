"""OTA under power cuts (ota.md §5): cuts at random instants during download, staging, the switch
and the trial boot. After every one the terminal boots a complete version (every file of the old
one, or every file of the new one, on trial), and then sounds a valid alert. A damaged pointer
boots the highest complete version."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

from otahelp import Commands, Server, boots, build, sounds, terminal
from rig import Rig, Term

from tools import terminal_files
from tools.envelope import KeyPair, decode_jws

CUTS = int(os.environ.get("CX_OTA_CUTS", "50"))
SEED = int(os.environ.get("CX_OTA_SEED", "8032"))


def complete(t: Term, version: str) -> None:
    """v/<version>/ on t's flash holds exactly the files its manifest names, each as its sha256
    says; the factory version, exactly the flashed sources."""
    d = t.dir / "flash" / "v" / version
    have = {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    m = have.pop("manifest.jws", None)
    if m is None:
        want = {n.split("/", 2)[2]: hashlib.sha256(s.read_bytes()).hexdigest()
                for s, n in terminal_files.files("emu") if n.startswith("v/")}
    else:
        _, payload, _ = decode_jws(m.decode().strip())
        want = {f["path"]: f["sha256"] for f in json.loads(payload)["files"]}
    got = {n: hashlib.sha256(b).hexdigest() for n, b in have.items()}
    assert got == want, f"v/{version} is not one complete version"


def test_power_cuts_at_random_instants_always_boot_one_complete_version(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands,
        tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    t = terminal(rig, ota_key, ota_trial_s=20, hold_ms=100)
    tones = (Path(__file__).resolve().parent.parent / "firmware" / "tones.py").read_text()
    releases = []
    for i in range(2, 6):  # each changes one module, so each has something to download
        rel = tmp_path / f"r0{i}0"
        build(rel, ota_key, f"0.{i}.0", replace={"tones.py": tones + f"\nRELEASE = {i}\n"})
        server.dirs.append(rel)
        releases.append(rel)
    server.rate = 6000  # bytes/s: a download spans several seconds, so cuts land inside it
    target = 0
    seen_states: set[str] = set()
    for cut in range(CUTS):
        running = boots(t)[-1]["version"]
        want = f"0.{target + 2}.0"
        if running == want and target + 1 < len(releases):
            target += 1
            want = f"0.{target + 2}.0"
        if running != want:
            ack = cmds.ota(t.id, releases[target], server.base)  # ok, or busy: already under way
            assert ack["ok"] or ack["error"] in ("busy", "same_version"), ack
        seen_states |= {r.get("state") for r in rig.rx.items if r.get("ota")}
        time.sleep(rnd.uniform(0, 4))
        allowed = {p.name for p in (t.dir / "flash" / "v").iterdir()} | {want}
        n = len(t.events())
        assert t.ctl("power-cut") == "ok"
        b = t.wait_event(lambda e: e["dev"] == "boot", 30, since=n)
        t.wait_online(60, since=n)
        complete(t, boots(t)[-1]["version"])
        assert b["value"]["version"] in allowed, (allowed, b)
        sounds(rig, t)
    # whatever the cuts did, the fleet sees the updates reported and the terminal keeps working
    assert {"downloading"} <= seen_states, seen_states
    ver = boots(t)[-1]["version"]
    complete(t, ver)
    sounds(rig, t)


def test_a_damaged_pointer_boots_the_highest_complete_version(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands,
        tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    rig.rx.wait(lambda r: r.get("ota") == "0.2.0" and r.get("state") == "confirmed", 90)
    for damage in (b"\x00garbage{", b'{"run": "9.9.9"}', b""):
        (t.dir / "flash" / "ota.json").write_bytes(damage)
        n = len(t.events())
        assert t.ctl("power-cut") == "ok"
        b = t.wait_event(lambda e: e["dev"] == "boot", 30, since=n)
        assert b["value"]["version"] == "0.2.0", damage
        t.wait_online(60, since=n)
        assert json.loads((t.dir / "flash" / "ota.json").read_text())["run"] == "0.2.0"
        sounds(rig, t)
