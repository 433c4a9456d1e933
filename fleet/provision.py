"""Provisioning, the library of `cx fleet provision` and `cx fleet broker-config` (cx/provision.py):
a terminal's identity, MQTT credential and config, and the Mosquitto password, ACL and listener
files that hold the fleet to its topics. Refusals raise `fleet.errors.ProvisionError`.

Secrets: a device's plaintext password exists only in its own `DIR/<id>/config.json` (0600, it
goes onto the terminal's flash). `DIR/credentials.json` (0600) keeps, per device, the Mosquitto
PBKDF2 hash and the region its alert ACL needs, so the broker config can be rebuilt at any time
without the plaintexts. The local page's password (docs/web.md) is in the config only as its
salted PBKDF2 hash (`web.pass`); a generated one's plaintext only in the CSV the admin names.
docs/provisioning.md is the admin's guide.
"""

from __future__ import annotations

import csv
import fcntl
import json
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fleet import brokercfg
from fleet.brokercfg import BrokerConfigError, DeviceCred, Tls
from fleet.errors import ProvisionError
from fleet.store import Store
from tools import firmware, regions, webpass
from tools.keys import KeyFileError
from tools.keys import write_private as _write
from tools.terminal_config import check as terminal_check

PROFILES = ("horn", "column")
CREDENTIALS = "credentials.json"
CA_FILE = "ca.der"
"""The broker's CA beside each config (--tls-ca), copied to the terminal's flash under this name:
DER, the one form the terminal's mbedTLS reads (firmware/config.py "tls")."""
LABEL_FILE = "label.txt"
"""Beside each config (0600): the recovery access point's name and WPA2 key, for the label on
the terminal's case (docs/web.md "Recovery mode"); it never goes to the flash but in config."""
MAX_CSV_ERRORS = 5
"""Bad CSV lines listed before giving up (the rest are counted)."""

__all__ = ["CA_FILE", "CREDENTIALS", "LABEL_FILE", "PROFILES", "BrokerFiles", "Device", "ProvisionError",
           "broker_config", "check_coverage", "check_device", "load_ca", "load_credentials",
           "load_trust", "load_web_password", "provision", "read_csv", "terminal_config",
           "write_private"]


@dataclass(frozen=True)
class Device:
    id: str
    region: str
    profile: str = "horn"


# ---------------------------------------------------------------------------------- input


def check_device(d: Device, where: str = "") -> None:
    at = f"{where}: " if where else ""
    if not regions.ID_RE.match(d.id):
        raise ProvisionError(f"{at}bad device id {d.id!r}: 1..64 of A-Z a-z 0-9 . _ : -")
    if not regions.valid_code(d.region):
        raise ProvisionError(f"{at}bad region {d.region!r} for {d.id}: 12 digits, "
                             f"province not 00")
    if d.profile not in PROFILES:
        raise ProvisionError(f"{at}bad profile {d.profile!r} for {d.id}: horn or column")


