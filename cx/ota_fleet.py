"""`cx ota upload|serve|rollout|status|pause|resume|abort`: the fleet side of OTA, registered into
the `cx ota` group (cx/ota.py) by `register_into`. The library is fleet/ota.py (releases, waves,
window), fleet/store/ota.py (rollouts in the database), fleet/ota_http.py (the file server) and
fleet/ota_engine.py (the engine); this module reads the command line and prints.

Exit codes (cx.common.ExitCode): 0 ok, 1 failure (no such release or rollout, a damaged release,
a rollout that cannot be paused…), 2 usage, 3 database or broker unreachable.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from cx.common import (
    CliError,
    ExitCode,
    broker_address,
    broker_login,
    db_option,
    db_url,
    dump,
    folder,
    json_option,
    number,
    table,
    when,
)
from fleet import ota
from fleet.errors import FleetError, StoreUnavailable
from fleet.ota import OtaError
from fleet.ota_engine import ACK_TIMEOUT, EVERY, Engine
from fleet.ota_http import MAX_CONNECTIONS, FileServer
from fleet.service import default_instance
from fleet.store import Store
from fleet.store.ota import STALL

STORE_ENV = "CX_OTA_STORE"
DEFAULT_STORE = "ota-files"
COLUMNS = ("pending", "sent", "downloading", "staged", "trial", "confirmed", "rolled_back",
           "failed", "refused")


def _fail(e: FleetError) -> CliError:
    return CliError(str(e), ExitCode.UNREACHABLE if isinstance(e, StoreUnavailable)
                    else ExitCode.FAILURE)


def _open(args: argparse.Namespace, create: bool = False) -> Store:
    try:
        return Store.open(db_url(args), create=create)
    except FleetError as e:
        raise _fail(e) from None


def _listen(text: str) -> tuple[str, int]:
    """--http HOST:PORT, port 0 for any free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise CliError(f"--http {text!r} must be HOST:PORT", ExitCode.USAGE)
    return host.strip("[]"), int(port)


def _store_folder(args: argparse.Namespace) -> Path:
    return folder(Path(args.store or os.environ.get(STORE_ENV) or DEFAULT_STORE), "--store")


# ---------------------------------------------------------------------------------- commands


