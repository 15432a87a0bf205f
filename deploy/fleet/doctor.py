"""`fleet doctor`: is every hypervisor ready for agentfleet? Per host: reachable, agentfleet at the workstation's
version, its identity file naming it, libvirt usable, KVM, free disk in the storage dir, the images it holds."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from deploy.fleet import hostside
from deploy.fleet.ssh import Outcome, Ssh, check_remote, each_host, remote_python
from deploy.inventory import Host

REPO = Path(__file__).resolve().parent.parent.parent
COLUMNS = ("reachable", "agentfleet", "identity", "libvirt", "kvm", "disk", "images")
INFO_ONLY = ("kvm", "images")      # shown, never make a host "not ready" (TCG works, push brings images)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HostReport:
    host: str
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks if c.name not in INFO_ONLY)

    def to_json(self) -> dict:
        return {"host": self.host, "ready": self.ready, "checks": [asdict(c) for c in self.checks]}


def probe(ssh: Ssh, host: Host) -> dict:
    done = ssh.run(host, remote_python(host, ["-m", "deploy.fleet.hostside", "probe", "--uri", host.uri,
                                              "--storage", str(host.storage_dir),
                                              "--images", str(host.host_images_dir)]), timeout=30)
    return json.loads(check_remote(done, host, "probe").stdout)


def judge(host: Host, outcome: Outcome, expected_version: str, min_free_gb: float,
          newest: Optional[str]) -> HostReport:
    """Turn one host's facts (or its failure) into pass/fail checks."""
    if not outcome.ok:
        checks = [Check("reachable", not outcome.ssh_failed, outcome.error)]
        if not outcome.ssh_failed:
            checks.append(Check("agentfleet", False, outcome.error))
        return HostReport(host.name, tuple(checks))
    f = outcome.value
    free_gb = f["free_bytes"] / 1e9
    images = f["images"]
    checks = (
        Check("reachable", True, f"{host.ssh.user}@{host.ssh.address}:{host.ssh.port}"),
        Check("agentfleet", f["agentfleet"] == expected_version,
              f"code {f['agentfleet']}" + ("" if f["agentfleet"] == expected_version
                                           else f", the workstation's is {expected_version}: update "
                                                f"{host.ssh.agentfleet_dir}")),
        Check("identity", f["identity"] == host.name,
              f"{f['host_file']} says {f['identity']!r}" if f["identity"] else
              f"{f['host_file']} missing: `python -m deploy.fleet setup {host.name}` writes it"),
        Check("libvirt", f["libvirt"]["ok"], f["libvirt"]["detail"]),
        Check("kvm", True, f"{f['kvm']['accel']}: {f['kvm']['detail']}"),
        Check("disk", f["storage_exists"] and free_gb >= min_free_gb,
              f"{free_gb:.1f} GB free in {f['storage_dir']}" + ("" if f["storage_exists"] else " (missing)")
              + ("" if free_gb >= min_free_gb else f", under {min_free_gb:g} GB")),
        Check("images", True, (", ".join(images) or "none") +
              (f" (lacks the newest, {newest}: fleet push)" if newest and newest not in images else "")),
    )
    return HostReport(host.name, checks)


def doctor(ssh: Ssh, hosts: Sequence[Host], min_free_gb: float, newest: Optional[str]) -> list[HostReport]:
    expected = hostside.code_version(REPO)
    outcomes = each_host(hosts, lambda h: probe(ssh, h))
    return [judge(h, outcomes[h.name], expected, min_free_gb, newest) for h in hosts]


def render(reports: Sequence[HostReport]) -> str:
    width = max([4, *(len(r.host) for r in reports)])
    lines = [f"{'HOST':<{width}}  " + "  ".join(f"{c.upper():<10}" for c in COLUMNS) + "  READY"]
    problems = []
    for r in reports:
        cells = {c.name: c for c in r.checks}
        row = []
        for col in COLUMNS:
            c = cells.get(col)
            cell = "-" if c is None else ("ok" if c.ok else "FAIL")
            if col == "kvm" and c is not None:
                cell = c.detail.split(":", 1)[0]
            if col == "images" and c is not None:
                cell = c.detail.split(" (")[0][:10]
            row.append(f"{cell:<10}")
        lines.append(f"{r.host:<{width}}  " + "  ".join(row) + f"  {'yes' if r.ready else 'NO'}")
        problems += [f"{r.host}: {c.name}: {c.detail}" if not c.detail.startswith(f"{r.host}:") else c.detail
                     for c in r.checks if not c.ok]
    ready = sum(r.ready for r in reports)
    lines.append(f"{ready}/{len(reports)} hosts ready")
    return "\n".join(lines + problems)
