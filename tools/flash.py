"""Putting the firmware, the agent, the board file and a terminal's config onto a real board with
mpremote (hardware/README.md "Flash layout", docs/provisioning.md; `cx flash`: cx/flash.py).

Two mpremote runs. A running terminal has started the ESP32 watchdog, which nothing stops, and
mpremote's interrupt leaves it unfed: so the first run only deletes main.py and resets (well
inside the watchdog's 15 s), and the board comes back to a bare REPL. The second copies
everything, main.py last, so a copy cut short never boots half a firmware, then resets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tools import terminal_config, terminal_files

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ("horn", "column")
SETTLE_S = 2.0
"""Wait after the first run's reset before connecting again (boot messages, USB re-open)."""
DISARM = 'import os; "main.py" in os.listdir() and os.remove("main.py")'
CLEAN = """def rm(p):
    try:
        for e in os.ilistdir(p):
            rm(p + "/" + e[0]) if e[1] == 0x4000 else os.remove(p + "/" + e[0])
        os.rmdir(p)
    except OSError:
        pass
rm("v")
rm("stage")"""
"""Removes every version directory and an update half-way: a reflash is a factory image."""


class FlashError(ValueError):
    """A config or port the board cannot be flashed with; the message says what to fix."""


def device_files(board: str) -> list[tuple[Path, str]]:
    """(source, name on flash), the selector main.py last: tools/terminal_files.py with the
    real board file."""
    return terminal_files.files(board)


def check_config(path: Path) -> dict:
    """The terminal's own config check (tools/terminal_config.py), then what only a host can
    check, as one-line errors (FlashError): anchors to verify with, a broker login, the files it
    names. tools/firmware.py's NoMicroPython or FirmwareError when the check cannot run."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FlashError(f"cannot read --config {path}: {e.strerror}") from None
    except ValueError as e:
        raise FlashError(f"--config {path} is not JSON ({e})") from None
    reason = terminal_config.refusal(cfg)
    bad = None if reason is None else terminal_config.describe(reason)
    if bad is None and not cfg["trust"]:
        bad = "trust (no anchors: the terminal could verify nothing)"
    elif bad is None and not (isinstance(cfg["mqtt"].get("user"), str)
                              and isinstance(cfg["mqtt"].get("password"), str)):
        bad = "mqtt user/password (provision it: cx fleet provision)"
    if bad:
        raise FlashError(f"--config {path}: bad {bad}; a terminal would refuse it")
    for src, _ in config_files(path, cfg):
        if not src.is_file():
            raise FlashError(f"--config {path} asks for TLS but {src} does not exist: provision "
                             "with --tls-ca (the terminal would not start without it)")
    return cfg


def config_files(path: Path, cfg: dict) -> list[tuple[Path, str]]:
    """(source, name on flash) of the files the config names: the broker's CA with TLS."""
    return terminal_files.named(cfg, path.parent)


def check_port(port: str) -> None:
    # mpremote also takes shortcuts (a0, u0), id:… and rfc2217://; only device paths are checked.
    if port.startswith("/dev/") and not os.path.exists(port):
        raise FlashError(f"no serial port {port}: is the board plugged in? "
                         "('mpremote devs' lists ports)")


def plan(port: str, config: Path, board: str, mpremote: str = "mpremote",
         extra: list[tuple[Path, str]] | None = None) -> list[list[str]]:
    """The mpremote command lines, in order; `extra`: files the config names (config_files).
    The factory version goes to v/<version>/ (docs/ota.md "Flash layout"): any other version and
    an update half-way are removed first; board.txt and the pointer are written by exec; the
    boot selector is copied last as main.py."""
    *version, selector = device_files(board)
    vdir = version[0][1].rsplit("/", 1)[0]
    data = terminal_files.boot_data(board)
    # a file in a sub-folder of the version (microdot/...) is copied into its own folder
    dirs = {vdir: [str(src) for src, name in version if name.rsplit("/", 1)[0] == vdir]}
    for src, name in version:
        d = name.rsplit("/", 1)[0]
        if d != vdir:
            dirs.setdefault(d, []).append(str(src))
    prep = (f"import os\n{CLEAN}\nfor d in {('v', *dirs)!r}:\n    try:\n        os.mkdir(d)\n"
            f"    except OSError:\n        pass\n")
    for name, text in data.items():
        prep += f"f = open({name!r}, 'w'); f.write({text!r}); f.close()\n"
    cmd = [mpremote, "connect", port, "exec", prep]
    for d, srcs in dirs.items():
        cmd += ["+", "fs", "cp", *srcs, f":{d}/"]
    for src, name in extra or []:  # before the config that names them
        cmd += ["+", "fs", "cp", str(src), f":{name}"]
    cmd += ["+", "fs", "cp", str(config), ":config.json",
            "+", "fs", "cp", str(selector[0]), f":{selector[1]}", "+", "reset"]
    return [[mpremote, "connect", port, "exec", DISARM, "+", "reset"], cmd]
