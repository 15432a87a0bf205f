"""agentd's one exception type: raised anywhere, caught once in the CLI and printed as one line."""


class AgentdError(Exception):
    """A problem the operator can fix (bad config, unreadable token, missing baseline)."""
