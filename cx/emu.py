"""`cx emu`: run emulated terminals and act on them (specs/emulator.md; the host: tools/emu/)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from cx.common import CliError, ExitCode, folder, number
from tools.emu.run import DEFAULT_HEAP, EmuError, Terminal, control, flash, load_config

KIB, MIB = 1024, 1024 * 1024
HEAP = number(int, 16 * KIB, 64 * MIB, units={"k": KIB, "m": MIB})
"""--heap: 16k (the unix port cannot start below) to 64m (16x the reference board's 4 MB heap)."""
MAX_COUNT = 1000  # --count: a town's village codes (derive() keeps the terminals in one town)


def heap_text(n: int) -> str:
    """A heap size as micropython's -X heapsize takes it, in the largest whole unit: 1m, 96k."""
    return f"{n // MIB}m" if n % MIB == 0 else f"{n // KIB}k" if n % KIB == 0 else str(n)


MAX_OFFSET_S = 366 * 86400  # a year either way: enough for any schedule's dates


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("emu", help="emulated terminals (the real firmware under MicroPython)")
    es = p.add_subparsers(dest="emu_cmd", metavar="{run,ctl,fleet}")
    es.required = True

    r = es.add_parser("run", help="run one terminal in the foreground until Ctrl-C")
    r.add_argument("--dir", required=True, type=Path, help="terminal folder (flash/ and hw/ live here)")
    r.add_argument("--config", required=True, type=Path, help="terminal config JSON")
    r.add_argument("--heap", type=HEAP, default=DEFAULT_HEAP,
                   help=f"MicroPython heap, 16k..64m (default {DEFAULT_HEAP})")
    r.add_argument("--reflash", action="store_true", help="copy firmware and config again")
    r.add_argument("--clock-offset", type=number(float, -MAX_OFFSET_S, MAX_OFFSET_S), default=0,
                   metavar="SECONDS",
                   help="run the terminal's clock this far ahead of the host's (negative: "
                        "behind), e.g. to reach a programme's start time (docs/broadcast.md)")
    r.set_defaults(func=cmd_run)

    c = es.add_parser("ctl", help="act on a running terminal: press [--long] [--hold-ms N] | adc NAME VALUE | "
                                  "power-cut | link ip|4g down|up | modem ... | status "
                                  "(docs/modem.md lists the modem controls)")
    c.add_argument("dir", type=Path)
    c.add_argument("command", nargs=argparse.REMAINDER)
    c.set_defaults(func=cmd_ctl)

    f = es.add_parser("fleet", help="run N terminals derived from a config template")
    f.add_argument("--count", required=True, type=number(int, 1, MAX_COUNT),
                   help=f"terminals, 1..{MAX_COUNT}")
    f.add_argument("--dir", required=True, type=Path, help="one terminal folder per id under it")
    f.add_argument("--config-template", required=True, type=Path)
    f.add_argument("--heap", type=HEAP, default=DEFAULT_HEAP,
                   help=f"MicroPython heap of each, 16k..64m (default {DEFAULT_HEAP})")
    f.set_defaults(func=cmd_fleet)


def _serve(terms: list[Terminal]) -> int:
    done = threading.Event()

    def stop(*_: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    threads = [threading.Thread(target=t.run, daemon=True) for t in terms]
    for th in threads:
        th.start()
    done.wait()
    for t in terms:
        t.stop()
    for th in threads:
        th.join(5)
    return 0


def _unusable(d: Path, e: OSError) -> CliError:
    # a folder that exists but cannot hold a terminal: unwritable, or a socket path too long
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(d) else ""
    return CliError(f"--dir {d}: cannot run a terminal there{where}: {e.strerror or e}; give a "
                    "folder you can write, with a short path", ExitCode.USAGE)


def cmd_run(args: argparse.Namespace) -> int:
    heap = heap_text(args.heap)
    try:
        cfg = load_config(args.config)
        folder(args.dir, "--dir")
        flash(args.dir, cfg, args.reflash, args.config.parent)
        if args.clock_offset:
            os.environ["CX_CLOCK_OFFSET"] = repr(args.clock_offset)  # board_emu.epoch() adds it
        term = Terminal(args.dir, heap)
    except EmuError as e:
        print(f"cx: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as e:
        raise _unusable(args.dir, e) from None
    shifted = f", clock {args.clock_offset:+g} s" if args.clock_offset else ""
    print(f"emu: terminal {cfg['id']} in {args.dir} (heap {heap}{shifted}); Ctrl-C stops it",
          flush=True)
    return _serve([term])


def cmd_ctl(args: argparse.Namespace) -> int:
    if not args.command:
        print("cx: error: give a command: press [--long] [--hold-ms N] | adc NAME VALUE | power-cut | "
              "link ip|4g down|up | modem signal|sim|reg|delay|garble|split|mute|status ... | "
              "status", file=sys.stderr)
        return ExitCode.USAGE
    try:
        reply = control(args.dir, args.command)
    except EmuError as e:
        print(f"cx: error: {e}", file=sys.stderr)
        return ExitCode.FAILURE
    if reply.startswith("error:"):
        print(f"cx: {reply}", file=sys.stderr)
        return ExitCode.FAILURE
    print(reply)
    return 0


def derive(template: dict, i: int) -> dict:
    """Terminal i of a fleet: the template's region plus i (same town while it stays < 1000
    villages), id T<region>-01."""
    cfg = json.loads(json.dumps(template))
    region = str(template["region"])
    code = f"{int(region) + i:012d}"
    if len(code) != 12 or code[:9] != region[:9]:
        raise EmuError(f"--count too large: terminal {i} would leave town {region[:9]}")
    cfg["region"] = code
    cfg["id"] = f"T{code}-01"
    return cfg


def cmd_fleet(args: argparse.Namespace) -> int:
    heap = heap_text(args.heap)
    try:
        template = load_config(args.config_template)
        folder(args.dir, "--dir")
        terms = []
        for i in range(args.count):
            cfg = derive(template, i)
            d = args.dir / cfg["id"]
            d.mkdir(exist_ok=True)
            flash(d, cfg, reflash=False, src_dir=args.config_template.parent)
            terms.append(Terminal(d, heap, quiet=True))
    except EmuError as e:
        print(f"cx: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as e:
        raise _unusable(args.dir, e) from None
    print(f"emu: {args.count} terminals under {args.dir} (heap {heap}); Ctrl-C stops them",
          flush=True)
    return _serve(terms)
