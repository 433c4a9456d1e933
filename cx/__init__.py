"""cx: the command line of cunxiang, the only home of argparse and printing on the host.

A thin layer on top of the libraries (`fleet/`, `tools/`): parse, call the library, print. No
library imports it (tests/test_import_graph.py holds the host to cx → fleet → tools).

    common          what every group shares: `CliError`, the `ExitCode` enum, the `Parser`,
                    option types and helpers (numbers, folders, HOST:PORT, the broker login, the
                    fleet database), output (tables, `--json`, times)
    main            `build_parser` (every group's `register(subparsers)`) and `main`, the console
                    entry point: one-line errors, the closed-stdout and path error handling
    keys            `cx keys`: root and issuer keys, trust anchors
    alert           `cx alert send`, `cx alert from-cap`
    alert_verify    `cx alert verify`: would a terminal accept this envelope
    alert_status    `cx alert status`: where an alert sounded
    fleet           `cx fleet`: the service, registry, alarms, reports, device commands
    provision       `cx fleet provision`, `cx fleet broker-config`
    emu             `cx emu`: emulated terminals
    flash           `cx flash`: a real board
    demo            `cx demo`: a county in miniature on this machine
"""
