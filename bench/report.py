"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone.

A section sits between `<!-- bench:TITLE -->` and `<!-- /bench:TITLE -->`; writing it
again replaces it in place, a new title is appended. Each section is stamped with the
date and the machine it was measured on, since the figures mean nothing without them.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
MICROPYTHON = Path(sys.executable).parent / "micropython"
HEADER = "# Benchmarks\n\nWritten by the scripts in bench/; rerun them rather than editing by hand.\n"


_VERSION_SNIPPET = (
    "import sys; v = sys.implementation.version; "
    "print('.'.join(str(n) for n in v[:3]) + ('-' + v[3] if len(v) > 3 and v[3] else ''), "
    "sys.version.split()[-3])"
)


def micropython_version(binary: Path = MICROPYTHON) -> str:
    try:
        out = subprocess.run(
            [str(binary), "-c", _VERSION_SNIPPET],
            capture_output=True, text=True, timeout=10, check=True,
        )
        version, build = out.stdout.split()
        return f"MicroPython {version} ({build})"
    except (OSError, ValueError, subprocess.SubprocessError):
        return "MicroPython not found"


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "cpu unknown"


def machine() -> str:
    """One line naming where the figures came from."""
    return (
        f"{platform.system()} {platform.machine()}, nproc={os.cpu_count()}, "
        f"{cpu()}, Python {platform.python_version()}, "
        f"{micropython_version()}"
    )


def write_section(title: str, markdown: str, path: Path = REPORT) -> None:
    """Replace (or append) the section called title with markdown, stamped with date and machine."""
    start, end = f"<!-- bench:{title} -->", f"<!-- /bench:{title} -->"
    stamp = f"_{datetime.date.today().isoformat()}, {machine()}_"
    section = f"{start}\n## {title}\n\n{stamp}\n\n{markdown.strip()}\n\n{end}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several benchmarks may finish at once: serialise the read-modify-write (lock on the dir).
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else HEADER
        i, j = text.find(start), text.find(end)
        if i >= 0 and j > i:
            rest = text[j + len(end):].lstrip("\n")
            text = text[:i] + section + ("\n" + rest if rest else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        os.close(fd)
