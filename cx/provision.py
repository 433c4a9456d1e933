"""`cx fleet provision` and `cx fleet broker-config`: parse, call fleet/provision.py, print.
docs/provisioning.md is the admin's guide.

Exit codes (cx.common.ExitCode): 0 ok, 1 refused (bad input, a file that cannot be read or
written), 2 usage, 3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cx.common import DB_HELP, CliError, ExitCode, db_url, host_port, number
from fleet import brokercfg
from fleet.brokercfg import Tls
from fleet.errors import FleetError, StoreUnavailable
from fleet.provision import (
    CREDENTIALS,
    LABEL_FILE,
    PROFILES,
    Device,
    broker_config,
    check_coverage,
    check_device,
    load_ca,
    load_trust,
    load_web_password,
    provision,
    read_csv,
)
from fleet.store import Store


def _cli_error(e: FleetError) -> CliError:
    return CliError(str(e), ExitCode.UNREACHABLE if isinstance(e, StoreUnavailable)
                    else ExitCode.FAILURE)


def _progress(done: int, total: int) -> None:
    tty = sys.stderr.isatty()
    if tty or done == total or done % 500 == 0:
        end = "\n" if done == total or not tty else ""
        print(f"\rprovisioning: {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_provision(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.from_csv is None):
        raise CliError("give either ID --region CODE or --from-csv FILE", ExitCode.USAGE)
    try:
        if args.from_csv is not None:
            if args.region:
                raise CliError("--region goes in the CSV with --from-csv", ExitCode.USAGE)
            devices = read_csv(args.from_csv, args.profile)
        else:
            if not args.region:
                raise CliError("give --region CODE (12 digits) for the device", ExitCode.USAGE)
            devices = [Device(args.id, args.region, args.profile)]
            check_device(devices[0])
        if args.web_password_file is None and args.web_passwords is None:
            raise CliError("no page password given, and none exists by default: "
                           "--web-password-file FILE (one terminal) or --web-passwords OUT.csv "
                           "(one generated per terminal)", ExitCode.USAGE)
        if args.web_password_file is not None and len(devices) > 1:
            raise CliError("--web-password-file is one terminal's password: with --from-csv "
                           "use --web-passwords OUT.csv (one generated per terminal)",
                           ExitCode.USAGE)
        web_password = load_web_password(args.web_password_file) \
            if args.web_password_file is not None else None
        broker = host_port(args.broker)
        trust = load_trust(args.trust)
        tls_ca = load_ca(args.tls_ca) if args.tls_ca is not None else None
        for d in devices:
            check_coverage(trust, d)
        store = Store.open(db_url(args), create=True)
        try:
            paths = provision(devices, trust=trust, broker=broker, out=args.out, store=store,
                              force=args.force, tls_ca=tls_ca, web_password=web_password,
                              web_passwords=args.web_passwords,
                              progress=_progress if len(devices) > 1 else None)
        finally:
            store.close()
    except FleetError as e:
        raise _cli_error(e) from None
    if len(paths) == 1:
        print(f"{devices[0].id}: {paths[0]} (flash it: cx flash PORT --config {paths[0]})")
    else:
        print(f"{len(paths)} devices -> {args.out}/<id>/config.json")
    if args.web_passwords is not None:
        print(f"page passwords: {args.web_passwords} (0600, id,password: give each village only "
              f"its own line)")
    else:
        src = "stdin" if args.web_password_file == "-" else args.web_password_file
        print(f"page password: from {src}, kept only as a hash in the config")
    print(f"labels: {args.out}/<id>/{LABEL_FILE} (0600: the recovery Wi-Fi name and key of each "
          f"terminal, for the label on its case)")
    print(f"credentials: {args.out / CREDENTIALS} (next: cx fleet broker-config --creds "
          f"{args.out / CREDENTIALS} --out CONFDIR)")
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", ExitCode.USAGE)
    if args.tls_ca and not args.tls_cert:
        raise CliError("--tls-ca needs --tls-cert and --tls-key", ExitCode.USAGE)
    tls = Tls(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    if not args.port and tls is None:
        raise CliError("--port 0 leaves terminals no listener: give --tls-cert/--tls-key",
                       ExitCode.USAGE)
    try:
        service = None if args.service_listen == "none" else \
            host_port(args.service_listen, "--service-listen")
        files = broker_config(args.creds, args.out, dispatcher=args.dispatcher_user,
                              fleet=args.fleet_user, port=args.port or None, bind=args.bind,
                              tls=tls, tls_port=args.tls_port, service=service,
                              broker_user=args.broker_user)
    except FleetError as e:
        raise _cli_error(e) from None
    print(f"{files.devices} devices + {args.dispatcher_user}, {args.fleet_user}: "
          f"{files.passwd}, {files.acl}, {files.conf}")
    for cred in files.new_service_creds:
        print(f"new service credential: {cred} (0600; give it to that service only)")
    print(f"use it: include {files.conf} from mosquitto.conf (or copy it into "
          f"/etc/mosquitto/conf.d/), then restart mosquitto")
    return 0


def register_into(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `provision` and `broker-config` to the `cx fleet` subparsers."""
    p = sub.add_parser("provision", help="a terminal's id, MQTT credential and config",
                       description="Register terminals, give each an MQTT credential and write "
                                   "DIR/<id>/config.json for 'cx flash' or 'cx emu run'.")
    p.add_argument("id", nargs="?", metavar="ID", help="device id: 1..64 of A-Z a-z 0-9 . _ : -")
    p.add_argument("--region", metavar="CODE12", help="the terminal's 12-digit region code")
    p.add_argument("--profile", choices=PROFILES, default="horn",
                   help="amplifier profile (default horn; the CSV's third column wins)")
    p.add_argument("--from-csv", type=Path, metavar="FILE",
                   help="many devices: id,region[,profile] per line")
    p.add_argument("--trust", type=Path, required=True, metavar="ANCHORS.json",
                   help="trust anchors (cx keys anchors ROOT.json --out ANCHORS.json)")
    p.add_argument("--broker", required=True, metavar="HOST:PORT",
                   help="the broker terminals connect to (its TLS port with --tls-ca)")
    p.add_argument("--tls-ca", type=Path, metavar="CA.pem",
                   help="MQTT over TLS: the CA certificate (PEM or DER) that signed the "
                        "broker's; written as DIR/<id>/ca.der. The broker certificate must name "
                        "the --broker host")
    p.add_argument("--db", metavar="URL", help=DB_HELP)
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="DIR/<id>/config.json and DIR/credentials.json")
    page = p.add_mutually_exclusive_group()
    page.add_argument("--web-password-file", metavar="FILE",
                      help="the local page's password for one terminal: the file's one line, "
                           "8..64 characters ('-': read it from stdin)")
    page.add_argument("--web-passwords", type=Path, metavar="OUT.csv",
                      help="generate each terminal's page password into this new file "
                           "(id,password per line, 0600) for the county to hand out")
    p.add_argument("--force", action="store_true",
                   help="re-provision existing devices (new passwords: reflash them)")
    p.set_defaults(func=cmd_provision)

    b = sub.add_parser("broker-config", help="Mosquitto password, ACL and listener files",
                       description="Write CONFDIR/passwd, CONFDIR/acl and CONFDIR/mosquitto.conf "
                                   "from the provisioning credentials; service credentials in "
                                   "CONFDIR/<user>.cred (kept across runs).")
    b.add_argument("--creds", type=Path, required=True, metavar="DIR/credentials.json")
    b.add_argument("--out", type=Path, required=True, metavar="CONFDIR")
    b.add_argument("--dispatcher-user", default=brokercfg.DEFAULT_DISPATCHER, metavar="NAME",
                   help="the only user that may publish alerts (default dispatcher)")
    b.add_argument("--fleet-user", default=brokercfg.DEFAULT_FLEET, metavar="NAME",
                   help="the fleet service's user (default fleet)")
    b.add_argument("--port", type=number(int, 0, 65535), default=brokercfg.DEFAULT_PORT,
                   metavar="N",
                   help="terminals' plain MQTT listener (default 1883; 0: none)")
    b.add_argument("--bind", metavar="ADDR", help="address of the terminals' listeners "
                                                 "(default all)")
    b.add_argument("--tls-cert", metavar="PEM")
    b.add_argument("--tls-key", metavar="PEM")
    b.add_argument("--tls-ca", metavar="PEM", help="CA chain sent to clients")
    b.add_argument("--tls-port", type=number(int, 1, 65535), default=brokercfg.DEFAULT_TLS_PORT,
                   metavar="N",
                   help="terminals' TLS listener when a certificate is given (default 8883)")
    b.add_argument("--service-listen", default=brokercfg.DEFAULT_SERVICE_LISTEN,
                   metavar="HOST:PORT", help="listener for the fleet service and dispatcher "
                   f"(default {brokercfg.DEFAULT_SERVICE_LISTEN}; 'none' to leave it out)")
    b.add_argument("--broker-user", metavar="USER",
                   help="give CONFDIR, passwd and acl to this user (Mosquitto started as root "
                        "reads them as 'mosquitto'); the .cred files stay yours")
    b.set_defaults(func=cmd_broker_config)
