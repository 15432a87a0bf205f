"""Day-2 sizes on a real VM of the small test image (images/agent-small.yaml; no Docker in it, so the test writes to
/var/lib/docker itself: what is tested is the persistent disk under it, not Docker). Three boots, in file order:

1. clone with a Docker disk and a root disk bigger than the image's: /var/lib/docker is that disk, / has grown; a
   file in /var/lib/docker and one in /home/agent;
2. more vCPU, RAM and data disk in the inventory, `--update`: the dry run says so, the restart applies them, the file
   system grew, both files are there;
3. `--replace` with a copy of the image under another version: healthy, and the /var/lib/docker file survived;
then `--destroy --purge-data` removes the Docker disk with the data disk.

The same boots check the firewall (ufw, the seed's rules and the agent's `firewall_allow`): two listeners in the guest,
8080 allowed and 8081 not, each forwarded from a host port (`forwards`); from the host the allowed one answers and the
other gets no byte. The update moves the opening to 8081 (8080 closes); then, with ufw stopped, 8080 answers: the
closed check can fail. The replace's new overlay has ufw on again with the updated rules.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.clone_support import clone_cli, ensure_libvirtd, libvirt_workdir, write_overlay, write_secrets
from tests.collector_server import free_port, start_collector
from tests.fleet_support import keygen
from tests.image_variants import derive_image, small_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

RUN = f"{os.getpid() % 100000:05d}"
AGENT = f"rsz{RUN}"                       # own name per run: never another suite's domain
BOOT_S = 900                              # one boot of the small image to SSH under TCG on a loaded machine
SECRET = b"collector-secret-for-tests"    # write_secrets' collector_secret


class Site:
    def __init__(self, work: Path, overlay: Path, key: Path, port: int, collector):
        self.work, self.overlay, self.key, self.port, self.collector = work, overlay, key, port, collector

    def clone(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        return clone_cli("--overlay", str(self.overlay), AGENT, *args, timeout=timeout)

    def size(self, **agent) -> None:
        data = yaml.safe_load(self.overlay.read_text())
        data["agents"][AGENT].update(agent)
        self.overlay.write_text(yaml.safe_dump(data))

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                              "-o", "LogLevel=ERROR", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert not check or out.returncode == 0, f"ssh {command!r}: {out.stderr.strip()[-300:]}"
        return out

    def wait_ssh(self, what: str) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < BOOT_S:
            try:
                if self.ssh("systemctl is-system-running --wait >/dev/null; true", check=False).returncode == 0:
                    return time.monotonic() - t0
            except subprocess.TimeoutExpired:
                pass
            time.sleep(5)
        console = self.work / "state" / AGENT / "console.log"
        tail = console.read_text(errors="replace")[-1500:] if console.exists() else "(no console)"
        raise AssertionError(f"no SSH into {AGENT} {what} after {BOOT_S} s:\n{tail}")

    def listen(self, *ports: int) -> None:
        """python3 -m http.server on each port in the guest, as the agent, on every address (the firewall decides)."""
        start = "".join(f"(setsid python3 -m http.server {p} >/dev/null 2>&1 </dev/null &); " for p in ports)
        ready = " && ".join(f"ss -ltn | grep -q ':{p} '" for p in ports)
        self.ssh(f"cd /tmp && {start} for i in $(seq 60); do {ready} && exit 0; sleep 1; done; exit 1")
        for p in ports:   # each one answers inside the guest: a silent port from the host is the firewall's doing
            self.ssh(f"python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:{p}/\", timeout=20)'")

    def probe(self, guest_port: int, wait_s: float = 20) -> bytes:
        """What an HTTP request from the host through the forward to `guest_port` gets back (b'' for nothing: QEMU
        accepts on the host side, then the guest drops the SYN)."""
        got = b""
        with socket.create_connection(("127.0.0.1", self.forwards[guest_port]), timeout=wait_s) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        return got

    def firewall(self, allowed: str, closed: int, what: str) -> None:
        """`allowed` as firewall_allow and `ufw status` write it ("8080", "8081/tcp"); `closed` a port not in it."""
        status = self.ssh("sudo ufw status").stdout
        assert "Status: active" in status, status
        for rule in ("22/tcp", "18789/tcp", allowed):
            assert any(line.split()[:2] == [rule, "ALLOW"] for line in status.splitlines()), (rule, status)
        assert not any(line.split()[0].split("/")[0] == str(closed) for line in status.splitlines() if line), status
        allowed = int(allowed.split("/")[0])
        self.listen(allowed, closed)
        t0 = time.monotonic()
        opened = self.probe(allowed)
        t1 = time.monotonic()
        shut = self.probe(closed)
        print(f"firewall {what}: {allowed} answered {opened[:15]!r} in {t1 - t0:.1f} s; {closed} got {shut!r} in "
              f"{time.monotonic() - t1:.1f} s")
        assert opened.startswith(b"HTTP/1.0 200"), opened[:200]
        assert shut == b"", shut[:200]

    def guest(self) -> dict:
        out = self.ssh("nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -B1 --output=size /home/agent | tail -1;"
                       " df -B1 --output=size / | tail -1; findmnt -n -o SOURCE /var/lib/docker;"
                       " sudo cat /var/lib/docker/canary; cat ~/canary").stdout
        nproc, mem_kib, home_bytes, root_bytes, docker_dev, docker_file, home_file = out.split("\n")[:7]
        return {"nproc": int(nproc), "mem_kib": int(mem_kib), "home_bytes": int(home_bytes),
                "root_bytes": int(root_bytes), "docker_dev": docker_dev, "docker_file": docker_file,
                "home_file": home_file}


@pytest.fixture(scope="module")
def site():
    ensure_libvirtd()
    work = libvirt_workdir("resize-vm-")
    image = small_image()
    images = work / "images"
    images.mkdir()
    for f in (image.qcow2, image.manifest_path):
        os.link(f, images / f.name)
    collector = start_collector(work / "collector", secret=SECRET)
    key = keygen(work / "admin_key", "resize-admin")
    secrets = write_secrets(work / "secrets.yaml", [AGENT])
    port = free_port()
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=images, secrets_file=secrets,
                            collector_port=int(collector.url.rsplit(":", 1)[1]), agents=(AGENT,),
                            admin_key=key.with_suffix(".pub").read_text().strip(), ram_gb=1)
    data = yaml.safe_load(overlay.read_text())
    data["services"]["mattermost_url"] = ""
    forwards = {8080: free_port(), 8081: free_port()}
    data["agents"][AGENT].update(ssh_port=port, docker_gb=1, root_gb=9,     # the small image's root is 8 GB
                                 firewall_allow=[8080], forwards={str(h): g for g, h in forwards.items()})
    overlay.write_text(yaml.safe_dump(data))
    s = Site(work, overlay, key, port, collector)
    s.forwards = forwards
    s.v1 = image.version
    s.v2 = derive_image(image, images, "r").version   # a replace needs another version; what it keeps is the disk
    try:
        yield s
    finally:
        s.clone("--destroy", "--purge-data", timeout=600)
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_docker_data_and_sizes_survive_update_and_replace(site):
    storage = site.work / "storage"
    t0 = time.monotonic()
    proc = site.clone("--image", site.v1, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (storage / f"{AGENT}-docker.qcow2").exists()
    print(f"\nclone {time.monotonic() - t0:.0f} s, then SSH after {site.wait_ssh('after the clone'):.0f} s")
    site.ssh("sudo sh -c 'echo docker-kept > /var/lib/docker/canary' && echo home-kept > ~/canary && sync")
    before = site.guest()
    assert before["docker_dev"] == "/dev/vdc" and before["nproc"] == 1, before
    assert before["root_bytes"] > 8.5 * (1 << 30), before          # root_gb 9: partition and file system grown
    site.firewall(allowed="8080", closed=8081, what="after the clone")

    site.size(vcpu=2, ram_gb=2, disk_gb=2, firewall_allow=["8081/tcp"])
    dry = site.clone("--update", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "changed   /etc/ufw/user.rules" in dry.stdout and "-### tuple ### allow any 8080" in dry.stdout, dry.stdout
    assert f"resize data disk {AGENT}-data.qcow2: 1 GB -> 2 GB (file system grown)" in dry.stdout, dry.stdout
    assert "resize domain: 1 -> 2 vCPU, 1 GB -> 2 GB RAM (applied by the restart" in dry.stdout, dry.stdout
    t0 = time.monotonic()
    proc = site.clone("--update", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resized: data disk" in json.loads(proc.stdout)[0]["message"]
    print(f"update {time.monotonic() - t0:.0f} s, then SSH after {site.wait_ssh('after the update'):.0f} s")
    after = site.guest()
    assert after["nproc"] == 2 and after["mem_kib"] > before["mem_kib"] + 800_000, (before, after)
    assert after["home_bytes"] > before["home_bytes"] * 1.8, (before, after)
    assert (after["docker_file"], after["home_file"]) == ("docker-kept", "home-kept")
    site.firewall(allowed="8081/tcp", closed=8080, what="after the update")
    site.ssh("sudo ufw disable")                                  # the control: without the firewall 8080 answers
    assert site.probe(8080).startswith(b"HTTP/1.0 200"), "8080 is silent with ufw off: the closed check proves nothing"

    t0 = time.monotonic()
    proc = site.clone("--replace", "--image", site.v2, "--health-timeout", "1200", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"replace to a healthy report {time.monotonic() - t0:.0f} s")
    site.wait_ssh("after the replace")
    replaced = site.guest()
    assert replaced["docker_dev"] == "/dev/vdc" and replaced["nproc"] == 2, replaced
    assert (replaced["docker_file"], replaced["home_file"]) == ("docker-kept", "home-kept")
    status = site.ssh("sudo ufw status").stdout                   # a new overlay: ufw on again, the updated rules
    assert "Status: active" in status and "8081/tcp" in status and "8080 " not in status, status
    state = json.loads((site.work / "state" / AGENT / "state.json").read_text())
    assert state["current"]["image_version"] == site.v2 and state["docker_disk"].endswith(f"{AGENT}-docker.qcow2")

    proc = site.clone("--destroy", "--purge-data", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (storage / f"{AGENT}-docker.qcow2").exists() and not (storage / f"{AGENT}-data.qcow2").exists()
