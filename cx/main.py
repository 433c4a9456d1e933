"""`cx`, the one host command line (`cx keys`, `cx alert`, `cx broadcast`, `cx fleet`, …):
the parser of every group and the end of a run (one-line errors, closed stdout, bad paths).

Each group module exposes `register(subparsers)`, adds its parser and sets
`func=handler(args) -> int` on every leaf command. Exit codes: `cx.common.ExitCode`.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from cx import alert, broadcast, demo, emu, flash, fleet, keys, ota
from cx.common import CliError, ExitCode, Parser

GROUPS = (keys, alert, broadcast, ota, demo, flash, emu, fleet)
"""Every group, in the order `cx --help` lists them. All are imported as any module is: each
ships with the others, so a broken one is a bug the tests catch, not a state to run in."""


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
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
    parser = Parser(prog="cx", description="cunxiang host tools")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for group in GROUPS:
        group.register(sub)
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
                       f"(see '{getattr(args, 'cx_prog', parser.prog)} --help')", ExitCode.USAGE)
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
            code = e.code if isinstance(e.code, int) else ExitCode.FAILURE if e.code \
                else ExitCode.OK
        except CliError as e:
            print(f"cx: error: {e}", file=sys.stderr)
            code = e.code
        except KeyboardInterrupt:
            if _PIPE_CLOSED.is_set():
                return ExitCode.CLOSED_STDOUT
            print("cx: interrupted", file=sys.stderr)
            return ExitCode.INTERRUPTED
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, not as a warning at interpreter exit
        return int(ExitCode.CLOSED_STDOUT if _PIPE_CLOSED.is_set() else code)
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            _silence_stdout()
            return ExitCode.CLOSED_STDOUT
        if e.filename is None:
            raise
        print(f"cx: error: {_path_error(e)}", file=sys.stderr)
        return ExitCode.FAILURE


if __name__ == "__main__":
    sys.exit(main())
