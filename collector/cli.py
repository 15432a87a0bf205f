"""`python -m collector serve ...` runs the web service; `python -m collector ack-gap AGENT ...` accounts for
reports that will never arrive; `python -m collector accept-drift AGENT ...` accepts an agent's drift into its
baseline. Flags are parsed here, once; every CollectorError is one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from host import exit_codes
from host.run import CommandFailed

from . import install
from .backup import BackupPolicy, BackupScheduler
from .config import (
    WEBHOOK_ENV,
    CollectorConfig,
    CollectorError,
    flag,
    parse_drift_classes,
    parse_listen,
    read_operator_token,
    read_secret,
    read_webhook_url,
    sqlite_path,
    tunables,
)
from .inert import one_line
from .restore import hold_serving_lock, restore

DB_HELP = "sqlite:///PATH (default backend) or postgresql://USER@HOST/DB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collector",
                                     description="agentfleet collector: stores agentd reports, shows the fleet, "
                                                 "alerts.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the collector web service")
    serve.add_argument("--listen", default=f"{CollectorConfig.host}:{CollectorConfig.port}",
                       help="HOST:PORT to listen on (default %(default)s)")
    serve.add_argument("--db", required=True, help=DB_HELP)
    serve.add_argument("--secret-file", required=True, type=Path,
                       help="file holding the collector secret (mode 0600): tokens are HMAC(secret, agent name)")
    serve.add_argument("--webhook-file", type=Path,
                       help=f"file (mode 0600) holding the Mattermost incoming webhook URL for alerts; or set "
                            f"${WEBHOOK_ENV} (default: alerts are only logged)")
    serve.add_argument("--webhook-url", dest="webhook_url_in_argv", help=argparse.SUPPRESS)
    serve.add_argument("--backup-dir", type=Path,
                       help="SQLite: back the database up online into this directory (it must exist), every "
                            "--backup-every-s; restore with `restore` (default: no backups)")
    serve.add_argument("--operator-token-file", type=Path,
                       help="file (mode 0600) holding the token an operator types into an agent's page to accept its "
                            "drift (default: the page shows drift but cannot accept it; accept-drift still can)")
    serve.add_argument("--drift-alerts", default=",".join(CollectorConfig.drift_alert_classes),
                       help="comma-separated drift classes that raise alerts: unexplained, conffile, package "
                            "(default %(default)s; all three for every drift)")
    for setting in tunables():
        serve.add_argument(flag(setting.name), type=int if isinstance(setting.default, int) else float,
                           default=setting.default,
                           help=setting.metadata["help"] + (" (default %(default)s)" if setting.default else ""))
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    ack = sub.add_parser("ack-gap", help="acknowledge an agent's sequence gap that can never close",
                         description="Count the agent's missing reports up to its last seq as accounted for (a "
                                     "database restored from an older backup, a report the agent dropped): its "
                                     "contiguous seq moves to its last seq and the gap alert recovers. Works while "
                                     "the collector runs.")
    ack.add_argument("agent")
    ack.add_argument("--db", required=True, help=DB_HELP)
    ack.add_argument("--reason", default="", help="why, kept with the acknowledgement")
    ack.add_argument("--dry-run", action="store_true", help="say what would be acknowledged; change nothing")
    ack.add_argument("--json", action="store_true", help="print the outcome as JSON")

    restore = sub.add_parser("restore", help="put a backup back as the database (the collector stopped)",
                             description="Check BACKUP (PRAGMA integrity_check, the collector's tables), then make it "
                                         "the database at --db; the replaced database is kept beside it as "
                                         "<db>.before-restore-<time>. Refused while a collector runs on --db.")
    restore.add_argument("backup", type=Path, help="a backup file, e.g. /var/lib/agentfleet-collector/backups/"
                                                   "collector-<time>.db")
    restore.add_argument("--db", required=True, help="sqlite:////ABSOLUTE/PATH of the collector's database")
    restore.add_argument("--dry-run", action="store_true", help="check the backup and say what would happen")
    restore.add_argument("--json", action="store_true", help="print the outcome as JSON")

    inst = sub.add_parser("install", help="install the collector as a systemd service (idempotent)",
                          description="Create the user, the state directory (database, backups), the secret and "
                                      "webhook files (0600) and agentfleet-collector.service; enable and (re)start "
                                      "it. Run again, it changes only what differs. Credentials come from a file or "
                                      "standard input (-), never argv, and are never printed.")
    inst.add_argument("--secret-from", metavar="FILE|-", help="the collector secret (the inventory's "
                      "collector_secret); default: keep the installed one, or generate one")
    inst.add_argument("--webhook-from", metavar="FILE|-", help="the Mattermost incoming webhook URL; default: keep "
                      "the installed one (none: alerts are only logged)")
    inst.add_argument("--listen", default=install.DEFAULT_LISTEN,
                      help="HOST:PORT the service listens on (default %(default)s: where agents reach it)")
    inst.add_argument("--user", default=install.USER, help="the service's user (default %(default)s)")
    inst.add_argument("--code", type=Path, default=install.CODE,
                      help="the agentfleet checkout the service runs, with its .venv (default: this one, "
                           "%(default)s)")
    inst.add_argument("--root", type=Path, help="stage the files under DIR instead of / (the unit keeps the final "
                                                "paths); touches no service; needs --no-useradd")
    inst.add_argument("--no-useradd", action="store_true", help="the user exists already; do not create it")
    inst.add_argument("--no-systemctl", action="store_true", help="write the files; do not enable or start")
    inst.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    inst.add_argument("--json", action="store_true", help="print the steps as JSON")

    accept = sub.add_parser("accept-drift", help="accept an agent's drift into its baseline",
                            description="Record that the agent's current drift (all of it, or the --path entries) is "
                                        "intended: who, when, why and the value of each entry. The running "
                                        "collector hands it to the agent with the answer to its next report (within "
                                        "a sweep, a few seconds, of this command); the agent updates its baseline "
                                        "and the drift and its alert go. A value changed later is drift again.")
    accept.add_argument("agent")
    accept.add_argument("--db", required=True, help=DB_HELP)
    accept.add_argument("--by", required=True, help="who accepts (recorded with the acceptance)")
    accept.add_argument("--path", action="append", default=[],
                        help="an in-VM path (or pkg:NAME) whose drift to accept; repeat it; default: all drift")
    accept.add_argument("--reason", default="", help="why, kept with the acceptance")
    accept.add_argument("--dry-run", action="store_true", help="say what would be accepted; change nothing")
    accept.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    if args.webhook_url_in_argv is not None:
        raise CollectorError(f"--webhook-url is no longer accepted: any local user can read argv (ps); put the URL "
                             f"in a file (chmod 600) and pass --webhook-file FILE, or set ${WEBHOOK_ENV}")
    host, port = parse_listen(args.listen)
    if args.backup_dir is not None:
        if sqlite_path(args.db) is None:
            raise CollectorError("--backup-dir: backups are of a SQLite database; back PostgreSQL up with pg_dump")
        if not args.backup_dir.is_dir():
            raise CollectorError(f"--backup-dir {args.backup_dir}: no such directory")
    return CollectorConfig(db_url=args.db, secret=read_secret(args.secret_file), host=host, port=port,
                           webhook_url=read_webhook_url(args.webhook_file), backup_dir=args.backup_dir,
                           operator_token=read_operator_token(args.operator_token_file),
                           drift_alert_classes=parse_drift_classes(args.drift_alerts),
                           **{s.name: getattr(args, s.name) for s in tunables()})


def serve(config: CollectorConfig, log_level: str = "info") -> None:
    import uvicorn

    from .app import create_app
    from .store import open_store

    path = sqlite_path(config.db_url)
    if path is not None:
        hold_serving_lock(Path(path))   # for the process's life: a restore refuses to run under us
    store = open_store(config.db_url, config.store_timeout_s)
    app = create_app(config, store)
    backups = None
    if config.backup_dir is not None and path is not None:
        backups = BackupScheduler(BackupPolicy(Path(path), config.backup_dir, config.backup_every_s,
                                               config.backup_keep, config.store_timeout_s))
        backups.start()
    try:
        # access_log off: one line per report would be the collector's main cost at fleet scale
        uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=10)
    finally:
        if backups is not None:
            backups.stop()


def restore_verb(args: argparse.Namespace) -> int:
    path = sqlite_path(args.db)
    if path is None:
        raise CollectorError("restore: --db must be sqlite:///PATH (PostgreSQL: pg_restore)")
    done = restore(args.backup, Path(path), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(done.to_json()))
        return exit_codes.OK
    facts = done.backup
    newest = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(facts.newest_report_at)) if facts.newest_report_at \
        else "none"
    verb = "would restore" if done.dry_run else "restored"
    kept = f"; the database it replaces {'would be' if done.dry_run else 'is'} kept as {done.kept_previous}" \
        if done.kept_previous else ""
    print(f"{verb} {done.database} from {facts.path} ({facts.agents} agents, {facts.reports} reports, newest "
          f"received {newest}){kept}")
    if not done.dry_run:
        print("start the collector; reports newer than the backup that agents no longer spool show as gaps "
              "(reason not_in_this_database): `python -m collector ack-gap AGENT` accounts for them")
    return exit_codes.OK


def existing_database(db_url: str) -> None:
    """A mistyped SQLite path must not become a new, empty database."""
    path = sqlite_path(db_url)
    if path is not None and not Path(path).is_file():
        raise CollectorError(f"--db {db_url}: no such database file")


def ack_gap(args: argparse.Namespace) -> int:
    from .gaps import explain_gap
    from .store import open_store

    existing_database(args.db)

    async def run() -> dict:
        store = open_store(args.db)
        try:
            state = await store.agent(args.agent)
            if state is None:
                raise CollectorError(f"agent {args.agent!r}: no report from it is stored in {args.db.split('://')[0]}")
            gap = explain_gap(state, await store.stored_above(args.agent, state.contiguous_seq))
            if gap is None:
                return {"agent": args.agent, "acknowledged": None, "gap": None,
                        "contiguous_seq": state.contiguous_seq, "last_seq": state.last_seq}
            if args.dry_run:
                return {"agent": args.agent, "acknowledged": None, "gap": gap.to_json(), "dry_run": True,
                        "contiguous_seq": state.contiguous_seq, "last_seq": state.last_seq}
            ack = await store.acknowledge_gap(args.agent, time.time(), args.reason)
            after = await store.agent(args.agent)
            return {"agent": args.agent, "acknowledged": None if ack is None else vars(ack), "gap": gap.to_json(),
                    "contiguous_seq": after.contiguous_seq, "last_seq": after.last_seq}
        finally:
            store.close()

    outcome = asyncio.run(run())
    if args.json:
        print(json.dumps(outcome))
    elif outcome["gap"] is None:
        print(f"{args.agent}: no open gap (contiguous seq {outcome['contiguous_seq']} = last seq "
              f"{outcome['last_seq']}); nothing to acknowledge")
    else:
        gap = outcome["gap"]
        verb = "would acknowledge" if args.dry_run else "acknowledged"
        print(f"{args.agent}: {verb} seq {gap['from_seq']}..{gap['to_seq']} ({gap['missing']} missing; "
              f"{gap['reason']}); contiguous seq {outcome['contiguous_seq']}, last seq {outcome['last_seq']}")
    return exit_codes.OK


def install_verb(args: argparse.Namespace) -> int:
    try:
        steps = install.install_from_args(args)
    except CommandFailed as exc:   # useradd, systemctl
        raise CollectorError(f"install: {exc}") from None
    if args.json:
        print(json.dumps([install.step_json(s) for s in steps]))
    else:
        for s in steps:
            print(f"{s.outcome:<12} {s.what:<9} {s.path}" + (f" ({s.note})" if s.note else ""))


def accept_drift(args: argparse.Namespace) -> int:
    from . import acceptance
    from .store import open_store

    by, reason = acceptance.operator_name(args.by), acceptance.reason_text(args.reason)
    existing_database(args.db)

    async def run() -> list:
        store = open_store(args.db)
        try:
            state = await store.agent(args.agent)
            if state is None:
                raise CollectorError(f"agent {args.agent!r}: no report from it is stored in {args.db.split('://')[0]}")
            chosen = acceptance.acceptances(state, acceptance.choose(state, args.path), by, reason, time.time())
            if not args.dry_run:
                await store.accept_drift(chosen)
            return chosen
        finally:
            store.close()

    chosen = asyncio.run(run())
    if args.json:
        print(json.dumps({"agent": args.agent, "dry_run": args.dry_run, "accepted": [vars(a) for a in chosen]}))
        return exit_codes.OK
    verb = "would accept" if args.dry_run else "accepted"
    print(f"{args.agent}: {verb} {len(chosen)} drift entr{'y' if len(chosen) == 1 else 'ies'} by {by}"
          + ("" if args.dry_run else "; the agent adopts them with its next report"))
    for a in chosen:
        print(f"  {a.kind:8} {one_line(a.path)}  now {a.actual}")
    return exit_codes.OK


class OneLineFormatter(logging.Formatter):
    """Every record on one line: a host name or a detail with a newline in it cannot forge a second record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(args, "log_level", "warning").upper(), handlers=[handler])
    try:
        if args.command == "ack-gap":
            return ack_gap(args)
        if args.command == "restore":
            return restore_verb(args)
        if args.command == "install":
            return install_verb(args)
        if args.command == "accept-drift":
            return accept_drift(args)
        serve(config_from_args(args), args.log_level)
    except CollectorError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    return exit_codes.OK
