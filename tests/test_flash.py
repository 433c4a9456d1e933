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
    """Flash name -> local source, from one mpremote command line (its steps split at "+")."""
    out: dict[str, str] = {}
    steps: list[list[str]] = [[]]
    for w in cmd:
        if w == "+":
            steps.append([])
        else:
            steps[-1].append(w)
    for words in steps:
        if "cp" not in words:
            continue
        *srcs, dest = words[words.index("cp") + 1:]
        for s in srcs:  # a destination ending in / is a folder: the file keeps its name
            d = dest[1:]
            out[d + Path(s).name if d.endswith("/") or not d else d] = s
    return out


@pytest.mark.parametrize("board", ["horn", "column"])
def test_flash_layout_matches_the_emulators_with_the_real_board(board: str) -> None:
    names = [n for _, n in device_files(board)]
    emu = [n for _, n in emu_files() if n != "v/0.1.0/board_emu.py"]
    extra = ["v/0.1.0/board_horn.py"] if board == "column" else []
    extra.append("v/0.1.0/esp32_image.py")  # the real boards' runtime image (board_horn imports it)
    assert sorted(names) == sorted(emu + extra + [f"v/0.1.0/board_{board}.py"])
    assert names[-1] == "main.py"
    assert {n: s for s, n in device_files(board)}["main.py"] == ROOT / "agent" / "selector.py"


def test_dry_run_prints_the_exact_mpremote_commands(tmp_path: Path) -> None:
    path = write(tmp_path, dict(CFG, profile="column"))
    r = cx("flash", "/dev/ttyUSB7", "--config", str(path), "--dry-run")
    assert r.returncode == 0, r.stderr
    # the second command's exec script spans lines inside its quotes (valid shell as printed)
    first, sleep, second = r.stdout.rstrip("\n").split("\n", 2)
    assert shlex.split(first) == ["mpremote", "connect", "/dev/ttyUSB7", "exec", DISARM, "+",
                                  "reset"]
    assert sleep.startswith("sleep ")
    words = shlex.split(second)
    assert words[:3] == ["mpremote", "connect", "/dev/ttyUSB7"] and words[-2:] == ["+", "reset"]
    files = copies(words)
    assert files["config.json"] == str(path)
    assert files["v/0.1.0/board_column.py"] == str(ROOT / "hardware" / "board_column.py")
    assert files["v/0.1.0/board_horn.py"] == str(ROOT / "hardware" / "board_horn.py")
    assert {n for n in files if n != "config.json"} == {n for _, n in device_files("column")}
    assert second.index(":config.json") < second.index(":main.py"), "main.py goes last"
    prep = words[words.index("exec") + 1]  # before any copy: board.txt and the pointer
    assert "open('board.txt', 'w'); f.write('column\\n')" in prep and "ota.json" in prep


def test_plan_takes_the_board_from_the_config_unless_told(tmp_path: Path) -> None:
    path = write(tmp_path, CFG)
    horn = copies(plan("u0", path, "horn")[1])
    assert "v/0.1.0/board_column.py" not in horn
    assert horn["v/0.1.0/board_horn.py"].endswith("board_horn.py")


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
    second = r.stdout.rstrip("\n").split("\n", 2)[2]
    assert copies(shlex.split(second))["ca.der"] == str(tmp_path / "ca.der")
    assert second.index(":ca.der") < second.index(":config.json")
    for bad in ({"tls": "yes"}, {"tls": True, "ca": "../ca.der"}, {"tls": True}):
        r = cx("flash", "/dev/ttyUSB7", "--config",
               str(write(tmp_path, dict(CFG, mqtt=dict(CFG["mqtt"], **bad)))), "--dry-run")
        assert r.returncode == 2 and "bad mqtt" in r.stderr, bad
