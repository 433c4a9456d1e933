"""A throwaway PostgreSQL cluster for tests: initdb in a temp folder, a free loopback port,
trust auth, fsync off; `stop()` and `start()` keep the data (to test an unreachable database),
`destroy()` removes it. As root, the server runs as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tools.broker import free_port


class PgError(RuntimeError):
    pass


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return cand
    raise PgError(f"{name} not found: run scripts/bootstrap (installs postgresql)")


def available() -> bool:
    try:
        pg_bin("initdb")
        pg_bin("pg_ctl")
    except PgError:
        return False
    return True


class PgCluster:
    """`url` is a libpq URL for the `postgres` database; `create_db(name)` gives a fresh one."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="cx-pg-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run([pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n")
        self.start()

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self._as + cmd, capture_output=True, text=True, check=False,
                           stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            raise PgError(f"{' '.join(cmd)} failed: {r.stderr.strip() or r.stdout.strip()}")

    def start(self) -> None:
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w",
                   "-t", "30", "start"])

    def stop(self) -> None:
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def destroy(self) -> None:
        try:
            self.stop()
        except PgError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def wait_port_closed(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return
        time.sleep(0.1)
