"""`fleet rollout`: upgrade every agent by replacement, canary first, then waves gated on health, halting (and, when
asked, reverting) by itself; journaled so it resumes after a kill. docs/rollout.md tells the policy and the contract.

The fleet tool wires it with `add_arguments(parser)` and `run_verb(args, inventory, ...)` (deploy/rollout/cli.py),
giving its own ReplaceOnHost/RollbackOnHost/Push (clone.py over SSH; `outcomes_from_clone` parses clone.py's answer)
and `CollectorHealth(inventory.services.collector_api_url)`. `run_rollout(...)` is the same without the CLI."""
from deploy.rollout.cli import add_arguments, run_verb
from deploy.rollout.clone_result import outcomes_from_clone
from deploy.rollout.errors import EXIT_DEGRADED, EXIT_HALTED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, RolloutError
from deploy.rollout.executor import rollout_status, run_rollout
from deploy.rollout.health import CollectorHealth
from deploy.rollout.interfaces import (
                                        AgentHealth,
                                        FleetHealth,
                                        HealthSource,
                                        Outcome,
                                        Push,
                                        ReplaceOnHost,
                                        ReplaceOutcome,
                                        RollbackOnHost,
)
from deploy.rollout.options import RolloutOptions, Size, options_from_args
from deploy.rollout.planner import Plan, Wave, plan
from deploy.rollout.progress import JsonReporter, ProgressEvent, Reporter, SilentReporter, TextReporter
from deploy.rollout.report import AgentRow, RolloutReport

__all__ = [
    "AgentHealth", "AgentRow", "CollectorHealth", "EXIT_DEGRADED", "EXIT_HALTED", "EXIT_INTERRUPTED", "EXIT_OK",
    "EXIT_USAGE", "FleetHealth", "HealthSource", "JsonReporter", "Outcome", "Plan", "ProgressEvent", "Push",
    "ReplaceOnHost", "ReplaceOutcome", "Reporter", "RollbackOnHost", "RolloutError", "RolloutOptions",
    "RolloutReport", "SilentReporter", "Size", "TextReporter", "Wave", "add_arguments", "options_from_args",
    "outcomes_from_clone", "plan", "rollout_status", "run_rollout", "run_verb",
]
