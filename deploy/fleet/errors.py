"""The one exception type of the fleet tool: caught once by the CLI, printed as one line naming the host or agent."""
from __future__ import annotations


class FleetError(Exception):
    """A user-facing failure of a fleet operation; the message starts with the host or agent at fault."""

    exit_code = 2


class SshFailed(FleetError):
    """The SSH connection itself failed (unreachable, host key refused, login refused, no answer in time): doctor's
    "reachable" column, as opposed to a step that ran on the host and failed there."""
