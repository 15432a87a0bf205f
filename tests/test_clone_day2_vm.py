"""Day 2 on one real agent of the small test image (images/agent-small.yaml), reporting to a real collector: sizes,
Docker's own disk, a replace, a live backup and a restore as the same agent. One agent and four boots, in order
(each step starts from what the one before left, so the boots are shared, not paid per concern):

1. clone with a Docker disk and a root disk bigger than the image's: /var/lib/docker is that disk, / has grown;
   files in /var/lib/docker and /home/agent, a fake OpenClaw .env (what a backup must scrub);
2. more vCPU, RAM and data disk in the inventory, `--update`: the dry run says so, the restart applies them, the file
   system grew, both files are there;
3. `--replace` with another version of the image: healthy, the /var/lib/docker file survived;
4. a live backup while it runs (the VM keeps running and writing, one file under it, no secret in the copy);
   `--destroy --purge-data` removes the Docker and data disks; `--restore`: the same SSH host key, machine-id, MAC,
   UUID and /home/agent back, the .env not (the secrets source injects it), a fresh Docker disk (Docker's data is
   rebuildable and not in a backup).

The same boots check the firewall (ufw, the seed's rules and the agent's `firewall_allow`): two listeners in the guest,
8080 allowed and 8081 not, each forwarded from a host port (`forwards`); from the host the allowed one answers and the
other gets no byte. The update moves the opening to 8081 (8080 closes); then, with ufw stopped, 8080 answers: the
closed check can fail. The replace's new overlay has ufw on again with the updated rules.

The image has no Docker: the test writes to /var/lib/docker itself; what is tested is the disk under it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.backup_support import assert_private_and_whole, chain_length, data_source, only_backup, virsh
from tests.clone_support import clone_cli, ensure_libvirtd, libvirt_workdir, write_overlay, write_secrets
from tests.collector_server import free_port, start_collector
from tests.fleet_support import keygen
from tests.image_variants import derive_image, link_published

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

RUN = f"{os.getpid() % 100000:05d}"
AGENT = f"d2{RUN}-athena"                 # own name per run: never another suite's domain
BOOT_S = 1200                             # one boot of the small image under TCG on a loaded machine
SECRET = b"collector-secret-for-tests"    # write_secrets' collector_secret
CANARY = f"SECRET-CANARY-{uuid.uuid4().hex}"


class Agent:
    def __init__(self, work: Path, overlay: Path, key: Path, port: int, collector):
        self.work, self.overlay, self.key, self.port, self.collector = work, overlay, key, port, collector
        self.storage = work / "storage"

    def cli(self, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return clone_cli("--overlay", str(self.overlay), AGENT, *args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        proc = self.cli(*args, timeout=timeout)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
        return proc

    def size(self, **agent) -> None:
        data = yaml.safe_load(self.overlay.read_text())
        data["agents"][AGENT].update(agent)
        self.overlay.write_text(yaml.safe_dump(data))

    def ssh(self, command: str, check: bool = True) -> str:
        out = subprocess.run(["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                              "-o", "LogLevel=ERROR", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert not check or out.returncode == 0, f"ssh {command!r}: {out.stderr.strip()[-300:]}"
        return out.stdout.strip() if out.returncode == 0 else ""

    def wait_ssh(self, what: str) -> float:
        """Seconds until the guest answers SSH with systemd settled."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < BOOT_S:
            try:
                if self.ssh("systemctl is-system-running --wait >/dev/null; echo up", check=False) == "up":
                    return time.monotonic() - t0
            except subprocess.TimeoutExpired:
                pass
            time.sleep(5)
        raise AssertionError(f"no SSH into {AGENT} {what} after {BOOT_S} s:\n{self.console_tail()}")

    def wait_healthy(self, since: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < BOOT_S:
            status, body = self.collector.get(f"/api/v1/agents/{AGENT}")
            if status == 200 and body.get("healthy") is True and float(body.get("last_seen") or 0) >= since:
                return time.monotonic() - t0
            time.sleep(3)
        raise AssertionError(f"{AGENT}: no healthy report within {BOOT_S} s\n{self.console_tail()}")

    def console_tail(self) -> str:
        console = self.work / "state" / AGENT / "console.log"
        return console.read_text(errors="replace")[-1500:] if console.exists() else "(no console)"

    def host_key(self) -> str:
        """The guest's ed25519 host key as sshd offers it (ssh-keyscan's 5 s default is too short under TCG at load)."""
        for _ in range(3):
            out = subprocess.run(["ssh-keyscan", "-T", "60", "-t", "ed25519", "-p", str(self.port), "127.0.0.1"],
                                 capture_output=True, text=True, timeout=120).stdout
            lines = [line.split(None, 1)[1] for line in out.splitlines() if line and not line.startswith("#")]
            if lines:
                return lines[0]
        raise AssertionError("no host key from the agent (three ssh-keyscans)")

    def identity(self) -> dict:
        return {"host_key": self.host_key(), "machine_id": self.ssh("cat /etc/machine-id"),
                "mac": self.ssh("cat /sys/class/net/eth0/address"), "uuid": virsh("domuuid", AGENT)}

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
        status = self.ssh("sudo ufw status")
        assert "Status: active" in status, status
        for rule in ("22/tcp", "18789/tcp", allowed):
            assert any(line.split()[:2] == [rule, "ALLOW"] for line in status.splitlines()), (rule, status)
        assert not any(line.split()[0].split("/")[0] == str(closed) for line in status.splitlines() if line), status
        port = int(allowed.split("/")[0])
        self.listen(port, closed)
        t0 = time.monotonic()
        opened = self.probe(port)
        t1 = time.monotonic()
        shut = self.probe(closed)
        print(f"firewall {what}: {port} answered {opened[:15]!r} in {t1 - t0:.1f} s; {closed} got {shut!r} in "
              f"{time.monotonic() - t1:.1f} s")
        assert opened.startswith(b"HTTP/1.0 200"), opened[:200]
        assert shut == b"", shut[:200]

    def guest(self) -> dict:
        out = self.ssh("nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -B1 --output=size /home/agent | tail -1;"
                       " df -B1 --output=size / | tail -1; findmnt -n -o SOURCE /var/lib/docker;"
                       " sudo cat /var/lib/docker/canary 2>/dev/null || echo none; cat ~/canary")
        nproc, mem_kib, home_bytes, root_bytes, docker_dev, docker_file, home_file = out.split("\n")[:7]
        return {"nproc": int(nproc), "mem_kib": int(mem_kib), "home_bytes": int(home_bytes),
                "root_bytes": int(root_bytes), "docker_dev": docker_dev, "docker_file": docker_file,
                "home_file": home_file}

    def state(self) -> dict:
        return json.loads((self.work / "state" / AGENT / "state.json").read_text())


@pytest.fixture(scope="module")
def agent(small_baked_image):
    ensure_libvirtd()
    work = libvirt_workdir("day2-vm-")
    image = small_baked_image
    images = work / "images"
    link_published(image, images)
    collector = start_collector(work / "collector", secret=SECRET)
    key = keygen(work / "admin_key", "day2-admin")
    port = free_port()
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=images,
                            secrets_file=write_secrets(work / "secrets.yaml", [AGENT]),
                            collector_port=int(collector.url.rsplit(":", 1)[1]), agents=(AGENT,),
                            admin_key=key.with_suffix(".pub").read_text().strip(), ram_gb=1)
    data = yaml.safe_load(overlay.read_text())
    data["services"].update(collector_api_url=collector.url, mattermost_url="")
    forwards = {8080: free_port(), 8081: free_port()}
    data["agents"][AGENT].update(ssh_port=port, docker_gb=1, root_gb=9,     # the small image's root is 8 GB
                                 firewall_allow=[8080], forwards={str(h): g for g, h in forwards.items()})
    overlay.write_text(yaml.safe_dump(data))
    a = Agent(work, overlay, key, port, collector)
    a.forwards = forwards
    a.v1 = image.version
    a.v2 = derive_image(image, images, "-d2").version    # a replace needs another version; what it keeps is the disk
    try:
        yield a
    finally:
        a.cli("--destroy", "--purge-data", timeout=600)
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_1_a_clone_gets_a_docker_disk_and_a_grown_root(agent):
    t0, since = time.monotonic(), time.time()
    agent.ok("--image", agent.v1, "--json")
    assert (agent.storage / f"{AGENT}-docker.qcow2").exists()
    print(f"\nclone {time.monotonic() - t0:.0f} s, healthy after {agent.wait_healthy(since):.0f} s more")
    agent.wait_ssh("after the clone")
    agent.ssh("sudo sh -c 'echo docker-kept > /var/lib/docker/canary' && echo home-kept > ~/canary && "
              f"mkdir -p ~/.openclaw && echo 'OPENAI_API_KEY={CANARY}' > ~/.openclaw/.env && "
              "chmod 600 ~/.openclaw/.env && sync")
    agent.first = agent.guest()
    agent.born = agent.identity()
    assert agent.first["docker_dev"] == "/dev/vdc" and agent.first["nproc"] == 1, agent.first
    assert agent.first["root_bytes"] > 8.5 * (1 << 30), agent.first          # root_gb 9: partition and fs grown
    agent.firewall(allowed="8080", closed=8081, what="after the clone")


