"""cx: the command line of cunxiang, the only home of argparse and printing on the host.

A thin layer on top of the libraries (`fleet/`, `tools/`): parse, call the library, print. No
library imports it.

    common      what every group shares: `CliError`, the `ExitCode` enum, the `Parser`, option
                types and helpers (numbers, folders, HOST:PORT, the fleet database), output
                (tables, `--json`, times)
    main        `build_parser` (every group's `register(subparsers)`) and `main`, the console
                entry point: one-line errors, the closed-stdout and path error handling

Command groups follow, one module each (`fleet`, `provision`, then `keys`, `alert`, `emu`,
`flash`, later `ota`, `broadcast`); until they move here, `tools/cx.py` re-exports this package
for the groups still in `tools/`.
"""
