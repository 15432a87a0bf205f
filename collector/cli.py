"""`python -m collector serve ...`: parse flags, read the secret, open the store, run uvicorn."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from host import exit_codes

from .config import CollectorConfig, CollectorError, parse_listen, read_secret


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collector",
                                     description="agentfleet collector: stores agentd reports, shows the fleet, alerts.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the collector web service")
    serve.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT to listen on (default %(default)s)")
    serve.add_argument("--db", required=True, help="sqlite:///PATH (default backend) or postgresql://USER@HOST/DB")
    serve.add_argument("--secret-file", required=True, type=Path,
                       help="file holding the collector secret (mode 0600): tokens are HMAC(secret, agent name)")
    serve.add_argument("--webhook-url", help="Mattermost incoming webhook for alerts (default: log only)")
    serve.add_argument("--interval-s", type=float, default=30.0, help="agents' report interval (default %(default)s)")
    serve.add_argument("--stale-after", type=float, default=3.0,
                       help="intervals without a report before an agent is stale (default %(default)s)")
    serve.add_argument("--gap-grace-s", type=float, default=60.0,
                       help="seconds a sequence gap may stay open before it alerts (default %(default)s)")
    serve.add_argument("--retention-days", type=float, default=7.0,
                       help="prune reports older than this; the latest state per agent is kept (default %(default)s)")
    serve.add_argument("--sweep-s", type=float, default=None,
                       help="how often staleness, gaps and retention are checked (default: min(5, interval/2))")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    host, port = parse_listen(args.listen)
    for flag in ("interval_s", "stale_after", "gap_grace_s", "retention_days"):
        if getattr(args, flag) <= 0:
            raise CollectorError(f"--{flag.replace('_', '-')}: must be positive")
    sweep_s = args.sweep_s if args.sweep_s is not None else min(5.0, args.interval_s / 2)
    return CollectorConfig(db_url=args.db, secret=read_secret(args.secret_file), host=host, port=port,
                           webhook_url=args.webhook_url, interval_s=args.interval_s, stale_after=args.stale_after,
                           gap_grace_s=args.gap_grace_s, retention_days=args.retention_days, sweep_s=max(sweep_s, 0.05))


def serve(config: CollectorConfig, log_level: str = "info") -> None:
    import uvicorn

    from .app import create_app
    from .store import open_store

    store = open_store(config.db_url)
    app = create_app(config, store)
    # access_log off: one line per report would be the collector's main cost at fleet scale
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(config_from_args(args), args.log_level)
    except CollectorError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    return exit_codes.OK
