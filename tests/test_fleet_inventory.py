"""The fleet's part of the inventory (ssh per host, hypervisor addresses, the secrets key map) and the placement
guard of deploy/clone.py (fast: parsing and the clone's CLI up to the guard)."""
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from deploy import clone, inventory, placement
from deploy.errors import CloneError
from deploy.inventory import SshTarget
from tests.clone_support import load_inventory_with

FLEET = inventory.DEFAULT_INVENTORY


def test_default_inventory_knows_the_seeds_hypervisor_addresses():
    inv = inventory.load(FLEET)
    assert {h.name: h.ssh.address for h in inv.hosts.values()} == {
        "r420": "10.220.1.7", "r8202": "10.220.1.8", "r710": "10.220.1.9", "r720xd": "10.220.1.10",
        "r820": "10.220.1.11"}
    r420 = inv.hosts["r420"]
    assert r420.ssh == SshTarget(user="root", address="10.220.1.7", port=22, agentfleet_dir="/opt/agentfleet")
    assert r420.ssh.host_python == "/opt/agentfleet/.venv/bin/python"
    assert r420.host_images_dir == Path("/var/lib/libvirt/images/agentfleet/golden")


def test_ssh_mapping_form_sets_port_checkout_and_python(tmp_path):
    inv = load_inventory_with(tmp_path, {"hosts": {"r420": {"ssh": {"to": "admin@127.0.0.5", "port": 2222,
                                                           "agentfleet": "/srv/af", "python": "/usr/bin/python3"},
                                                   "images_dir": "/srv/images"}}})
    assert inv.hosts["r420"].ssh == SshTarget("admin", "127.0.0.5", 2222, "/srv/af", "/usr/bin/python3")
    assert inv.hosts["r420"].host_images_dir == Path("/srv/images")


@pytest.mark.parametrize("overlay, message", [
    ({"agents": {"athena": {"ip": "10.220.1.9"}}}, "agents.athena.ip: 10.220.1.9 is the address of hypervisor r710"),
    ({"hosts": {"r710": {"ssh": "root@10.220.1.7"}}}, "hosts.r710.ssh: 10.220.1.7:22 is also hosts.r420"),
    ({"hosts": {"r420": {"ssh": "10.220.1.7"}}}, "hosts.r420.ssh.to: '10.220.1.7' is not user@address"),
    ({"hosts": {"r420": {"ssh": {"to": "root@h", "port": 70000}}}}, "hosts.r420.ssh.port: 70000 is not a TCP port"),
    ({"hosts": {"r420": {"ssh": {"to": "root@h", "agentfleet": "af"}}}},
     "hosts.r420.ssh.agentfleet: must be an absolute path on the host"),
    ({"hosts": {"r420": {"ssh": {"to": "root@h", "user": "x"}}}}, "hosts.r420.ssh: unknown key 'user'"),
    ({"secrets": {"key_map": {"collector_secret": "vault_collector_secret"}}},
     "secrets.key_map: no source key for anthropic_api_key"),
])
def test_inventory_refuses_bad_ssh_and_address_entries_naming_them(tmp_path, overlay, message):
    with pytest.raises(CloneError, match="inventory") as err:
        load_inventory_with(tmp_path, overlay)
    assert message in str(err.value)


def test_inventory_on_standard_input_is_one_json_line_leaving_the_rest(monkeypatch):
    data = yaml.safe_load(FLEET.read_text())
    data["secrets"]["source"] = {"stdin": True}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(data) + "\nshared: {}\n"))
    inv = inventory.load(Path("-"))
    assert inv.secrets.source == "stdin" and inv.sources == ("<stdin>",) and len(inv.agents) == 8
    assert sys.stdin.read() == "shared: {}\n"


# ------------------------------------------------------------------------------------------------ placement guard
def _as_host(tmp_path, monkeypatch, name: str) -> Path:
    path = tmp_path / "host"
    path.write_text(name + "\n")
    monkeypatch.setenv("AGENTFLEET_HOST_FILE", str(path))
    return path


