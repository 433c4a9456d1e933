"""Device-code gates: scripts/check-device passes, and every board module offers the same API."""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HW = ROOT / "hardware"

# Public names a board may have beyond the emulated board's, or lack, on purpose. Firmware must
# use only names common to all boards. (None today; add one here with its reason.)
EXTRA_OK: dict[str, set[str]] = {"board_horn": set(), "board_column": set()}


def _public_api(path: Path) -> set[str]:
    """Top-level public functions and classes, plus public names a star import re-exports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not node.name.startswith("_"):
                names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            src = HW / f"{node.module}.py"
            names |= _public_api(src)
        elif isinstance(node, ast.ImportFrom) and (HW / f"{node.module}.py").exists():
            # a board re-exporting another hardware module's functions (esp32_image.py)
            names |= {a.name for a in node.names} & _public_api(HW / f"{node.module}.py")
    return names


def _public_constants(path: Path) -> set[str]:
    """Top-level public UPPER_CASE constants (NAME, RATE), following star imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_"):
                    names.add(t.id)
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            names |= _public_constants(HW / f"{node.module}.py")
    return names


def test_check_device_passes():
    r = subprocess.run(
        [str(ROOT / "scripts" / "check-device")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"scripts/check-device failed:\n{r.stdout}{r.stderr}"
    for gate in ("compile: ok", "pyright: ok", "imports: ok", "machine: ok"):
        assert gate in r.stdout, r.stdout


def _device_tree(dst: Path) -> Path:
    """A copy of what scripts/check-device reads (the venv linked, not copied)."""
    for d in ("firmware", "agent", "hardware", "typings"):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "check-device", dst / "scripts" / "check-device")
    shutil.copy2(ROOT / "pyrightconfig.json", dst / "pyrightconfig.json")
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst


def test_check_device_fails_when_firmware_imports_machine(tmp_path):
    # Only hardware/board_*.py may touch the hardware (ARCHITECTURE.md); a firmware module that
    # reaches for machine itself would run on one board and crash on the emulator.
    tree = _device_tree(tmp_path)
    player = tree / "firmware" / "player.py"
    player.write_text(player.read_text() + "\n\ndef _led():\n    from machine import Pin\n\n"
                      "    return Pin(2)\n")
    r = subprocess.run([str(tree / "scripts" / "check-device")], cwd=tree, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "machine: FAIL" in r.stdout, r.stdout
    assert "firmware/player.py:" in r.stdout.split("machine: FAIL", 1)[1], r.stdout
    for gate in ("compile: ok", "pyright: ok", "imports: ok"):  # only the new gate trips
        assert gate in r.stdout, r.stdout


@pytest.mark.parametrize("board", ["board_horn", "board_column"])
def test_real_boards_expose_the_emulated_boards_api(board):
    emu = _public_api(HW / "board_emu.py")
    real = _public_api(HW / f"{board}.py")
    assert emu, "board_emu.py has no public API?"
    missing = emu - real
    extra = real - emu - EXTRA_OK[board]
    assert not missing, f"{board}.py lacks {sorted(missing)} that firmware may call"
    assert not extra, f"{board}.py adds {sorted(extra)}: firmware using them breaks on the emulator"


@pytest.mark.parametrize("board", ["board_horn", "board_column"])
def test_real_boards_define_the_same_constants(board):
    # Pin numbers and scales are private (_P, _LINE_MA_PER_MV); only NAME and RATE are API.
    assert _public_constants(HW / f"{board}.py") == _public_constants(HW / "board_emu.py")
