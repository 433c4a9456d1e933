"""What every `cx` group shares: errors and exit codes, the parser, option types, output.

Handlers raise `CliError` for anything the user can fix; `cx.main.main` prints it as one line
(`cx: error: <message>`), never a traceback, and exits with its `ExitCode`.

Every numeric option is parsed by `number(…)`, so a value out of range is a usage error at parse
time, in the same words everywhere: `cx: error: argument --sweep-every: must be a number from 0.1
to 3600, got '0' (see 'cx fleet serve --help')`.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tools.mqttsession import BadCredential, BrokerAuth

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


class ExitCode(enum.IntEnum):
    """What a `cx` run's exit status means; scripts may rely on every one of them."""

    OK = 0
    """Done as asked."""
    FAILURE = 1
    """The command ran and failed: an unknown id, a refused or unanswered command, a rejected
    alert, a path that cannot be used."""
    USAGE = 2
    """The command line is wrong (a bad flag, option value or combination): fix it and rerun."""
    UNREACHABLE = 3
    """The broker or the database cannot be reached: retrying later may help."""
    NOT_AUTHORIZED = 4
    """The broker refused the login, the subscription or the publish: fix the credential,
    retrying will not help."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT): 128 + 2, as a shell shows it."""
    CLOSED_STDOUT = 141
    """Nobody reads stdout any more (`cx fleet report | head -1`): 128 + SIGPIPE, the status a
    shell shows for a C tool killed by the same closed pipe, so scripts that handle that handle
    cx too."""


class CliError(Exception):
    """A user-fixable error: printed as `cx: error: <message>`, exits with `code`."""

    def __init__(self, message: str, code: int = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`cx: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", ExitCode.USAGE)

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        # argparse ignores a failed write; a closed stdout ends `cx … --help | …` as any output
        out = file or sys.stdout
        if out is not None:
            out.write(self.format_help())
            getattr(out, "flush", lambda: None)()


# --- option types ------------------------------------------------------------------------------


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


def host_port(text: str, option: str = "--broker") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:1883) given to `option`; a usage error in one
    line otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{option} {text!r} must be HOST:PORT", ExitCode.USAGE)
    return host.strip("[]"), int(port)


BROKER_ENV = "CX_BROKER"
"""The broker when no --broker names one."""


def broker_address(text: str | None) -> tuple[str, int]:
    """--broker HOST:PORT, else $CX_BROKER; a usage error when neither is given."""
    text = text or os.environ.get(BROKER_ENV)
    if not text:
        raise CliError(f"give --broker HOST:PORT (or set {BROKER_ENV})", ExitCode.USAGE)
    return host_port(text)


def broker_login(cred: str | None, cafile: str | None) -> BrokerAuth | None:
    """The broker login of --cred FILE (a `.cred` of `cx fleet broker-config`) and --cafile
    (TLS); None when neither is given. A file that cannot be used is a usage error in one line,
    found before anything is sent."""
    try:
        return BrokerAuth.from_files(cred, cafile)
    except BadCredential as e:
        raise CliError(str(e), ExitCode.USAGE) from None


def folder(path: Path, option: str) -> Path:
    """The folder a command works in (--dir, --out), created if missing; a usage error in one
    line, naming the option and what to give instead, when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CliError(f"{option} {path} is a file, not a folder: give a folder (it is created "
                       "if missing)", ExitCode.USAGE) from None
    except OSError as e:
        raise CliError(f"{option} {path}: cannot create it ({e.strerror or e}): give a folder "
                       "you can write", ExitCode.USAGE) from None
    return path


# --- the fleet database ------------------------------------------------------------------------

DEFAULT_DB = "fleet.sqlite"
"""The fleet store when neither --db nor $CX_FLEET_DB names one: ./fleet.sqlite."""
DB_ENV = "CX_FLEET_DB"
DB_HELP = ("fleet database: a SQLite file or postgresql://… "
           f"(default ${DB_ENV} or ./{DEFAULT_DB})")
"""The help of every --db."""


def db_url(args: argparse.Namespace) -> str:
    """The fleet store a command uses: --db, else $CX_FLEET_DB, else ./fleet.sqlite."""
    return str(getattr(args, "db", None) or os.environ.get(DB_ENV) or DEFAULT_DB)


def db_url_if_any(args: argparse.Namespace) -> str | None:
    """As db_url, but None instead of a ./fleet.sqlite that does not exist: for commands that use
    a store only when there is one (`cx alert send` records, `cx fleet cmd` checks the id)."""
    url = getattr(args, "db", None) or os.environ.get(DB_ENV)
    if url:
        return str(url)
    return DEFAULT_DB if Path(DEFAULT_DB).exists() else None


def db_option() -> argparse.ArgumentParser:
    """A parent parser (`parents=[…]`) with --db."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", metavar="URL", help=DB_HELP)
    return p


def json_option() -> argparse.ArgumentParser:
    """A parent parser (`parents=[…]`) with --json."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    return p


# --- output ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns for people: upper-case headers, cells padded to the widest, None as '-'."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def dump(obj: Any) -> None:
    """`--json`: one line of JSON for scripts (text as it is, not \\u-escaped)."""
    print(json.dumps(obj, ensure_ascii=False, indent=None))


def age(t: float | None, now: float | None = None) -> str:
    """How long ago `t` was, in the largest unit that keeps it readable: 42s, 5m, 3h, 12d."""
    if t is None:
        return "-"
    s = int(max(0, (now or time.time()) - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def epoch_utc(t: object) -> str:
    """An epoch-seconds field as a reader checks it: `2026-12-01 19:00:00 UTC (1796151600)`;
    anything that is not an int as it is (repr), so a bad field shows as what it is."""
    if isinstance(t, bool) or not isinstance(t, int):
        return repr(t)
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) + f" ({t})"
    except (OverflowError, OSError, ValueError):
        return str(t)


def when(t: float | None) -> str:
    """A local time as 2026-12-01 17:20:00, '-' for none."""
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
