"""The runtime image path of the board modules (docs/ota.md "The runtime image (esp32.Partition)"):
the emulated board on the MicroPython unix port, recording in hw/image.json and events.jsonl what
the horn board would write; and the horn board itself against a fake esp32.Partition (a flash
file that starts full of 0xA5, whole-block writes only, set_boot and rollback calls logged), so
its block, padding, hash and set_boot logic runs without a terminal. board_column has the same
functions through its star import (tests/test_device_gates.py keeps the API in line)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from conftest import run_mpy

BLOCK = 4096
SLOT = 0x180000  # the emulated board's default slot (partitions-4MiB-ota.csv)
CHUNKS = [1, 4095, 777, 5000, 13, 3, 4096, 2049]  # odd sizes, cycled

# `A` is the test's arguments; `feed(data)` hands the image to image_write in CHUNKS sizes;
# `result(**kw)` prints a line the test reads; `refused(f, *a)` is the ValueError reason or None.
PRELUDE = """
import json, sys
A = json.loads(%(args)r)
%(fakes)s
import %(board)s as board
def result(**kw):
    print("RESULT " + json.dumps(kw))
def feed(data):
    i = 0
    k = 0
    sizes = A["chunks"]
    while i < len(data):
        n = sizes[k %% len(sizes)]
        board.image_write(memoryview(data)[i:i + n])
        i += n
        k += 1
def refused(f, *a):
    try:
        f(*a)
    except ValueError as e:
        return e.args[0]
    return None
def image():
    with open(A["image"], "rb") as f:
        return f.read()
"""

# Fake port modules for board_horn on the unix port. Partition keeps its flash in a file (A["flash"])
# so a second process sees what the first wrote, and logs every call in A["calls"].
FAKES = """
class _Any:
    def __init__(self, *a, **k):
        pass
    def __call__(self, *a, **k):
        return _Any()
    def __getattr__(self, name):
        return _Any()
class _Machine(_Any):
    WDT_RESET = 3
    SOFT_RESET = 5
    def reset_cause(self):
        return 1
    def RTC(self):
        class R:
            def memory(self, b=None):
                return b""
        return R()
def _log(*a):
    with open(A["calls"], "a") as f:
        f.write(json.dumps(a) + "\\n")
class Partition:
    RUNNING = 1
    BOOT = 0
    def __init__(self, id, block_size=4096):
        self.label = A.get("running", "ota_0")
    def get_next_update(self):
        if not A["slot"]:
            raise OSError(2)
        p = Partition(1)
        p.label = "ota_1" if self.label == "ota_0" else "ota_0"
        return p
    def info(self):
        return (0, 16, 0x10000, A["slot"], self.label, False)
    def _flash(self):
        try:
            with open(A["flash"], "rb") as f:
                return bytearray(f.read())
        except OSError:
            return bytearray(b"\\xa5" * A["slot"])  # old contents: a write without erase shows
    def writeblocks(self, block, buf, offset=None):
        assert offset is None and len(buf) == 4096, "whole blocks only"
        fl = self._flash()
        o = block * 4096
        assert o + len(buf) <= A["slot"], "past the partition"
        for i in range(len(buf)):
            fl[o + i] = buf[i]  # erased first (the simple form), so this is the byte itself
        with open(A["flash"], "wb") as f:
            f.write(fl)
        _log("writeblocks", self.label, block, len(buf))
    def readblocks(self, block, buf, offset=0):
        fl = self._flash()
        o = block * 4096 + offset
        buf[:] = fl[o:o + len(buf)]
    def set_boot(self):
        if A.get("set_boot_fails"):
            raise OSError(-5379)
        _log("set_boot", self.label)
    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        if A.get("no_rollback"):
            raise OSError(-261)
        _log("mark_app_valid_cancel_rollback")
class _Esp32:
    pass
