"""cx: the one host CLI of cunxiang (`cx keys`, `cx alert`, `cx emu`, later `cx fleet`).

Each group module exposes `register(subparsers)`, adds its parser and sets
`func=handler(args) -> int` on every leaf command. Handlers raise `CliError` for
anything the user can fix; `main` prints it as one line, never a traceback.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 broker unreachable, 4 the broker refused the login
or the publish (not authorized).

Every numeric option is parsed by `number(…)`, so a value out of range is a usage error at parse
time, in the same words everywhere: `cx: error: argument --sweep-every: must be a number from 0.1
to 3600, got '0' (see 'cx fleet serve --help')`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_AUTHORIZED = 4


class CliError(Exception):
    """A user-fixable error: printed as `cx: error: <message>`, exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`cx: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def number(kind: type[int | float] = int, lo: float | None = None, hi: float | None = None,
           *, lo_open: bool = False, units: Mapping[str, int] | None = None,
           words: Mapping[str, Any] | None = None) -> Callable[[str], Any]:
    """The argparse `type=` of every numeric option: a `kind` (int or float) within lo..hi, lo
    itself excluded when `lo_open`. Anything else is a usage error naming the range, at parse
    time (`argument --level: must be a whole number from 1 to 4, got '9'`); NaN and infinities
    never pass. `units`: case-insensitive suffixes that multiply (--heap 96k: {"k": 1024, ...}),
    the value is then an int of the base unit. `words`: texts that stand for a value
    ({"forever": None})."""
    units = {k.lower(): v for k, v in (units or {}).items()}

    def show(v: float) -> str:
        for suffix, mult in sorted(units.items(), key=lambda u: -u[1]):
            if v and v % mult == 0:
                return f"{int(v // mult)}{suffix}"
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    what = "a size" if units else "a whole number" if kind is int else "a number"
    if lo is not None and hi is not None and not lo_open:
        what += f" from {show(lo)} to {show(hi)}"
    else:
        bounds = ([] if lo is None else [f"{'>' if lo_open else '>='} {show(lo)}"]) + \
                 ([] if hi is None else [f"<= {show(hi)}"])
        what += " " + " and ".join(bounds) if bounds else ""
    if units:
        what += f" (a number of bytes, or with {' or '.join(sorted(units, key=units.__getitem__))})"
    if words:
        what += ", or " + " or ".join(f"'{w}'" for w in words)

    def parse(text: str) -> Any:
        if words and text in words:
            return words[text]
        t = text.strip().lower()
        mult = 1
        if t[-1:] in units:
            t, mult = t[:-1], units[t[-1]]
        try:
            value = kind(t) * mult
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (
                lo is not None and (value <= lo if lo_open else value < lo)) or (
                hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type with it in its own messages
    return parse


# Optional groups written elsewhere: (name, module exposing register(subparsers), help).
OPTIONAL_GROUPS = (
    ("emu", "tools.emu.cli", "run the firmware under the emulator"),
    ("fleet", "fleet.cli", "fleet service administration"),
)


def _import_optional(module: str) -> tuple[Any | None, str]:
    """(module, "") when importable; (None, why) when absent or broken, so a broken
    optional group never takes `cx keys` and `cx alert` down with it."""
    try:
        return importlib.import_module(module), ""
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None, "not available yet"
        return None, f"cannot load ({e})"
    except Exception as e:
        return None, f"cannot load ({type(e).__name__}: {e})"


def _not_available(name: str, why: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        raise CliError(f"'cx {name}': {why}", EXIT_USAGE)

    return handler


def build_parser() -> Parser:
    from tools import alertcli, demo, keys

    parser = Parser(prog="cx", description="cunxiang host tools")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    keys.register(sub)
    alertcli.register(sub)
    demo.register(sub)
    importlib.import_module("tools.flash").register(sub)
    for name, module, help_ in OPTIONAL_GROUPS:
        mod, why = _import_optional(module)
        if mod is not None:
            mod.register(sub)
        else:
            p = sub.add_parser(name, help=f"{help_} ({why})", add_help=False)
            p.set_defaults(func=_not_available(name, why), accepts_extra=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        # parse_known_args so delegating commands (alert verify) can take their own flags.
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_extra", False):
            parser.error("unrecognized arguments: " + " ".join(extra))
        args.extra = extra
        func = getattr(args, "func", None)
        if func is None:
            parser.error(f"'cx {args.group}' needs a command")
        return int(func(args) or 0)
    except CliError as e:
        print(f"cx: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("cx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
