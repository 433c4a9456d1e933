"""`cx flash`, without a board: the exact mpremote plan, the flash layout it produces
(hardware/README.md), and one-line refusals of bad configs and missing ports."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from tools.emu.run import device_files as emu_files
from tools.flash import DISARM, device_files, plan

CX = str(Path(sys.executable).parent / "cx") if (Path(sys.executable).parent / "cx").exists() \
    else (shutil.which("cx") or "cx")
CFG = {"id": "T341122100201-01", "region": "341122100201", "profile": "horn",
       "trust": [{"kid": "r1", "pub": "A" * 43, "scope": ["34"], "use": ["alert"]}],
       "mqtt": {"host": "10.0.0.2", "port": 1883, "user": "T341122100201-01", "password": "pw"}}


def cx(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *argv], capture_output=True, text=True, timeout=30, check=False)


def write(tmp: Path, cfg: object) -> Path:
    p = tmp / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def copies(cmd: list[str]) -> dict[str, str]:
    """Flash name -> local source, from one mpremote command line."""
    out: dict[str, str] = {}
    for part in " ".join(shlex.quote(a) for a in cmd).split(" + "):
        words = shlex.split(part)
        if "cp" not in words:
            continue
        args = words[words.index("cp") + 1:]
        *srcs, dest = args
        for s in srcs:
            out[dest[1:] or Path(s).name] = s
    return out


@pytest.mark.parametrize("board", ["horn", "column"])
def test_flash_layout_matches_the_emulators_with_the_real_board(board: str) -> None:
    names = [n for _, n in device_files(board)]
    emu = [n for _, n in emu_files()]
    extra = ["board_horn.py"] if board == "column" else []
    assert sorted(names) == sorted(emu + extra) and names[-1] == "main.py"
    assert {n: s.name for s, n in device_files(board)}["board.py"] == f"board_{board}.py"


def test_dry_run_prints_the_exact_mpremote_commands(tmp_path: Path) -> None:
    path = write(tmp_path, dict(CFG, profile="column"))
    r = cx("flash", "/dev/ttyUSB7", "--config", str(path), "--dry-run")
    assert r.returncode == 0, r.stderr
    first, sleep, second = r.stdout.splitlines()
    assert shlex.split(first) == ["mpremote", "connect", "/dev/ttyUSB7", "exec", DISARM, "+",
                                  "reset"]
    assert sleep.startswith("sleep ")
    words = shlex.split(second)
    assert words[:3] == ["mpremote", "connect", "/dev/ttyUSB7"] and words[-2:] == ["+", "reset"]
    files = copies(words)
    assert files["config.json"] == str(path)
    assert files["board.py"] == str(ROOT / "hardware" / "board_column.py")
    assert files["board_horn.py"] == str(ROOT / "hardware" / "board_horn.py")
    assert {n for n in files if n != "config.json"} == {n for _, n in device_files("column")}
    assert second.index(":config.json") < second.index(":main.py"), "main.py goes last"


def test_plan_takes_the_board_from_the_config_unless_told(tmp_path: Path) -> None:
    path = write(tmp_path, CFG)
    horn = copies(plan("u0", path, "horn")[1])
    assert "board_horn.py" not in horn and horn["board.py"].endswith("board_horn.py")


@pytest.mark.parametrize("cfg,what", [
    ({k: v for k, v in CFG.items() if k != "mqtt"}, "bad mqtt host/port"),
    (dict(CFG, mqtt={"host": "h", "port": 1883}), "bad mqtt user/password"),
    (dict(CFG, region="3411"), "bad region"),
    (dict(CFG, trust=[]), "bad trust"),
    (dict(CFG, profile="tower"), "bad profile"),
    (dict(CFG, trust=[dict(CFG["trust"][0], pub="AAAA")]), "bad trust pub"),  # config.py's own
    ("not an object", "bad not a JSON object"),
])
def test_a_config_the_terminal_would_refuse_is_not_flashed(tmp_path: Path, cfg: object,
                                                           what: str) -> None:
    r = cx("flash", "/dev/ttyUSB7", "--config", str(write(tmp_path, cfg)), "--dry-run")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and what in r.stderr and "Traceback" not in r.stderr


def test_missing_port_or_config_is_one_line(tmp_path: Path) -> None:
    r = cx("flash", "/dev/ttyNOPE0", "--config", str(write(tmp_path, CFG)))
    assert r.returncode == 2 and r.stderr.strip() == (
        "cx: error: no serial port /dev/ttyNOPE0: is the board plugged in? "
        "('mpremote devs' lists ports)")
    r = cx("flash", "/dev/ttyNOPE0", "--config", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot read --config" in r.stderr
    r = cx("flash", "--config", str(write(tmp_path, CFG)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "PORT" in r.stderr.upper()


def test_tls_config_flashes_its_ca_before_the_config_and_refuses_without_it(tmp_path: Path) -> None:
    cfg = dict(CFG, mqtt=dict(CFG["mqtt"], port=8883, tls=True, ca="ca.der"))
    path = write(tmp_path, cfg)
    r = cx("flash", "/dev/ttyUSB7", "--config", str(path), "--dry-run")
    assert r.returncode == 2 and "ca.der does not exist" in r.stderr and r.stderr.count("\n") == 1
    (tmp_path / "ca.der").write_bytes(b"0\x82")
    r = cx("flash", "/dev/ttyUSB7", "--config", str(path), "--dry-run")
    assert r.returncode == 0, r.stderr
    second = r.stdout.splitlines()[2]
    assert copies(shlex.split(second))["ca.der"] == str(tmp_path / "ca.der")
    assert second.index(":ca.der") < second.index(":config.json")
    for bad in ({"tls": "yes"}, {"tls": True, "ca": "../ca.der"}, {"tls": True}):
        r = cx("flash", "/dev/ttyUSB7", "--config",
               str(write(tmp_path, dict(CFG, mqtt=dict(CFG["mqtt"], **bad)))), "--dry-run")
        assert r.returncode == 2 and "bad mqtt" in r.stderr, bad
