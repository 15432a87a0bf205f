"""`python -m collector install`: the collector as a systemd service on its host, idempotently.

It creates the system user, the state directory (database and backups), the secret and webhook files (0600, the
collector's user), and the unit `agentfleet-collector.service`, then enables and (re)starts it. Run again, it changes
only what differs and says so; an existing secret is kept. Credentials come from a file or standard input, never
argv, and are never printed. `--root DIR` writes the same files into a staging tree (the unit keeps the final paths)
and touches no service; `--no-useradd` takes an existing user. docs/collector.md is the operator's guide.
"""
from __future__ import annotations

import os
import pwd
import secrets
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Optional

from host.run import run

from .config import CollectorError, check_webhook_url, parse_listen

UNIT_NAME = "agentfleet-collector.service"
USER = "agentfleet-collector"
DEFAULT_LISTEN = "0.0.0.0:8765"   # every address: the seed's agents reach it at services.collector_url
CODE = Path(__file__).resolve().parent.parent
WOULD = {"created": "would create", "updated": "would update", "ran": "would run"}


@dataclass(frozen=True)
class Layout:
    """Where the service's files live on the collector's host (the final paths, whatever --root stages them in)."""
    code: Path = CODE                                   # a checkout with its .venv
    user: str = USER
    listen: str = DEFAULT_LISTEN
    state_dir: Path = Path("/var/lib/agentfleet-collector")
    config_dir: Path = Path("/etc/agentfleet")
    unit_dir: Path = Path("/etc/systemd/system")
    backup_every_s: float = 3600.0
    backup_keep: int = 48

    @property
    def python(self) -> Path:
        return self.code / ".venv" / "bin" / "python"

    @property
    def db(self) -> Path:
        return self.state_dir / "collector.db"

    @property
    def backup_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def secret_file(self) -> Path:
        return self.config_dir / "collector.secret"

    @property
    def webhook_file(self) -> Path:
        return self.config_dir / "collector-webhook"

    @property
    def unit_file(self) -> Path:
        return self.unit_dir / UNIT_NAME


@dataclass(frozen=True)
class Step:
    """One thing install did: `outcome` is created, updated, unchanged, ran or warning (--dry-run: would create,
    would update, would run)."""
    what: str
    path: str
    outcome: str
    note: str = ""


