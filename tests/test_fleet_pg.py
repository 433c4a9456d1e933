"""`cx fleet serve` on a real PostgreSQL: two instances share the load through `$share/fleet`
with no heartbeat counted twice and none lost across restarts (graceful and killed); a database
unreachable at start or mid-run costs a one-line error and retries, never a message."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pg
import pytest

from fleet.sim import ServeProcess, publish_heartbeats
from fleet.store import Store

DEVICES = [f"T341122100{n:03d}-01" for n in range(1, 51)]


def provision(url: str, devices: list[str]) -> None:
    s = Store.open(url)
    s.upsert_devices([(d, d[1:13], "horn") for d in devices])
    s.close()


def count(url: str) -> int:
    s = Store.open(url)
    try:
        return s.history_count()
    finally:
        s.close()


def wait_count(url: str, want: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        n = count(url)
        if n >= want:
            break
        time.sleep(0.2)
    assert n == want, f"{n} heartbeats stored, {want} sent"


def stored_by(out: str) -> int:
    m = re.findall(r"stopped: \d+ messages stored \((\d+) heartbeats", out)
    assert m, out
    return int(m[-1])


def test_two_instances_share_the_load_none_twice_none_lost_across_restarts(
        cluster: pg.PgCluster, broker: Any, tmp_path: Path) -> None:
    url = cluster.create_db("share")
    provision(url, DEVICES)

    def serve(name: str) -> ServeProcess:
        p = ServeProcess(url, broker.address, name, str(tmp_path / f"{name}.log"))
        p.wait_for("connected to broker", count=1)
        p.wait_for("storing into postgresql")
        return p

    a, b = serve("a"), serve("b")
    rounds, sent = 10, 0
    sent += publish_heartbeats(broker.host, broker.port, DEVICES, rounds, qos=1, t0=1000)
    wait_count(url, sent)
    share_a = stored_by(a.stop())
    assert 0 < share_a < sent, f"instance a stored {share_a} of {sent}: no sharing"

    # a is down: its share waits in its session (or goes to b); a comes back and catches up.
    sent += publish_heartbeats(broker.host, broker.port, DEVICES, rounds, qos=1, t0=2000)
    a = serve("a")
    wait_count(url, sent)

    # b is killed mid-stream: whatever it stored but had not acknowledged comes back to it
    # after the restart and must not be counted twice; nothing it had not stored is lost.
    pub = threading.Thread(target=lambda: publish_heartbeats(
        broker.host, broker.port, DEVICES, rounds, qos=1, t0=3000))
    pub.start()
    time.sleep(0.05)
    b.stop(signal.SIGKILL)
    pub.join()
    sent += rounds * len(DEVICES)
    b = serve("b")
    wait_count(url, sent)
    time.sleep(0.5)
    assert count(url) == sent
    for p in (a, b):
        assert "Traceback" not in p.stop()


def test_database_unreachable_at_start_and_mid_run_then_catch_up(broker: Any,
                                                                  tmp_path: Path) -> None:
    if not pg.available():
        pytest.skip("PostgreSQL is not installed")
    c = pg.PgCluster()
    try:
        url = c.url
        provision(url, DEVICES[:5])
        c.stop()
        svc = ServeProcess(url, broker.address, "late", str(tmp_path / "late.log"))
        svc.wait_for("connected to broker")
        out = svc.wait_for("retrying in")
        line = next(x for x in out.splitlines() if "retrying in" in x)
        assert "unreachable" in line and "Traceback" not in out
        sent = publish_heartbeats(broker.host, broker.port, DEVICES[:5], 10, qos=1, t0=100)
        time.sleep(1.0)
        c.start()
        wait_count(url, sent)

        # Mid-run: the database goes away, messages keep coming, nothing is acknowledged
        # until it is stored, and the service catches up when the database returns.
        c.stop()
        sent += publish_heartbeats(broker.host, broker.port, DEVICES[:5], 10, qos=1, t0=200)
        svc.wait_for("not acknowledged; reconnecting")
        time.sleep(1.0)
        c.start()
        wait_count(url, sent)
        out = svc.stop()
        assert "Traceback" not in out and svc.proc.returncode == 0
    finally:
        c.destroy()
