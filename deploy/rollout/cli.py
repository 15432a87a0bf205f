"""`fleet rollout` after argparse: the verb in a few lines for the fleet tool.

    sub = verbs.add_parser("rollout", help="upgrade every agent by replacement, canary first, in health-gated waves")
    rollout.add_arguments(sub)                       # VERSION, --canary, --waves, ..., --status, --dry-run, --json
    ...
    return rollout.run_verb(args, inventory, replace_on_host=..., rollback_on_host=..., push=...,
                            health=rollout.CollectorHealth(inventory.services.collector_api_url))
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, TextIO

from deploy.inventory import Inventory
from deploy.rollout.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, RolloutError
from deploy.rollout.executor import rollout_status, run_rollout
from deploy.rollout.interfaces import HealthSource, ProgressFeed, Push, ReplaceOnHost, RollbackOnHost
from deploy.rollout.options import add_flags, options_from_args
from deploy.rollout.progress import JsonReporter, TextReporter


def add_arguments(p: argparse.ArgumentParser, *, with_json: bool = True) -> None:
    """VERSION and every rollout flag; pass with_json=False when the fleet tool's parser already has --json."""
    p.add_argument("version", nargs="?", metavar="VERSION", help="the image version to roll out")
    add_flags(p)
    if with_json:
        p.add_argument("--json", action="store_true", help="progress and the final report as JSON Lines")


def run_verb(args: argparse.Namespace, inventory: Inventory, *, replace_on_host: ReplaceOnHost,
             rollback_on_host: RollbackOnHost, push: Push, health: HealthSource, stdout: TextIO = sys.stdout,
             stderr: TextIO = sys.stderr, feed: Optional[Callable[[], Optional[ProgressFeed]]] = None) -> int:
    """Run `fleet rollout` as parsed; returns its exit code (docs/rollout.md). A RolloutError is one line on stderr.
    `feed` makes the collector's progress feed, called only when a rollout really runs (not --status, --dry-run)."""
    as_json = bool(getattr(args, "json", False))
    out = JsonReporter(stdout) if as_json else TextReporter(stdout)
    try:
        options = options_from_args(args)
        if args.status:
            report = rollout_status(inventory, options.journal_dir)
            if report is None:
                print(json.dumps({"state": "none"}) if as_json else "no rollout of this fleet is journaled",
                      file=stdout)
                return EXIT_OK
        else:
            if not args.version:
                raise RolloutError("name the image VERSION to roll out (or use --status)")
            report = run_rollout(inventory, args.version, options, replace_on_host=replace_on_host,
                                 rollback_on_host=rollback_on_host, push=push, health=health, out=out,
                                 feed=feed() if feed and not options.dry_run else None)
    except RolloutError as e:
        print(f"rollout: {e}", file=stderr)
        return e.exit_code if not args.status else EXIT_USAGE
    except KeyboardInterrupt:
        print("rollout: interrupted; run the same command again to continue", file=stderr)
        return EXIT_INTERRUPTED
    if as_json:
        out.report(report.to_json())
    else:
        out.text(report.render())
    return EXIT_OK if args.status else report.exit_code
