"""agentd's command line: run the service, send one report (--once), or print the health table (check)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import List, Optional

from . import exit_codes
from .config import DEFAULT_CONFIG, load_config, read_token
from .errors import AgentdError
from .fsutil import rooted
from .notify import Notifier, setup_logging

log = logging.getLogger("agentd")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="agentd", description="Health and drift reporter of an agentfleet VM.")
    p.add_argument("command", nargs="?", choices=["run", "check"], default="run",
                   help="run: the service (default); check: print the health table and exit (non-zero on a failure)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG}, under --root)")
    p.add_argument("--root", default="/", help="file system root every in-VM path is relative to (tests, images)")
    p.add_argument("--once", action="store_true",
                   help="send one report and exit (0 when delivered or spooled; 1 when the collector refuses the "
                        "token, the report then stays spooled, or a report was set aside)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = load_config(rooted(args.root, args.config) if args.config == DEFAULT_CONFIG else args.config)
        if args.command == "check":
            return cmd_check(config, args.root)
        if args.once:
            return cmd_once(config, args.root)
        return cmd_run(config, args.root)
    except AgentdError as e:
        print(f"agentd: {e}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED


def cmd_check(config, root: str) -> int:
    from .baseline import load_baseline
    from .checks import CheckContext, run_checks
    results = run_checks(CheckContext(config, root, load_baseline(config, root)))
    print(format_table(results))
    return exit_codes.FAILED if any(r.status == "fail" for r in results) else exit_codes.OK


def format_table(results) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'CHECK'.ljust(width)}  STATUS  DETAIL"]
    lines += [f"{r.name.ljust(width)}  {r.status.upper().ljust(6)}  {r.detail}" for r in results]
    return "\n".join(lines)


def cmd_once(config, root: str) -> int:
    from .agent import Agent
    agent = Agent(config, root, read_token(config, root))
    result = agent.run_once()
    agent.sender.close()
    if result.set_aside:
        log.error("%d report(s) can never be accepted: set aside to %s; see above", result.set_aside,
                  agent.spool.quarantine_dir)
        return exit_codes.FAILED
    if result.auth_refused:
        log.error("%s: %d report(s) kept in the spool", result.error, len(agent.spool))
        return exit_codes.FAILED
    if result.error:
        log.warning("collector unreachable (%s): report spooled (%d waiting)", result.error, len(agent.spool))
    return exit_codes.OK


def cmd_run(config, root: str) -> int:
    from .agent import Agent
    agents = []
    interrupts = []

    def on_signal(signum, _frame):
        interrupts.append(signum)
        if len(interrupts) > 1:  # a second Ctrl-C / TERM: stop waiting for a clean shutdown
            os._exit(1)
        log.info("received %s: stopping", signal.Signals(signum).name)
        for agent in agents:
            agent.stop()

    # installed before the (slow) start-up, so a TERM during it is a clean stop, not a kill
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        agents.append(Agent(config, root, read_token(config, root), Notifier()))
        if not interrupts:
            agents[0].run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return exit_codes.OK