def test_2_update_applies_more_cpu_ram_and_data_disk_by_a_restart(agent):
    agent.size(vcpu=2, ram_gb=2, disk_gb=2, firewall_allow=["8081/tcp"])
    dry = agent.ok("--update", "--dry-run")
    assert "changed   /etc/ufw/user.rules" in dry.stdout and "-### tuple ### allow any 8080" in dry.stdout, dry.stdout
    assert f"resize data disk {AGENT}-data.qcow2: 1 GB -> 2 GB (file system grown)" in dry.stdout, dry.stdout
    assert "resize domain: 1 -> 2 vCPU, 1 GB -> 2 GB RAM (applied by the restart" in dry.stdout, dry.stdout
    t0 = time.monotonic()
    proc = agent.ok("--update", "--json")
    assert "resized: data disk" in json.loads(proc.stdout)[0]["message"]
    print(f"update {time.monotonic() - t0:.0f} s, then SSH after {agent.wait_ssh('after the update'):.0f} s")
    after = agent.guest()
    assert after["nproc"] == 2 and after["mem_kib"] > agent.first["mem_kib"] + 800_000, (agent.first, after)
    assert after["home_bytes"] > agent.first["home_bytes"] * 1.8, (agent.first, after)
    assert (after["docker_file"], after["home_file"]) == ("docker-kept", "home-kept")
    agent.firewall(allowed="8081/tcp", closed=8080, what="after the update")
    agent.ssh("sudo ufw disable")                                  # the control: without the firewall 8080 answers
    assert agent.probe(8080).startswith(b"HTTP/1.0 200"), "8080 silent with ufw off: the closed check proves nothing"


