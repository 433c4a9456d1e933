"""`cx flash PORT --config FILE`: put the firmware, the agent, the board file and a terminal's
config onto a real board with mpremote, in the two runs tools/flash.py plans."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cx.common import CliError, ExitCode
from tools import firmware
from tools.flash import BOARDS, SETTLE_S, FlashError, check_config, check_port, config_files, plan


def _config(path: Path) -> dict:
    try:
        return check_config(path)
    except (FlashError, firmware.NoMicroPython) as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    except firmware.FirmwareError as e:
        raise CliError(str(e)) from None


def cmd_flash(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
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
    try:
        check_port(args.port)
    except FlashError as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    mp = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    if not Path(mp).exists():
        raise CliError("mpremote not found: run scripts/bootstrap (it is in .venv)",
                       ExitCode.USAGE)
    for i, step in enumerate(steps):
        step = [mp, *step[1:]]
        if i:
            time.sleep(SETTLE_S)
        r = subprocess.run(step, check=False)
        if r.returncode != 0:
            raise CliError(f"mpremote failed (exit {r.returncode}) on {args.port}; the board may "
                           f"be left without main.py: run 'cx flash' again", ExitCode.FAILURE)
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
