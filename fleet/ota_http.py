"""The OTA file server (ota.md §2): `GET /<sha256>.z` from the content-addressed folder that
`cx ota upload` fills, with `Range: bytes=N-` (206 and Content-Range; 416 beyond the end) so a
terminal resumes a cut download. HTTP/1.0, one request per connection, a thread per connection
and at most `max_connections` at once (more are answered 503 at once and closed).

Only names of 64 lowercase hex digits and `.z` are served: nothing else of the folder (and no
path with a `/`, `..` or `%`) can ever be reached.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"/([0-9a-f]{64})\.z\Z")
RANGE_RE = re.compile(r"bytes=(\d{1,15})-(\d{0,15})\Z")
MAX_CONNECTIONS = 64
TIMEOUT = 30.0
"""Seconds a connection may stay silent (request line, headers, or a reader that stopped)."""
CHUNK = 16384


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "cx-ota"
    sys_version = ""
    timeout = TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the service log

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _plain(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        data = (text + "\n").encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _serve(self, body: bool) -> None:
        m = NAME_RE.match(self.path.split("?", 1)[0])
        if m is None:
            self._plain(404, "not found")
            return
        server = self.server
        assert isinstance(server, FileServer)
        path = server.folder / f"{m[1]}.z"
        try:
            f = open(path, "rb")
        except OSError:
            self._plain(404, "not found")
            return
        with f:
            size = path.stat().st_size
            start, end = 0, size - 1
            partial = False
            rng = (self.headers.get("Range") or "").strip()
            r = RANGE_RE.match(rng)
            if r is not None:  # another form of Range is ignored: the whole file (RFC 9110)
                start = int(r[1])
                end = min(int(r[2]), size - 1) if r[2] else size - 1
                if start >= size or end < start:
                    self._plain(416, "range not satisfiable",
                                {"Content-Range": f"bytes */{size}"})
                    return
                partial = True
            length = end - start + 1
            self.send_response(206 if partial else 200)
            self.send_header("Content-Type", "application/zlib")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            f.seek(start)
            server.downloads(1)
            try:
                while length > 0:
                    chunk = f.read(min(CHUNK, length))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    length -= len(chunk)
            finally:
                server.downloads(-1)
        server.served += 1


class FileServer(ThreadingHTTPServer):
    """Serves `folder` on (host, port); `start()` runs it on a thread, `stop()` ends it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, folder: Path, host: str, port: int, *,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.folder = Path(folder)
        self.served = 0
        self.refused = 0
        self.inflight = 0
        """File bodies being sent now (a GET answered 200 or 206, until its last byte or error)."""
        self.peak = 0
        """The most `inflight` ever was: what `--max-parallel` bounds (bench_ota_rollout.py)."""
        self._count = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), _Handler)

    def downloads(self, delta: int) -> None:
        with self._count:
            self.inflight += delta
            self.peak = max(self.peak, self.inflight)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 5\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(TIMEOUT)
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a terminal whose link dropped mid-file: it resumes with Range, no traceback
        super().handle_error(request, client_address)

    def start(self) -> FileServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="cx-ota-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)
