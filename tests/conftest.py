"""Shared fixtures: a real Mosquitto on a free loopback port, the end-to-end rig on it, the pinned
micropython binary, a PostgreSQL cluster, and a store URL on each database (`url`: SQLite, then
PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pg
import pytest
from otahelp import Commands, Server

from tools.broker import Broker, free_port
from tools.envelope import KeyPair

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MICROPYTHON = str(VENV_BIN / "micropython") if (VENV_BIN / "micropython").exists() else "micropython"


__all__ = ["MICROPYTHON", "ROOT", "Broker", "free_port", "run_mpy"]

FIRST = ("test_e2e_ota_power.py", "test_cli_hostile.py")
"""The longest files (minutes each) start first, so that on two workers (scripts/test) neither
is left running alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda i: i.path.name not in FIRST)  # stable: the rest keep their order


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: Broker):
    """The end-to-end rig (keys, receipts, publisher) on this test's own broker; the terminals it
    started are stopped after the test. Files that need more override it."""
    from rig import Rig

    r = Rig(tmp_path, broker)
    yield r
    r.close()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


def mpy_helpers(d: Path, gate_ms: int, until_ms: int) -> str:
    """MicroPython lines for scripts that tests drive: `D` (the test's folder), `log` (a LOG line
    per event: event, reason, where), `signal(name)` (a file the test waits on), `gate(name)`
    (waits for a file the test makes), `until(cond)` (polls cond, returns its last value)."""
    return f"""
import asyncio, os
D = {str(d)!r}
def log(ev, **kw):
    print("LOG", ev, kw.get("reason", ""), kw.get("where", ""))
def signal(name):
    open(D + "/" + name, "w").close()
async def gate(name, ms={gate_ms}):
    while ms > 0:
        try:
            os.stat(D + "/" + name)
            return
        except OSError:
            await asyncio.sleep_ms(50)
            ms -= 50
    raise SystemExit("gate " + name + " timed out")
async def until(cond, ms={until_ms}):
    while not cond() and ms > 0:
        await asyncio.sleep_ms(20)
        ms -= 20
    return cond()
"""


def run_mpy(script: str, *, cwd: Path | None = None, path: list[Path] | None = None,
            heap: str = "1m", timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a MicroPython snippet with the given module search path (default: firmware/)."""
    paths = path if path is not None else [ROOT / "firmware", ROOT / "hardware"]
    e = dict(os.environ)
    e["MICROPYPATH"] = ":".join([".frozen"] + [str(p) for p in paths])
    if env:
        e.update(env)
    return subprocess.run(
        [MICROPYTHON, "-X", f"heapsize={heap}", "-c", script],
        check=False, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[pg.PgCluster]:
    if not pg.available():
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap installs it)")
    c = pg.PgCluster()
    yield c
    c.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh fleet database: a SQLite file, then a PostgreSQL database in `cluster`."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    c: pg.PgCluster = request.getfixturevalue("cluster")
    return c.create_db(f"t{abs(hash(str(tmp_path))) % 10**9}")


@pytest.fixture
def browser():
    """Opens headless Chromiums (tests/browser.py): `browser()` a phone, `browser(DESKTOP)` a
    laptop; all are closed after the test. Skipped where Chromium is not installed, except in CI."""
    import browser as b

    if not b.available():
        if os.environ.get("CI"):
            pytest.fail(f"{b.CHROMIUM} or {b.CHROMEDRIVER} missing (scripts/bootstrap installs them)")
        pytest.skip("chromium / chromium-driver not installed (scripts/bootstrap installs them)")
    opened: list[b.Browser] = []

    def open_(screen: b.Screen = b.PHONE, lang: str = "zh-CN") -> b.Browser:
        opened.append(b.Browser(screen, lang))
        return opened[-1]

    yield open_
    for x in opened:
        x.close()


@pytest.fixture
def ota_key():
    """A county key for releases only (use ota), made at test time."""
    return KeyPair.generate("root", "county-ota", ["341122"], ["ota"])


@pytest.fixture
def server():
    """A release file server on loopback (tests/otahelp.py)."""
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cmds(broker):
    """The fleet's side of device commands on the test broker (tests/otahelp.py)."""
    c = Commands(broker.host, broker.port)
    yield c
    c.close()


@pytest.fixture
def small_flash(rig) -> Iterator[Path]:
    """t1's flash folder as a filesystem of its own (a 4 MiB tmpfs, the size of the reference
    board's data partition order): free space and ENOSPC as a real flash gives them. The
    emulator's flash is a host folder; mounting needs root, so elsewhere the test is skipped."""
    fl = rig.tmp / "t1" / "flash"
    fl.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fl)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small flash here: {r.stderr.strip()}")
    try:
        yield fl
    finally:
        for t in rig.terms:
            t.stop()
        subprocess.run(["umount", "-l", str(fl)], check=False)


def fill(fl: Path, leave: int = 0) -> Path:
    """Take every free byte of the flash `fl` but `leave`; returns the filler file."""
    p = fl / "filler.bin"
    with open(p, "ab", buffering=0) as out:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    out.write(b"\xff" * size)
            except OSError:
                pass
    assert os.statvfs(fl).f_bavail == 0, "the flash is full"
    if leave:
        os.truncate(p, os.path.getsize(p) - leave)
    return p
