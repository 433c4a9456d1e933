"""OTA test helpers: releases built from this checkout (some modules replaced), a file server with
Range that can lie, stall or count, and the `ota` command sent as the fleet would (ota.md §2)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tools import release, terminal_files
from tools.envelope import KeyPair


def build(out: Path, key: KeyPair, version: str, replace: dict[str, str] | None = None,
          regions: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    """A release of this checkout in `out` (manifest.jws, files/, release.json), with the sources
    named in `replace` (flash name -> source text) swapped in; returns release.json."""
    out.mkdir(parents=True, exist_ok=True)
    sources = []
    for src, name in terminal_files.release_files():
        if replace and name in replace:
            p = out.parent / f"{out.name}-src" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(replace[name])
            src = p
        sources.append((src, name))
    now = int(time.time())
    jws, blobs, summary = release.build(sources, key, version=version,
                                        regions_=regions or ["341122000000"], issued=now,
                                        now=now, **kw)
    release.write(out, jws, blobs, summary)
    return summary


class Server:
    """Serves DIR/files/<sha>.z for each release folder added, with Range (206). `corrupt`: shas
    whose body is served with a byte flipped; `cut_after`: close each body after that many bytes
    while set; `requests`: (path, range start) of every GET. Bad servers, per sha: `truncate`
    (sha -> n: Content-Length says the whole file, then n bytes of it and the connection closes,
    every time), `oversize` (a valid zlib stream of the file plus bytes the manifest does not
    have), `tail` (sha -> n: the true body then n junk bytes, no Content-Length), `garble`
    (random bytes, no zlib at all). For every file: `stall` (headers, then silence until
    cleared), `cut_first` (sha -> n: that file's first GET closed after n bytes), `lie` ("start":
    a Range request answered 206 from byte 0 with a Content-Range that says so; "whole": 200 and
    the whole body)."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.corrupt: set[str] = set()
        self.cut_after: int | None = None
        self.rate: int | None = None  # bytes per second while set (a slow line)
        self.requests: list[tuple[str, int]] = []
        self.truncate: dict[str, int] = {}
        self.oversize: set[str] = set()
        self.tail: dict[str, int] = {}
        self.garble: set[str] = set()
        self.stall = threading.Event()  # set: stall every GET after its headers
        self.cut_first: dict[str, int] = {}
        self.lie: str | None = None
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                first = not any(n == name for n, _ in srv.requests)
                srv.requests.append((name, start))
                body = srv.body(name)
                if body is None:
                    self.send_error(404)
                    return
                sha = name.removesuffix(".z")
                if start and srv.lie is not None:
                    start = self.lie(body, srv.lie)
                elif start >= len(body) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                else:
                    self.send_response(206 if start else 200)
                    if start:
                        self.send_header("Content-Range",
                                         f"bytes {start}-{len(body) - 1}/{len(body)}")
                    if sha not in srv.tail:
                        self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.flush()
                if srv.stall.is_set():
                    while srv.stall.is_set() and not srv.closed.is_set():
                        time.sleep(0.1)
                    return
                data = body[start:]
                if srv.cut_after is not None:
                    data = data[:srv.cut_after]
                if sha in srv.cut_first and first:
                    data = data[:srv.cut_first[sha]]
                if sha in srv.truncate:
                    data = body[:srv.truncate[sha]][start:]
                step = 512
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    if srv.rate:
                        time.sleep(step / srv.rate)

            def lie(self, body: bytes, how: str) -> int:
                # a Range request answered as if it had asked for byte 0: returns where it starts
                if how == "start":
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                return 0

        self.closed = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/ota"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def body(self, name: str) -> bytes | None:
        sha = name.removesuffix(".z")
        for d in self.dirs:
            p = d / "files" / name
            if p.exists():
                data = p.read_bytes()
                if sha in self.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                if sha in self.oversize:
                    data = zlib.compress(zlib.decompress(data) + b"# more than the manifest says\n")
                if sha in self.tail:
                    data += b"\x00" * self.tail[sha]
                if sha in self.garble:
                    data = hashlib.sha256(data).digest() * (len(data) // 32 + 1)
                return data
        return None

    def fetched(self) -> list[str]:
        return [n for n, start in self.requests if start == 0]

    def close(self) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Commands:
    """The fleet's side of device commands: publish on eb/dev/<id>/cmd, wait for the ack."""

    def __init__(self, host: str, port: int) -> None:
        self.acks: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid.uuid4().hex}")
        self.c.on_message = self._on
        self.c.connect(host, port)
        self.c.subscribe("eb/dev/+/ack", 1)
        self.c.loop_start()

    def _on(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        a = json.loads(msg.payload)
        with self.cond:
            self.acks[a.get("cid")] = a
            self.cond.notify_all()

    def send(self, dev: str, op: str, args: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        cid = uuid.uuid4().hex[:12]
        self.c.publish(f"eb/dev/{dev}/cmd", json.dumps({"cid": cid, "op": op, "args": args}),
                       qos=1).wait_for_publish(5)
        deadline = time.monotonic() + timeout
        with self.cond:
            while cid not in self.acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no ack for {op} within {timeout}s")
                self.cond.wait(left)
            return self.acks[cid]

    def ota(self, dev: str, rel: Path, base: str) -> dict[str, Any]:
        m = (rel / "manifest.jws").read_text().strip()
        return self.send(dev, "ota", {"manifest": m, "base": base})

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def terminal(rig: Any, key: KeyPair, **cfg: Any) -> Any:
    """The rig's terminal t1 trusting the rig's alert root and `key` for OTA."""
    cfg.setdefault("ota_trial_s", 30)
    return rig.terminal("t1", trust=[rig.root.anchor(), key.anchor()], **cfg)


def boots(t: Any) -> list[dict[str, Any]]:
    return [e["value"] for e in t.events() if e["dev"] == "boot"]


def sounds(rig: Any, t: Any) -> None:
    """A valid alert plays to its end on `t` (the version running now)."""
    rig.wait_answering(t.id, t.cfg["region"])
    p = rig.send_alert(kind="test", level=4, tone="chime")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["_dev"] == t.id
                and r["status"] == "done", 30)
