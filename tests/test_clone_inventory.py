"""The inventory, its validation and the capacity view (fast: pure parsing)."""

from pathlib import Path

import pytest
import yaml

from deploy import inventory, plan
from deploy.errors import CloneError
from tests.clone_support import load_inventory_with

FLEET = inventory.DEFAULT_INVENTORY


def test_default_inventory_is_the_seeds_fleet():
    inv = inventory.load(FLEET)
    assert list(inv.hosts) == ["r420", "r710", "r8202", "r720xd", "r820"]
    assert [(a.name, a.host, a.ip) for a in inv.agents.values()][:2] == [("athena", "r420", "10.220.1.50"),
                                                                        ("apollo", "r710", "10.220.1.51")]
    assert [a.ip for a in inv.agents.values()] == [f"10.220.1.{n}" for n in range(50, 58)]
    assert str(inv.network.subnet) == "10.220.1.0/24" and inv.network.gateway == "10.220.1.1"


def test_capacity_view_matches_the_seeds_tables():
    rows = {r.host: r for r in plan.capacity(inventory.load(FLEET))}
    assert rows["r820"].agents == ("prometheus", "ares", "poseidon")
    assert (rows["r820"].ram_used_gb, rows["r820"].ram_free_gb) == (48, 80)
    # data disks 2 x 250 and Docker disks 2 x 64; no image measured here, so roots count 0
    assert (rows["r710"].ram_used_gb, rows["r710"].disk_used_gb) == (32, 628)
    text = plan.render(list(rows.values()))
    assert "120G/416G" in text and "RAM 29% used" in text


@pytest.mark.parametrize("overlay, message", [
    ({"agents": {"apollo": {"ip": "10.220.1.50"}}}, "agents.apollo.ip: 10.220.1.50 duplicates agents.athena"),
    ({"agents": {"athena": {"ip": "10.9.9.9"}}}, "agents.athena.ip: 10.9.9.9 is outside the subnet 10.220.1.0/24"),
    ({"agents": {"athena": {"host": "r999"}}}, "agents.athena.host: unknown host 'r999'"),
    ({"agents": {"athena": {"ram_gb": 40}}}, "hosts.r420: agents athena need 40 GB RAM, the host has 32 GB"),
    ({"agents": {"Zeus!": {"host": "r820", "vcpu": 1, "ram_gb": 1, "disk_gb": 1, "ip": "10.220.1.60"}}},
     "agents.Zeus!: name must match"),
    ({"agents": {"zeus\n": {"host": "r820", "vcpu": 1, "ram_gb": 1, "disk_gb": 1, "ip": "10.220.1.60"}}},
     "agents.zeus\n: name must match"),   # "$" matches before a trailing newline: names are full-matched
    ({"agents": {True: {"host": "r820", "vcpu": 1, "ram_gb": 1, "disk_gb": 1, "ip": "10.220.1.60"}}},
     "agents.True: name must match"),     # an unquoted yes/on in YAML
    ({"admins": {"ssh_keys": ["ssh-ed25519 AAAAC3Nza admin@lab\nssh-ed25519 AAAAintruder eve@elsewhere"]}},
     "admins.ssh_keys[0]: not an SSH public key line"),
    ({"admins": {"ssh_keys": ["ssh-ed25519 AAAAC3Nza\n"]}}, "admins.ssh_keys[0]: not an SSH public key line"),
    ({"network": {"mode": "wifi"}}, "network.mode: 'wifi' is not one of"),
    ({"secrets": {"source": {"file": "/x", "env": "Y_"}}}, "secrets.source: needs exactly one of"),
    ({"services": {"mattermost_team": "Dev Team"}}, "services.mattermost_team: 'Dev Team' is not a Mattermost team"),
    ({"services": {"mattermost_team": None}}, "services.mattermost_team: missing; athena, apollo"),
    ({"mattermost": {"channels": "dev"}}, "mattermost.channels: must be a list; YAML reads 'dev' as a string"),
    ({"mattermost": {"channels": ["Town Square"]}},
     "mattermost.channels[0]: 'Town Square' is not a Mattermost channel"),
    ({"mattermost": {"channels": ["dev", "dev"]}}, "mattermost.channels: 'dev' is listed twice"),
    ({"mattermost": {"require_mention": "yes"}}, "mattermost.require_mention: must be true or false; YAML reads 'yes'"),
    ({"mattermost": {"dm_from": ["*", "alice"]}}, "mattermost.dm_from: '*' (anyone) must be alone"),
    ({"mattermost": {"dm_from": [12]}}, "mattermost.dm_from[0]: must be a string; YAML reads 12 as an integer"),
    ({"mattermost": {"listen": ["dev"]}}, "mattermost: unknown key 'listen' (channels, require_mention, dm_from)"),
    ({"agents": {"athena": {"mattermost": {"dm_from": ["@alice"]}}}},
     "agents.athena.mattermost.dm_from[0]: '@alice' is not a Mattermost username, user id or *"),
    ({"services": {"model": {"api": "grpc"}}}, "services.model.api: 'grpc' is not one of openai-completions"),
    ({"services": {"model": {"base_url": "ftp://x"}}}, "services.model.base_url: 'ftp://x' is not an http(s) URL"),
    ({"services": {"model": {"base_url": "http://m:1/v1"}}}, "services.model.api_key: missing; a provider at base_url"),
    ({"services": {"model": {"base_url": "http://m:1/v1", "api_key": "model_key"}}},
     "services.model.api_key: 'model_key' is not in secrets.shared"),
    ({"services": {"model": {"api_key": "openai_api_key"}}}, "services.model.api_key: only for a provider at base_url"),
    ({"services": {"model": {"model": 4}}},
     "services.model.model: must be a non-empty string on one line; YAML reads 4"),
    ({"services": {"model": {"provider": "Lab"}}}, "services.model.provider: 'Lab' is not a provider id"),
    ({"services": {"model": {"url": "http://m"}}}, "services.model: unknown key 'url'"),
])
def test_bad_inventory_names_the_entry_at_fault(tmp_path, overlay, message):
    with pytest.raises(CloneError) as err:
        load_inventory_with(tmp_path, overlay)
    assert message in str(err.value)