def render_unit(layout: Layout, webhook: bool) -> str:
    """The unit: absolute paths only (the database URL's four slashes), credentials by file, a hardened sandbox
    that may write only the state directory."""
    argv = [str(layout.python), "-m", "collector", "serve", "--listen", layout.listen,
            "--db", f"sqlite:///{layout.db}", "--secret-file", str(layout.secret_file)]
    if webhook:
        argv += ["--webhook-file", str(layout.webhook_file)]
    argv += ["--backup-dir", str(layout.backup_dir), "--backup-every-s", f"{layout.backup_every_s:g}",
             "--backup-keep", str(layout.backup_keep)]
    return f"""# Installed by `python -m collector install` (collector/install.py): run that again, do not edit this.
[Unit]
Description=agentfleet collector (agentd reports, fleet page, /metrics, Mattermost alerts)
Documentation=file://{layout.code}/docs/collector.md
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={layout.user}
Group={layout.user}
WorkingDirectory={layout.code}
ExecStart={" ".join(argv)}
Restart=on-failure
RestartSec=5
TimeoutStopSec=30
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={layout.state_dir}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


class Installer:
    """The steps, in order; `root` prefixes every path written (a staging tree), `dry_run` writes nothing."""

    def __init__(self, layout: Layout, root: Path = Path("/"), dry_run: bool = False, useradd: bool = True,
                 systemctl: bool = True) -> None:
        self.layout, self.root, self.dry_run = layout, root, dry_run
        self.useradd, self.systemctl = useradd, systemctl
        self.steps: list[Step] = []
        self._ids: Optional[tuple[int, int]] = None

    def at(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def install(self, secret: Optional[bytes], webhook: Optional[str]) -> list[Step]:
        lay = self.layout
        parse_listen(lay.listen)
        if not lay.python.exists() or not (lay.code / "collector" / "__main__.py").is_file():
            raise CollectorError(f"--code {lay.code}: not an agentfleet checkout with its .venv (run "
                                 f"scripts/setup-host.sh there)")
        self._user()
        self._check_code_readable()
        self._dir(lay.config_dir, 0o755, owned=False)
        self._dir(lay.state_dir, 0o750)
        self._dir(lay.backup_dir, 0o750)
        changed = self._credential("secret", lay.secret_file, secret, generate=True)
        changed |= self._credential("webhook", lay.webhook_file, webhook.encode() if webhook else None)
        has_webhook = webhook is not None or self.at(lay.webhook_file).exists()
        unit_changed = self._file("unit", lay.unit_file, render_unit(lay, has_webhook).encode(), 0o644, owned=False)
        if self.systemctl:
            if unit_changed:
                self._run("systemctl", "daemon-reload")
            self._run("systemctl", "enable", UNIT_NAME)
            self._run("systemctl", "restart" if changed or unit_changed else "start", UNIT_NAME)
        return self.steps

    # -- steps ---------------------------------------------------------------------------------------------------
    def _user(self) -> None:
        user = self.layout.user
        if _user_exists(user):
            self._step(Step("user", user, "unchanged"))
        elif not self.useradd:
            if not self.dry_run:
                raise CollectorError(f"user {user}: does not exist (--no-useradd: create it, or drop the flag)")
            self._step(Step("user", user, "warning", "does not exist; --no-useradd"))
        else:
            self._run("useradd", "--system", "--user-group", "--home-dir", str(self.layout.state_dir),
                      "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "agentfleet collector", user,
                      what="user")

    def _check_code_readable(self) -> None:
        """The service runs as its own user: every directory down to the checkout must let others through."""
        for parent in [*reversed(self.layout.code.parents), self.layout.code]:
            if not parent.stat().st_mode & stat.S_IXOTH:
                self._step(Step("code", str(self.layout.code), "warning",
                                       f"{parent} is not searchable by others, so {self.layout.user} cannot run "
                                       f"the code; put the checkout under e.g. /opt/agentfleet"))
                return

    def _dir(self, path: Path, mode: int, owned: bool = True) -> None:
        target = self.at(path)
        if not target.is_dir():
            if not self.dry_run:
                target.mkdir(parents=True, mode=mode)
                self._own(target, mode, owned)
            self._step(Step("directory", str(path), "created", f"{mode:04o}"))
            return
        if owned:
            self._step(Step("directory", str(path), self._own(target, mode, owned), f"{mode:04o}"))
        else:   # a shared directory (/etc/agentfleet): left as the host has it
            self._step(Step("directory", str(path), "unchanged"))

    def _credential(self, what: str, path: Path, given: Optional[bytes], generate: bool = False) -> bool:
        """Kept when not given; written (0600, the collector's user) when given and different, or generated."""
        target = self.at(path)
        note = ""
        if given is None:
            if target.exists():
                self._step(Step(what, str(path), self._own(target, 0o600, True), "0600, kept"))
                return False
            if not generate:
                self._step(Step(what, str(path), "unchanged", "none given: alerts are only logged"))
                return False
            given = secrets.token_hex(32).encode()
            note = "generated; copy it into the inventory's secrets as collector_secret (never printed)"
        return self._file(what, path, given + b"\n", 0o600, owned=True, note=note)

    def _file(self, what: str, path: Path, data: bytes, mode: int, owned: bool, note: str = "") -> bool:
        target = self.at(path)
        if target.exists() and target.read_bytes() == data:
            self._step(Step(what, str(path), self._own(target, mode, owned), note))
            return False
        outcome = "updated" if target.exists() else "created"
        if not self.dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            try:
                os.fchmod(fd, mode)   # before the first byte: the content is never readable by anyone else
                if owned:
                    os.fchown(fd, *self._owner())
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        self._step(Step(what, str(path), outcome, note))
        return True

    def _own(self, target: Path, mode: int, owned: bool) -> str:
        """Mode (and owner) as they must be; "updated" when that changed something."""
        st = target.stat()
        wrong_mode = stat.S_IMODE(st.st_mode) != mode
        wrong_owner = owned and (st.st_uid, st.st_gid) != self._owner()
        if not (wrong_mode or wrong_owner):
            return "unchanged"
        if not self.dry_run:
            os.chmod(target, mode)
            if wrong_owner:
                os.chown(target, *self._owner())
        return "updated"

    def _owner(self) -> tuple[int, int]:
        if self._ids is None:
            try:
                entry = pwd.getpwnam(self.layout.user)
            except KeyError:
                if self.dry_run:
                    return (-1, -1)
                raise CollectorError(f"user {self.layout.user}: does not exist") from None
            self._ids = (entry.pw_uid, entry.pw_gid)
        return self._ids

    def _run(self, *argv: str, what: str = "command") -> None:
        if not self.dry_run:
            run(list(argv))
        self._step(Step(what, " ".join(argv), "ran"))

    def _step(self, step: Step) -> None:
        if self.dry_run and step.outcome in WOULD:
            step = Step(step.what, step.path, WOULD[step.outcome], step.note)
        self.steps.append(step)


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def read_given(source: Optional[str], what: str, stdin: BinaryIO) -> Optional[bytes]:
    """A credential from a file or `-` (standard input), stripped; never from argv."""
    if source is None:
        return None
    try:
        data = (stdin.read() if source == "-" else Path(source).read_bytes()).strip()
    except OSError as exc:
        raise CollectorError(f"--{what}-from {source}: {exc.strerror}") from None
    if not data:
        raise CollectorError(f"--{what}-from {source}: empty")
    return data


def install_from_args(args) -> list[Step]:
    """The CLI's `install` verb (cli.py parses the flags)."""
    if args.secret_from == "-" and args.webhook_from == "-":
        raise CollectorError("--secret-from - and --webhook-from -: standard input can carry only one of them")
    staging = args.root is not None
    if staging and not args.no_useradd:
        raise CollectorError("--root stages files into a tree that has no user database of its own: add "
                             "--no-useradd (the user must exist on this machine, for the files' owner)")
    secret = read_given(args.secret_from, "secret", sys.stdin.buffer)
    webhook_raw = read_given(args.webhook_from, "webhook", sys.stdin.buffer)
    webhook = None
    if webhook_raw is not None:
        try:
            webhook = check_webhook_url(webhook_raw.decode(), f"--webhook-from {args.webhook_from}")
        except UnicodeDecodeError:
            raise CollectorError(f"--webhook-from {args.webhook_from}: not UTF-8 text") from None
    layout = Layout(code=args.code.resolve(), user=args.user, listen=args.listen)
    installer = Installer(layout, root=args.root.resolve() if staging else Path("/"), dry_run=args.dry_run,
                          useradd=not args.no_useradd, systemctl=not (staging or args.no_systemctl))
    return installer.install(secret, webhook)


def step_json(step: Step) -> dict:
    return asdict(step)
