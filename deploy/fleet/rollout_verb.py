"""`fleet rollout VERSION`: the rollout policy (deploy/rollout/) given the fleet's own side effects: one
`clone.py --replace` (or `--rollback`) per host over SSH with the host's inventory and secrets on standard input,
the image push, and the collector's view of the fleet as the health source."""
from __future__ import annotations

import sys
from typing import Optional

from deploy import rollout
from deploy.errors import CloneError
from deploy.fleet import push as push_mod
from deploy.fleet.errors import FleetError
from deploy.fleet.remote_clone import call_clone
from deploy.fleet.ssh import Ssh
from deploy.inventory import Inventory
from deploy.rollout.feed import CollectorFeed
from deploy.rollout.journal import fleet_id
from deploy.secrets import AgentSecrets, load_secrets

CLONE_TIMEOUT_S = 3600  # one host's replace of a wave's agents: boots under TCG plus the health wait


class FleetSideEffects:
    """The rollout's ReplaceOnHost, RollbackOnHost and Push over this fleet's SSH connections."""

    def __init__(self, inv: Inventory, ssh: Ssh):
        self.inv, self.ssh = inv, ssh
        self._secrets: Optional[dict[str, AgentSecrets]] = None

    def secrets(self) -> dict[str, AgentSecrets]:
        """Read once, on the workstation, for every agent: a missing secret stops the rollout before any host."""
        if self._secrets is None:
            self._secrets = load_secrets(self.inv.secrets, list(self.inv.agents))
        return self._secrets

    def _clone(self, host: str, agents: list[str], mode_args: list[str]) -> dict[str, rollout.ReplaceOutcome]:
        argv = ["deploy/clone.py", "--inventory", "-", *mode_args, "--json", *agents]
        secrets = self.secrets() if "--replace" in mode_args else None
        try:
            done = call_clone(self.ssh, self.inv, self.inv.hosts[host], agents, argv, secrets, CLONE_TIMEOUT_S)
        except FleetError as e:  # unreachable host, no answer in time: every agent asked is an error
            return rollout.outcomes_from_clone(agents, 255, "", str(e))
        return rollout.outcomes_from_clone(agents, done.rc, done.stdout.decode(errors="replace"), done.stderr)

    def replace_on_host(self, host: str, agents: list[str], version: str) -> dict[str, rollout.ReplaceOutcome]:
        return self._clone(host, agents, ["--replace", "--image", version])

    def rollback_on_host(self, host: str, agents: list[str]) -> dict[str, rollout.ReplaceOutcome]:
        return self._clone(host, agents, ["--rollback"])

    def push(self, version: str) -> None:
        hosts = sorted({a.host for a in self.inv.agents.values()})
        results = push_mod.push(self.ssh, [self.inv.hosts[h] for h in hosts], push_mod.source(self.inv, version),
                                push_mod.Progress(enabled=False))
        failed = [r for r in results if r.result == "failed"]
        if failed:
            raise rollout.RolloutError("push failed, nothing replaced: " + "; ".join(r.error for r in failed))

    def feed(self, api_url: str) -> Optional[CollectorFeed]:
        """The collector's progress feed, signed with a token from the collector secret the clone already reads;
        none (one line) when the secrets cannot be read here: the replaces will say why, the page just stays still."""
        try:
            secret = next(iter(self.secrets().values()))["collector_secret"].reveal().encode()
        except (CloneError, StopIteration, KeyError) as e:
            print(f"rollout: warning: no progress on the collector's page ({e})", file=sys.stderr)
            return None
        return CollectorFeed(api_url, fleet_id(self.inv), secret)


def main(args, inv: Inventory, ssh: Ssh) -> int:
    effects = FleetSideEffects(inv, ssh)
    api_url = args.collector or inv.services.collector_api_url
    return rollout.run_verb(args, inv, replace_on_host=effects.replace_on_host,
                            rollback_on_host=effects.rollback_on_host, push=effects.push,
                            health=rollout.CollectorHealth(api_url), stdout=sys.stdout, stderr=sys.stderr,
                            feed=lambda: effects.feed(api_url))