# Values YAML reads as something other than what was written are refused, never passed through str() (an unquoted
# 012 is the integer 10, yes is True) and never left to crash later with a TypeError.
@pytest.mark.parametrize("overlay, message", [
    ({"network": {"dns": ["8.8.8.8", 10]}}, "network.dns[1]: must be a string; YAML reads 10 as an integer"),
    ({"network": {"dns": ["8.8.8.8", "dns.example"]}}, "network.dns[1]: 'dns.example' is not an IP address"),
    ({"secrets": {"source": {"command": ["vault", "view", 12]}}},
     "secrets.source.command[2]: must be a string; YAML reads 12 as an integer"),
    ({"secrets": {"source": {"command": ["vault", True]}}},
     "secrets.source.command[1]: must be a string; YAML reads True as a boolean"),
    ({"secrets": {"shared": ["collector_secret", 7]}}, "secrets.shared[1]: must be a string; YAML reads 7 as"),
    ({"secrets": {"per_agent": [{"gateway_token": 1}]}}, "secrets.per_agent[0]: must be a string; YAML reads it as a"),
    ({"secrets": {"source": {"file": 600}}}, "secrets.source.file: must be a string; YAML reads 600 as an integer"),
    ({"secrets": {"source": {"file": None}}}, "secrets.source: needs exactly one of"),  # null unsets the base's kind
    ({"secrets": {"source": {"env": 5}}}, "secrets.source.env: must be a string; YAML reads 5 as an integer"),
    ({"images_dir": 2026}, "images_dir: must be a string; YAML reads 2026 as an integer"),
    ({"images_dir": ["/srv/images"]}, "images_dir: must be a string; YAML reads it as a list"),
    ({"agents": {"athena": {"vcpu": "4"}}}, "agents.athena.vcpu: must be an integer; YAML reads '4' as a string"),
])
def test_a_value_yaml_reads_as_another_type_is_refused_naming_its_key(overlay, message):
    data = inventory.deep_merge(yaml.safe_load(FLEET.read_text()), overlay)
    if "source" in overlay.get("secrets", {}):
        data["secrets"]["source"] = overlay["secrets"]["source"]      # replaced, not merged with the base's file
    with pytest.raises(CloneError) as err:
        inventory.parse(data, base_dir=FLEET.parent)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_a_mistyped_inventory_value_in_one_line_without_a_traceback(tmp_path, capsys):
    from deploy import clone
    path = tmp_path / "overlay.yaml"
    path.write_text("images_dir: 2026\nsecrets: {source: {file: 600}}\n")
    assert clone.main(["--overlay", str(path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "secrets.source.file: must be a string" in err and "images_dir: must be a string" in err


def test_duplicate_agent_name_is_refused_not_silently_merged(tmp_path):
    text = FLEET.read_text().replace("  apollo:", "  athena:", 1)
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(CloneError, match="duplicate name 'athena'"):
        inventory.load(path)


def test_overlay_merges_mappings_and_replaces_scalars(tmp_path):
    inv = load_inventory_with(tmp_path, {"network": {"mode": "user", "ssh_port_base": 3000},
                                "services": {"collector_url": "http://10.0.2.100:9000"},
                                "agents": {"athena": {"ram_gb": 2}}})
    athena = inv.agent("athena")
    assert (athena.ram_gb, athena.vcpu, athena.host) == (2, 4, "r420")   # merged, not replaced
    assert athena.ssh_port == 3000 and inv.agent("apollo").ssh_port == 3001
    assert inv.services.collector_api_url == "http://127.0.0.1:9000"     # the hypervisor's view in user mode


def test_unknown_agent_lists_the_known_ones():
    with pytest.raises(CloneError, match="unknown agent 'zeus'.*athena, apollo"):
        inventory.load(FLEET).agent("zeus")


def test_ntp_servers_default_to_the_gateway_on_the_bridge_none_in_user_mode_and_bad_names_are_refused(tmp_path):
    from deploy import payload
    from deploy.errors import CloneError
    bridge = load_inventory_with(tmp_path, {})
    assert bridge.network.ntp == ("10.220.1.1",)
    assert "NTP=10.220.1.1\nFallbackNTP=\n" in payload.timesyncd_conf(bridge)
    user = load_inventory_with(tmp_path, {"network": {"mode": "user"}})
    assert user.network.ntp == () and "NTP=\nFallbackNTP=\n" in payload.timesyncd_conf(user)
    named = load_inventory_with(tmp_path, {"network": {"ntp": ["ntp.lab.example", "10.220.1.2"]}})
    assert named.network.ntp == ("ntp.lab.example", "10.220.1.2")
    with pytest.raises(CloneError, match=r"network.ntp\[0\]: 'bad name;rm' is not a host name or IP address"):
        load_inventory_with(tmp_path, {"network": {"ntp": ["bad name;rm"]}})


def test_the_fleet_tool_hands_a_host_the_mattermost_and_model_settings_it_would_write(tmp_path):
    """The hypervisor's clone builds the OpenClaw config from the inventory the fleet tool sends it (one JSON line)."""
    import json

    from deploy.fleet.remote_clone import host_inventory
    inv = load_inventory_with(tmp_path, {
        "services": {"model": {"provider": "lab", "model": "m-1", "base_url": "http://10.220.1.10:9000/v1",
                               "api_key": "openai_api_key"}},
        "agents": {"athena": {"mattermost": {"channels": ["ops"], "require_mention": False, "dm_from": ["*"]}}}})
    sent = inventory.parse(json.loads(json.dumps(host_inventory(inv, inv.hosts["r420"]))), base_dir=Path("/"))
    assert sent.services.model == inv.services.model and sent.services.mattermost_team == "agentfleet"
    assert sent.agent("athena").mattermost == inv.agent("athena").mattermost
