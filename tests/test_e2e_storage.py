"""Damaged files on the terminal's flash (issue 8, defects 1 and 2): every file the firmware reads
back is checked entry by entry; a bad entry is dropped, logged and reported (a `storage` fault
event and the heartbeat's `files`), never carried into the alert path, and a valid alert still
sounds. The seen store keeps two copies, so one damaged copy never lets a warning play twice."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest
from rig import Rig, Term
from test_e2e_playback import ClipServer, wav_bytes

from tools.envelope import topics_for


def restart(t: Term) -> int:
    """Start a stopped terminal; wait until it is online again. Returns the event index."""
    n = len(t.events())
    t.start(wait=False)
    t.wait_online(since=n)
    return n


def sounds(rig: Rig, t: Term, **kw: Any) -> dict[str, Any]:
    """Send a valid alert; it must go accepted → playing → done with the amplifier on."""
    n = len(t.events())
    p = rig.send_alert(**kw)
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)
    assert rig.rx.statuses(p["id"], t.id)[:3] == ["accepted", "playing", "done"]
    assert any(e["dev"] == "amp" and e["value"] for e in t.events()[n:])
    return p


def storage_events(rig: Rig, t: Term, start: int = 0) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with rig.rx.cond:
        items = list(rig.rx.items[start:])
    for r in items:
        if r.get("fault") == "storage" and r["_dev"] == t.id:
            out.setdefault(r["file"], []).append(r)
    return out


def wait_storage(rig: Rig, t: Term, files: set[str], start: int,
                 timeout: float = 30) -> dict[str, list[dict[str, Any]]]:
    rig.rx.wait(lambda r: files <= set(storage_events(rig, t, start)), timeout, start)
    return storage_events(rig, t, start)


def wait_backup(t: Term, aid: str, timeout: float = 30) -> None:
    # the backup copy of the seen store follows at the terminal's next quiet moment
    deadline = time.monotonic() + timeout
    bak = t.dir / "flash" / "seen.bak"
    while aid not in (bak.read_text(errors="replace") if bak.exists() else ""):
        assert time.monotonic() < deadline, "seen.bak never caught up"
        time.sleep(0.1)


def test_one_bad_entry_in_the_seen_store_never_silences_the_terminal(rig: Rig) -> None:
    # the hostile probe's exact file
    t = rig.terminal("t1", hold_ms=200)
    t.stop()
    flash = t.dir / "flash"
    (flash / "seen.json").write_text(json.dumps([[rig.issuer.kid, "zzz", "soon",
                                                  "0000000000000000"]]))
    mark = len(rig.rx.items)
    restart(t)
    sounds(rig, t, level=2, tone="siren")
    ev = wait_storage(rig, t, {"seen.json"}, mark)["seen.json"][0]
    assert (ev["reason"], ev["value"], ev["active"]) == ("bad entries", 1, True)
    assert "verifier error" not in t.console()
    # the bad entry did not survive: the store on flash holds only well-formed entries
    for copy in ("seen.json", "seen.bak"):
        for kid, aid, exp, h in json.loads((flash / copy).read_text()):
            assert isinstance(exp, int) and aid != "zzz"
    # and the next boot finds nothing to report
    t.stop()
    mark = len(rig.rx.items)
    restart(t)
    sounds(rig, t, level=2, tone="siren")
    assert storage_events(rig, t, mark) == {}


def _damage(kind: str, name: str, good: bytes) -> bytes:
    if kind == "random":
        return os.urandom(max(len(good), 64))
    if kind == "truncated":
        return good[: max(1, len(good) // 2)]
    return {  # wrong types, entry by entry, in valid JSON
        "seen.json": b'[["k", "a", "soon", "0"], [1, 2, 3, 4], "x", {"kid": 1}]',
        "seen.bak": b'[[null, null, null, null], ["k", "b", 1e300, "00"]]',
        "clock.json": b'{"t": "tomorrow"}',
        "log.jsonl": b'[1, 2]\n"not an event"\n{"ev": ',
    }[name]


@pytest.mark.parametrize("kind", ["wrong_types", "truncated", "random"])
def test_every_damaged_file_is_dropped_reported_and_a_valid_alert_still_sounds(
        rig: Rig, kind: str) -> None:
    t = rig.terminal("t1", hold_ms=200)
    first = sounds(rig, t, level=3, tone="chime", kind="test")
    wait_backup(t, first["id"])
    t.stop()
    flash = t.dir / "flash"
    clock = flash / "clock.json"
    if not clock.exists():  # the emulated clock is synced at boot and persisted then
        clock.write_text(json.dumps({"t": 1796000000}))
    (flash / "log.jsonl").write_bytes((flash / "log.jsonl").read_bytes() + b'{"ev": "torn')
    damaged = ["seen.json", "seen.bak", "clock.json", "log.jsonl"]
    for name in damaged:
        (flash / name).write_bytes(_damage(kind, name, (flash / name).read_bytes()))
    # config.json: the backup copy is clean, so the terminal falls back to it
    cfg = json.loads((flash / "config.json").read_text())
    if kind == "wrong_types":
        cfg["trust"][0]["pub"] = "not-a-key"
        cfg["hb_s"] = "often"
        (flash / "config.json").write_text(json.dumps(cfg))
    else:
        raw = (flash / "config.json").read_bytes()
        (flash / "config.json").write_bytes(_damage(kind, "config.json", raw))
    # the clip cache: a stray file, and a "clip" whose bytes are garbage
    (flash / "clips").mkdir(exist_ok=True)
    (flash / "clips" / "notes.txt").write_bytes(b"hello")
    junk = os.urandom(2000)
    (flash / "clips" / (hashlib.sha256(b"other").hexdigest() + ".wav")).write_bytes(junk)
    mark = len(rig.rx.items)
    restart(t)
    sounds(rig, t, level=2, tone="siren")
    want = {"seen.json", "seen.bak", "config.json", "clock.json", "clips/notes.txt",
            "clips/" + hashlib.sha256(b"other").hexdigest() + ".wav"}
    got = wait_storage(rig, t, want, mark)
    if kind == "wrong_types":
        assert got["seen.json"][0]["reason"] == "bad entries" and got["seen.json"][0]["value"] == 4
    else:
        assert "lost" in [e["reason"] for e in got["seen.json"]]
    assert "Traceback" not in t.console()
    # damaged files are gone or rewritten whole; the technician keeps the bad config
    assert not (flash / "clips" / "notes.txt").exists()
    assert json.loads((flash / "config.json").read_text()) == \
        json.loads((flash / "config.bak").read_text())
    assert (flash / "config.json.bad").exists()
    assert isinstance(json.loads((flash / "seen.json").read_text()), list)
    # the event log goes on with whole lines after the damage
    tail = (flash / "log.jsonl").read_bytes().split(b"\n")[-2]
    assert json.loads(tail)["ev"]


def played_then_stopped(rig: Rig) -> tuple[Term, str, dict[str, Any]]:
    """A terminal that played one warning, both seen copies written, then stopped."""
    t = rig.terminal("t1", hold_ms=200)
    env, p = rig.alert(level=2, tone="siren")
    rig.send(env, topics_for(p))
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)
    wait_backup(t, p["id"])
    t.stop()
    return t, env, p


def test_one_damaged_seen_copy_never_lets_a_warning_play_twice(rig: Rig) -> None:
    t, env, p = played_then_stopped(rig)
    (t.dir / "flash" / "seen.json").write_bytes(os.urandom(300))
    mark = len(rig.rx.items)
    n = restart(t)
    rig.send(env, topics_for(p))
    r = rig.rx.wait(lambda r: r.get("alert") == p["id"], 20, start=mark)
    assert (r["status"], r["reason"]) == ("ignored", "duplicate")
    assert [e for e in t.events()[n:] if e["dev"] == "amp" and e["value"]] == []
    ev = wait_storage(rig, t, {"seen.json"}, mark)["seen.json"][0]
    assert ev["reason"] == "not JSON"


def test_both_seen_copies_lost_is_reported_and_the_warning_sounds_again(rig: Rig) -> None:
    # docs/firmware.md "Files on flash": a repeat is safer than a silence, and the admin is told
    t, env, p = played_then_stopped(rig)
    for name in ("seen.json", "seen.bak"):
        (t.dir / "flash" / name).write_bytes(os.urandom(300))
    mark = len(rig.rx.items)
    restart(t)
    got = wait_storage(rig, t, {"seen.json", "seen.bak"}, mark)
    assert "lost" in [e["reason"] for e in got["seen.json"]]
    rig.send(env, topics_for(p))
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30, start=mark)


def test_damaged_cached_clip_is_fetched_again_and_plays(rig: Rig) -> None:
    clip = wav_bytes(0.5)
    sha = hashlib.sha256(clip).hexdigest()
    srv = ClipServer({"/c.wav": clip})
    try:
        t = rig.terminal("t1", hold_ms=200)
        audio = {"url": srv.url("/c.wav"), "sha256": sha, "bytes": len(clip)}
        sounds(rig, t, level=2, clip=audio)
        cached = t.dir / "flash" / "clips" / f"{sha}.wav"
        assert cached.read_bytes() == clip
        t.stop()
        cached.write_bytes(os.urandom(len(clip)))  # same name and size, garbage inside
        mark = len(rig.rx.items)
        n = restart(t)
        p = sounds(rig, t, level=2, clip=audio)
        playing = [r for r in rig.rx.for_alert(p["id"]) if r["status"] == "playing"]
        assert playing[0]["reason"] is None  # the clip itself, not the siren
        starts = [e["value"]["source"] for e in t.events()[n:]
                  if e["dev"] == "audio" and e["value"]["state"] == "start"]
        assert starts == [f"clip:{sha}"]
        assert cached.read_bytes() == clip
        wait_storage(rig, t, {f"clips/{sha}.wav"}, mark)
    finally:
        srv.stop()