esp32 = _Esp32()
esp32.Partition = Partition
sys.modules["esp32"] = esp32
sys.modules["machine"] = _Machine()
sys.modules["network"] = _Any()
"""


def _image(n: int, seed: int = 1, magic: bool = True) -> bytes:
    rnd = random.Random(seed)
    b = bytearray(rnd.getrandbits(8) for _ in range(n))
    b[0] = 0xE9 if magic else 0x00
    return bytes(b)


def mpy(tmp: Path, body: str, board: str = "board_emu", env: dict | None = None,
        **args: Any) -> list[dict[str, Any]]:
    args.setdefault("chunks", CHUNKS)
    fakes = FAKES if board == "board_horn" else ""
    script = PRELUDE % {"args": json.dumps(args), "fakes": fakes, "board": board} + body
    e = {"CX_HW": str(tmp)}
    e.update(env or {})
    r = run_mpy(script, env=e, cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line[7:]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]


def _events(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "events.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e["value"] for e in lines if e["dev"] == "image"]


def _state(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "image.json").read_text())


WRITE = """
slot = board.image_begin(len(image()))
feed(image())
result(slot=slot, ok=board.image_finish(A["sha"]), running=board.image_running())
"""


# --- the emulated board -------------------------------------------------------------------------


def test_emulated_board_records_an_image_written_in_odd_chunks(tmp_path):
    data = _image(3 * BLOCK + 1000)
    (tmp_path / "img.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    [r] = mpy(tmp_path, WRITE, image=str(tmp_path / "img.bin"), sha=sha.upper())
    assert r == {"slot": "ota_1", "ok": True, "running": "ota_0"}
    st = _state(tmp_path)
    assert st["running"] == "ota_0" and st["boot"] == "ota_1" and not st["trial"]
    img = st["image"]
    assert img["bytes"] == len(data) == img["nbytes"]
    assert img["sha256"] == sha
    assert img["blocks"] == 4  # three whole blocks and the last one padded
    assert img["slot"] == "ota_1" and img["size"] == SLOT
    assert img["set_boot"] is True and img["why"] is None
    ev = _events(tmp_path)
    assert [e["step"] for e in ev] == ["begin", "block", "block", "block", "block", "finish",
                                       "set_boot"]
    assert [e["block"] for e in ev if e["step"] == "block"] == [0, 1, 2, 3]
    assert ev[0] == {"step": "begin", "slot": "ota_1", "nbytes": len(data), "size": SLOT}
    assert ev[-2]["bytes"] == len(data) and ev[-2]["sha256"] == sha


def test_emulated_board_wrong_hash_is_false_and_does_not_set_boot(tmp_path):
    data = _image(2 * BLOCK + 5)
    (tmp_path / "img.bin").write_bytes(data)
    [r] = mpy(tmp_path, WRITE, image=str(tmp_path / "img.bin"), sha="00" * 32)
    assert r["ok"] is False
    st = _state(tmp_path)
    assert st["boot"] == "ota_0" == st["running"]
    assert st["image"]["set_boot"] is False and st["image"]["why"] == "hash_mismatch"
    assert st["image"]["sha256"] == hashlib.sha256(data).hexdigest()  # what was written
    assert "set_boot" not in [e["step"] for e in _events(tmp_path)]


def test_emulated_board_refuses_what_the_slot_cannot_take(tmp_path):
    data = _image(BLOCK + 1, magic=False)
    (tmp_path / "img.bin").write_bytes(data)
    body = """
result(big=refused(board.image_begin, A["big"]), empty=refused(board.image_begin, 0),
       unbegun=refused(board.image_write, b"x"), finish_unbegun=board.image_finish("00" * 32))
board.image_begin(10)
result(long=refused(board.image_write, b"x" * 11))
board.image_begin(len(image()))
feed(image())
result(ok=board.image_finish(A["sha"]))
"""
    r = mpy(tmp_path, body, image=str(tmp_path / "img.bin"), sha=hashlib.sha256(data).hexdigest(),
            big=SLOT + 1)
    assert r[0] == {"big": "image_too_large", "empty": "image_empty", "unbegun": "image_not_begun",
                    "finish_unbegun": False}
    assert r[1] == {"long": "image_too_long"}
    assert r[2] == {"ok": False}  # the right hash, but no app image header: never set as boot
    st = _state(tmp_path)
    assert st["boot"] == "ota_0" and st["image"]["why"] == "not_an_app_image"
    begins = [e for e in _events(tmp_path) if e["step"] == "begin"]
    assert [e["nbytes"] for e in begins] == [10, len(data)]  # the refused ones never began


def test_emulated_board_slot_size_and_factory_table(tmp_path):
    body = """
