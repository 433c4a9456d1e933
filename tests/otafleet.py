"""Helpers of the fleet OTA tests: release folders as `cx ota build` makes them (any bytes, a
manifest that is a compact JWS with an unsigned payload: the fleet never verifies it), fake
terminals and the wait-for-a-state helper."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REGION = "341122100201"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_release(folder: Path, version: str, files: dict[str, bytes] | None = None,
                 regions: list[str] | None = None) -> Path:
    files = files if files is not None else {"terminal.mpy": version.encode() * 300,
                                             "alert.mpy": b"alert module " * 50}
    regions = regions or ["341122000000"]
    (folder / "files").mkdir(parents=True, exist_ok=True)
    entries, zb = [], 0
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        z = zlib.compress(data)
        (folder / "files" / f"{sha}.z").write_bytes(z)
        entries.append({"path": path, "bytes": len(data), "sha256": sha, "zbytes": len(z)})
        zb += len(z)
    payload = {"product": "cunxiang-terminal", "version": version, "issued": 1795975000,
               "regions": regions, "files": [{k: e[k] for k in ("path", "bytes", "sha256")}
                                             for e in entries]}
    header = {"alg": "EdDSA", "typ": "eb-ota", "kid": "ota-test"}
    jws = ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                    b64(b"\0" * 64)))
    (folder / "manifest.jws").write_text(jws)
    (folder / "release.json").write_text(json.dumps(
        {"version": version, "min_version": None, "regions": regions, "issued": 1795975000,
         "kid": "ota-test", "files": entries, "zbytes": zb}))
    return folder


def until(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what} (last {last!r})")
