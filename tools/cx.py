"""Temporary shim (issue 9, item 1): the command line now lives in the `cx` package.

`cx/common.py` holds what this module held (`CliError`, the exit codes as `ExitCode`, `Parser`,
`number`, `folder`, `host_port`, the fleet database options); `cx/main.py` holds `build_parser`,
`commands` and `main`. This module only re-exports them for the command groups still in
`tools/` until they move into `cx/`; it is deleted then. The direction it points (a `tools`
module importing `cx`) is the one the finished layout forbids: nothing new may import it.

`build_parser`, `commands` and `main` are looked up in `cx.main` when first asked for (module
`__getattr__`), since `cx.main` imports the groups that import this module.
"""

from __future__ import annotations

from typing import Any

from cx.common import (
    DB_ENV,
    DEFAULT_DB,
    CliError,
    ExitCode,
    Parser,
    db_url,
    db_url_if_any,
    folder,
    host_port,
    number,
)

EXIT_OK = ExitCode.OK
EXIT_FAILURE = ExitCode.FAILURE
EXIT_USAGE = ExitCode.USAGE
EXIT_UNREACHABLE = ExitCode.UNREACHABLE
EXIT_NOT_AUTHORIZED = ExitCode.NOT_AUTHORIZED
EXIT_PIPE = ExitCode.CLOSED_STDOUT

_FROM_MAIN = ("build_parser", "commands", "main")

__all__ = [  # and _FROM_MAIN, through __getattr__
    "DB_ENV", "DEFAULT_DB", "EXIT_FAILURE", "EXIT_NOT_AUTHORIZED", "EXIT_OK", "EXIT_PIPE",
    "EXIT_UNREACHABLE", "EXIT_USAGE", "CliError", "ExitCode", "Parser", "db_url",
    "db_url_if_any", "folder", "host_port", "number",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_MAIN:
        from cx import main  # a late import: cx.main imports the groups that import this shim

        return getattr(main, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
