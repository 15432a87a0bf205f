"""The collector's settings, parsed once at the CLI edge and then passed around frozen."""
from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class CollectorError(Exception):
    """A user's or operator's mistake (bad flag, unsafe secret file, unreachable database): one line at the CLI."""


@dataclass(frozen=True)
class CollectorConfig:
    db_url: str
    secret: bytes
    host: str = "127.0.0.1"
    port: int = 8765
    webhook_url: Optional[str] = None
    interval_s: float = 30.0       # agents' report period
    stale_after: float = 3.0       # an agent is stale after this many intervals without a report
    gap_grace_s: float = 60.0      # a sequence gap open this long is an alert
    retention_days: float = 7.0    # reports older than this are pruned; the latest state per agent is kept
    sweep_s: float = 5.0           # how often staleness, gaps and retention are evaluated

    @property
    def stale_after_s(self) -> float:
        return self.interval_s * self.stale_after

    def __repr__(self) -> str:  # never print the secret
        return f"CollectorConfig(db_url={self.db_url!r}, listen={self.host}:{self.port})"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CollectorError(f"--listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_secret(path: Path) -> bytes:
    """The collector secret, stripped; refused when group or others could read it (it mints every agent's token)."""
    try:
        st = path.stat()
        data = path.read_bytes().strip()
    except OSError as exc:
        raise CollectorError(f"secret file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CollectorError(f"secret file {path}: mode {stat.S_IMODE(st.st_mode):04o} is open to group/others; "
                             f"chmod 600 it")
    if not data:
        raise CollectorError(f"secret file {path}: empty")
    return data


def sqlite_path(db_url: str) -> Optional[str]:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` -> the path; None when the URL is not SQLite."""
    if not db_url.startswith("sqlite:"):
        return None
    if not db_url.startswith("sqlite:///") or len(db_url) == len("sqlite:///"):
        raise CollectorError(f"--db {db_url!r}: expected sqlite:///PATH")
    return db_url[len("sqlite:///"):]
