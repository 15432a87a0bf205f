"""fleet setup on a fresh sshd "hypervisor": the code shipped, the identity file written, the dirs made with the
modes libvirt's QEMU user needs, and doctor then says ready; a missing bridge is one line saying how to make it
(fast: --no-packages, so no apt-get)."""
import json
import sys

import pytest
import yaml

from tests.fleet_support import running_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-setup")
    with running_lab(work, ("fresh",), 90) as lab:
        host = lab.hosts["fresh"]
        host.host_file.unlink()                                   # never set up
        for d in ("storage/golden", "storage", "state"):
            (host.root / d).rmdir()
        entry = host.inventory_entry()
        entry["ssh"]["agentfleet"] = str(host.root / "opt" / "agentfleet")       # nothing there yet
        entry["ssh"]["python"] = sys.executable
        lab.overlay({}, hosts={"fresh": entry})
        assert lab.fleet("trust", "fresh").returncode == 0
        yield lab


def test_doctor_fails_a_fresh_host_and_setup_makes_it_ready(lab):
    host = lab.hosts["fresh"]
    before = lab.fleet("doctor", "--json")
    assert before.returncode == 1
    assert "agentfleet not found at" in json.loads(before.stdout)[0]["checks"][1]["detail"]
    proc = lab.fleet("setup", "fresh", "--no-packages", "--code")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"fresh: ready for agentfleet (wrote {host.host_file}; made {host.storage}")
    assert host.host_file.read_text() == "fresh\n"
    assert oct(host.storage.stat().st_mode & 0o777) == "0o711" and oct(host.state.stat().st_mode & 0o777) == "0o700"
    assert oct(host.images.stat().st_mode & 0o777) == "0o755"
    assert (host.root / "opt" / "agentfleet" / "deploy" / "clone.py").exists()
    assert not list((host.root / "opt" / "agentfleet").rglob("__pycache__"))
    after = lab.fleet("doctor", "--json")
    assert after.returncode == 0, after.stdout
    again = lab.fleet("setup", "fresh", "--no-packages")
    assert again.stdout.strip() == "fresh: ready for agentfleet (nothing to change)"


def test_setup_refuses_to_rename_a_host_silently(lab):
    lab.hosts["fresh"].host_file.write_text("other\n")
    try:
        proc = lab.fleet("setup", "fresh", "--no-packages")
    finally:
        lab.hosts["fresh"].host_file.write_text("fresh\n")
    assert proc.returncode == 2
    assert f"fleet: fresh: setup failed: {lab.hosts['fresh'].host_file} says this host is 'other', not 'fresh' " \
           f"(--rename to change it)" in proc.stderr


def test_a_missing_bridge_is_named_with_how_to_make_it(lab, tmp_path):
    overlay = tmp_path / "bridge.yaml"
    overlay.write_text(yaml.safe_dump({"network": {"mode": "bridge", "bridge": "br-missing9"}}))
    proc = lab.fleet("setup", "fresh", "--no-packages", "--overlay", str(overlay))
    assert proc.returncode == 2
    assert "fleet: fresh: setup failed: bridge br-missing9 does not exist; create it (Debian: " in proc.stderr
