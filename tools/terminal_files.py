"""The files a terminal is flashed with (hardware/README.md "Flash layout"): the firmware, the
agent and a board file, main.py last. The one list `cx flash` and the emulator copy from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ("horn", "column", "emu")
"""hardware/board_<board>.py: the two real boards, and the emulated one (tools/emu)."""


def files(board: str) -> list[tuple[Path, str]]:
    """(source, name on flash) of everything flashed to a terminal with hardware/board_<board>.py
    as board.py, main.py last (a copy cut short never boots half a firmware)."""
    if board not in BOARDS:
        raise ValueError(f"no board {board!r} (one of {', '.join(BOARDS)})")
    out = [(p, p.name) for p in sorted((ROOT / "firmware").glob("*.py")) if p.name != "main.py"]
    out += [(p, p.name) for p in sorted((ROOT / "agent").glob("*.py"))]
    out.append((ROOT / "hardware" / f"board_{board}.py", "board.py"))
    if board == "column":  # board_column.py imports board_horn.py (hardware/README.md)
        out.append((ROOT / "hardware" / "board_horn.py", "board_horn.py"))
    out.append((ROOT / "firmware" / "main.py", "main.py"))
    return out


def release_files() -> list[tuple[Path, str]]:
    """(source, path in a release) of the complete file set an OTA release carries
    (docs/ota.md): every firmware and agent module and every board module (a release serves all
    boards), as sources; `cx ota build` compiles each with mpy-cross (`.py` -> `.mpy`). Not the
    boot selector (`main.py` on the flash root is never replaced) nor the firmware's own
    entry main.py, which the selector replaces."""
    out = [(p, p.name) for p in sorted((ROOT / "firmware").glob("*.py")) if p.name != "main.py"]
    out += [(p, p.name) for p in sorted((ROOT / "agent").glob("*.py")) if p.name != "selector.py"]
    out += [(p, p.name) for p in sorted((ROOT / "hardware").glob("board_*.py"))]
    return out


def named(cfg: dict, src_dir: Path) -> list[tuple[Path, str]]:
    """(source, name on flash) of the files a config names, from `src_dir` (beside the config, as
    `cx fleet provision --tls-ca` writes them): the broker's CA when MQTT is over TLS. The name
    is a plain one when the terminal's config check accepted cfg (tools/terminal_config.py)."""
    m = cfg.get("mqtt")
    if isinstance(m, dict) and m.get("tls") is True and isinstance(m.get("ca"), str):
        return [(src_dir / m["ca"], m["ca"])]
    return []
