"""OTA against bad input (issue 10 "Bad input"), through an emulated terminal on the real broker:
garbled, truncated and oversized manifests; served files cut short, longer than the manifest
says or not zlib at all; a server that stalls or lies about Range; a flash that fills up. Each
ends as a county admin would see it: the `failed` or `refused` report with its reason (ota.md
§4), the terminal still on its running version, and a valid alert still sounding."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import fill
from otahelp import Commands, Server, boots, build, sounds, terminal
from rig import Rig, Term
from test_e2e_ota_power import complete

from tools.envelope import KeyPair

VER0 = "0.1.0"  # the factory image (firmware/version.py)
STALL_S = 5  # ota_stall_s for these terminals: no byte gained for this long ends `unreachable`


def wait_state(rig: Rig, t: Term, version: str, state: str, timeout: float = 90,
               start: int = 0) -> dict[str, Any]:
    return rig.rx.wait(lambda r: r.get("_dev") == t.id and r.get("ota") == version
                       and r.get("state") == state, timeout, start)


def wait_end(rig: Rig, t: Term, version: str, start: int, timeout: float = 90) -> dict[str, Any]:
    """The update's end as the fleet sees it, from receipt `start` on: failed or confirmed."""
    return rig.rx.wait(lambda r: r.get("_dev") == t.id and r.get("ota") == version
                       and r.get("state") in ("failed", "confirmed", "rolled_back"), timeout,
                       start)


def untouched(rig: Rig, t: Term) -> None:
    """Still the factory version, nothing of the update left on flash, and an alert sounds."""
    fl = t.dir / "flash"
    assert sorted(p.name for p in (fl / "v").iterdir()) == [VER0], "nothing half-written in v/"
    assert not (fl / "stage").exists() or not any((fl / "stage").iterdir())
    assert not (fl / "ota.json.tmp").exists()
    assert json.loads((fl / "ota.json").read_text())["run"] == VER0
    assert [b["version"] for b in boots(t)] == [VER0], "never left the running version"
    assert json.loads(t.ctl("status"))["version"] == VER0
    complete(t, VER0)
    sounds(rig, t)


def gets(server: Server, sha: str, since: int = 0) -> list[int]:
    """Range starts of the GETs of file `sha` from request `since` on."""
    return [start for name, start in server.requests[since:] if name == f"{sha}.z"]


# --- manifests -------------------------------------------------------------------------------