def load_trust(path: Path) -> list[dict[str, Any]]:
    """The anchors of `cx keys anchors` (a JSON list), checked as the terminal will check them."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProvisionError(f"cannot read --trust {path}: {e.strerror}") from None
    except ValueError as e:
        raise ProvisionError(f"--trust {path} is not JSON ({e}): use 'cx keys anchors'") from None
    if not isinstance(doc, list) or not doc:
        raise ProvisionError(f"--trust {path} must be a non-empty JSON list of anchors "
                             f"('cx keys anchors ROOT.json --out {path}')")
    _check_anchors(doc, path)
    return doc


def _check_anchors(trust: list[Any], path: Path) -> None:
    # Judged once per trust list by the terminal's own config check (firmware/config.py, under
    # micropython) on a stand-in config: an anchor list a terminal refuses is never written out.
    # The stand-in carries a page password hash too, so that a terminal refusing the form this
    # host writes (tools/webpass.py against firmware/config.py) stops provisioning here.
    cfg = {"id": "provision-check", "region": "110000000000", "profile": "horn", "trust": trust,
           "mqtt": {"host": "localhost", "port": 1883},
           "web": {"pass": webpass.hash_password(webpass.new_password())}}
    try:
        reason, problems = terminal_check(cfg)
    except firmware.FirmwareError as e:
        raise ProvisionError(f"cannot check --trust {path}: {e}") from None
    if reason is None:
        return
    named = [p for p in problems if p.startswith("trust")]
    if not named and reason.startswith("web"):
        raise ProvisionError(f"the terminal's firmware refuses the page password hash this host "
                             f"writes ({reason}): firmware/config.py and tools/webpass.py "
                             f"disagree")
    raise ProvisionError(f"--trust {path}: a terminal would refuse "
                         f"{', '.join(named) if named else reason} (use 'cx keys anchors')")


def load_ca(path: Path) -> bytes:
    """The one CA certificate in `path` (PEM or DER) as DER, the form terminals read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProvisionError(f"cannot read --tls-ca {path}: {e.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ProvisionError(f"--tls-ca {path} is not a PEM or DER certificate") from None
    if len(certs) != 1:
        raise ProvisionError(f"--tls-ca {path} holds {len(certs)} certificates: give the one "
                             f"CA that signed the broker's certificate (terminals trust only it)")
    return certs[0].public_bytes(Encoding.DER)


def load_web_password(source: str) -> str:
    """The page password of `--web-password-file`: one line of 8..64 characters (tools/webpass.py
    read_password) from the file `source`, or from stdin for `-`. The message of a refusal never
    holds the password."""
    name = "- (stdin)" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(webpass.MAX_FILE + 1)
        else:
            with open(source, "rb") as f:
                data = f.read(webpass.MAX_FILE + 1)
    except OSError as e:
        raise ProvisionError(f"cannot read --web-password-file {name}: "
                             f"{e.strerror or e}") from None
    try:
        return webpass.read_password(data)
    except webpass.WebPassError as e:
        raise ProvisionError(f"--web-password-file {name}: the password {e}") from None


def _check_new_csv(path: Path) -> None:
    # Refused before anything is written: an existing sheet may hold passwords not yet handed out.
    if path.exists() or path.is_symlink():
        raise ProvisionError(f"--web-passwords {path} exists already: name a new file (the "
                             f"passwords in it may not all be handed out yet)")
    if not path.parent.is_dir():
        raise ProvisionError(f"cannot write --web-passwords {path}: no folder {path.parent}")


def check_coverage(trust: list[dict[str, Any]], d: Device) -> None:
    """A terminal whose anchors cannot sign for its region would never sound an alert."""
    for a in trust:
        if "alert" in a["use"] and any(d.region.startswith(s) for s in a["scope"]):
            return
    raise ProvisionError(f"no alert anchor in --trust covers region {d.region} of {d.id}")


def read_csv(path: Path, default_profile: str) -> list[Device]:
    """`id,region[,profile]` per line; a first line starting with `id` is a header; `#` comments."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ProvisionError(f"cannot read --from-csv {path}: {e.strerror}") from None
    out: list[Device] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if n == 1 and cells[0].lower() == "id":
            continue
        if len(cells) not in (2, 3):
            errors.append(f"{path}:{n}: want id,region[,profile], got {len(cells)} fields")
            continue
        d = Device(cells[0], cells[1], cells[2] if len(cells) == 3 and cells[2]
                   else default_profile)
        try:
            check_device(d, f"{path}:{n}")
        except ProvisionError as e:
            errors.append(str(e))
            continue
        if d.id in seen:
            errors.append(f"{path}:{n}: {d.id} already on line {seen[d.id]}")
            continue
        seen[d.id] = n
        out.append(d)
    if errors:
        more = len(errors) - MAX_CSV_ERRORS
        raise ProvisionError("; ".join(errors[:MAX_CSV_ERRORS])
                             + (f"; and {more} more bad lines" if more > 0 else ""))
    if not out:
        raise ProvisionError(f"--from-csv {path} lists no devices")
    return out


# ---------------------------------------------------------------------------------- output


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` atomically with a file created with `mode` (never briefly world-readable)."""
    try:
        _write(path, text, force=True, mode=mode)
    except (KeyFileError, OSError) as e:
        raise ProvisionError(f"cannot write {path}: {e}") from None


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    # Two provisioning runs into one DIR must not lose each other's credentials.
    with open(out / ".credentials.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load_credentials(path: Path, *, missing_ok: bool = False) -> dict[str, DeviceCred]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ProvisionError(f"no credentials file {path}: run 'cx fleet provision' "
                             f"first") from None
    except OSError as e:
        raise ProvisionError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ProvisionError(f"{path} is not JSON ({e})") from None
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, dict):
        raise ProvisionError(f"{path} is not a credentials file of 'cx fleet provision'")
    out = {}
    for dev_id, v in devices.items():
        if not isinstance(v, dict):
            raise ProvisionError(f"{path}: entry {dev_id!r} is damaged")
        out[dev_id] = DeviceCred(dev_id, str(v.get("region")), str(v.get("hash")))
    return out


