"""A small fleet on real VMs for tests and benchmarks: sshd "hypervisors" on loopback sharing this machine's
libvirtd, agents of the small test image (images/agent-small.yaml) cloned by the fleet tool and reporting to a real
collector through QEMU's restricted user networking, and the admin's SSH into them."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

from bake.publish import Published
from tests.clone_support import ensure_libvirtd, libvirt_workdir, write_secrets
from tests.collector_server import free_port, start_collector
from tests.fleet_support import keygen, running_lab
from tests.image_variants import link_published

BOOT_DEADLINE = 900          # clone + boot of four small VMs at once to their first healthy report, TCG, 2 cores
TEST_COLLECTOR_SECRET = b"collector-secret-for-tests"        # write_secrets' shared collector_secret
ROLLOUT = ("--min-healthy", "10", "--stale-after", "90", "--poll", "2", "--wave-deadline", "1200")


class SmallFleet:
    """The lab, the collector, the agents' placement and the admin's SSH into them (for what only the guest can do)."""

    def __init__(self, lab, collector, admin_key: Path, ssh_ports: dict[str, int], work: Path,
                 agents: dict[str, str]):
        self.lab, self.collector, self.admin_key, self.ssh_ports, self.work = lab, collector, admin_key, ssh_ports, work
        self.agents = agents
        self.ws_images = work / "ws-images"

    def fleet(self, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return self.lab.fleet(*args, timeout=timeout)

    def rollout(self, journal: Path, *args: str, rollout_flags=ROLLOUT, timeout: float = 2400
                ) -> subprocess.CompletedProcess:
        return self.fleet("rollout", *args, *rollout_flags, "--json", "--journal-dir", str(journal), timeout=timeout)

    def add_image(self, image) -> None:
        """Publish a baked image on the workstation side (hard links), for the fleet tool to push."""
        link_published(image, self.ws_images)

    def state(self, agent: str) -> dict:
        status, body = self.collector.get(f"/api/v1/agents/{agent}")
        return body if status == 200 else {}

    def host_state(self, agent: str) -> dict:
        return json.loads((self.lab.hosts[self.agents[agent]].state / agent / "state.json").read_text())

    def ssh(self, agent: str, command: str) -> str:
        out = subprocess.run(["ssh", "-i", str(self.admin_key), "-p", str(self.ssh_ports[agent]),
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"ssh {agent} {command!r}: {out.stderr.strip()[-300:]}"
        return out.stdout.strip()

    def wait(self, what: str, predicate, timeout: float, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(interval)
        states = {a: (s.get("image_version"), s.get("healthy"), s.get("last_seq")) for a in self.agents
                  for s in [self.state(a)]}
        consoles = {a: _tail(self.lab.hosts[h].state / a / "console.log") for a, h in self.agents.items()}
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; collector: {states}\n{consoles}")

    def all_healthy_on(self, version: str, agents=None) -> bool:
        return all(self.state(a).get("image_version") == version and self.state(a).get("healthy")
                   for a in (agents or self.agents))


def _tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no console)"


@contextlib.contextmanager
def small_fleet(v1: Published, prefix: str, hosts: tuple[str, ...], agents: dict[str, str], first_address: int,
                first_ip: int) -> Iterator[SmallFleet]:
    """`agents` (name -> host) cloned from `v1` (the small image), booted and healthy; destroyed with their data
    after."""
    ensure_libvirtd()
    work = libvirt_workdir(prefix)
    collector = start_collector(work / "collector", secret=TEST_COLLECTOR_SECRET)
    admin = keygen(work / "admin_key", "small-fleet-admin")
    try:
        with running_lab(work, hosts, first_address) as lab:
            secrets = write_secrets(work / "secrets.yaml", list(agents))
            port = int(collector.url.rsplit(":", 1)[1])
            ssh_ports = {a: free_port() for a in agents}
            fl = SmallFleet(lab, collector, admin, ssh_ports, work, agents)
            fl.ws_images.mkdir()
            fl.add_image(v1)
            lab.overlay({a: {"host": h, "ip": f"10.220.1.{first_ip + i}", "ssh_port": ssh_ports[a], "vcpu": 1,
                             "ram_gb": 1, "disk_gb": 1, "role": "test"} for i, (a, h) in enumerate(agents.items())},
                        hosts={n: h.inventory_entry(uri="qemu:///system") for n, h in lab.hosts.items()},
                        images_dir=str(fl.ws_images), secrets={"source": {"file": str(secrets)}},
                        services={"collector_url": f"http://10.0.2.100:{port}",
                                  "collector_api_url": collector.url, "mattermost_url": ""},
                        admins={"ssh_keys": [admin.with_suffix(".pub").read_text().strip()]})
            assert lab.fleet("trust", *hosts).returncode == 0
            fl.v1 = v1
            pushed = fl.fleet("push", v1.version, "--json")
            assert pushed.returncode == 0, pushed.stderr[-1500:]
            t0 = time.monotonic()
            cloned = fl.fleet("clone", *agents, "--json")
            assert cloned.returncode == 0, cloned.stderr[-1500:]
            fl.wait(f"all agents healthy on {v1.version}", lambda: fl.all_healthy_on(v1.version), BOOT_DEADLINE)
            fl.boot_s = time.monotonic() - t0
            print(f"\nclone + boot of {len(agents)} small VMs on {len(hosts)} hosts to healthy: {fl.boot_s:.0f} s")
            try:
                yield fl
            finally:
                fl.fleet("destroy", *agents, "--purge-data", timeout=600)
    finally:
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)
