"""`fleet clone|replace|rollback|destroy AGENT...`: run deploy/clone.py on each agent's hypervisor, one call per
host for all its agents (one libguestfs launch there), hosts in parallel, results merged.

What a host needs travels with the call, on the SSH connection's standard input, never in argv or a file there:
line 1 is the inventory cut to that host and its agents (JSON, paths as on the host, secrets source `stdin`), the
rest is the secrets of those agents (YAML, read once here from the inventory's source). The host's clone refuses
an agent placed elsewhere, and here the placement check is strict: a host never set up (no identity file) is
refused too."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import yaml

from deploy.fleet.errors import FleetError
from deploy.fleet.ssh import Completed, Ssh, check_remote, each_host, remote_python
from deploy.inventory import Agent, Host, Inventory
from deploy.secrets import AgentSecrets, load_secrets

MODES = {"clone": [], "replace": ["--replace"], "update": ["--update"], "rollback": ["--rollback"],
         "destroy": ["--destroy"]}
NEEDS_SECRETS = ("clone", "replace", "update")


@dataclass
class HostRun:
    host: str
    agents: list[str]
    rc: int = 0
    results: list = field(default_factory=list)
    output: str = ""            # --dry-run: the host's text
    error: str = ""


def host_inventory(inv: Inventory, host: Host) -> dict:
    """The inventory as this host's clone needs it: its own entry and agents, its images dir, secrets on stdin."""
    n, s = inv.network, inv.services
    placed = [a for a in inv.agents.values() if a.host == host.name]
    return {
        "network": {"mode": n.mode, "subnet": str(n.subnet), "gateway": n.gateway, "dns": list(n.dns),
                    "bridge": n.bridge, "ssh_port_base": n.ssh_port_base, "collector_forward": n.collector_forward,
                    "ntp": list(n.ntp)},
        "services": {"mattermost_url": s.mattermost_url, "collector_url": s.collector_url,
                     "collector_api_url": s.collector_api_url, "mattermost_team": s.mattermost_team,
                     "model": {k: v for k, v in s.model.__dict__.items() if v}},
        "admins": {"ssh_keys": list(inv.admin_keys)},
        "secrets": {"source": {"stdin": True}, "shared": list(inv.secrets.shared),
                    "per_agent": list(inv.secrets.per_agent)},
        "images_dir": str(host.host_images_dir),
        "hosts": {host.name: {"uri": host.uri, "storage_dir": str(host.storage_dir), "state_dir": str(host.state_dir),
                              "ram_gb": host.ram_gb, "disk_gb": host.disk_gb,
                              "reserve": {"ram": host.reserve.ram_pct, "disk": host.reserve.disk_pct}}},
        "agents": {a.name: _agent(a) for a in placed},
    }


def _agent(a: Agent) -> dict:
    out = {"host": a.host, "vcpu": a.vcpu, "ram_gb": a.ram_gb, "disk_gb": a.disk_gb, "ip": a.ip, "role": a.role,
           "mattermost": {"channels": list(a.mattermost.channels), "require_mention": a.mattermost.require_mention,
                          "dm_from": list(a.mattermost.dm_from)}}
    if a.ssh_port is not None:
        out["ssh_port"] = a.ssh_port
    if a.root_gb is not None:
        out["root_gb"] = a.root_gb
    if a.docker_gb:
        out["docker_gb"] = a.docker_gb
    if a.firewall_allow:
        out["firewall_allow"] = [str(rule) for rule in a.firewall_allow]
    if a.forwards:
        out["forwards"] = {str(host): guest for host, guest in a.forwards}
    return out


def secrets_yaml(inv: Inventory, secrets: dict[str, AgentSecrets], names: Sequence[str]) -> bytes:
    """The {shared, agents} shape the host's stdin source reads; values revealed only into this byte string."""
    if not names:
        return b""
    first = secrets[names[0]]
    shared = {k: first[k].reveal() for k in inv.secrets.shared}
    agents = {n: {k: secrets[n][k].reveal() for k in inv.secrets.per_agent} for n in names}
    return yaml.safe_dump({"shared": shared, "agents": agents}).encode()


