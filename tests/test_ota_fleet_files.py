"""`cx ota upload` and the OTA file server: a release recorded in the database and its files
copied into the content-addressed folder; `GET /<sha256>.z` over real HTTP on loopback with
resume by Range (206), 416 beyond the end, 404 for unknown names and every traversal attempt,
and a bounded number of connections."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from otafleet import make_release

from fleet import ota
from fleet.ota_http import FileServer
from fleet.store import Store

CX = str(Path(sys.executable).parent / "cx")


def cx(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *argv], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp_path = tmp_path_factory.mktemp("upload")
    rel = make_release(tmp_path / "rel", "1.2.0")
    db, files = tmp_path / "fleet.sqlite", tmp_path / "store"
    r = cx("ota", "upload", str(rel), "--db", str(db), "--store", str(files), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["version"], out["new"], out["files"], out["new_files"]) == ("1.2.0", True, 2, 2)
    return rel, files, str(db)


@pytest.fixture(scope="module")
def server(uploaded: tuple[Path, Path, str]) -> Iterator[FileServer]:
    s = FileServer(uploaded[1], "127.0.0.1", 0, max_connections=4).start()
    yield s
    s.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_upload_records_the_release_and_is_idempotent(uploaded: tuple[Path, Path, str]) -> None:
    rel, files, db = uploaded
    meta = json.loads((rel / "release.json").read_text())
    assert sorted(p.name for p in files.iterdir()) == sorted(f"{f['sha256']}.z"
                                                             for f in meta["files"])
    s = Store.open(db)
    try:
        got = s.release("1.2.0")
    finally:
        s.close()
    assert got.manifest == (rel / "manifest.jws").read_text()
    assert got.regions == ["341122000000"] and len(got.files) == 2
    again = cx("ota", "upload", str(rel), "--db", db, "--store", str(files), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["new"] is False


def test_upload_refuses_a_damaged_release_and_another_build_of_a_version(
        tmp_path: Path, uploaded: tuple[Path, Path, str]) -> None:
    _, files, db = uploaded
    bad = make_release(tmp_path / "bad", "1.3.0")
    victim = next((bad / "files").iterdir())
    victim.write_bytes(zlib.compress(b"something else"))
    r = cx("ota", "upload", str(bad), "--db", db, "--store", str(files))
    assert r.returncode == 1 and "damaged" in r.stderr and len(r.stderr.splitlines()) == 1
    other = make_release(tmp_path / "other", "1.2.0", {"x.mpy": b"another build"})
    r = cx("ota", "upload", str(other), "--db", db, "--store", str(files))
    assert r.returncode == 1 and "another release 1.2.0" in r.stderr
    r = cx("ota", "upload", str(tmp_path), "--db", db, "--store", str(files))
    assert r.returncode == 1 and "not a release directory" in r.stderr


def test_a_file_whole_then_resumed_with_range(uploaded: tuple[Path, Path, str],
                                              server: FileServer) -> None:
    rel, files, _ = uploaded
    f = ota.read_release(rel).files[0]
    z = (files / f"{f['sha256']}.z").read_bytes()
    code, h, body = get(server.port, f"/{f['sha256']}.z")
    assert (code, body, h["content-length"]) == (200, z, str(len(z)))
    assert hashlib.sha256(zlib.decompress(body)).hexdigest() == f["sha256"]
    cut = len(z) // 3
    code, h, rest = get(server.port, f"/{f['sha256']}.z", {"Range": f"bytes={cut}-"})
    assert code == 206 and h["content-range"] == f"bytes {cut}-{len(z) - 1}/{len(z)}"
    assert body[:cut] + rest == z
    code, h, _ = get(server.port, f"/{f['sha256']}.z", {"Range": f"bytes={len(z)}-"})
    assert code == 416 and h["content-range"] == f"bytes */{len(z)}"
    code, _, whole = get(server.port, f"/{f['sha256']}.z", {"Range": "lines=1-"})
    assert (code, whole) == (200, z)  # a Range it does not know: the whole file


@pytest.mark.parametrize("path", [
    "/" + "0" * 64 + ".z",  # unknown
    "/../fleet.sqlite", "/..%2Ffleet.sqlite", "/%2e%2e/fleet.sqlite", "/etc/passwd",
    "//etc/passwd", "/" + "A" * 64 + ".z", "/x/../" + "0" * 64 + ".z", "/", "/.hidden.z.tmp",
])
def test_unknown_names_and_traversal_are_404(server: FileServer, path: str) -> None:
    code, _, body = get(server.port, path)
    assert code == 404 and b"not found" in body


def test_connections_beyond_the_bound_are_turned_away(server: FileServer) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port), 5) for _ in range(4)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), 5)
        extra.settimeout(5)
        assert extra.recv(100).startswith(b"HTTP/1.0 503")
        extra.close()
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while True:  # the slots come back once those connections are closed
        try:
            assert get(server.port, "/" + "0" * 64 + ".z")[0] == 404
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_server_counts_the_downloads_under_way_and_their_peak(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    name = "ab" * 32
    (tmp_path / f"{name}.z").write_bytes(b"\x00" * (16 << 20))  # far more than socket buffers
    s = FileServer(tmp_path, "127.0.0.1", 0).start()
    readers = []
    try:
        for _ in range(3):  # three readers that take the headers and stop reading
            c = socket.create_connection(("127.0.0.1", s.port), 5)
            c.sendall(f"GET /{name}.z HTTP/1.0\r\n\r\n".encode())
            assert c.recv(12) == b"HTTP/1.0 200"
            readers.append(c)

        def settle(n: int) -> None:
            deadline = time.monotonic() + 10
            while s.inflight != n and time.monotonic() < deadline:
                time.sleep(0.02)

        settle(3)
        assert (s.inflight, s.peak) == (3, 3)
        assert get(s.port, "/" + "0" * 64 + ".z")[0] == 404  # not a download
        assert (s.inflight, s.peak) == (3, 3)
        for c in readers:
            c.close()
        settle(0)
        assert (s.inflight, s.peak) == (0, 3)  # a reader gone ends its download
        assert "Traceback" not in capfd.readouterr().err  # and is not a traceback in the log
    finally:
        for c in readers:
            c.close()
        s.stop()