def test_3_a_replace_keeps_docker_data_and_home(agent):
    t0 = time.monotonic()
    agent.ok("--replace", "--image", agent.v2, "--health-timeout", str(BOOT_S), "--json")
    print(f"replace to a healthy report {time.monotonic() - t0:.0f} s")
    agent.wait_ssh("after the replace")
    replaced = agent.guest()
    assert replaced["docker_dev"] == "/dev/vdc" and replaced["nproc"] == 2, replaced
    assert (replaced["docker_file"], replaced["home_file"]) == ("docker-kept", "home-kept")
    status = agent.ssh("sudo ufw status")                          # a new overlay: ufw on again, the updated rules
    assert "Status: active" in status and "8081/tcp" in status and "8080 " not in status, status
    state = agent.state()
    assert state["current"]["image_version"] == agent.v2 and state["docker_disk"].endswith(f"{AGENT}-docker.qcow2")
    assert agent.identity() == agent.born


def test_4_a_live_backup_then_a_restore_brings_the_same_agent_back(agent):
    data_disk = agent.storage / f"{AGENT}-data.qcow2"
    dest = agent.work / "backups"
    t0 = time.monotonic()
    agent.ok("--backup", str(dest), "--json")
    print(f"live backup {time.monotonic() - t0:.0f} s")
    assert virsh("domstate", AGENT) == "running"
    assert data_source(AGENT) == str(data_disk) and chain_length(data_disk) == 1
    assert not list(agent.storage.glob("*backup-overlay*"))
    assert agent.ssh("echo still-writable > ~/after-backup && cat ~/canary") == "home-kept"
    backup = only_backup(dest, AGENT)
    manifest = assert_private_and_whole(backup)
    assert manifest["live"] is True and manifest["image_version"] == agent.v2
    ident = manifest["identity"]
    assert (ident["uuid"], ident["mac"], ident["machine_id"]) == \
        (agent.born["uuid"], agent.born["mac"], agent.born["machine_id"])
    assert CANARY.encode() not in (backup / "data.qcow2").read_bytes()

    agent.ok("--destroy", "--purge-data", timeout=600)
    assert not data_disk.exists() and not (agent.storage / f"{AGENT}-docker.qcow2").exists()
    assert virsh("domstate", AGENT) == ""

    t0 = time.monotonic()
    restored = agent.ok("--restore", str(dest), "--json", "--health-timeout", str(BOOT_S))
    print(f"restore + boot to healthy {time.monotonic() - t0:.0f} s")
    result = json.loads(restored.stdout)[0]
    assert result["action"] == "restore" and "healthy" in result["message"] and result["backup"] == str(backup)
    agent.wait_ssh("after the restore")
    assert agent.identity() == agent.born
    back = agent.guest()
    assert (back["home_file"], back["docker_file"], back["docker_dev"]) == ("home-kept", "none", "/dev/vdc"), back
    assert agent.ssh("test -e ~/.openclaw/.env && echo present || echo absent") == "absent"
    assert not (agent.work / "state" / AGENT / "restoring.json").exists()
