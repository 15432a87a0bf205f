"""Real parts for the clone tests and bench: a synthetic golden image built with guestfs, a published-image dir,
an inventory overlay for this machine (QEMU user networking, tmp dirs), a secrets file, libvirtd, a collector stub."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.http_json import send_json
from tests.mattermost_standin import MattermostStandIn  # noqa: F401 (the VM tests' Mattermost)

REPO = Path(__file__).resolve().parent.parent
SKELETON_FILE = "/home/agent/.bashrc"
SEED_AGENTS = ("athena", "apollo", "artemis", "hermes", "perseus", "prometheus", "ares", "poseidon")


def make_synthetic_image(path: Path, size_mb: int = 256) -> None:
    """An identity-free ext4 root on /dev/sda1 with the bits the clone relies on (passwd with agent:1000, /home/agent
    skeleton, /etc/agentfleet/image.json). Not bootable: boot tests use the baked image."""
    from host.appliance import Drive, appliance

    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_mb}M"], check=True)
    with appliance([Drive(path)]) as g:
        _fill_synthetic_root(g)


def _fill_synthetic_root(g) -> None:
    g.part_disk("/dev/sda", "mbr")
    g.mkfs("ext4", "/dev/sda1")
    g.mount("/dev/sda1", "/")
    for d in ("/etc/ssh", "/etc/netplan", "/etc/agentfleet", "/home/agent", "/root", "/tmp", "/usr/bin", "/var/log",
              "/var/lib/dpkg"):
        g.mkdir_p(d)
    # enough of Ubuntu for libguestfs inspection (virt-sysprep and virt-customize refuse a disk without an OS)
    g.ln_s("usr/bin", "/bin")
    g.upload("/bin/ls", "/usr/bin/ls")
    g.chmod(0o755, "/usr/bin/ls")
    g.write("/etc/os-release", b'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nVERSION_CODENAME=jammy\n'
                               b'PRETTY_NAME="Ubuntu 22.04 LTS (synthetic)"\n')
    g.write("/var/lib/dpkg/status", b"Package: base-files\nStatus: install ok installed\nArchitecture: amd64\n"
                                    b"Version: 12ubuntu4\nDescription: synthetic\n\n")
    g.write("/etc/lsb-release", b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n")
    g.write("/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nagent:x:1000:1000:agent:/home/agent:/bin/bash\n")
    g.write("/etc/group", b"root:x:0:\nsudo:x:27:agent\nagent:x:1000:\n")
    g.write("/etc/fstab", b"LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    g.write("/etc/machine-id", b"")
    g.write("/etc/hostname", b"agent-image\n")
    g.write("/etc/agentfleet/image.json", json.dumps({"name": "agent", "version": "synthetic"}).encode())
    g.write(SKELETON_FILE, b"# agent skeleton\n")
    g.chown(1000, 1000, "/home/agent")
    g.chown(1000, 1000, SKELETON_FILE)


@contextlib.contextmanager
def guest_root(image: Path):
    """The host's appliance on a qcow2 with its root file system (/dev/sda1, as the bake lays it out) mounted at /;
    written back and closed on leaving."""
    from host.appliance import Drive, appliance

    with appliance([Drive(image)]) as g:
        g.mount("/dev/sda1", "/")
        yield g


def publish(image: Path, images_dir: Path, version: str, schema: dict | None = None,
            openclaw_plugins: tuple[str, ...] = (), base_layer: Path | None = None) -> Path:
    """A copy of `image` published by the bake's own publish() (the source is kept: tests publish it as several
    versions), optionally saying it bakes OpenClaw plugins at those in-VM dirs; with `base_layer`, `image` is the app
    layer backed by it (tests/layered_support.py); returns the published qcow2."""
    from bake import publish as bake_publish

    schema_file = None
    if schema is not None:
        images_dir.mkdir(parents=True, exist_ok=True)
        schema_file = images_dir / f".schema-{version}.json"
        schema_file.write_text(json.dumps(schema))
    image_json = {"name": "agent", "version": version, "baseline": {}, "packages": {},
                  "openclaw_plugins": list(openclaw_plugins)}
    published = bake_publish.publish(images_dir, "agent", version, image, image_json, schema_file, None,
                                     keep_source=True, base_layer=base_layer)
    if schema_file:
        schema_file.unlink()
    return published.qcow2


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# A small draft-07 stand-in for OpenClaw's exported schema: the parts the clone writes, strict about unknown keys
# and about secret fields being either strings or env references.
SECRET_INPUT = {"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": False,
                                               "required": ["source", "provider", "id"],
                                               "properties": {"source": {"enum": ["env", "file", "exec"]},
                                                              "provider": {"type": "string"},
                                                              "id": {"type": "string"}}}]}
TEST_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "properties": {
        "gateway": {"type": "object", "additionalProperties": False, "properties": {
            "mode": {"enum": ["local", "remote"]}, "port": {"type": "integer"},
            "bind": {"enum": ["loopback", "lan", "auto", "custom", "tailnet"]},
            "auth": {"type": "object", "additionalProperties": False, "properties": {
                "mode": {"enum": ["none", "token", "password", "trusted-proxy"]}, "token": SECRET_INPUT}}}},
        "channels": {"type": "object", "properties": {"mattermost": {
            "type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"}, "baseUrl": {"type": "string"}, "botToken": SECRET_INPUT,
                "dmPolicy": {"enum": ["pairing", "allowlist", "open", "disabled"]},
                "groupPolicy": {"enum": ["open", "disabled", "allowlist"]},
                "requireMention": {"type": "boolean"}, "chatmode": {"enum": ["oncall", "onmessage", "onchar"]},
                "allowFrom": {"type": "array", "items": {"type": "string"}},
                "dangerouslyAllowNameMatching": {"type": "boolean"},
                "network": {"type": "object", "additionalProperties": False, "properties": {
                    "dangerouslyAllowPrivateNetwork": {"type": "boolean"}}}},
                "required": ["dmPolicy", "groupPolicy"]}}},
        "plugins": {"type": "object", "additionalProperties": False, "properties": {
            "entries": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"enabled": {"type": "boolean"}}}},
            "load": {"type": "object", "additionalProperties": False, "properties": {
                "paths": {"type": "array", "items": {"type": "string"}}}}}},
        "logging": {"type": "object", "additionalProperties": False, "properties": {"file": {"type": "string"}}},
        "agents": {"type": "object", "additionalProperties": False, "properties": {"defaults": {
            "type": "object", "additionalProperties": False, "properties": {"model": {
                "type": "object", "additionalProperties": False, "properties": {"primary": {"type": "string"}}}}}}},
        "models": {"type": "object", "additionalProperties": False, "properties": {
            "mode": {"enum": ["merge", "replace"]},
            "providers": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["baseUrl", "models"], "properties": {
                    "baseUrl": {"type": "string"}, "api": {"enum": ["openai-completions", "openai-responses",
                                                                      "anthropic-messages"]},
                    "apiKey": SECRET_INPUT, "models": {"type": "array", "items": {
                        "type": "object", "required": ["id", "name"],
                        "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}}}}}}},
    },
}


def write_overlay(path: Path, *, work: Path, images_dir: Path, secrets_file: Path, collector_port: int,
                  ssh_port_base: int = 22200, agents=("athena", "apollo"), admin_key: str | None = None,
                  ram_gb: float = 2) -> Path:
    """The test inventory overlay: user networking, every named agent on one local host with 2 GB RAM, tmp dirs.
    Agents the base inventory lacks are added with IPs from 10.220.1.200 up (tests use their own names so their
    libvirt domains never clash with another suite's)."""
    overlay = {
        "network": {"mode": "user", "ssh_port_base": ssh_port_base},
        "services": {"collector_url": f"http://10.0.2.100:{collector_port}"},
        "secrets": {"source": {"file": str(secrets_file)}},
        "images_dir": str(images_dir),
        "hosts": {"local": {"uri": "qemu:///system", "storage_dir": str(work / "storage"),
                            "state_dir": str(work / "state"), "ram_gb": 64, "disk_gb": 100}},
        # docker_gb 0: a seed agent's Docker disk (apollo's 64 GB in deploy/fleet.yaml) is not what these tests try
        "agents": {a: {"host": "local", "ram_gb": ram_gb, "vcpu": 1, "disk_gb": 1, "docker_gb": 0, "role": "test",
                       **({} if a in SEED_AGENTS else {"ip": f"10.220.1.{200 + i}"})} for i, a in enumerate(agents)},
    }
    if admin_key:
        overlay["admins"] = {"ssh_keys": [admin_key]}
    path.write_text(yaml.safe_dump(overlay))
    return path


def load_inventory_with(tmp_path: Path, overlay: dict):
    """The default inventory (deploy/fleet.yaml) with `overlay` merged over it, as an operator's overlay file."""
    from deploy import inventory
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return inventory.load(inventory.DEFAULT_INVENTORY, [path])


def write_secrets(path: Path, agents, canary: str = "", collector_secret: str = "collector-secret-for-tests") -> Path:
    """A secrets source file (0600) with dummy values: each agent's bot token is `mm-<agent>-<canary>`."""
    data = {"shared": {"collector_secret": collector_secret, "anthropic_api_key": "sk-ant-test",
                       "openai_api_key": "sk-openai-test", "google_api_key": "google-test"},
            "agents": {a: {"mattermost_bot_token": f"mm-{a}-{canary}", "gateway_token": f"gw-{a}"} for a in agents}}
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def libvirt_workdir(prefix: str) -> Path:
    """A work dir libvirt's qemu user can reach. Not under pytest's tmp: pytest re-chmods /tmp/pytest-of-root 0700
    at every session start (and other suites run sessions concurrently)."""
    base = Path("/var/tmp/agentfleet-tests")
    base.mkdir(exist_ok=True)
    return world_traversable(Path(tempfile.mkdtemp(prefix=prefix, dir=base)))


def world_traversable(path: Path) -> Path:
    """libvirt runs qemu as libvirt-qemu: every directory above the disks must be traversable."""
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o711)
    return path