def stdin_for(inv: Inventory, host: Host, secrets: Optional[dict[str, AgentSecrets]], names: Sequence[str]) -> bytes:
    line = json.dumps(host_inventory(inv, host)).encode() + b"\n"
    return line + (secrets_yaml(inv, secrets, names) if secrets else b"")


def call_clone(ssh: Ssh, inv: Inventory, host: Host, names: Sequence[str], clone_args: list[str],
               secrets: Optional[dict[str, AgentSecrets]], timeout: float) -> Completed:
    """One `clone.py` on `host` (placement strict), the host's inventory and the agents' secrets on its stdin."""
    return ssh.run(host, remote_python(host, clone_args, env={"AGENTFLEET_PLACEMENT": "required"}),
                   stdin=stdin_for(inv, host, secrets, names), timeout=timeout)


def run_host(ssh: Ssh, inv: Inventory, host: Host, names: list[str], mode: str, args,
             secrets: Optional[dict[str, AgentSecrets]]) -> HostRun:
    clone_args = ["deploy/clone.py", "--inventory", "-", *MODES[mode], *names]
    if getattr(args, "image", None):
        clone_args += ["--image", args.image]
    if getattr(args, "purge_data", False):
        clone_args.append("--purge-data")
    if getattr(args, "restore_data", False):
        clone_args.append("--restore-data")
    for option in ("stop_timeout", "health_timeout", "unhealthy_grace"):
        if getattr(args, option, None) is not None:
            clone_args += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    clone_args += ["--dry-run"] if args.dry_run else ["--json"]
    done = call_clone(ssh, inv, host, names, clone_args, secrets, args.timeout)
    run = HostRun(host.name, names, rc=done.rc)
    if done.rc not in (0, 3):
        check_remote(done, host, "clone.py")     # one line: agentfleet missing, or clone.py's own
    text = done.stdout.decode(errors="replace")
    if args.dry_run:
        run.output = text
    else:
        try:
            run.results = [{"host": host.name, **r} for r in json.loads(text or "[]")]
        except ValueError:
            raise FleetError(f"{host.name}: clone.py answered no JSON ({text[:80]!r})") from None
    if done.rc == 3:
        run.error = f"{host.name}: " + (done.stderr.strip().splitlines() or ["rolled back"])[-1].removeprefix("clone: ")
    return run


def main(args, inv: Inventory, ssh: Ssh) -> int:
    names = list(dict.fromkeys(args.agents))
    agents = [inv.agent(n) for n in names]                 # an unknown agent: one line, nothing sent anywhere
    by_host: dict[str, list[str]] = {}
    for a in agents:
        by_host.setdefault(a.host, []).append(a.name)
    hosts = [inv.hosts[h] for h in by_host]
    for h in hosts:
        if h.ssh is None:
            raise FleetError(f"{h.name}: no ssh entry in the inventory (agents {', '.join(by_host[h.name])})")
    # read once here, all agents, before any host is touched: a missing secret stops everything
    secrets = load_secrets(inv.secrets, names) if args.command in NEEDS_SECRETS else None
    outcomes = each_host(hosts, lambda h: run_host(ssh, inv, h, by_host[h.name], args.command, args, secrets))
    runs = [o.value if o.ok else HostRun(o.host, by_host[o.host], rc=2, error=o.error) for o in outcomes.values()]
    report(runs, args)
    codes = {r.rc for r in runs}
    return 0 if codes <= {0} else 3 if codes <= {0, 3} else 2


def report(runs: Sequence[HostRun], args) -> None:
    if args.json:
        print(json.dumps({"results": [r for run in runs for r in run.results],
                          "errors": [run.error for run in runs if run.error]}, indent=2))
    elif args.dry_run:
        for run in runs:
            print(f"=== host {run.host}: {', '.join(run.agents)}")
            print(run.output.rstrip())
    else:
        for run in runs:
            for r in run.results:
                print(f"{r['agent']} on {run.host}: {r['action']} {r['image_version']} - {r['message']}")
                for line in r.get("known_hosts", []):
                    print(f"  known_hosts: {line}")
    for run in runs:
        if run.error:
            print(f"fleet: {run.error}", file=sys.stderr)
