"""The one exception type of the rollout, caught once by the CLI and printed as one line, and the exit codes.

Exit codes (distinct so automation can tell them apart; `fleet rollout` returns them as they are):
0 every agent in scope runs the target version (or nothing was left to do);
2 a usage error or a refusal before anything changed (bad option, unknown agent, another rollout holds the fleet);
4 halted: a wave failed (a replace rolled back, a host error, the wave deadline); later waves untouched;
5 refused to start a wave: the fleet was already degraded (agents unhealthy or silent), nothing of that wave touched;
130 interrupted (the journal lets the same command continue)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_HALTED = 4
EXIT_DEGRADED = 5
EXIT_INTERRUPTED = 130


class RolloutError(Exception):
    """A user-facing failure of the rollout that changed nothing; the message names the input at fault."""

    exit_code = EXIT_USAGE
