"""Every `cx` command, as a clumsy admin or a hostile script runs it: an unknown flag, a folder or
file that cannot be used, and a stdout nobody reads (`cx fleet report | head -1`). Each ends in
one line on stderr (none for the closed stdout) and a non-zero exit, never a traceback.

The commands come from the parser itself (cx.main.commands), so a new one is covered the day it
is added: the unknown flag and the closed stdout with `--help` need nothing; a command with a
--dir/--out/--db option must say in PATHS how to hand it a bad one, or in SKIP_PATHS why not.
All runs are subprocesses, started together on a few threads before the first check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cx.common import ExitCode
from cx.main import build_parser, commands
from tools.broker import Broker, free_port

CX = str(Path(sys.executable).parent / "cx")
ROOT = Path(__file__).resolve().parent.parent
REGION = "341122100201"
DEVICE = f"T{REGION}-01"
TIMEOUT = 30  # s per run: every case ends in well under a second or two
WORKERS = 4

LEAVES = {" ".join(path): parser for path, parser in commands(build_parser())}
PATH_DESTS = ("dir", "out", "db")  # options that name a folder or file the command writes
BAD_PATHS = {
    "under-proc": "/proc/cx-no-such-folder/x",  # cannot be created, not even by root
    "file": "{w}/a-file",  # an existing regular file where a folder or database is wanted
    "under-file": "{w}/a-file/sub",  # a path through a regular file (folders only: for a file
}                                    # it fails as under-proc does, on the folder above)
FOLDER_DESTS = ("dir", "out")

# Arguments that get each command past its required options (so the unknown flag is what fails)
# and, for those in PRINTS, a cheap run that prints on stdout. {w}: the world folder; {new}: a
# fresh path in it for every run; {closed}: a loopback port nobody listens on.
KEY = ["--key", "{w}/issuer.json"]
COUNTY = REGION[:6] + "000000"
PROGRAMME = ["--area", COUNTY, "--id", "p1", "--days", "1-5", "--start", "07:00", "--clip-url",
             "http://10.0.0.5/p1.wav", "--sha256", "ab" * 32, "--bytes", "32044"]
_TODAY = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))  # +08:00
PUSH = ["--area", COUNTY, "--key", "{w}/daily.json", "--from", _TODAY, "--until", _TODAY,
        "--clear"]
ARGS: dict[str, list[str]] = {
    "keys root": ["--kid", "r2", "--scope", "34", "--out", "{new}"],
    "keys issuer": ["--kid", "i2", "--root", "{w}/root.json", "--scope", "341122",
                    "--out", "{new}"],
    "keys anchors": ["{w}/root.json"],
    "keys show": ["{w}/issuer.json"],
    "alert send": [*KEY, "--regions", REGION, "--level", "2", "--tone", "siren", "--print"],
    "alert from-cap": ["{w}/drill.xml", *KEY, "--print"],
    "alert verify": ["{w}/envelope.txt", "--trust", "{w}/trust.json", "--region", REGION],
    "alert status": ["drill-1", "--db", "{w}/fleet.sqlite"],
    "ota build": ["--version", "1.0.0", "--regions", REGION, "--key", "{w}/ota.json",
                  "--out", "{new}"],
    "ota verify": ["{w}/envelope.txt", "--trust", "{w}/trust.json", "--running", "0.1.0",
                   "--region", REGION],
    "ota diff": ["{w}/old", "{w}/new"],
    "flash": ["/dev/ttyUSB0", "--config", f"{{w}}/prov/{DEVICE}/config.json", "--dry-run"],
    "emu run": ["--dir", "{new}", "--config", f"{{w}}/prov/{DEVICE}/config.json"],
    "emu ctl": ["{w}", "status"],
    "emu fleet": ["--count", "1", "--dir", "{new}", "--config-template",
                  f"{{w}}/prov/{DEVICE}/config.json"],
    "fleet serve": ["--broker", "127.0.0.1:{closed}", "--db", "{w}/fleet.sqlite"],
    "fleet devices": ["--db", "{w}/fleet.sqlite"],
    "fleet show": [DEVICE, "--db", "{w}/fleet.sqlite"],
    "fleet alarms": ["--db", "{w}/fleet.sqlite"],
    "fleet ack": ["1", "--db", "{w}/fleet.sqlite"],
    "fleet report": ["--db", "{w}/fleet.sqlite"],
    "fleet prune": ["--db", "{w}/fleet.sqlite", "--dry-run"],
    "fleet cmd": [DEVICE, "status", "--broker", "127.0.0.1:{closed}", "--wait", "1"],
    "fleet provision": ["T2", "--region", "341122100202", "--trust", "{w}/trust.json",
                        "--broker", "127.0.0.1:1883", "--db", "{new}", "--out", "{new}",
                        "--web-passwords", "{new}"],
    "fleet broker-config": ["--creds", "{w}/prov/credentials.json", "--out", "{new}"],
    "ota upload": ["{w}", "--db", "{w}/fleet.sqlite", "--store", "{new}"],
    "ota serve": ["--broker", "127.0.0.1:{closed}", "--db", "{w}/fleet.sqlite", "--store",
                  "{new}", "--http", "127.0.0.1:0"],
    "ota rollout": ["1.2.3", "--waves", "100%", "--db", "{w}/fleet.sqlite"],
    "ota status": ["--db", "{w}/fleet.sqlite"],
    "ota pause": ["1.2.3", "--db", "{w}/fleet.sqlite"],
    "ota resume": ["1.2.3", "--db", "{w}/fleet.sqlite"],
    "ota abort": ["1.2.3", "--db", "{w}/fleet.sqlite"],
    "broadcast schedule add": [*PROGRAMME, "--db", "{new}"],
    "broadcast schedule list": ["--db", "{w}/fleet.sqlite"],
    "broadcast schedule remove": ["--area", COUNTY, "--id", "p1", "--db", "{w}/fleet.sqlite"],
    "broadcast schedule push": [*PUSH, "--out", "{new}", "--db", "{w}/fleet.sqlite"],
    "broadcast schedule show": ["{w}/envelope.txt"],
    "broadcast status": ["cty/news", "--db", "{w}/fleet.sqlite"],
}
PRINTS = ("keys root", "keys issuer", "keys anchors", "keys show", "alert send",
          "alert from-cap", "alert verify", "alert status", "ota build", "ota verify", "flash",
          "fleet devices", "fleet show", "fleet alarms", "fleet report", "fleet prune", "fleet provision",
          "fleet broker-config", "broadcast schedule add", "broadcast schedule list",
          "broadcast schedule push", "broadcast schedule show")

# The bad path goes in as {bad}; {broker}: a live Mosquitto (an alert is recorded only once sent).
PATHS: dict[str, list[list[str]]] = {
    "keys root": [["--kid", "r3", "--scope", "34", "--out", "{bad}"]],
    "keys issuer": [["--kid", "i3", "--root", "{w}/root.json", "--scope", "341122",
                     "--out", "{bad}"]],
    "keys anchors": [["{w}/root.json", "--out", "{bad}"]],
    "alert send": [[*KEY, "--regions", REGION, "--level", "2", "--tone", "siren",
                    "--broker", "{broker}", "--timeout", "2", "--db", "{bad}"]],
    "alert from-cap": [["{w}/drill.xml", *KEY, "--broker", "{broker}", "--timeout", "2",
                        "--db", "{bad}"]],
    "alert status": [["drill-1", "--db", "{bad}"]],
    "ota build": [["--version", "1.0.0", "--regions", REGION, "--key", "{w}/ota.json",
                   "--out", "{bad}"]],
    "demo": [["--dir", "{bad}"]],
    "emu run": [["--dir", "{bad}", "--config", f"{{w}}/prov/{DEVICE}/config.json"]],
    "emu ctl": [["{bad}", "status"]],
    "emu fleet": [["--count", "1", "--dir", "{bad}", "--config-template",
                   f"{{w}}/prov/{DEVICE}/config.json"]],
    # a SQLite file that cannot be made is refused at start (a PostgreSQL outage is retried)
    "fleet serve": [["--broker", "127.0.0.1:{closed}", "--db", "{bad}"]],
    "fleet devices": [["--db", "{bad}"]],
    "fleet show": [[DEVICE, "--db", "{bad}"]],
    "fleet alarms": [["--db", "{bad}"]],
    "fleet ack": [["1", "--db", "{bad}"]],
    "fleet report": [["--db", "{bad}"]],
    "fleet prune": [["--db", "{bad}"]],
    "fleet cmd": [[DEVICE, "status", "--broker", "127.0.0.1:{closed}", "--wait", "1",
                   "--db", "{bad}"]],
    "fleet provision": [
        ["T3", "--region", "341122100203", "--trust", "{w}/trust.json", "--broker",
         "127.0.0.1:1883", "--db", "{new}", "--out", "{bad}", "--web-passwords", "{new}"],
        ["T3", "--region", "341122100203", "--trust", "{w}/trust.json", "--broker",
         "127.0.0.1:1883", "--db", "{bad}", "--out", "{new}", "--web-passwords", "{new}"],
        # the sheet of page passwords: never written over, never made under /proc
        ["T3", "--region", "341122100203", "--trust", "{w}/trust.json", "--broker",
         "127.0.0.1:1883", "--db", "{new}", "--out", "{new}", "--web-passwords", "{bad}"]],
    "fleet broker-config": [["--creds", "{w}/prov/credentials.json", "--out", "{bad}"]],
    "ota upload": [["{w}", "--db", "{bad}", "--store", "{new}"],
                   ["{w}", "--db", "{new}", "--store", "{bad}"]],
    "ota serve": [["--broker", "127.0.0.1:{closed}", "--db", "{bad}", "--store", "{new}",
                   "--http", "127.0.0.1:0"],
                  ["--broker", "127.0.0.1:{closed}", "--db", "{new}", "--store", "{bad}",
                   "--http", "127.0.0.1:0"]],
    "ota rollout": [["1.2.3", "--db", "{bad}"]],
    "ota status": [["--db", "{bad}"]],
    "ota pause": [["1.2.3", "--db", "{bad}"]],
    "ota resume": [["1.2.3", "--db", "{bad}"]],
    "ota abort": [["1.2.3", "--db", "{bad}"]],
    "broadcast schedule add": [[*PROGRAMME, "--db", "{bad}"]],
    "broadcast schedule list": [["--db", "{bad}"]],
    "broadcast schedule remove": [["--area", COUNTY, "--id", "p1", "--db", "{bad}"]],
    "broadcast schedule push": [[*PUSH, "--out", "{new}", "--db", "{bad}"],
                                [*PUSH, "--out", "{bad}", "--db", "{w}/fleet.sqlite"]],
    "broadcast status": [["cty/news", "--db", "{bad}"]],
}
SKIP_PATHS: dict[str, str] = {}


def _bad_path_cases() -> list[tuple[str, int, str]]:
    cases = []
    for name in LEAVES:
        if name not in PATHS:
            cases.append((name, 0, "none"))  # skipped, with the reason
        for i, argv in enumerate(PATHS.get(name, [])):
            at = argv.index("{bad}")
            folder = at == 0 or argv[at - 1].lstrip("-") in FOLDER_DESTS
            cases += [(name, i, kind) for kind in BAD_PATHS if folder or kind != "under-file"]
    return cases


def _closed_stdout_way(name: str) -> str:
    return "print" if name in PRINTS else "help"  # a real run that prints, else --help


SWEEPS = ("0", "-1", "nan", "1e999")  # issue 8: --sweep-every 0 spun the writer at 100 % CPU
CASES = ([("flag", name, "") for name in LEAVES]
         + [("sweep", "fleet serve", v) for v in SWEEPS]
         + [(_closed_stdout_way(name), name, "") for name in LEAVES]
         + [("path", name, f"{i}-{kind}") for name, i, kind in _bad_path_cases()
            if kind != "none"])


def _drill(w: Path) -> Path:
    """tests/cap/exercise-test.xml, sent now and valid for an hour."""
    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))

    now = time.time()
    text = (ROOT / "tests/cap/exercise-test.xml").read_text(encoding="utf-8")
    text = re.sub(r"<sent>.*?</sent>", f"<sent>{iso(now - 60)}</sent>", text)
    text = re.sub(r"<expires>.*?</expires>", f"<expires>{iso(now + 3600)}</expires>", text)
    (w / "drill.xml").write_text(text, encoding="utf-8")
    return w / "drill.xml"


def _world(w: Path) -> None:
    """Keys, trust anchors, an envelope, a CAP file, a provisioned terminal and a fleet store
    with a recorded alert: what the valid halves of the command lines name."""
    from fleet.store import Store
    from tools.envelope import KeyPair, make_alert_payload, sign_alert
    from tools.keys import new_issuer, save_keyfile

    now = int(time.time())
    root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
    issuer = new_issuer(root, "cty-341122", ["341122"], ["alert"], now - 300, now + 86400)
    save_keyfile(w / "root.json", root)
    save_keyfile(w / "issuer.json", issuer)
    save_keyfile(w / "ota.json", KeyPair.generate("root", "prov-34-ota", ["34"], ["ota"]))
    save_keyfile(w / "daily.json", KeyPair.generate("root", "cty-341122-daily", ["341122"],
                                                    ["daily"]))
    (w / "trust.json").write_text(json.dumps([root.anchor()]))
    (w / "envelope.txt").write_text(sign_alert(issuer, make_alert_payload(
        regions=[REGION], kind="alert", level=2, tone="siren")))
    _drill(w)
    (w / "a-file").write_text("not a folder, not a database\n")
    store = Store.open(str(w / "fleet.sqlite"))
    try:
        store.upsert_devices([(DEVICE, REGION, "horn")])
        store.record_alert("drill-1", issuer.kid, [REGION], now)
    finally:
        store.close()
    r = subprocess.run([CX, "fleet", "provision", DEVICE, "--region", REGION, "--trust",
                        str(w / "trust.json"), "--broker", "127.0.0.1:1883", "--db",
                        str(w / "prov.sqlite"), "--out", str(w / "prov"),
                        "--web-passwords", str(w / "prov-pages.csv")],
                       capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert r.returncode == 0, r.stderr


def _argv(case: tuple[str, str, str], w: Path, broker: str, closed: int) -> list[str]:
    way, name, variant = case
    counter = iter(range(100))

    def fill(arg: str, bad: str = "") -> str:
        if "{new}" in arg:
            arg = arg.replace("{new}", str(w / f"new-{way}-{name.replace(' ', '-')}-"
                                              f"{variant}-{next(counter)}"))
        return arg.format(w=w, bad=bad.format(w=w), broker=broker, closed=closed)

    path = name.split()
    if way == "flag":
        return [*path, "--no-such-flag", *(fill(a) for a in ARGS.get(name, []))]
    if way == "sweep":
        return [*path, *(fill(a) for a in ARGS[name]), "--sweep-every", variant]
    if way == "help":
        return [*path, "--help"]
    if way == "print":
        return [*path, *(fill(a) for a in ARGS[name])]
    i, kind = variant.split("-", 1)
    return [*path, *(fill(a, BAD_PATHS[kind]) for a in PATHS[name][int(i)])]


def _run(argv: list[str], w: Path, closed_stdout: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CX_FLEET_DB", "CX_BROKER", "CX_ALERT_CRED", "CX_FLEET_CRED")}
    read, write = os.pipe()
    os.close(read)  # nobody will ever read what is written to `write`
    try:
        return subprocess.run([CX, *argv], cwd=w, env=env, text=True, timeout=TIMEOUT,
                              stdout=write if closed_stdout else subprocess.PIPE,
                              stderr=subprocess.PIPE, check=False)
    except subprocess.TimeoutExpired:  # one failed case, not a broken fixture
        return subprocess.CompletedProcess([CX, *argv], -9, "", f"still running after "
                                           f"{TIMEOUT} s\n(killed)\n")
    finally:
        os.close(write)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[tuple[str, str, str], subprocess.CompletedProcess[str]]]:
    w = tmp_path_factory.mktemp("hostile")
    _world(w)
    broker = Broker(w / "broker")
    closed = free_port()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = {c: pool.submit(_run, _argv(c, w, broker.address, closed), w,
                                      c[0] in ("help", "print")) for c in CASES}
            yield {c: f.result() for c, f in futures.items()}
    finally:
        broker.stop()


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr + (r.stdout or ""), r.stderr
    assert r.returncode != 0, (r.args, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cx: "), (r.args, r.stderr)
    return lines[0]


@pytest.mark.parametrize("name", list(LEAVES))
def test_an_unknown_flag_is_one_line_naming_it(results, name: str) -> None:
    line = _one_line(results["flag", name, ""])
    assert results["flag", name, ""].returncode == 2
    if name in ARGS or not any(a.required for a in LEAVES[name]._actions):
        assert "--no-such-flag" in line, line


@pytest.mark.parametrize(("name", "variant"),
                         [(n, f"{i}-{k}") for n, i, k in _bad_path_cases()])
def test_a_folder_or_file_that_cannot_be_used_is_one_line_naming_it(results, name: str,
                                                                     variant: str) -> None:
    if name in SKIP_PATHS:
        pytest.skip(SKIP_PATHS[name])
    if name not in PATHS:
        dests = [a.dest for a in LEAVES[name]._actions if a.dest in PATH_DESTS]
        assert not dests, (f"cx {name} takes {', '.join(dests)}: say in PATHS how to give it "
                           "a bad one, or in SKIP_PATHS why not")
        pytest.skip("no folder, output or database option")
    r = results["path", name, variant]
    line = _one_line(r)
    bad = BAD_PATHS[variant.split("-", 1)[1]].format(w="")
    assert bad.lstrip("/") in line, line  # the message names the path


@pytest.mark.parametrize("name", list(LEAVES))
def test_a_closed_stdout_ends_quietly_with_its_own_exit_code(results, name: str) -> None:
    r = results[_closed_stdout_way(name), name, ""]
    assert "Traceback" not in r.stderr
    assert (r.returncode, r.stderr) == (ExitCode.CLOSED_STDOUT, ""), \
        (r.args, r.returncode, r.stderr)


@pytest.mark.parametrize("value", SWEEPS)
def test_a_sweep_interval_out_of_range_is_refused_before_serving(results, value: str) -> None:
    line = _one_line(results["sweep", "fleet serve", value])
    assert results["sweep", "fleet serve", value].returncode == 2
    assert f"argument --sweep-every: must be a number from 0.1 to 3600, got '{value}'" in line


def _numeric_options() -> list[tuple[str, argparse.Action]]:
    from cx import alert_verify  # `cx alert verify` hands its arguments to its own parser

    parsers = {**LEAVES, "alert verify": alert_verify.build_parser()}
    return [(name, a) for name, p in parsers.items() for a in p._actions
            if a.type in (int, float) or getattr(a.type, "__qualname__", "") ==
            "number.<locals>.parse"]


def test_every_numeric_option_is_range_checked_by_the_one_helper() -> None:
    options = _numeric_options()
    assert len(options) > 20  # the walk found them
    bare = [f"cx {name} {'/'.join(a.option_strings) or a.dest}" for name, a in options
            if a.type in (int, float)]
    assert not bare, f"type=int/float instead of cx.common.number(...): {bare}"


@pytest.mark.parametrize(("name", "option"),
                         [(n, "/".join(a.option_strings) or a.dest) for n, a in _numeric_options()])
def test_a_numeric_option_refuses_what_is_not_a_number_in_its_range(name: str,
                                                                     option: str) -> None:
    action = next(a for n, a in _numeric_options()
                  if n == name and ("/".join(a.option_strings) or a.dest) == option)
    assert callable(action.type)
    for text in ("", "x", "nan", "inf", "-1e999", "9" * 5000):
        with pytest.raises(argparse.ArgumentTypeError, match="must be "):
            action.type(text)
    if isinstance(action.default, str):  # argparse parses a text default with the same type
        action.type(action.default)


def test_the_tables_name_only_real_commands() -> None:
    assert set(PRINTS) <= set(ARGS) <= set(LEAVES), set(ARGS) - set(LEAVES)