def _credentials_text(creds: dict[str, DeviceCred]) -> str:
    return json.dumps({"version": 1, "devices": {
        k: {"region": c.region, "hash": c.hash} for k, c in sorted(creds.items())}},
        indent=1) + "\n"


def terminal_config(d: Device, trust: list[dict[str, Any]], host: str, port: int,
                    password: str, tls: bool = False,
                    web_pass: str | None = None, ap_key: str | None = None) -> dict[str, Any]:
    """firmware/config.py: the required keys, the profile, and the MQTT credential; with `tls`,
    MQTT over TLS verified against the CA file beside the config; with `web_pass` (a
    tools/webpass.py hash), the local page's password (docs/web.md "Config and files")."""
    mqtt: dict[str, Any] = {"host": host, "port": port, "user": d.id, "password": password}
    if tls:
        mqtt.update(tls=True, ca=CA_FILE)
    cfg = {"id": d.id, "region": d.region, "profile": d.profile, "trust": trust, "mqtt": mqtt}
    web: dict[str, Any] = {}
    if web_pass is not None:
        web["pass"] = web_pass
    if ap_key is not None:
        web["ap_key"] = ap_key
    if web:
        cfg["web"] = web
    return cfg


def recovery_ssid(device_id: str) -> str:
    """The recovery access point's name (firmware/local.py: at most 32 bytes)."""
    return ("cunxiang-" + device_id)[:32]


def provision(devices: Sequence[Device], *, trust: list[dict[str, Any]], broker: tuple[str, int],
              out: Path, store: Store, force: bool = False, tls_ca: bytes | None = None,
              web_password: str | None = None, web_passwords: Path | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Register, write each device's config and record its hash; returns the config paths.
    `tls_ca` (DER, load_ca): the terminals use MQTT over TLS and get it as DIR/<id>/ca.der.
    The local page's password, hashed with its own salt into each config's `web.pass`: either
    `web_password` (one device only), or one generated per device into the new CSV
    `web_passwords` (`id,password`, 0600). With neither the config has no `web` and the page
    offers nothing (the CLI insists on one: no default password exists).

    Everything is checked before anything is written. The store comes first (an upsert, so a
    run interrupted later can simply be repeated with --force)."""
    for d in devices:
        check_device(d)
        check_coverage(trust, d)
    if web_password is not None and web_passwords is not None:
        raise ProvisionError("give one page password or generate them, not both")
    if web_password is not None:
        if len(devices) != 1:
            raise ProvisionError(f"one page password for {len(devices)} terminals: generate one "
                                 f"each with --web-passwords OUT.csv")
        try:
            webpass.check_password(web_password)
        except webpass.WebPassError as e:
            raise ProvisionError(f"the page password {e}") from None
    if web_passwords is not None:
        _check_new_csv(web_passwords)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ProvisionError(f"cannot create --out {out}: {e.strerror}") from None
    if not force:
        taken = [d.id for d in devices if (out / d.id).exists()]
        if taken:
            raise ProvisionError(f"{len(taken)} device folder(s) exist already in {out} "
                                 f"({', '.join(taken[:3])}{'…' if len(taken) > 3 else ''}): "
                                 f"--force issues new credentials (reflash those terminals)")
    store.upsert_devices((d.id, d.region, d.profile) for d in devices)
    pages: dict[str, str] = {}
    if web_password is not None:
        pages[devices[0].id] = web_password
    elif web_passwords is not None:
        pages = {d.id: webpass.new_password() for d in devices}
        # before the configs: a password in a config that nobody was given would lock the
        # operator out (ids and generated passwords hold no comma or quote)
        write_private(web_passwords, "id,password\n"
                      + "".join(f"{k},{v}\n" for k, v in pages.items()))
    paths: list[Path] = []
    new: dict[str, DeviceCred] = {}
    for i, d in enumerate(devices, 1):
        password = brokercfg.new_password()
        folder = out / d.id
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise ProvisionError(f"cannot create {folder}: {e.strerror}") from None
        page = pages.get(d.id)
        # the recovery access point's WPA2 key: on the terminal in plain (the radio needs it)
        # and on its label (LABEL_FILE), for the technician who holds the button at the pole
        ap_key = webpass.new_password()
        cfg = terminal_config(d, trust, broker[0], broker[1], password, tls_ca is not None,
                              None if page is None else webpass.hash_password(page), ap_key)
        if tls_ca is not None:
            _write_ca(folder / CA_FILE, tls_ca)
        write_private(folder / LABEL_FILE, f"{d.id}\nrecovery Wi-Fi (hold the button through "
                      f"power-on): {recovery_ssid(d.id)}\nkey: {ap_key}\n")
        write_private(folder / "config.json", json.dumps(cfg, indent=1) + "\n")
        new[d.id] = DeviceCred(d.id, d.region, brokercfg.hash_password(password))
        paths.append(folder / "config.json")
        if progress:
            progress(i, len(devices))
    with _locked(out):
        creds = load_credentials(out / CREDENTIALS, missing_ok=True)
        creds.update(new)
        write_private(out / CREDENTIALS, _credentials_text(creds))
    return paths


def _write_ca(path: Path, der: bytes) -> None:
    # public, but beside the config in a 0700 folder; replaced atomically like the config
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(der)
        tmp.chmod(0o644)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"cannot write {path}: {e.strerror}") from None


# ---------------------------------------------------------------------------------- broker


def _service_cred(path: Path, user: str) -> tuple[str, bool]:
    """The service's password: kept from an earlier run (running services keep working), or new."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("user") == user and isinstance(doc.get("password"),
                                                                              str):
            return doc["password"], False
    except (OSError, ValueError):
        pass
    password = brokercfg.new_password()
    write_private(path, json.dumps({"user": user, "password": password}) + "\n")
    return password, True