def test_clone_refuses_an_agent_placed_on_another_hypervisor_with_one_line(tmp_path, monkeypatch, capsys):
    path = _as_host(tmp_path, monkeypatch, "r420")
    assert clone.main(["apollo", "--inventory", str(FLEET), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"clone: apollo: placed on r710 in the inventory, and this hypervisor is r420 ({path}); refusing "
                   f"a second copy here (python -m deploy.fleet clone apollo runs it on r710)")


def test_clone_passes_the_guard_for_an_agent_placed_here(tmp_path, monkeypatch, capsys):
    _as_host(tmp_path, monkeypatch, "r420")
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"images_dir": str(tmp_path / "none")}))
    assert clone.main(["athena", "--inventory", str(FLEET), "--overlay", str(overlay), "--dry-run"]) == 2
    assert "no published image" in capsys.readouterr().err       # got past the guard to the image lookup


def test_destroy_is_allowed_on_any_hypervisor_to_remove_a_stray_copy(tmp_path, monkeypatch, capsys):
    _as_host(tmp_path, monkeypatch, "r420")
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"hosts": {"r710": {"storage_dir": str(tmp_path / "storage"),
                                                          "state_dir": str(tmp_path / "state")}}}))
    argv = ["apollo", "--inventory", str(FLEET), "--overlay", str(overlay), "--connect", "test:///default"]
    assert clone.main(argv + ["--destroy"]) == 0                 # libvirt's in-process test driver: nothing to remove
    assert "apollo: destroy" in capsys.readouterr().out
    assert clone.main(argv) == 2


def test_guard_refuses_a_host_identity_the_inventory_lacks(tmp_path, monkeypatch):
    path = _as_host(tmp_path, monkeypatch, "r999")
    with pytest.raises(CloneError, match=r"this hypervisor is 'r999' .*a host the inventory does not have"):
        placement.check(inventory.load(FLEET), ["athena"], path)


def test_guard_without_an_identity_file_warns_and_lets_a_hand_run_clone_pass(tmp_path, caplog):
    placement.check(inventory.load(FLEET), ["apollo"], tmp_path / "absent")
    assert "placement unchecked" in caplog.text


# ------------------------------------------------------------------------------------------- secrets: the key map
def test_a_flat_vault_is_read_through_the_key_map_with_agent_placeholders(tmp_path):
    from deploy.inventory import SecretsSpec
    from deploy.secrets import load_secrets
    vault = tmp_path / "passwd.yml"
    vault.write_text("vault_agentfleet_collector_secret: c1\nvault_openclaw_anthropic_api_key: a1\n"
                     "vault_mattermost_bot_token: m1\nvault_gateway_token_athena: g-athena\n")
    vault.chmod(0o600)
    spec = SecretsSpec(source="file", file=vault, shared=("collector_secret", "anthropic_api_key"),
                       per_agent=("mattermost_bot_token", "gateway_token"),
                       key_map=(("collector_secret", "vault_agentfleet_collector_secret"),
                                ("anthropic_api_key", "vault_openclaw_anthropic_api_key"),
                                ("mattermost_bot_token", "vault_mattermost_bot_token"),
                                ("gateway_token", "vault_gateway_token_{agent}")))
    athena = load_secrets(spec, ["athena"])["athena"]
    assert {k: v.reveal() for k, v in athena.values.items()} == {
        "collector_secret": "c1", "anthropic_api_key": "a1", "mattermost_bot_token": "m1", "gateway_token": "g-athena"}
    with pytest.raises(CloneError, match=r"missing agents\.apollo\.gateway_token"):
        load_secrets(spec, ["athena", "apollo"])


def test_what_a_host_is_sent_reads_back_as_the_same_network_services_and_agents(tmp_path):
    """Every field the clone on a host uses must survive host_inventory: a field it forgets is silently its default
    there (network.ntp was: a fleet-wide NTP setting never reached remote clones)."""
    from deploy.fleet.remote_clone import host_inventory
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"network": {"ntp": ["ntp.lab.internal", "10.220.1.1"]},
                                       "agents": {"athena": {"firewall_allow": [8080], "docker_gb": 20}}}))
    inv = inventory.load(inventory.DEFAULT_INVENTORY, [overlay])
    for host in inv.hosts.values():
        again = inventory.parse(host_inventory(inv, host), base_dir=Path("/"))
        assert again.network == inv.network
        assert again.services == inv.services
        placed = sorted(a.name for a in inv.agents.values() if a.host == host.name)
        assert sorted(again.agents) == placed
        for name in placed:
            assert again.agent(name) == inv.agent(name), name
