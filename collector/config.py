"""The collector's settings, each declared once here (type, default, help), parsed at the CLI edge (cli.py builds
its flags from these fields) and then passed around frozen."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from agentd.protocol import DRIFT_CLASSES, UNEXPLAINED

WEBHOOK_ENV = "AGENTFLEET_WEBHOOK_URL"


class CollectorError(Exception):
    """A user's or operator's mistake (bad flag, unsafe secret file, unreachable database): one line at the CLI."""


def tunable(default: Any, help_text: str) -> Any:
    """A setting that is also a `serve` flag: --NAME-WITH-DASHES."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class CollectorConfig:
    db_url: str
    secret: bytes = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8765
    webhook_url: Optional[str] = field(default=None, repr=False)  # a credential: from a file or the environment
    operator_token: Optional[bytes] = field(default=None, repr=False)  # lets the agent page accept drift
    drift_alert_classes: tuple[str, ...] = (UNEXPLAINED,)            # drift of these classes opens alerts
    interval_s: float = tunable(30.0, "agents' report interval in seconds")
    stale_after: float = tunable(3.0, "intervals without a report before an agent is stale")
    gap_grace_s: float = tunable(60.0, "seconds a sequence gap may stay open before it alerts")
    retention_days: float = tunable(7.0, "prune reports older than this; the latest state per agent is kept")
    sweep_s: Optional[float] = tunable(None, "how often staleness, gaps and retention are checked "
                                             "(default: min(5, interval/2))")
    store_timeout_s: float = tunable(5.0, "seconds a database call may take (e.g. waiting for another process's "
                                          "write lock) before the answer is 503 with Retry-After")
    body_timeout_s: float = tunable(10.0, "seconds a client may take to send a report's body before a 408")
    backup_dir: Optional[Path] = None     # SQLite only: online backups on a schedule (backup.py); None: none
    backup_every_s: float = tunable(3600.0, "with --backup-dir: seconds between online backups of the database")
    backup_keep: int = tunable(48, "with --backup-dir: how many backups to keep (the newest)")

    @property
    def stale_after_s(self) -> float:
        return self.interval_s * self.stale_after

    @property
    def sweep_every_s(self) -> float:
        return max(self.sweep_s if self.sweep_s is not None else min(5.0, self.interval_s / 2), 0.05)

    @property
    def retry_after_s(self) -> int:
        """What a 503 tells a client to wait: about one store timeout."""
        return max(1, round(self.store_timeout_s))

    def __post_init__(self) -> None:
        unknown = [c for c in self.drift_alert_classes if c not in DRIFT_CLASSES]
        if unknown or not self.drift_alert_classes:
            raise CollectorError(f"--drift-alerts {','.join(self.drift_alert_classes)!r}: a comma-separated list of "
                                 f"{', '.join(DRIFT_CLASSES)}")
        for f in tunables():
            value = getattr(self, f.name)
            if value is not None and not value > 0:
                raise CollectorError(f"{flag(f.name)}: must be positive")


def tunables() -> list:
    return [f for f in fields(CollectorConfig) if "help" in f.metadata]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CollectorError(f"--listen {value!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_private_file(path: Path, what: str) -> bytes:
    """A credential file's content, stripped; refused when group or others could read it."""
    try:
        st = path.stat()
        data = path.read_bytes().strip()
    except OSError as exc:
        raise CollectorError(f"{what} {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CollectorError(f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} is open to group/others; "
                             f"chmod 600 it")
    if not data:
        raise CollectorError(f"{what} {path}: empty")
    return data


def read_secret(path: Path) -> bytes:
    """The collector secret: it mints every agent's token."""
    return read_private_file(path, "secret file")


def read_webhook_url(path: Optional[Path], environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The Mattermost webhook URL from a 0600 file or $AGENTFLEET_WEBHOOK_URL: never argv, where `ps` shows it to
    every local user. The URL is a credential (its path is the key), so no message ever repeats it."""
    from_env = environ.get(WEBHOOK_ENV, "").strip()
    if path is not None and from_env:
        raise CollectorError(f"--webhook-file and ${WEBHOOK_ENV} are both set: give the webhook URL once")
    if path is not None:
        try:
            url = read_private_file(path, "webhook file").decode()
        except UnicodeDecodeError:
            raise CollectorError(f"webhook file {path}: not UTF-8 text") from None
        where = f"webhook file {path}"
    elif from_env:
        url, where = from_env, f"${WEBHOOK_ENV}"
    else:
        return None
    return check_webhook_url(url, where)


def check_webhook_url(url: str, where: str) -> str:
    """One http(s):// URL on one line; the message names where it came from, never the URL (a credential)."""
    if not url.startswith(("http://", "https://")) or any(ch.isspace() for ch in url):
        raise CollectorError(f"{where}: expected one http(s):// URL on one line")
    return url


def parse_drift_classes(value: str) -> tuple[str, ...]:
    """`--drift-alerts unexplained,conffile` -> ("unexplained", "conffile"); checked by CollectorConfig."""
    return tuple(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))


def read_operator_token(path: Optional[Path]) -> Optional[bytes]:
    """The token an operator types into the agent page to accept drift; None: the page cannot accept."""
    return None if path is None else read_private_file(path, "operator token file")


def sqlite_path(db_url: str) -> Optional[str]:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` -> the path; None when the URL is not SQLite."""
    if not db_url.startswith("sqlite:"):
        return None
    if not db_url.startswith("sqlite:///") or len(db_url) == len("sqlite:///"):
        raise CollectorError(f"--db {db_url!r}: expected sqlite:///PATH")
    return db_url[len("sqlite:///"):]