def test_garbled_truncated_and_oversized_manifests_are_refused_and_nothing_written(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    good = (rel / "manifest.jws").read_text().strip()
    h, p, s = good.split(".")
    flip = "A" if p[40] != "A" else "B"
    cases: dict[str, list[str]] = {
        # rule 1, before anything is parsed: one byte over, and as big as a command can carry
        "too_large": [good + "." + "A" * (16384 - len(good)),
                      good + "." + "A" * (17999 - len(good))],
        "malformed": [good[:len(h) + 10],  # cut inside the payload: not three parts
                      good[:-21],  # cut inside the signature where base64url cannot end
                      "%%%." + p + "." + s,  # header not base64url
                      "bm90IGpzb24." + p + "." + s,  # header "not json"
                      "..", ""],
        "bad_signature": [good[:-22],  # cut inside the signature, at a base64url quantum
                          h + "." + p[:40] + flip + p[41:] + "." + s],  # a payload char changed
    }
    n = len(rig.rx.items)
    for reason, manifests in cases.items():
        for m in manifests:
            mark = len(rig.rx.items)
            ack = cmds.send(t.id, "ota", {"manifest": m, "base": server.base})
            assert ack["ok"] is False and ack["error"] == reason, (reason, len(m), m[-30:], ack)
            r = rig.rx.wait(lambda r: r.get("_dev") == t.id and r.get("state") == "refused",
                            20, mark)
            assert r["reason"] == reason and r["done"] == 0 and r["total"] == 0, r
    # a manifest that is not even a string is not a manifest: bad_args, as for any command
    for bad in (None, 7, {"a": 1}):
        ack = cmds.send(t.id, "ota", {"manifest": bad, "base": server.base})
        assert ack["ok"] is False and ack["error"] == "bad_args", ack
    refused = [r for r in rig.rx.items[n:] if r.get("_dev") == t.id and r.get("ota", 0) != 0]
    assert all(r["state"] == "refused" for r in refused), refused
    assert server.requests == [], "nothing downloaded"
    untouched(rig, t)


# --- served files ------------------------------------------------------------------------------


def test_files_longer_than_the_manifest_says_or_not_zlib_are_fetched_again_then_bad_hash(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key, ota_stall_s=STALL_S)
    rel = tmp_path / "r020"
    summary = build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    f = summary["files"][3]
    sha, zbytes = f["sha256"], f["zbytes"]
    modes = {
        # inflates to more bytes than the manifest's `bytes`
        "oversize": lambda: server.oversize.add(sha),
        # the true stream, then junk without end (no Content-Length): stopped at the most a
        # zlib stream of that size can take, never left to fill the flash
        "tail": lambda: server.tail.update({sha: 200000}),
        # not a zlib stream at all
        "garble": lambda: server.garble.add(sha),
    }
    for mode, arm in modes.items():
        server.oversize.clear()
        server.tail.clear()
        server.garble.clear()
        arm()
        mark, since = len(rig.rx.items), len(server.requests)
        ack = cmds.ota(t.id, rel, server.base)
        assert ack["ok"] is True, (mode, ack)
        end = wait_end(rig, t, "0.2.0", mark, 120)
        assert (end["state"], end["reason"]) == ("failed", "bad_hash"), (mode, end)
        assert gets(server, sha, since) == [0, 0, 0], f"{mode}: fetched three times in all"
        log = [e for e in t.log() if e.get("ev") == "ota_bad_hash"]
        assert log and log[-1]["file"] == f["path"], mode
        stage = t.dir / "flash" / "stage"
        assert not stage.exists() or not any(stage.iterdir()), mode
    assert zbytes < 200000
    untouched(rig, t)


def test_a_file_the_server_cuts_short_every_time_ends_failed_unreachable(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key, ota_stall_s=STALL_S)
    rel = tmp_path / "r020"
    summary = build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    f = max(summary["files"], key=lambda f: f["zbytes"])
    sha = f["sha256"]
    server.truncate[sha] = f["zbytes"] // 2  # Content-Length says all of it; half comes
    t0 = time.monotonic()
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    end = wait_end(rig, t, "0.2.0", 0, 60)
    took = time.monotonic() - t0
    assert (end["state"], end["reason"]) == ("failed", "unreachable"), end
    starts = gets(server, sha)
    assert starts[0] == 0 and server.truncate[sha] in starts[1:], "asked again with Range"
    assert took < 40, f"ended {took:.0f} s after the command: bounded by ota_stall_s"
    untouched(rig, t)


# --- servers ---------------------------------------------------------------------------------


def test_a_server_that_stalls_after_its_headers_ends_failed_unreachable_in_bounded_time(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key, ota_stall_s=STALL_S)
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    server.stall.set()  # every GET: status line and headers, then nothing, connection open
    t0 = time.monotonic()
    assert cmds.ota(t.id, rel, server.base)["ok"] is True
    wait_state(rig, t, "0.2.0", "downloading", 30)
    end = wait_end(rig, t, "0.2.0", 0, 60)
    took = time.monotonic() - t0
    assert (end["state"], end["reason"]) == ("failed", "unreachable"), end
    assert STALL_S <= took < STALL_S + 25, f"{took:.0f} s for a stall bound of {STALL_S} s"
    server.stall.clear()
    untouched(rig, t)


def test_a_server_that_lies_about_range_still_ends_with_the_right_bytes(
        rig: Rig, ota_key: KeyPair, server: Server, cmds: Commands, tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    r1, r2 = tmp_path / "r020", tmp_path / "r021"
    s1 = build(r1, ota_key, "0.2.0")
    tones = (Path(__file__).resolve().parent.parent / "firmware" / "tones.py").read_text()
    s2 = build(r2, ota_key, "0.2.1", replace={"tones.py": tones + "\nCHANGED = 1\n"})
    server.dirs += [r1, r2]
    big = max(s1["files"], key=lambda f: f["zbytes"])["sha256"]
    changed = next(f for f in s2["files"] if f["path"] == "tones.mpy")["sha256"]
    for rel, ver, lie, sha in ((r1, "0.2.0", "start", big), (r2, "0.2.1", "whole", changed)):
        # "start": 206 from byte 0 with a Content-Range saying so; "whole": 200, all of it
        server.lie = lie
        server.cut_first = {sha: 300}  # its first GET closes after 300 bytes: it must resume
        mark, since = len(rig.rx.items), len(server.requests)
        assert cmds.ota(t.id, rel, server.base)["ok"] is True
        end = wait_end(rig, t, ver, mark, 150)
        assert (end["state"], end["reason"]) == ("confirmed", None), (lie, end)
        complete(t, ver)  # every file as its manifest says: never a mix of two answers
        # cut, asked again with Range, lied to; "start" begins again from byte 0, "whole" takes
        # the 200's body as the whole file
        want = [0, 300, 0] if lie == "start" else [0, 300]
        assert gets(server, sha, since) == want, lie
        assert all(s in (0, 300) for _, s in server.requests[since:])
        assert [b["version"] for b in boots(t)][-1] == ver
    assert {n for n, _ in server.requests[since:]} == {f"{changed}.z"}, "one module changed"
    sounds(rig, t)


# --- a full flash ------------------------------------------------------------------------------


def test_a_flash_that_fills_during_the_download_ends_failed_no_space_and_keeps_the_version(
        rig: Rig, small_flash: Path, ota_key: KeyPair, server: Server, cmds: Commands,
        tmp_path: Path) -> None:
    t = terminal(rig, ota_key)
    rel = tmp_path / "r020"
    build(rel, ota_key, "0.2.0")
    server.dirs.append(rel)
    server.rate = 8000  # bytes/s: the download lasts long enough to fill the flash under it
    assert cmds.ota(t.id, rel, server.base)["ok"] is True, "rule 13: room enough at first"
    wait_state(rig, t, "0.2.0", "downloading", 30)
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    filler = fill(small_flash)
    end = wait_end(rig, t, "0.2.0", 0, 60)
    assert (end["state"], end["reason"]) == ("failed", "no_space"), end
    assert not any(p.name.endswith(".part") for p in (small_flash / "v").iterdir())
    # still full: the next command is refused by rule 13 (no_space), with its report
    mark = len(rig.rx.items)
    fill(small_flash)
    ack = cmds.ota(t.id, rel, server.base)
    assert ack["ok"] is False and ack["error"] == "no_space", ack
    assert wait_state(rig, t, "0.2.0", "refused", 20, mark)["reason"] == "no_space"
    sounds(rig, t)  # a full flash silences nothing
    filler.unlink()
    untouched(rig, t)


# --- a power cut while writing the pointer --------------------------------------------------------


def test_a_power_cut_while_the_pointer_is_written_boots_the_version_it_named(
        rig: Rig, ota_key: KeyPair) -> None:
    # The switch writes ota.json.tmp, then renames it over ota.json (docs/ota.md "The pointer").
    # Cut between the two: a torn ota.json.tmp naming a version on trial whose staging is half
    # done, beside the intact pointer. (A torn ota.json itself is test_e2e_ota_power's
    # damaged-pointer test.)
    t = terminal(rig, ota_key)
    fl = t.dir / "flash"
    part = fl / "v" / "0.2.0.part"
    part.mkdir()
    (part / "terminal.mpy").write_bytes(b"M\x06half")
    for torn in (b'{"run": "0.1.0", "try": "0.2.0", "boo', b"", b"\x00" * 37):
        (fl / "ota.json.tmp").write_bytes(torn)
        n = len(t.events())
        assert t.ctl("power-cut") == "ok"
        b = t.wait_event(lambda e: e["dev"] == "boot", 30, since=n)
        assert b["value"]["version"] == VER0, torn
        t.wait_online(60, since=n)
        assert json.loads((fl / "ota.json").read_text())["try"] is None
        complete(t, VER0)
        sounds(rig, t)
    assert not part.exists(), "the half-staged version is tidied away at boot"