result(over=refused(board.image_begin, 8193), fits=board.image_begin(8192))
"""
    assert mpy(tmp_path, body, env={"CX_IMAGE_SLOT": "8192"}) == [
        {"over": "image_too_large", "fits": "ota_1"}]
    body = "result(none=refused(board.image_begin, 100))\n"
    assert mpy(tmp_path, body, env={"CX_IMAGE_SLOT": "0"}) == [{"none": "no_update_slot"}]


def test_emulated_board_boots_the_new_slot_on_trial_and_rolls_back_unconfirmed(tmp_path):
    data = _image(BLOCK)
    (tmp_path / "img.bin").write_bytes(data)
    a = {"image": str(tmp_path / "img.bin"), "sha": hashlib.sha256(data).hexdigest()}
    assert mpy(tmp_path, WRITE, **a)[0]["ok"] is True
    running = "result(running=board.image_running())\n"
    assert mpy(tmp_path, running) == [{"running": "ota_1"}]  # the boot after set_boot
    assert _state(tmp_path)["trial"] is True
    assert mpy(tmp_path, running) == [{"running": "ota_0"}]  # a second boot, never confirmed
    st = _state(tmp_path)
    assert st["boot"] == "ota_0" and not st["trial"]
    assert [e["step"] for e in _events(tmp_path)][-2:] == ["boot", "rollback"]

    # again, confirmed this time: the new slot stays
    assert mpy(tmp_path, WRITE, **a)[0] == {"slot": "ota_1", "ok": True, "running": "ota_0"}
    assert mpy(tmp_path, "result(c=board.image_confirm(), running=board.image_running())\n") == [
        {"c": True, "running": "ota_1"}]
    assert mpy(tmp_path, running) == [{"running": "ota_1"}]
    st = _state(tmp_path)
    assert st["running"] == st["boot"] == "ota_1" and not st["trial"]
    assert st["image"]["confirmed"] is True


def test_emulated_board_without_an_image_writes_nothing(tmp_path):
    assert mpy(tmp_path, "result(running=board.image_running())\n") == [{"running": "ota_0"}]
    assert not (tmp_path / "image.json").exists()
    assert _events(tmp_path) == []


# --- the horn board against a fake esp32.Partition ------------------------------------------


def _calls(tmp: Path) -> list[list[Any]]:
    path = tmp / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _horn(tmp: Path, body: str, **args: Any) -> list[dict[str, Any]]:
    args.setdefault("slot", 4 * BLOCK)
    args.setdefault("flash", str(tmp / "flash.bin"))
    args.setdefault("calls", str(tmp / "calls.jsonl"))
    return mpy(tmp, body, board="board_horn", **args)


def test_horn_board_writes_whole_blocks_and_sets_boot(tmp_path):
    data = _image(3 * BLOCK + 1000)
    (tmp_path / "img.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    [r] = _horn(tmp_path, WRITE, image=str(tmp_path / "img.bin"), sha=sha)
    assert r == {"slot": "ota_1", "ok": True, "running": "ota_0"}
    assert _calls(tmp_path) == [["writeblocks", "ota_1", b, BLOCK] for b in range(4)] + [
        ["set_boot", "ota_1"]]
    flash = (tmp_path / "flash.bin").read_bytes()
    assert flash[: len(data)] == data
    assert flash[len(data): 4 * BLOCK] == b"\xff" * (4 * BLOCK - len(data))  # padded as erased


def test_horn_board_wrong_hash_is_false_and_does_not_set_boot(tmp_path):
    data = _image(2 * BLOCK + 5)
    (tmp_path / "img.bin").write_bytes(data)
    [r] = _horn(tmp_path, WRITE, image=str(tmp_path / "img.bin"), sha="ab" * 32)
    assert r["ok"] is False
    assert [c[0] for c in _calls(tmp_path)] == ["writeblocks"] * 3


def test_horn_board_refusals(tmp_path):
    data = _image(BLOCK, magic=False)
    (tmp_path / "img.bin").write_bytes(data)
    body = """
result(big=refused(board.image_begin, 4 * 4096 + 1), long=board.image_begin(4) and
       refused(board.image_write, b"12345"))
board.image_begin(len(image()))
feed(image())
result(ok=board.image_finish(A["sha"]))
"""
    r = _horn(tmp_path, body, image=str(tmp_path / "img.bin"), sha=hashlib.sha256(data).hexdigest())
    assert r == [{"big": "image_too_large", "long": "image_too_long"}, {"ok": False}]
    assert "set_boot" not in [c[0] for c in _calls(tmp_path)]  # no app image header
    none = "result(none=refused(board.image_begin, 100))\n"
    assert _horn(tmp_path, none, slot=0) == [{"none": "no_update_slot"}]


def test_horn_board_set_boot_refusal_and_confirm(tmp_path):
    data = _image(BLOCK + 7)
    (tmp_path / "img.bin").write_bytes(data)
    a = {"image": str(tmp_path / "img.bin"), "sha": hashlib.sha256(data).hexdigest()}
    assert _horn(tmp_path, WRITE, set_boot_fails=True, **a)[0]["ok"] is False
    confirm = "result(c=board.image_confirm(), running=board.image_running())\n"
    assert _horn(tmp_path, confirm, running="ota_1") == [{"c": True, "running": "ota_1"}]
    assert _calls(tmp_path)[-1] == ["mark_app_valid_cancel_rollback"]
    assert _horn(tmp_path, confirm, no_rollback=True) == [{"c": False, "running": "ota_0"}]

