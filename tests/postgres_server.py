"""A throwaway PostgreSQL server from Debian's postgresql package, for the collector's PostgreSQL backend tests.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user (created by the package) and
every server command runs through `runuser`; as anyone else it runs as that user. Trust auth on loopback TCP only.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from .collector_server import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self, bindir: Path, datadir: Path, port: int, as_user: list[str]) -> None:
        self.bindir, self.datadir, self.port, self.as_user = bindir, datadir, port, as_user
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=120)

    def start(self) -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-l", str(self.datadir / "log"),
                 "-w", "-t", "60", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.datadir}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL not installed: run scripts/setup-host.sh (Debian's postgresql package)")
    datadir = Path(tempfile.mkdtemp(prefix="agentfleet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, datadir, free_port(), as_user)
    try:
        server.run(str(bindir / "initdb"), "-D", str(datadir / "data"), "-U", "postgres", "--auth=trust",
                   "--no-sync", "-E", "UTF8")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop("immediate")
        shutil.rmtree(datadir, ignore_errors=True)
