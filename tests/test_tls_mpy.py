"""firmware/tlsstream.py on the MicroPython unix port (mbedTLS) against a CPython TLS server on
loopback: the broker's certificate is verified against the CA and the dialled name, and each
failure has its reason code (docs/link.md "TLS")."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from conftest import run_mpy
from tlscerts import Ca

SCRIPT = """
import asyncio, gc, json
import tlsstream
async def main():
    out = {}
    try:
        ctx = tlsstream.context(open(%(ca)r, "rb").read())
    except tlsstream.TLSError as e:
        print(json.dumps({"error": e.reason})); return
    gc.collect()
    free0 = gc.mem_free()
    r, w = await asyncio.open_connection("127.0.0.1", %(port)d)
    logged = []
    r, w = tlsstream.wrap(ctx, r, w, %(host)r, lambda ev, **kw: logged.append((ev, kw)), "ip")
    w.write(b"x" * 3000)  # more than one ciphertext read; the handshake runs in drain()
    try:
        await w.drain()
    except tlsstream.TLSError as e:
        print(json.dumps({"error": e.reason, "detail": e.detail, "logged": logged})); return
    out["handshake_bytes"] = free0 - gc.mem_free()
    got = b""
    while len(got) < 3005:
        d = await r.read(4096)
        if not d:
            break
        got += d
    out["echo"] = len(got)
    out["head"] = got[:5].decode()
    w.close()
    await w.wait_closed()
    print(json.dumps(out))
asyncio.run(main())
"""


class Server:
    """A TLS echo server ("echo" + what it received, 3000 bytes) on a free loopback port."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(10)
            try:
                with self.ctx.wrap_socket(c, server_side=True) as t:
                    got = b""
                    while len(got) < 3000:
                        d = t.recv(4096)
                        if not d:
                            break
                        got += d
                    t.sendall(b"echo:" + got)
            except (OSError, ssl.SSLError):
                c.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make()


def run(tmp: Path, ca_der: bytes, server: Server, host: str = "127.0.0.1") -> dict:
    (tmp / "ca.der").write_bytes(ca_der)
    r = run_mpy(SCRIPT % {"ca": str(tmp / "ca.der"), "port": server.port, "host": host},
                timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_verified_session_carries_bytes_both_ways(tmp_path: Path, ca: Ca) -> None:
    srv = Server(*ca.server(tmp_path))
    try:
        out = run(tmp_path, ca.der(), srv)
        assert out["echo"] == 3005 and out["head"] == "echo:"
        out = run(tmp_path, ca.der(), srv, host="localhost")  # a DNS name in the certificate
        assert out["echo"] == 3005
    finally:
        srv.close()


def test_broker_signed_by_another_ca_is_refused_untrusted(tmp_path: Path, ca: Ca) -> None:
    srv = Server(*Ca.make("someone else").server(tmp_path))
    try:
        out = run(tmp_path, ca.der(), srv)
        assert out["error"] == "cert_untrusted", out
        assert out["logged"] == [["tls_fail", {"path": "ip", "reason": "cert_untrusted",
                                               "detail": out["detail"]}]]
    finally:
        srv.close()


def test_certificate_for_another_host_is_refused_wrong_host(tmp_path: Path, ca: Ca) -> None:
    srv = Server(*ca.server(tmp_path, names=("mqtt.other.example",)))
    try:
        out = run(tmp_path, ca.der(), srv)
        assert out["error"] == "cert_wrong_host", out
    finally:
        srv.close()


def test_expired_broker_certificate_is_refused_expired(tmp_path: Path, ca: Ca) -> None:
    srv = Server(*ca.server(tmp_path, valid_days=-1))
    try:
        out = run(tmp_path, ca.der(), srv)
        assert out["error"] == "cert_expired", out
    finally:
        srv.close()


def test_ca_file_that_is_not_a_der_certificate_is_ca_invalid(tmp_path: Path, ca: Ca) -> None:
    srv = Server(*ca.server(tmp_path))
    try:
        assert run(tmp_path, b"not a certificate", srv)["error"] == "ca_invalid"
        # PEM is not read by this mbedTLS build: provisioning converts to DER
        assert run(tmp_path, ca.pem(), srv)["error"] == "ca_invalid"
    finally:
        srv.close()


CONFIG = """
import json, config
base = {"id": "T1", "region": "341122100201", "trust": [],
        "mqtt": {"host": "mqtt.example", "port": 8883}}
for tls in json.loads(%r):
    c = json.loads(json.dumps(base))
    c["mqtt"].update(tls)
    try:
        config.validate(c)
        print("ok")
    except config.ConfigError as e:
        print(e.reason)
"""


def test_config_tls_needs_a_plain_ca_file_name_and_old_configs_stay_valid() -> None:
    cases = [{}, {"tls": False}, {"tls": True, "ca": "ca.der"}, {"tls": "yes", "ca": "ca.der"},
             {"tls": True}, {"tls": True, "ca": ""}, {"tls": True, "ca": "../ca.der"},
             {"tls": True, "ca": ".ca"}, {"tls": True, "ca": 7}, {"tls": True, "ca": "c" * 33}]
    r = run_mpy(CONFIG % json.dumps(cases))
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.splitlines() == ["ok", "ok", "ok", "mqtt tls", "mqtt ca", "mqtt ca", "mqtt ca",
                                "mqtt ca", "mqtt ca", "mqtt ca"]