def cmd_upload(args: argparse.Namespace) -> int:
    store = _open(args, create=True)
    try:
        files = _store_folder(args)
        rel = ota.read_release(Path(args.dir))
        new_files = ota.copy_files(Path(args.dir), rel, files)
        new = store.add_release(rel)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if args.json:
        dump({"version": rel.version, "new": new, "files": len(rel.shas()),
              "new_files": new_files, "zbytes": rel.zbytes, "store": str(files)})
    else:
        print(f"release {rel.version}: {'recorded' if new else 'already recorded'}; "
              f"{len(rel.shas())} files ({rel.zbytes} bytes compressed), {new_files} new in "
              f"{files}; regions {', '.join(rel.regions)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = broker_address(args.broker)
    http_host, http_port = _listen(args.http)
    if http_host in ("0.0.0.0", "::") and not args.base:
        raise CliError(f"--http {args.http} listens on every address: give --base, the URL "
                       "terminals reach it at (http://10.0.0.5:8080)", ExitCode.USAGE)
    if args.base and not args.base.startswith(("http://", "https://")):
        raise CliError(f"--base {args.base!r} must be an http:// or https:// URL",
                       ExitCode.USAGE)
    auth = broker_login(args.cred or os.environ.get("CX_FLEET_CRED"), args.cafile)
    if "://" not in db_url(args):
        _open(args, create=True).close()  # a SQLite file that cannot be made: refused at once
    files = _store_folder(args)
    try:
        server = FileServer(files, http_host, http_port, max_connections=args.max_connections)
    except OSError as e:
        raise CliError(f"--http {args.http}: cannot listen there ({e.strerror or e})",
                       ExitCode.USAGE) from None
    base = args.base or f"http://{args.http.rsplit(':', 1)[0]}:{server.port}"  # [v6]:port too
    instance = args.instance or default_instance()
    engine = Engine(db_url(args), host, port, base, instance=instance, every=args.every,
                    ack_timeout=args.ack_timeout, stall=args.stall, auth=auth)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    engine.log(f"serving {files} on http://{http_host}:{server.port} (base {base}); "
               f"database {db_url(args)}")
    try:
        engine.run(stop)
    finally:
        server.stop()
    engine.log(f"stopped: {engine.sent} commands sent, {server.served} files served")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    try:
        ota.check_version(args.version)
        waves = ota.parse_waves(args.waves)
        ota.parse_window(args.window)
    except OtaError as e:
        raise CliError(str(e), ExitCode.USAGE) from None
    store = _open(args)
    try:
        n = store.create_rollout(args.version, waves, region=args.region or "",
                                 only_ip=args.only_ip, window=args.window,
                                 max_parallel=args.max_parallel, abort_at=args.abort_at,
                                 soak=args.soak * 60)
        status = store.rollout_status(args.version)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()
    if args.json:
        dump(status)
    else:
        sizes = ", ".join(str(w["targets"]) for w in status["per_wave"])
        print(f"rollout {args.version}: {n} terminals in {len(waves)} waves ({sizes}); "
              "'cx ota serve' sends the commands")
    return 0


def _print_status(s: dict[str, Any]) -> None:
    wave = f"wave {s['wave'] + 1} of {len(s['waves'])}" if s["wave"] >= 0 else "not started"
    print(f"rollout {s['version']}: {s['state']}, {wave}, {s['targets']} terminals, started "
          f"{when(s['created_at'])}" + (f"; {s['reason']}" if s["reason"] else ""))
    cols = ("wave", "percent", "targets", *COLUMNS)
    table(cols, [[w["wave"], f"{w['percent']:g}%", w["targets"], *(w[c] for c in COLUMNS)]
                 for w in s["per_wave"]])
    print()
    table(("town", "targets", *COLUMNS),
          [[t["town"], t["targets"], *(t[c] for c in COLUMNS)] for t in s["per_town"]])
    if s["reasons"]:
        print()
        table(("state:reason", "terminals"), sorted(s["reasons"].items()))


def cmd_status(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        while True:
            s = store.rollout_status(args.version)
            if args.json:
                dump(s)
            else:
                _print_status(s)
            if not args.watch or s["state"] in ("done", "aborted"):
                return 0
            print(flush=True)
            time.sleep(args.interval)
    except FleetError as e:
        raise _fail(e) from None
    finally:
        store.close()


def _set(action: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        store = _open(args)
        try:
            state = store.set_rollout(args.version, action)
        except FleetError as e:
            raise _fail(e) from None
        finally:
            store.close()
        if args.json:
            dump({"version": args.version, "state": state})
        else:
            print(f"rollout {args.version}: {state}")
        return 0

    return handler


# ---------------------------------------------------------------------------------- parser


def register_into(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the fleet commands to the `cx ota` group's subparsers."""
    db, js = db_option(), json_option()
    st = argparse.ArgumentParser(add_help=False)
    st.add_argument("--store", metavar="FOLDER",
                    help=f"the content-addressed file folder (default ${STORE_ENV} or "
                         f"./{DEFAULT_STORE}; created if missing)")

    s = sub.add_parser("upload", parents=[db, st, js],
                       help="record a release in the fleet database, copy its files to --store")
    s.add_argument("dir", metavar="DIR", help="a release folder made by 'cx ota build'")
    s.set_defaults(func=cmd_upload)

    s = sub.add_parser("serve", parents=[db, st],
                       help="the file server and the rollout engine (beside 'cx fleet serve')")
    s.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default $CX_BROKER)")
    s.add_argument("--cred", metavar="FILE", help="broker login, the fleet.cred written by "
                   "'cx fleet broker-config' (default $CX_FLEET_CRED)")
    s.add_argument("--cafile", metavar="FILE", help="CA certificate: connect with TLS")
    s.add_argument("--http", required=True, metavar="HOST:PORT",
                   help="where the file server listens (port 0: any free port)")
    s.add_argument("--base", metavar="URL",
                   help="the file server's URL as terminals reach it (default http://HOST:PORT "
                        "of --http)")
    s.add_argument("--instance", metavar="NAME",
                   help=f"this instance's name in the database and the log (default the host "
                        f"name, {default_instance()})")
    s.add_argument("--every", type=number(float, 0.05, 3600), default=EVERY, metavar="S",
                   help=f"seconds between engine steps, 0.05..3600 (default {EVERY:g})")
    s.add_argument("--ack-timeout", type=number(float, 0.1, 86400), default=ACK_TIMEOUT,
                   metavar="S", help="seconds before an unacknowledged command is sent again "
                                     f"(default {ACK_TIMEOUT:g})")
    s.add_argument("--stall", type=number(float, 1, 30 * 86400), default=STALL, metavar="S",
                   help="seconds after which an update on an offline, silent terminal no longer "
                        f"holds its wave nor a place (default {STALL:g})")
    s.add_argument("--max-connections", type=number(int, 1, 4096), default=MAX_CONNECTIONS,
                   metavar="N", help=f"HTTP connections at once (default {MAX_CONNECTIONS})")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("rollout", parents=[db, js],
                       help="start rolling an uploaded release out, wave by wave")
    s.add_argument("version", metavar="VERSION")
    s.add_argument("--waves", default="1%,10%,50%,100%", metavar="P1%,P2%,…",
                   help="cumulative share of the targets in each wave (default 1%%,10%%,50%%,100%%)")
    s.add_argument("--region", metavar="PREFIX", help="only terminals whose region starts so")
    s.add_argument("--only-ip", action="store_true",
                   help="hold back terminals whose last heartbeat was on 4G")
    s.add_argument("--window", metavar="HH:MM-HH:MM",
                   help="send only within this daily window, China Standard Time (UTC+8)")
    s.add_argument("--max-parallel", type=number(int, 1, 100000), default=50, metavar="N",
                   help="terminals updating at once at most (default 50)")
    s.add_argument("--abort-at", type=number(float, 0, 1), default=0.2, metavar="RATE",
                   help="abort when a finished wave's (failed + rolled back) / targets is above "
                        "this, 0..1 (default 0.2)")
    s.add_argument("--soak", type=number(float, 0, 7 * 24 * 60), default=60.0, metavar="MIN",
                   help="minutes between a wave's end and the next wave (default 60)")
    s.set_defaults(func=cmd_rollout)

    s = sub.add_parser("status", parents=[db, js],
                       help="a rollout per wave and per town (default: the live or latest one)")
    s.add_argument("version", metavar="VERSION", nargs="?")
    s.add_argument("--watch", action="store_true", help="print again until the rollout ends")
    s.add_argument("--interval", type=number(float, 0.1, 3600), default=5.0, metavar="S",
                   help="seconds between prints with --watch (default 5)")
    s.set_defaults(func=cmd_status)

    for action, what in (("pause", "stop sending commands (updates under way go on)"),
                         ("resume", "send commands again"),
                         ("abort", "end the rollout: no more commands")):
        s = sub.add_parser(action, parents=[db, js], help=what)
        s.add_argument("version", metavar="VERSION")
        s.set_defaults(func=_set(action))
