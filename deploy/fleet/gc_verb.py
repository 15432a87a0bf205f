"""`fleet gc [--keep N] [--dry-run]`: collect old images on every hypervisor, hosts in parallel.

Each host decides for itself (hostside gc, deploy/fleet/gc_step.py): bake/gc.py's policy on the host's images dir,
with the host's storage and state dirs telling what its agents' disks and states use, so an image one host still
runs an agent on stays there while another host drops it. A host that does not answer, or whose collection stopped
partway, is named with one line; the other hosts' collections are done and reported all the same."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from bake import gc_report
from bake.gc import Collected, Plan
from deploy.fleet.ssh import Ssh, check_remote, each_host, remote_python
from deploy.inventory import Host, Inventory

TIMEOUT_S = 300       # reads headers and stats, removes files: seconds on a host, unless its disk hangs


@dataclass(frozen=True)
class HostGc:
    """One host's collection: its plan and what it removed, or the one line that says why there is none."""
    host: str
    plan: Optional[Plan] = None
    collected: Optional[Collected] = None
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error or (self.collected and self.collected.error))

    def to_json(self, dry_run: bool) -> dict:
        report = gc_report.to_json(self.plan, self.collected, dry_run) if self.plan and self.collected else {}
        return {"host": self.host, "ok": not self.failed, **report,
                "error": self.error or (self.collected.error if self.collected else "")}


def gc_host(ssh: Ssh, host: Host, keep: int, dry_run: bool) -> tuple[Plan, Collected]:
    remote = remote_python(host, ["-m", "deploy.fleet.hostside", "gc", "--images", str(host.host_images_dir),
                                  "--storage", str(host.storage_dir), "--state-dir", str(host.state_dir),
                                  "--keep", str(keep), *(["--dry-run"] if dry_run else [])], site=False)
    done = check_remote(ssh.run(host, remote, timeout=TIMEOUT_S), host, "gc")
    return gc_report.from_json(json.loads(done.stdout))


def gc(ssh: Ssh, hosts: Sequence[Host], keep: int, dry_run: bool) -> list[HostGc]:
    outcomes = each_host(hosts, lambda h: gc_host(ssh, h, keep, dry_run))
    return [HostGc(h.name, *outcomes[h.name].value) if outcomes[h.name].ok
            else HostGc(h.name, error=outcomes[h.name].error) for h in hosts]


def main(args, inv: Inventory, ssh: Ssh, hosts: Sequence[Host]) -> int:
    results = gc(ssh, hosts, args.keep, args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "hosts": [r.to_json(args.dry_run) for r in results]}, indent=2))
    else:
        for r in results:
            if r.plan and r.collected:
                print("\n".join(gc_report.lines(r.plan, r.collected, args.dry_run, prefix=f"{r.host}: ")))
    for r in results:
        if r.error:
            print(f"fleet: {r.error}", file=sys.stderr)
        elif r.collected and r.collected.error:
            print(f"fleet: {r.host}: gc stopped: {r.collected.error}", file=sys.stderr)
    return 2 if any(r.failed for r in results) else 0
