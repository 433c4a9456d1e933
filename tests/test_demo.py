"""`scripts/demo` (`cx demo`), the main job, run as a new user would: every step it announces
happens, and the fleet service's view at the end agrees with what the terminals did."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from rig import CX


def test_demo_runs_end_to_end_and_the_fleet_service_reports_it(tmp_path: Path) -> None:
    r = subprocess.run([CX, "demo", "--dir", str(tmp_path / "demo")], capture_output=True,
                       text=True, timeout=240, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Traceback" not in out
    # The terminals: the town's three sound the warning, the other town's stays silent, the
    # forged alert is refused everywhere, the cut village sounds the test over 4G.
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^  (T\d{12}-01) .*$", out, re.MULTILINE)}
    assert len(rows) == 4, out
    for tid in ("T341122100201-01", "T341122100202-01", "T341122100000-01"):
        assert "tone:siren" in rows[tid] and "done" in rows[tid], rows[tid]
    assert "never" in rows["T341122200101-01"]
    assert all("rejected:bad_signature" in row for row in rows.values())
    assert re.search(r"T341122100201-01\s+4g\b", rows["T341122100201-01"])
    # The admin's view, from the fleet service's database.
    assert "targets 3: done 3" in out
    assert re.search(r"^  341122100\s+3\s+3(\s+0){5}$", out, re.MULTILINE), out  # per town: 3 done
    assert "total: 4 terminals, 4 online, 0 offline, 0 with faults, 1 on 4G" in out
    assert out.count("rejected  open") == 4
    assert (tmp_path / "demo" / "T341122100201-01" / "hw" / "speaker.wav").stat().st_size > 44


def test_demo_never_empties_a_folder_it_did_not_make(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("the village's phone list")
    r = subprocess.run([CX, "demo", "--dir", str(home)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "did not make" in r.stderr, r.stderr
    assert (home / "notes.txt").read_text() == "the village's phone list"