@dataclass
class BrokerFiles:
    passwd: Path
    acl: Path
    conf: Path
    devices: int
    new_service_creds: list[Path]


def broker_config(creds_path: Path, confdir: Path, *,
                  dispatcher: str = brokercfg.DEFAULT_DISPATCHER,
                  fleet: str = brokercfg.DEFAULT_FLEET, port: int | None = brokercfg.DEFAULT_PORT,
                  bind: str | None = None, tls: Tls | None = None,
                  tls_port: int = brokercfg.DEFAULT_TLS_PORT,
                  service: tuple[str, int] | None = None,
                  broker_user: str | None = None) -> BrokerFiles:
    devices = load_credentials(creds_path)
    try:
        brokercfg.check_users(devices, dispatcher, fleet)
    except BrokerConfigError as e:
        raise ProvisionError(str(e)) from None
    if tls is not None:
        for p in (tls.cert, tls.key, tls.ca):
            if p is not None and not Path(p).is_file():
                raise ProvisionError(f"TLS file {p} does not exist")
    try:
        confdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ProvisionError(f"cannot create --out {confdir}: {e.strerror}") from None
    hashes = {d.id: d.hash for d in devices.values()}
    fresh = []
    for user in (dispatcher, fleet):
        cred = confdir / f"{user}.cred"
        password, is_new = _service_cred(cred, user)
        hashes[user] = brokercfg.hash_password(password)
        if is_new:
            fresh.append(cred)
    files = BrokerFiles(confdir / "passwd", confdir / "acl", confdir / "mosquitto.conf",
                        len(devices), fresh)
    write_private(files.passwd, brokercfg.passwd_text(hashes))
    write_private(files.acl, brokercfg.acl_text(devices, dispatcher, fleet))
    write_private(files.conf, brokercfg.conf_text(confdir, port=port, bind=bind, tls=tls,
                                                  tls_port=tls_port, service=service), 0o644)
    if broker_user:
        # Started as root, Mosquitto reads these after dropping to its own user.
        try:
            for p in (confdir, files.passwd, files.acl):
                shutil.chown(p, user=broker_user)
        except (LookupError, OSError) as e:
            raise ProvisionError(f"cannot give {confdir} to user {broker_user!r}: {e}") from None
    return files
