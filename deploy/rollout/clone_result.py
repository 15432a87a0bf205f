"""What one `clone.py --replace --json` (or `--rollback --json`) process did to each of its agents, from its exit
code, its standard output (the JSON list of deploy.provision.Result) and the last line of its standard error.

clone.py's contract (deploy/clone.py, docs/clone.md): exit 0 every agent done; 3 a replace rolled back (stdout
still lists every agent: action "replace" for those that passed, "rollback" for those restored); 2 a clone error
(one line on stderr, no JSON: what happened to the agents is unknown); 130 interrupted; anything else is the
transport's (ssh exits 255 when it cannot reach the host)."""
from __future__ import annotations

import json
from typing import Iterable

from deploy.rollout.interfaces import Outcome, ReplaceOutcome

ROLLED_BACK_EXIT = 3  # deploy.errors.RolledBack.exit_code
DONE_ACTIONS = {"replace", "noop", "start", "resume", "clone"}


def outcomes_from_clone(agents: Iterable[str], returncode: int, stdout: str, stderr: str) -> dict[str, ReplaceOutcome]:
    """One outcome per agent asked. An agent missing from the JSON is an error carrying stderr's last line, so a
    host that failed half-way never looks like a success."""
    agents = list(agents)
    why = _last_line(stderr) or f"clone.py exited {returncode}"
    results = _results(stdout) if returncode in (0, ROLLED_BACK_EXIT) else {}
    out = {}
    for agent in agents:
        r = results.get(agent)
        if r is None:
            detail = why if returncode != 0 else "clone.py's JSON has no result for it"
            out[agent] = ReplaceOutcome(agent, Outcome.ERROR, None, f"exit {returncode}: {detail}")
        elif r.get("action") == "rollback":
            out[agent] = ReplaceOutcome(agent, Outcome.ROLLED_BACK, r.get("image_version") or None,
                                        str(r.get("message") or why))
        elif r.get("action") in DONE_ACTIONS:
            out[agent] = ReplaceOutcome(agent, Outcome.REPLACED, r.get("image_version") or None,
                                        str(r.get("message") or ""))
        else:
            out[agent] = ReplaceOutcome(agent, Outcome.ERROR, r.get("image_version") or None,
                                        f"unexpected clone.py action {r.get('action')!r}")
    return out


def _results(stdout: str) -> dict[str, dict]:
    """clone.py --json prints one JSON list; anything unparsable counts as no result at all."""
    try:
        data = json.loads(stdout or "[]")
    except ValueError:
        return {}
    if not isinstance(data, list):
        return {}
    return {r["agent"]: r for r in data if isinstance(r, dict) and isinstance(r.get("agent"), str)}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
