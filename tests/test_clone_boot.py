"""The baked golden image, cloned and booted under TCG: it must come up with its own identity and the injected
admin key, with no post-boot provisioning. Needs the published image (`make bake`); skipped only while none exists."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from tests.clone_support import (REPO, clone_cli, ensure_libvirtd, libvirt_workdir, world_traversable,
                                 write_overlay, write_secrets)

pytestmark = pytest.mark.slow
AGENT = "cboot-athena"
IMAGES = REPO / "build" / "images"


@pytest.fixture(scope="module")
def booted(request):
    if not list(IMAGES.glob("agent-*.manifest.json")):
        pytest.skip("no published golden image in build/images yet (run `make bake`)")
    image = request.getfixturevalue("baked_image")
    ensure_libvirtd()
    world_traversable(IMAGES)
    work = libvirt_workdir("clone-boot-")
    key = work / "admin_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    secrets = write_secrets(work / "secrets.yaml", [AGENT], canary="boot")
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=IMAGES, secrets_file=secrets,
                            collector_port=18999, ssh_port_base=22400, agents=(AGENT,),
                            admin_key=(work / "admin_key.pub").read_text().strip())
    proc = clone_cli("--overlay", str(overlay), AGENT, "--image", image.version, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)[0]
    known = work / "known_hosts"
    known.write_text("\n".join(result["known_hosts"]) + "\n")
    yield {"work": work, "key": key, "known": known, "result": result, "version": image.version}
    clone_cli("--overlay", str(overlay), AGENT, "--destroy", "--purge-data")
    shutil.rmtree(work, ignore_errors=True)


def ssh(booted, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    r = booted["result"]["ssh"]
    return subprocess.run(["ssh", "-i", str(booted["key"]), "-p", str(r["port"]), "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={booted['known']}",
                           "-o", "ConnectTimeout=10", f"{r['user']}@{r['host']}", command],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def logged_in(booted):
    """SSH answers once the guest has booted (minutes under TCG); the host key must be the one the clone printed."""
    deadline = time.monotonic() + 1200
    last = None
    while time.monotonic() < deadline:
        last = ssh(booted, "true")
        if last.returncode == 0:
            return booted
        time.sleep(10)
    console = (booted["work"] / "state" / AGENT / "console.log")
    tail = console.read_text(errors="replace")[-2000:] if console.exists() else "(no console log)"
    pytest.fail(f"no SSH within 20 min: {last.stderr.strip()}\nconsole:\n{tail}")


def test_cloned_vm_boots_with_its_own_identity_and_the_admins_key(logged_in):
    out = ssh(logged_in, "hostname; cat /etc/machine-id; findmnt -n -o TARGET /home/agent; "
                         "stat -c '%a %U' ~/.openclaw/.env; cat /etc/agentfleet/identity.json").stdout.splitlines()
    assert out[0] == AGENT
    assert len(out[1]) == 32
    assert out[2] == "/home/agent"
    assert out[3] == "600 agent"
    identity = json.loads("\n".join(out[4:]))
    assert (identity["agent"], identity["image_version"]) == (AGENT, logged_in["version"])


def test_serial_console_is_logged_on_the_hypervisor(logged_in):
    assert (logged_in["work"] / "state" / AGENT / "console.log").stat().st_size > 0
