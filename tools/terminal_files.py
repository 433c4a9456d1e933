"""The files a terminal is flashed with (docs/ota.md "Flash layout"): the factory version in
v/<version>/ (firmware, agent, a board file), board.txt, the pointer and the boot selector as
main.py last. The one list `cx flash` and the emulator copy from; and an OTA release's file set."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from tools import firmware

ROOT = Path(__file__).resolve().parent.parent
SELECTOR = ROOT / "agent" / "selector.py"
"""The boot selector, main.py on the flash root: never part of a version or a release."""
MICRODOT = ("microdot/__init__.py", "microdot/microdot.py", "microdot/helpers.py",
            "microdot/multipart.py")
"""The MicroPython-compatible modules of microdot (pinned in pyproject.toml) the local page uses
(docs/web.md): taken from the installed distribution, never kept in this repository."""
BOARDS = ("horn", "column", "emu")
"""hardware/board_<board>.py: the two real boards, and the emulated one (tools/emu)."""


def version() -> str:
    """The firmware version of this checkout (firmware/version.py): the factory image's name."""
    return str(firmware.load("version").VERSION)


def dependencies() -> list[tuple[Path, str]]:
    """(source, path on flash inside a version) of the third-party modules the firmware imports:
    microdot's, from the installed distribution (scripts/bootstrap installs the pinned one)."""
    try:
        dist = metadata.distribution("microdot")
    except metadata.PackageNotFoundError:
        raise RuntimeError("microdot is not installed: run scripts/bootstrap") from None
    out = []
    for name in MICRODOT:
        src = Path(str(dist.locate_file(name)))
        if not src.is_file():
            raise RuntimeError(f"microdot {dist.version} has no {name}: reinstall it "
                               "(scripts/bootstrap)")
        out.append((src, name))
    return out


ESP32_IMAGE = ROOT / "hardware" / "esp32_image.py"
"""The real boards' runtime image path (esp32.Partition), imported by board_horn.py."""


def files(board: str) -> list[tuple[Path, str]]:
    """(source, name on flash) of everything flashed to a terminal with hardware/board_<board>.py
    (docs/ota.md "Flash layout"): the factory version in v/<version>/ (firmware, agent, the board
    module), then the boot selector as main.py, last (a copy cut short never boots half a
    firmware). boot_data() are the two small files to write before main.py."""
    if board not in BOARDS:
        raise ValueError(f"no board {board!r} (one of {', '.join(BOARDS)})")
    v = f"v/{version()}/"
    out = [(p, v + p.name) for p in sorted((ROOT / "firmware").glob("*.py"))]
    out += [(p, v + p.name) for p in sorted((ROOT / "agent").glob("*.py")) if p != SELECTOR]
    out += [(p, v + name) for p, name in dependencies()]
    out.append((ROOT / "hardware" / f"board_{board}.py", v + f"board_{board}.py"))
    if board == "column":  # board_column.py imports board_horn.py (hardware/README.md)
        out.append((ROOT / "hardware" / "board_horn.py", v + "board_horn.py"))
    if board != "emu":  # the real boards' runtime-image code (board_horn.py imports it)
        out.append((ESP32_IMAGE, v + ESP32_IMAGE.name))
    out.append((SELECTOR, "main.py"))
    return out


def boot_data(board: str) -> dict[str, str]:
    """name on flash -> text of what a freshly flashed terminal holds beside its files: board.txt
    (which board_*.py the selector loads) and the pointer naming the factory version."""
    return {"board.txt": board + "\n", "ota.json": json.dumps(pointer(version()))}


def pointer(ver: str) -> dict:
    """The pointer of a freshly flashed terminal: its factory version, confirmed."""
    return {"run": ver, "try": None, "boots": 0, "last": None}


def release_files() -> list[tuple[Path, str]]:
    """(source, path in a release) of the complete file set an OTA release carries
    (docs/ota.md): every firmware and agent module and every board module (a release serves all
    boards) and microdot's modules (dependencies()), as sources; `cx ota build` compiles each
    with mpy-cross (`.py` -> `.mpy`). Not the boot selector (`main.py` on the flash root is never replaced)."""
    out = [(p, p.name) for p in sorted((ROOT / "firmware").glob("*.py")) if p.name != "main.py"]
    out += [(p, p.name) for p in sorted((ROOT / "agent").glob("*.py")) if p != SELECTOR]
    out += [(p, p.name) for p in sorted((ROOT / "hardware").glob("board_*.py"))]
    out.append((ESP32_IMAGE, ESP32_IMAGE.name))
    out += dependencies()
    return out


def named(cfg: dict, src_dir: Path) -> list[tuple[Path, str]]:
    """(source, name on flash) of the files a config names, from `src_dir` (beside the config, as
    `cx fleet provision --tls-ca` writes them): the broker's CA when MQTT is over TLS. The name
    is a plain one when the terminal's config check accepted cfg (tools/terminal_config.py)."""
    m = cfg.get("mqtt")
    if isinstance(m, dict) and m.get("tls") is True and isinstance(m.get("ca"), str):
        return [(src_dir / m["ca"], m["ca"])]
    return []
