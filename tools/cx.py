"""cx: the one host CLI of cunxiang (`cx keys`, `cx alert`, `cx emu`, later `cx fleet`).

Each group module exposes `register(subparsers)`, adds its parser and sets
`func=handler(args) -> int` on every leaf command. Handlers raise `CliError` for
anything the user can fix; `main` prints it as one line, never a traceback.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 broker unreachable, 4 the broker refused the login
or the publish (not authorized), 141 stdout closed before everything was written (`cx … | head`).

Every numeric option is parsed by `number(…)`, so a value out of range is a usage error at parse
time, in the same words everywhere: `cx: error: argument --sweep-every: must be a number from 0.1
to 3600, got '0' (see 'cx fleet serve --help')`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_AUTHORIZED = 4
EXIT_PIPE = 141
"""Nobody reads stdout any more (`cx fleet report | head -1`): 128 + SIGPIPE, the status a shell
shows for a C tool killed by the same closed pipe, so scripts that handle that handle cx too."""


class CliError(Exception):
    """A user-fixable error: printed as `cx: error: <message>`, exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`cx: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        # argparse ignores a failed write; a closed stdout ends `cx … --help | …` as any output
        out = file or sys.stdout
        if out is not None:
            out.write(self.format_help())
            getattr(out, "flush", lambda: None)()


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


DEFAULT_DB = "fleet.sqlite"
"""The fleet store when neither --db nor $CX_FLEET_DB names one: ./fleet.sqlite."""
DB_ENV = "CX_FLEET_DB"


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


def host_port(text: str, option: str = "--broker") -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets: [::1]:1883) given to `option`; a usage error in one
    line otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{option} {text!r} must be HOST:PORT", EXIT_USAGE)
    return host.strip("[]"), int(port)


def folder(path: Path, option: str) -> Path:
    """The folder a command works in (--dir, --out), created if missing; a usage error in one
    line, naming the option and what to give instead, when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CliError(f"{option} {path} is a file, not a folder: give a folder (it is created "
                       "if missing)", EXIT_USAGE) from None
    except OSError as e:
        raise CliError(f"{option} {path}: cannot create it ({e.strerror or e}): give a folder "
                       "you can write", EXIT_USAGE) from None
    return path


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


def commands(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf command under `parser`, as (("fleet", "serve"), its parser), in order."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    seen: set[int] = set()
    for name, sub in subs[0].choices.items():
        if id(sub) not in seen:  # aliases name the same parser
            seen.add(id(sub))
            yield from commands(sub, (*path, name))


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
    for _, leaf in commands(parser):
        leaf.set_defaults(cx_prog=leaf.prog)  # for the unrecognized-arguments error of main
    return parser


# --- the end of a run: closed stdout, paths that cannot be used -------------------------------

_PIPE_CLOSED = threading.Event()  # set when a thread found stdout closed
_previous_hook = threading.__excepthook__  # what main found, for every other thread exception


def _stdout_gone() -> bool:
    """True when our stdout is a pipe (or socket) nobody reads any more; False when it cannot
    be told (no file descriptor): a BrokenPipeError from elsewhere is then a real error."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _silence_stdout() -> None:
    # docs.python.org/3/library/signal.html#note-on-sigpipe: Python flushes stdout at exit, so
    # point it at devnull, or the same BrokenPipeError comes back (and exit status 120).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """A thread that prints (an emulated terminal's supervisor, a receipt watcher) and finds
    stdout closed stops the whole command, as a closed pipe stops the main thread."""
    if isinstance(args.exc_value, BrokenPipeError) and _stdout_gone():
        if not _PIPE_CLOSED.is_set():
            _PIPE_CLOSED.set()
            _silence_stdout()
            # as Ctrl-C would, so the command stops in order; to the main thread itself, since
            # only a real signal there wakes it from a blocking wait (interrupt_main does not)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        return
    _previous_hook(args)


def _path_error(e: OSError) -> str:
    """One line for an OSError on a path the user named: the path, why, what to do."""
    what = {
        errno.ENOENT: "it (or a folder above it) does not exist: check the path",
        errno.ENOTDIR: "a part of it is a file, not a folder: give another path",
        errno.EEXIST: "it exists: give another path",
        errno.EISDIR: "it is a folder where a file is needed: name the file",
        errno.EACCES: "permission denied: give a path you can use, or fix its permissions",
        errno.EPERM: "not permitted: give a path you can use, or fix its permissions",
        errno.EROFS: "read-only file system: give a path you can write",
        errno.ENOSPC: "no space left on the device: free some, or give another path",
    }.get(e.errno or 0, f"{e.strerror or e}: check the path")
    return f"cannot use {e.filename}: {what}"


def _run(argv: list[str]) -> int:
    parser = build_parser()
    # parse_known_args so delegating commands (alert verify) can take their own flags.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        raise CliError(f"unrecognized arguments: {' '.join(extra)} "
                       f"(see '{getattr(args, 'cx_prog', parser.prog)} --help')", EXIT_USAGE)
    args.extra = extra
    func = getattr(args, "func", None)
    if func is None:
        parser.error(f"'cx {args.group}' needs a command")
    return int(func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    global _previous_hook
    if threading.excepthook is not _thread_excepthook:
        _previous_hook, threading.excepthook = threading.excepthook, _thread_excepthook
    _PIPE_CLOSED.clear()
    try:
        try:
            code = _run(argv)
        except SystemExit as e:  # argparse after --help: its output is flushed below
            if isinstance(e.code, str):
                print(f"cx: error: {e.code}", file=sys.stderr)
            code = e.code if isinstance(e.code, int) else EXIT_FAILURE if e.code else EXIT_OK
        except CliError as e:
            print(f"cx: error: {e}", file=sys.stderr)
            code = e.code
        except KeyboardInterrupt:
            if _PIPE_CLOSED.is_set():
                return EXIT_PIPE
            print("cx: interrupted", file=sys.stderr)
            return 130
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, not as a warning at interpreter exit
        return EXIT_PIPE if _PIPE_CLOSED.is_set() else code
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            _silence_stdout()
            return EXIT_PIPE
        if e.filename is None:
            raise
        print(f"cx: error: {_path_error(e)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
