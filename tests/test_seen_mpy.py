"""The seen store's journal (firmware/seen.py, docs/decisions.md "Seen store, journal") under
MicroPython: an accepted alert's entry is on flash before the alert plays, as one line appended
to seen.jnl instead of a whole copy; a power cut before the next quiet moment remembers it; the
quiet moment writes the copies, one per call, and ends the journal; a damaged line is dropped and
reported; a full journal falls back to writing the main copy."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from conftest import ROOT, run_mpy

PRELUDE = """
import json, os, micropython, gc
os.chdir(%(dir)r)
import seen
LOG = []
def log(ev, **f):
    LOG.append([ev, f.get("file"), f.get("reason"), f.get("dropped")])
def result(**kw):
    print("RESULT " + json.dumps(kw))
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
def size(p):
    return os.stat(p)[6] if exists(p) else -1
NOW = %(now)d
K = "county-341122"
"""


def run(tmp: Path, script: str) -> dict:
    r = run_mpy(PRELUDE % {"dir": str(tmp), "now": int(time.time())} + script, cwd=tmp,
                path=[ROOT / "firmware", ROOT / "hardware"])
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout[-1500:] + r.stderr[-1500:]
    return json.loads(line[7:])


def test_an_entry_is_on_flash_before_the_alert_plays_and_survives_a_power_cut(
        tmp_path: Path) -> None:
    out = run(tmp_path, """
s = seen.Seen(log=log)
for i in range(seen.MAX_SEEN):  # full: the worst case, where add() forgets the first to expire
    s.add(K, "A-%04d" % i, NOW + 600 + i, "%016x" % i, NOW)
s.flush()
s.flush()
main_before = size("seen.json")
gc.collect()
m0 = micropython.mem_total() if hasattr(micropython, "mem_total") else 0
s.add(K, "A-new", NOW + 9000, "ffffffffffffffff", NOW)
alloc = (micropython.mem_total() - m0) if m0 else -1
journal = open("seen.jnl").read()
main_after = size("seen.json")
# the power is cut here: nothing more is written; the next boot reads what is on flash
again = seen.Seen(log=log)
held = again.has(K, "A-new", NOW) and again.has_bytes("ffffffffffffffff", NOW)
old_held = again.has(K, "A-0007", NOW)
first_gone = not again.has(K, "A-0000", NOW)
due = again.due()
again.flush()
main_has = any(e[1] == "A-new" for e in json.loads(open("seen.json").read()))
jnl_after_main = exists("seen.jnl")
bak_has_before = any(e[1] == "A-new" for e in json.loads(open("seen.bak").read()))
again.flush()
bak_has = any(e[1] == "A-new" for e in json.loads(open("seen.bak").read()))
result(journal=journal, main_same=main_before == main_after, alloc=alloc, held=held,
       old_held=old_held, first_gone=first_gone, due=due, main_has=main_has, jnl_after_main=jnl_after_main,
       bak_has_before=bak_has_before, bak_has=bak_has, due_end=again.due(), n=len(again),
       log=LOG, now=NOW)
""")
    # the alert's path wrote one line, not the 45 KB copy
    assert json.loads(out["journal"]) == ["county-341122", "A-new", out["now"] + 9000,
                                          "ffffffffffffffff"], out["journal"]
    assert out["journal"].count("\n") == 1 and out["main_same"], out
    assert 0 < out["alloc"] < 2048, f"{out['alloc']} bytes allocated by add()"
    # after the cut the terminal still knows it (rule 11: a redelivery is a duplicate)
    assert out["held"] and out["old_held"] and out["n"] == 256 and out["due"], out
    assert out["first_gone"], out  # the store's bound holds across the reboot too
    # the quiet moment: the main copy first (the journal ends with it), the backup next
    assert out["main_has"] and not out["jnl_after_main"] and not out["bak_has_before"], out
    assert out["bak_has"] and not out["due_end"] and out["log"] == [], out


def test_a_damaged_journal_line_is_dropped_and_reported_the_good_ones_kept(
        tmp_path: Path) -> None:
    out = run(tmp_path, """
s = seen.Seen(log=log)
s.add(K, "A-1", NOW + 600, "%016x" % 1, NOW)
s.add(K, "A-2", NOW + 600, "%016x" % 2, NOW)
f = open("seen.jnl", "ab")
f.write(b'["county-341122", "A-3", "soon", "0"]\\n["county-341122", "A-4", 19')  # and torn
f.close()
again = seen.Seen(log=log)
result(has=[again.has(K, "A-%d" % i, NOW) for i in range(1, 5)], log=LOG, lost=again.lost,
       jnl=exists("seen.jnl"), on_main=[e[1] for e in json.loads(open("seen.json").read())])
""")
    assert out["has"] == [True, True, False, False], out
    assert out["log"] == [["file_damaged", "seen.jnl", "bad entries", 2]], out
    # a damaged file is never carried into the next boot: both copies written, the journal ended
    assert out["lost"] is None and not out["jnl"] and out["on_main"] == ["A-1", "A-2"], out


def test_a_full_journal_writes_the_main_copy_instead(tmp_path: Path) -> None:
    out = run(tmp_path, """
s = seen.Seen(log=log)
sizes = []
for i in range(seen.MAX_JOURNAL + 1):
    s.add(K, "A-%d" % i, NOW + 600, "%016x" % i, NOW)
    sizes.append(size("seen.jnl"))
result(sizes=sizes, main=[e[1] for e in json.loads(open("seen.json").read())],
       n=len(seen.Seen(log=log)), log=LOG)
""")
    sizes = out["sizes"]
    assert all(b > a for a, b in itertools.pairwise(sizes[:-1])), sizes  # a line per alert
    assert sizes[-1] == -1, "the 33rd alert wrote the main copy and ended the journal"
    assert len(out["main"]) == 33 and out["n"] == 33 and out["log"] == [], out


def test_a_journal_too_large_to_be_ours_is_dropped_unread(tmp_path: Path) -> None:
    out = run(tmp_path, """
s = seen.Seen(log=log)
s.add(K, "A-1", NOW + 600, "%016x" % 1, NOW)
s.flush()
f = open("seen.jnl", "wb")
line = b'["county-341122", "A-2", 1900000000, "0000000000000002"]\\n'
for _ in range(seen.MAX_JOURNAL_FILE // len(line) + 1):
    f.write(line)
f.close()
again = seen.Seen(log=log)
result(has=[again.has(K, "A-1", NOW), again.has(K, "A-2", NOW)], log=LOG, jnl=exists("seen.jnl"))
""")
    # the entry in the main copy holds; the oversized journal is not read (it could not be
    # ours: 32 lines are under 6 KB), reported by its reason and removed
    assert out["has"] == [True, False], out
    assert out["log"] == [["file_damaged", "seen.jnl", "too_large", 1]], out
    assert not out["jnl"], out