QEMU_CONF = Path("/etc/libvirt/qemu.conf")


def allow_guestfwd_commands() -> bool:
    """Test VMs reach the host's collector through `guestfwd=...-cmd:nc ...`, which makes QEMU spawn a process per
    connection; libvirt's default QEMU seccomp sandbox (spawn=deny) kills QEMU for that (SIGSYS on clone). So a test
    host turns the sandbox off. Production VMs (bridge networking) use no guestfwd and keep it. True if changed."""
    text = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
    if re.search(r"^\s*seccomp_sandbox\s*=\s*0\s*$", text, re.M):
        return False
    QEMU_CONF.write_text(text + "\n# agentfleet tests: guestfwd cmd: forwards need QEMU to spawn nc\n"
                                "seccomp_sandbox = 0\n")
    return True


def ensure_libvirtd() -> list[int]:
    """Start virtlogd and libvirtd (daemonized) unless they run; returns nothing to stop (they stay for the session)."""
    def running(name: str) -> bool:
        return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0
    if allow_guestfwd_commands() and running("libvirtd"):
        subprocess.run(["pkill", "-x", "libvirtd"], check=False)
        for _ in range(100):
            if not running("libvirtd"):
                break
            time.sleep(0.1)
    for daemon in ("virtlogd", "libvirtd"):
        if not running(daemon):
            subprocess.run([daemon, "-d"], check=True)
    for _ in range(100):
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0:
            return []
        time.sleep(0.2)
    raise RuntimeError("libvirtd did not come up")


class JsonStub:
    """A loopback JSON server for GETs: subclasses say what each path answers (status, body)."""

    def __init__(self):
        stub = self
        self.requests: list[tuple[str, str]] = []  # (path, Authorization header) of every GET, in order

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                stub.requests.append((self.path.split("?")[0], self.headers.get("Authorization", "")))
                send_json(self, *stub.answer(self.path))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str) -> tuple[int, dict]:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CollectorStub(JsonStub):
    """A loopback stand-in for the collector's GET /api/v1/agents/{name}: tests set what it answers."""

    def __init__(self):
        self.agents: dict[str, dict] = {}
        super().__init__()

    def answer(self, path: str) -> tuple[int, dict]:
        info = self.agents.get(path.rstrip("/").rsplit("/", 1)[-1])
        return (200, info) if info else (404, {"detail": "unknown agent"})

    def report(self, agent: str, version: str, healthy: bool, seq: int = 1) -> None:
        self.agents[agent] = {"image_version": version, "healthy": healthy, "last_seen": time.time() + 3600,
                              "last_seq": seq}


def clone_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run deploy/clone.py as a real process (its argv and output are what the canary test inspects)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "deploy/clone.py"), *args], cwd=REPO,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
