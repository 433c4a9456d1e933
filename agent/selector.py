# The boot selector (docs/ota.md "Boot selector"): flashed as main.py on the flash root, never part
# of a release. Picks the one version directory v/<version>/ to run from the pointer ota.json,
# starts a staged version in trial, rolls a trial that did not prove itself back, and runs
# terminal.main() from that directory alone. Imports no firmware module of its own: they all live
# in the version directories.
import json
import os
import sys
import time

POINTER = "ota.json"
MAX_TRIAL_BOOTS = 3  # starts of a trial version cut by power or reset before it is rolled back


def _exists(ver):
    try:
        return os.stat("v/" + ver)[0] & 0x4000 != 0  # a directory
    except OSError:
        return False


def _key(ver):
    try:
        return tuple(int(x) for x in ver.split("."))
    except ValueError:
        return (-1,)


def _versions():
    try:
        names = os.listdir("v")
    except OSError:
        return []
    return [n for n in names if not n.endswith(".part") and _key(n) != (-1,) and _exists(n)]


def read_pointer():
    """(pointer, problem): the pointer as written, or rebuilt from the highest complete version
    directory when it is missing or damaged (problem names why); (None, "no_version")."""
    try:
        f = open(POINTER)
        try:
            p = json.loads(f.read())
        finally:
            f.close()
    except Exception:  # missing, unreadable, not JSON
        p = None
    if isinstance(p, dict) and isinstance(p.get("run"), str) and _exists(p["run"]):
        t = p.get("try")
        if not (isinstance(t, str) and t != p["run"] and _exists(t)):
            p["try"] = None
        if not isinstance(p.get("boots"), int):
            p["boots"] = 0
        return p, None
    best = None
    for v in _versions():
        if best is None or _key(v) > _key(best):
            best = v
    if best is None:
        return None, "no_version"
    return {"run": best, "try": None, "boots": 0, "last": None}, "pointer_damaged"


def write_pointer(p):
    """Replace ota.json whole: a temporary file, then one rename (atomic on LittleFS and POSIX)."""
    f = open(POINTER + ".tmp", "w")
    try:
        f.write(json.dumps(p))
    finally:
        f.close()
    os.rename(POINTER + ".tmp", POINTER)


def _board_name():
    try:
        f = open("board.txt")
        try:
            return f.read().strip()
        finally:
            f.close()
    except OSError:
        return "horn"


def _enter(ver, board_name):
    # Only this version's directory (and the frozen modules) on the path: never a file of another.
    d = "v/" + ver
    sys.path.clear()
    sys.path.extend((d, ".frozen", d + "/lib"))
    board = __import__("board_" + board_name)
    sys.modules["board"] = board
    return board


def _forget_board(name):
    for m in ("board", "board_" + name, "board_horn"):  # board_column imports board_horn
        if m in sys.modules:
            del sys.modules[m]


def choose():
    """(version to run, whether it is on trial, the board module); writes the pointer when a
    trial starts, counts a trial boot, or rolls a trial back (then resets: never returns)."""
    p, problem = read_pointer()
    if p is None:
        return None, False, None
    name = _board_name()
    t = p["try"]
    run = p["run"]
    if t is None:
        if problem is not None:
            print("selector:", problem, "running", run)
            try:
                write_pointer(p)
            except OSError:
                pass
        return run, False, _enter(run, name)
    boots = p["boots"]
    if boots >= 1:
        # Started before and not confirmed: why did that start end? Asked of the confirmed
        # version's board, so a trial whose board module itself fails is still rolled back.
        board = _enter(run, name)
        cause = board.boot_cause()
        if cause in ("crash", "watchdog") or boots >= MAX_TRIAL_BOOTS:
            reason = cause if cause in ("crash", "watchdog") else "crash"
            write_pointer({"run": run, "try": None, "boots": 0,
                           "last": {"version": t, "state": "rolled_back", "reason": reason}})
            print("selector: rolled back from", t, "to", run, reason)
            board.reset()  # the old version starts in a fresh interpreter
            raise SystemExit(3)
        _forget_board(name)
    p["boots"] = boots + 1
    try:
        write_pointer(p)  # counted before the trial starts, or a crash loop would never end
    except OSError:
        print("selector: cannot count the trial start, running", run)
        return run, False, _enter(run, name)
    return t, True, _enter(t, name)


def main():
    ver, trial, _ = choose()
    if ver is None:
        print("selector: no version on flash")
        while True:  # nothing to run: stay up for a technician (cx flash)
            time.sleep(60)
    import version

    version.VERSION = ver  # the directory is the version: what the boot event and heartbeat say
    version.TRIAL = trial
    import terminal

    terminal.main()


main()
