"""`cx flash PORT --config FILE`: put the firmware, the agent, the board file and a terminal's
config onto a real board with mpremote (hardware/README.md "Flash layout", docs/provisioning.md).

Two mpremote runs. A running terminal has started the ESP32 watchdog, which nothing stops, and
mpremote's interrupt leaves it unfed: so the first run only deletes main.py and resets (well
inside the watchdog's 15 s), and the board comes back to a bare REPL. The second copies
everything, main.py last, so a copy cut short never boots half a firmware, then resets.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools import firmware, terminal_config, terminal_files
from tools.cx import EXIT_FAILURE, EXIT_USAGE, CliError

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ("horn", "column")
SETTLE_S = 2.0
"""Wait after the first run's reset before connecting again (boot messages, USB re-open)."""
DISARM = 'import os; "main.py" in os.listdir() and os.remove("main.py")'


def device_files(board: str) -> list[tuple[Path, str]]:
    """(source, name on flash), main.py last: tools/terminal_files.py with the real board file."""
    return terminal_files.files(board)


def check_config(path: Path) -> dict:
    """The terminal's own config check (tools/terminal_config.py), then what only a host can
    check, as one-line errors: anchors to verify with, a broker login, the files it names."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CliError(f"cannot read --config {path}: {e.strerror}", EXIT_USAGE) from None
    except ValueError as e:
        raise CliError(f"--config {path} is not JSON ({e})", EXIT_USAGE) from None
    try:
        reason = terminal_config.refusal(cfg)
    except firmware.NoMicroPython as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except firmware.FirmwareError as e:
        raise CliError(str(e)) from None
    bad = None if reason is None else terminal_config.describe(reason)
    if bad is None and not cfg["trust"]:
        bad = "trust (no anchors: the terminal could verify nothing)"
    elif bad is None and not (isinstance(cfg["mqtt"].get("user"), str)
                              and isinstance(cfg["mqtt"].get("password"), str)):
        bad = "mqtt user/password (provision it: cx fleet provision)"
    if bad:
        raise CliError(f"--config {path}: bad {bad}; a terminal would refuse it", EXIT_USAGE)
    for src, _ in config_files(path, cfg):
        if not src.is_file():
            raise CliError(f"--config {path} asks for TLS but {src} does not exist: provision "
                           f"with --tls-ca (the terminal would not start without it)", EXIT_USAGE)
    return cfg


def config_files(path: Path, cfg: dict) -> list[tuple[Path, str]]:
    """(source, name on flash) of the files the config names: the broker's CA with TLS."""
    return terminal_files.named(cfg, path.parent)


def check_port(port: str) -> None:
    # mpremote also takes shortcuts (a0, u0), id:… and rfc2217://; only device paths are checked.
    if port.startswith("/dev/") and not os.path.exists(port):
        raise CliError(f"no serial port {port}: is the board plugged in? "
                       f"('mpremote devs' lists ports)", EXIT_USAGE)


def plan(port: str, config: Path, board: str, mpremote: str = "mpremote",
         extra: list[tuple[Path, str]] | None = None) -> list[list[str]]:
    """The mpremote command lines, in order; `extra`: files the config names (config_files)."""
    files = device_files(board)
    same = [str(src) for src, name in files if src.name == name and name != "main.py"]
    cmd = [mpremote, "connect", port, "fs", "cp", *same, ":"]
    for src, name in files:
        if src.name != name:
            cmd += ["+", "fs", "cp", str(src), f":{name}"]
    for src, name in extra or []:  # before the config that names them
        cmd += ["+", "fs", "cp", str(src), f":{name}"]
    cmd += ["+", "fs", "cp", str(config), ":config.json",
            "+", "fs", "cp", str(ROOT / "firmware" / "main.py"), ":main.py", "+", "reset"]
    return [[mpremote, "connect", port, "exec", DISARM, "+", "reset"], cmd]


def cmd_flash(args: argparse.Namespace) -> int:
    cfg = check_config(args.config)
    board = args.board or cfg.get("profile", "horn")
    if board != cfg.get("profile", "horn"):
        print(f"cx flash: note: board {board} but the config's profile is "
              f"{cfg.get('profile', 'horn')}", file=sys.stderr)
    steps = plan(args.port, args.config, board, extra=config_files(args.config, cfg))
    if args.dry_run:
        print(shlex.join(steps[0]))
        print(f"sleep {SETTLE_S:g}")
        print(shlex.join(steps[1]))
        return 0
    check_port(args.port)
    mp = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    if not Path(mp).exists():
        raise CliError("mpremote not found: run scripts/bootstrap (it is in .venv)", EXIT_USAGE)
    for i, step in enumerate(steps):
        step = [mp, *step[1:]]
        if i:
            time.sleep(SETTLE_S)
        r = subprocess.run(step, check=False)
        if r.returncode != 0:
            raise CliError(f"mpremote failed (exit {r.returncode}) on {args.port}; the board may "
                           f"be left without main.py: run 'cx flash' again", EXIT_FAILURE)
    print(f"flashed {cfg['id']} ({board}) on {args.port}; it is rebooting")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("flash", help="copy firmware, agent and a config to a real board",
                              description="Copy firmware/*.py, agent/*.py, the board file and "
                                          "a terminal's config to a board with mpremote.")
    p.add_argument("port", metavar="PORT", help="serial port (/dev/ttyUSB0) or mpremote "
                                                "shortcut (u0)")
    p.add_argument("--config", type=Path, required=True, metavar="FILE",
                   help="the terminal's config.json (cx fleet provision)")
    p.add_argument("--board", choices=BOARDS, help="board file (default: the config's profile)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    p.set_defaults(func=cmd_flash)
