"""`cx fleet provision` and `cx fleet broker-config`: configs a terminal accepts, the registry,
credentials kept only as hashes, bulk CSV, and refusals that leave nothing half-written."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_mpy
from tlscerts import Ca

from cx.common import CliError, Parser
from cx.provision import register_into
from fleet.brokercfg import check_password
from fleet.store import Store

TRUST = [{"kid": "r1", "pub": "R1Ba8kBsDWKG2ddpbQmMpdaji2h_UN7JlNFBNODxQYw", "scope": ["34"],
          "use": ["alert"]}]
DEV = "T341122100201-01"


def cx_fleet(*argv: str) -> tuple[int, str]:
    """Run a `cx fleet` command of this module: (exit code, error line or "")."""
    p = Parser(prog="cx fleet")
    register_into(p.add_subparsers(dest="cmd", required=True))
    try:
        args: argparse.Namespace = p.parse_args(list(argv))
        return int(args.func(args) or 0), ""
    except CliError as e:
        return e.code, str(e)


@pytest.fixture
def env(tmp_path: Path) -> Any:
    (tmp_path / "anchors.json").write_text(json.dumps(TRUST))
    ns = type("Env", (), {})()
    ns.tmp, ns.out, ns.db = tmp_path, tmp_path / "devs", str(tmp_path / "fleet.sqlite")

    runs = iter(range(1000))

    def provision(*extra: str) -> tuple[int, str]:
        # the page password is not what these tests are about: a new sheet of generated ones
        # each run, unless the test gives its own (tests/test_provision_web.py)
        pages = [] if any(a.startswith("--web-password") for a in extra) else \
            ["--web-passwords", str(tmp_path / f"pages-{next(runs)}.csv")]
        return cx_fleet("provision", *extra, *pages, "--trust", str(tmp_path / "anchors.json"),
                        "--broker", "mqtt.example:1883", "--db", ns.db, "--out", str(ns.out))

    ns.provision = provision
    return ns


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_provisioned_config_passes_the_firmwares_own_validation(env: Any) -> None:
    assert env.provision(DEV, "--region", "341122100201", "--profile", "column") == (0, "")
    path = env.out / DEV / "config.json"
    assert mode(path) == 0o600 and mode(env.out / DEV) == 0o700
    cfg = json.loads(path.read_text())
    assert cfg["mqtt"]["user"] == DEV and len(cfg["mqtt"]["password"]) >= 32
    assert (cfg["id"], cfg["region"], cfg["profile"], cfg["trust"]) == \
        (DEV, "341122100201", "column", TRUST)
    r = run_mpy(f"import config, json\ncfg = config.validate(json.loads(open({str(path)!r}).read()))"
                "\nprint(cfg['profile'], cfg['mqtt']['port'])",
                path=[ROOT / "firmware"])
    assert r.returncode == 0 and r.stdout.split() == ["column", "1883"], r.stderr


def test_provision_registers_the_device_and_keeps_only_a_hash(env: Any) -> None:
    assert env.provision(DEV, "--region", "341122100201")[0] == 0
    store = Store.open(env.db, create=False)
    d = store.device(DEV)
    store.close()
    assert (d.region, d.profile, d.state) == ("341122100201", "horn", "new")
    creds_path = env.out / "credentials.json"
    password = json.loads((env.out / DEV / "config.json").read_text())["mqtt"]["password"]
    assert mode(creds_path) == 0o600 and password not in creds_path.read_text()
    entry = json.loads(creds_path.read_text())["devices"][DEV]
    assert entry["region"] == "341122100201" and check_password(password, entry["hash"])


def test_bulk_csv_provisions_every_device_with_progress(env: Any, capfd: Any) -> None:
    rows = ["id,region,profile"] + [f"T3411221002{i:02d}-01,3411221002{i:02d},"
                                    f"{'column' if i % 2 else 'horn'}" for i in range(50)]
    (env.tmp / "fleet.csv").write_text("\n".join(rows) + "\n")
    assert env.provision("--from-csv", str(env.tmp / "fleet.csv")) == (0, "")
    out, err = capfd.readouterr()
    assert "provisioning: 50/50" in err and "50 devices" in out
    creds = json.loads((env.out / "credentials.json").read_text())["devices"]
    assert len(creds) == 50 and len(list(env.out.glob("*/config.json"))) == 50
    store = Store.open(env.db, create=False)
    assert len(store.devices()) == 50 and store.device("T341122100201-01").profile == "column"
    store.close()
    passwords = {json.loads(p.read_text())["mqtt"]["password"] for p in env.out.glob("*/config.json")}
    assert len(passwords) == 50


def test_a_second_run_adds_to_the_credentials(env: Any) -> None:
    assert env.provision(DEV, "--region", "341122100201")[0] == 0
    assert env.provision("T2", "--region", "341122100202")[0] == 0
    assert set(json.loads((env.out / "credentials.json").read_text())["devices"]) == {DEV, "T2"}


@pytest.mark.parametrize("argv,message", [
    (["bad/id", "--region", "341122100201"], "bad device id 'bad/id'"),
    (["x" * 65, "--region", "341122100201"], "bad device id"),
    ([DEV, "--region", "34112210020"], "bad region '34112210020'"),
    ([DEV, "--region", "001122100201"], "bad region"),
    ([DEV, "--region", "441122100201"], "no alert anchor in --trust covers region 441122100201"),
    ([DEV], "give --region"),
])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(env: Any, argv: list[str],
                                                             message: str) -> None:
    code, err = env.provision(*argv)
    assert code != 0 and message in err and "\n" not in err
    assert not env.out.exists() and not list(env.tmp.glob("pages-*.csv"))


@pytest.mark.parametrize("anchor,named", [
    ({"pub": "AAAA"}, "trust[0] pub"),  # 3 bytes, not a 32-byte key
    ({"scope": ["3x"]}, "trust[0] scope"),
    ({"use": []}, "trust[0] use"),
    ({"kid": "k" * 65}, "trust[0] kid"),
])
def test_anchors_a_terminal_would_refuse_are_refused_by_the_terminals_check(
        env: Any, anchor: dict[str, Any], named: str) -> None:
    (env.tmp / "anchors.json").write_text(json.dumps([dict(TRUST[0], **anchor)]))
    code, err = env.provision(DEV, "--region", "341122100201")
    assert code != 0 and named in err and "a terminal would refuse" in err and "\n" not in err
    assert not env.out.exists()


def test_existing_device_needs_force_which_issues_a_new_credential(env: Any) -> None:
    assert env.provision(DEV, "--region", "341122100201")[0] == 0
    path = env.out / DEV / "config.json"
    before = json.loads(path.read_text())["mqtt"]["password"]
    code, err = env.provision(DEV, "--region", "341122100201")
    assert code == 1 and "exist already" in err and "--force" in err
    assert json.loads(path.read_text())["mqtt"]["password"] == before
    assert env.provision(DEV, "--region", "341122100202", "--force")[0] == 0
    after = json.loads(path.read_text())
    assert after["mqtt"]["password"] != before and after["region"] == "341122100202"
    entry = json.loads((env.out / "credentials.json").read_text())["devices"][DEV]
    assert check_password(after["mqtt"]["password"], entry["hash"])


def test_bad_csv_lines_are_all_reported_and_nothing_is_written(env: Any) -> None:
    (env.tmp / "bad.csv").write_text("T1,341122100201\nT 2,341122100202\nT3,12\nT1,341122100203\n"
                                     "T4,341122100204,tower\n")
    code, err = env.provision("--from-csv", str(env.tmp / "bad.csv"))
    assert code == 1
    for line, what in ((2, "bad device id 'T 2'"), (3, "bad region '12'"),
                       (4, "T1 already on line 1"), (5, "bad profile 'tower'")):
        assert f"bad.csv:{line}: {what}" in err
    assert not env.out.exists()


def test_bad_trust_file_is_refused(env: Any) -> None:
    (env.tmp / "anchors.json").write_text(json.dumps([TRUST[0], dict(TRUST[0], scope=[])]))
    code, err = env.provision(DEV, "--region", "341122100201")
    assert code == 1 and "trust[1] scope" in err  # the second anchor: an empty scope
    assert not env.out.exists()


def test_broker_config_keeps_service_credentials_across_runs(env: Any) -> None:
    assert env.provision(DEV, "--region", "341122100201")[0] == 0
    conf = env.tmp / "conf"
    argv = ("broker-config", "--creds", str(env.out / "credentials.json"), "--out", str(conf))
    assert cx_fleet(*argv) == (0, "")
    first = json.loads((conf / "fleet.cred").read_text())
    assert mode(conf / "fleet.cred") == 0o600 and mode(conf / "passwd") == 0o600
    assert cx_fleet(*argv) == (0, "")
    assert json.loads((conf / "fleet.cred").read_text()) == first
    users = dict(line.split(":", 1) for line in (conf / "passwd").read_text().splitlines())
    assert set(users) == {DEV, "dispatcher", "fleet"}
    assert check_password(first["password"], users["fleet"])
    acl = (conf / "acl").read_text()
    assert f"user {DEV}\ntopic read eb/alert/34\n" in acl


def test_broker_config_refuses_a_device_named_like_a_service(env: Any) -> None:
    assert env.provision("fleet", "--region", "341122100201")[0] == 0
    code, err = cx_fleet("broker-config", "--creds", str(env.out / "credentials.json"),
                         "--out", str(env.tmp / "conf"))
    assert code == 1 and "a device is called 'fleet'" in err
    code, err = cx_fleet("broker-config", "--creds", str(env.tmp / "none.json"),
                         "--out", str(env.tmp / "conf"))
    assert code == 1 and "run 'cx fleet provision' first" in err


def test_tls_ca_goes_beside_each_config_as_der_and_the_config_asks_for_tls(env: Any) -> None:
    ca = Ca.make()
    (env.tmp / "ca.pem").write_bytes(ca.pem())
    assert env.provision(DEV, "--region", "341122100201", "--tls-ca",
                         str(env.tmp / "ca.pem")) == (0, "")
    cfg = json.loads((env.out / DEV / "config.json").read_text())
    assert (cfg["mqtt"]["tls"], cfg["mqtt"]["ca"]) == (True, "ca.der")
    assert (env.out / DEV / "ca.der").read_bytes() == ca.der()
    r = run_mpy(f"import config, json\nc = config.validate(json.loads(open("
                f"{str(env.out / DEV / 'config.json')!r}).read()))\nprint(c['mqtt']['tls'])")
    assert r.stdout.strip() == "True", r.stderr
    # DER in works too; PEM with two certificates, or not a certificate, is refused
    (env.tmp / "ca.der").write_bytes(ca.der())
    assert env.provision("T341122100201-02", "--region", "341122100201", "--tls-ca",
                         str(env.tmp / "ca.der")) == (0, "")
    (env.tmp / "two.pem").write_bytes(ca.pem() + Ca.make("b").pem())
    code, err = env.provision("T341122100201-03", "--region", "341122100201", "--tls-ca",
                              str(env.tmp / "two.pem"))
    assert code != 0 and "holds 2 certificates" in err
    (env.tmp / "junk.pem").write_text("hello")
    code, err = env.provision("T341122100201-03", "--region", "341122100201", "--tls-ca",
                              str(env.tmp / "junk.pem"))
    assert code != 0 and "not a PEM or DER certificate" in err
    assert not (env.out / "T341122100201-03").exists()
