"""The terminal's own code on the host, instead of copies: its plain rule modules loaded into
CPython as they are (no `machine`, no `micropython`: firmware/limits.py, firmware/region.py), and
anything else run under the pinned MicroPython unix port by a small driver script (`run`: the
verifier of `cx alert verify`, the config check of `cx flash` and `cx emu`)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
AGENT = FIRMWARE.parent / "agent"  # flashed beside firmware/ (the agent, the OTA rules)
_LOADED: dict[str, ModuleType] = {}
HEAP = "1m"  # hardware/README.md: the reference board's heap
TIMEOUT = 60.0  # s for a whole micropython run (start-up ~100 ms)
RESULT = "result.json"
"""What a driver writes in its folder: a JSON object, {"error": text} when it failed."""


class FirmwareError(Exception):
    """The firmware could not be run, or its driver failed: one line."""


class NoMicroPython(FirmwareError):
    """No micropython binary to run (scripts/bootstrap installs the pinned one in .venv)."""


def load(name: str) -> ModuleType:
    """firmware/<name>.py as a module of its own (cached); ImportError when it cannot be read."""
    mod = _LOADED.get(name)
    if mod is None:
        path = FIRMWARE / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"cunxiang_firmware_{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the terminal's {name} from {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _LOADED[name] = mod
    return mod


def micropython_bin() -> str:
    """The pinned MicroPython unix port: .venv/bin/micropython, else one on PATH."""
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise NoMicroPython("micropython not found: run scripts/bootstrap")
    return found


# Every driver ends the same way: its run() result, or the error, as result.json.
HELPERS = r'''
# Shared by the host's drivers (tools/alertverify.py, tools/release.py): appended by run().
import b64 as _h_b64
import json as _h_json


class FixedClock:
    # all a verifier needs of clock.Clock (clock.py itself needs board): a fixed time
    def __init__(self, t, synced=True):
        self.t = t
        self.synced = synced

    def now(self):
        return self.t


def load(name, mode):
    f = open(name, mode)
    try:
        return f.read()
    finally:
        f.close()


def read_request():
    # request.json, and the terminal config in it judged by config.validate as a freshly flashed
    # terminal would: (request, config, None), or (request, None, the ConfigError reason)
    import config

    req = _h_json.loads(load("request.json", "r"))
    try:
        return req, config.validate(req["config"]), None
    except config.ConfigError as e:
        return req, None, e.reason


def part(token, i):
    # part i of a compact JWS as a JSON object, for display only (never for a decision)
    try:
        v = _h_json.loads(_h_b64.decode(token.split(b".")[i]))
        return v if isinstance(v, dict) else None
    except Exception:
        return None
'''
"""MicroPython helpers every driver may use (FixedClock, load, read_request, part): run() puts
them before the driver's run() is called."""

_EPILOGUE = """

import json as _json

try:
    _res = run()
except Exception as _e:  # MemoryError included: report it, never a bare traceback
    _res = {"error": repr(_e)}
_f = open("result.json", "w")
_f.write(_json.dumps(_res))
_f.close()
"""


def run(driver: str, files: dict[str, str | bytes], what: str = "the firmware",
        timeout: float = TIMEOUT) -> tuple[dict, str]:
    """Run `driver` (MicroPython source defining `run()` -> a JSON-able dict) in a fresh
    temporary folder holding `files`, with firmware/ and agent/ on MICROPYPATH (after .frozen, as
    on the device); (what run() returned, its stdout).
    NoMicroPython when it cannot start, FirmwareError when it fails (`what` names it)."""
    mpy = micropython_bin()
    with tempfile.TemporaryDirectory(prefix="cx-firmware-") as tmp:
        d = Path(tmp)
        (d / "driver.py").write_text(driver + HELPERS + _EPILOGUE)
        for name, data in files.items():
            if isinstance(data, bytes):
                (d / name).write_bytes(data)
            else:
                (d / name).write_text(data)
        penv = dict(os.environ)
        penv["MICROPYPATH"] = f".frozen:{FIRMWARE}:{AGENT}"
        try:
            proc = subprocess.run([mpy, "-X", f"heapsize={HEAP}", "driver.py"], cwd=d, env=penv,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except OSError as e:
            raise NoMicroPython(f"cannot run {mpy}: {e.strerror or e}") from None
        except subprocess.TimeoutExpired:
            raise FirmwareError(f"{what} took more than {timeout:g} s") from None
        try:
            result = json.loads((d / RESULT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FirmwareError(f"{what} failed (exit {proc.returncode}): {last}") from None
    if not isinstance(result, dict):
        raise FirmwareError(f"{what} failed: its result is not a JSON object")
    if "error" in result:
        raise FirmwareError(f"{what} failed: {result['error']}")
    return result, proc.stdout.strip()
