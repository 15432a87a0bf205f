"""What the clone writes, checked without a disk: OpenClaw config, .env, domain XML, dry-run and CLI errors (fast)."""
import json
import re
from pathlib import Path

import pytest
import yaml

from deploy import inventory, openclaw_config
from deploy.domain import domain_xml, spec_for
from deploy.errors import CloneError
from deploy.state import mac_for
from tests.clone_support import TEST_SCHEMA, clone_cli, publish, write_overlay, write_secrets


@pytest.fixture
def site(tmp_path):
    """A published (tiny, empty) image, secrets with a canary, and a user-mode overlay; no disk is ever written."""
    import subprocess
    img = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    publish(img, tmp_path / "images", "v1", TEST_SCHEMA)
    canary = "CANARY-fast-5d1e"
    secrets = write_secrets(tmp_path / "secrets.yaml", ["athena", "apollo"], canary=canary)
    overlay = write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=tmp_path / "images",
                            secrets_file=secrets, collector_port=18000)
    return tmp_path, overlay, canary


def test_openclaw_config_holds_references_and_validates_against_the_schema():
    inv = inventory.load()
    config = openclaw_config.build_config(inv, inv.agent("athena"))
    assert config["channels"]["mattermost"]["botToken"] == {"source": "env", "provider": "default",
                                                           "id": "MATTERMOST_BOT_TOKEN"}
    openclaw_config.validate_config(config, TEST_SCHEMA, "athena")


def test_mattermost_plugin_is_enabled_and_a_lab_server_is_trusted_but_a_public_one_is_not(tmp_path):
    inv = inventory.load()  # the fleet's Mattermost is at 10.220.1.10
    config = openclaw_config.build_config(inv, inv.agent("athena"))
    assert config["plugins"]["entries"]["mattermost"] == {"enabled": True}
    assert config["channels"]["mattermost"]["network"] == {"dangerouslyAllowPrivateNetwork": True}
    public = write_overlay(tmp_path / "o.yaml", work=tmp_path, images_dir=tmp_path, secrets_file=tmp_path / "s",
                           collector_port=1)
    data = yaml.safe_load(public.read_text())
    data["services"]["mattermost_url"] = "https://chat.example.com"
    public.write_text(yaml.safe_dump(data))
    inv = inventory.load(overlays=[public])
    assert "network" not in openclaw_config.build_config(inv, inv.agent("athena"))["channels"]["mattermost"]


def test_an_image_that_bakes_its_plugins_gets_them_as_load_paths_and_an_older_one_gets_none():
    """A load path to a dir the image lacks would make OpenClaw refuse the whole config (plugin path not found)."""
    inv = inventory.load()
    baked = openclaw_config.build_config(inv, inv.agent("athena"), ("/opt/openclaw/plugins/mattermost",))
    assert baked["plugins"] == {"entries": {"mattermost": {"enabled": True}},
                                "load": {"paths": ["/opt/openclaw/plugins/mattermost"]}}
    openclaw_config.validate_config(baked, TEST_SCHEMA, "athena")
    assert "load" not in openclaw_config.build_config(inv, inv.agent("athena"))["plugins"]


def test_the_clone_names_the_plugins_the_images_manifest_says_are_baked(site):
    tmp, overlay, _ = site
    publish(tmp / "tiny.qcow2", tmp / "images", "v2", TEST_SCHEMA, ("/opt/openclaw/plugins/mattermost",))
    baked = clone_cli("--overlay", str(overlay), "athena", "--image", "v2", "--dry-run")
    assert baked.returncode == 0, baked.stderr
    assert re.search(r'"load": \{\s+"paths": \[\s+"/opt/openclaw/plugins/mattermost"\s+\]', baked.stdout)
    older = clone_cli("--overlay", str(overlay), "athena", "--image", "v1", "--dry-run")
    assert older.returncode == 0 and '"load"' not in older.stdout


@pytest.mark.parametrize("url,private", [
    ("http://10.0.2.100:8065", True), ("http://127.0.0.1:8065", True), ("http://[fe80::1]:8065", True),
    ("http://mattermost:8065", True), ("https://chat.home.arpa", True), ("https://mm.lab.lan", True),
    ("https://chat.example.com", False), ("http://8.8.8.8", False)])
def test_which_mattermost_urls_count_as_the_fleets_own_network(url, private):
    assert openclaw_config.on_private_network(url) is private


def test_config_the_schema_rejects_is_refused_naming_the_field():
    bad = {"gateway": {"port": "eighteen"}}
    with pytest.raises(CloneError, match="athena: openclaw.json invalid at gateway.port"):
        openclaw_config.validate_config(bad, TEST_SCHEMA, "athena")


def test_mac_is_derived_from_the_name_and_stable():
    assert mac_for("athena") == mac_for("athena") != mac_for("apollo")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac_for("athena"))


def test_domain_xml_in_user_mode_forwards_ssh_and_collector_over_loopback_only(site):
    tmp, overlay, _ = site
    inv = inventory.load(None, [overlay])
    athena = inv.agent("athena")
    xml = domain_xml(spec_for(inv, athena, uuid="0" * 32, mac=mac_for("athena"), root_disk=Path("/r.qcow2"),
                              data_disk=Path("/d.qcow2"), console_log=Path("/c.log"), domain_type="qemu"))
    assert "restrict=on" in xml and f"hostfwd=tcp:127.0.0.1:{athena.ssh_port}-10.0.2.15:22" in xml
    assert "guestfwd=tcp:10.0.2.100:18000-cmd:nc 127.0.0.1 18000" in xml
    assert "listen='127.0.0.1'" in xml and "<domain type='qemu'" in xml and "<memory unit='MiB'>2048<" in xml


def test_dry_run_prints_disks_files_and_xml_with_secrets_masked_and_writes_nothing(site):
    tmp, overlay, canary = site
    proc = clone_cli("--overlay", str(overlay), "athena", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "disk root:" in proc.stdout and "/home/agent/.openclaw/.env 0600 agent:agent" in proc.stdout
    assert "<secret, masked>" in proc.stdout and "<domain type=" in proc.stdout
    assert canary not in proc.stdout + proc.stderr
    assert not (tmp / "state").exists() and not (tmp / "storage").exists()


@pytest.mark.parametrize("args, message", [
    (["zeus"], "unknown agent 'zeus'"),
    (["athena", "--image", "v9"], "image v9: not published"),
    (["athena", "--image", "/nonexistent/agent-x.qcow2"], "no such file"),
])
def test_bad_input_exits_2_with_one_clear_line(site, args, message):
    _, overlay, _ = site
    proc = clone_cli("--overlay", str(overlay), *args, "--dry-run")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in proc.stderr


def test_missing_secret_stops_the_run_before_anything_is_written(site):
    tmp, overlay, _ = site
    write_secrets(tmp / "secrets.yaml", ["athena"])  # apollo has no bot token now
    proc = clone_cli("--overlay", str(overlay), "athena", "apollo")
    assert proc.returncode == 2 and "agents.apollo.mattermost_bot_token" in proc.stderr
    assert not (tmp / "state").exists() and not (tmp / "storage").exists()


def test_plan_json_lists_every_host():
    proc = clone_cli("--plan", "--json")
    rows = json.loads(proc.stdout)
    assert [r["host"] for r in rows] == ["r420", "r710", "r8202", "r720xd", "r820"]


def test_an_image_without_its_manifest_is_not_published(tmp_path):
    from deploy.images import find_image
    (tmp_path / "agent-v5.qcow2").write_bytes(b"")
    with pytest.raises(CloneError, match="no published image"):
        find_image(tmp_path)
    with pytest.raises(CloneError, match="not published"):
        find_image(tmp_path, str(tmp_path / "agent-v5.qcow2"))


def test_injection_refuses_duplicate_or_relative_paths_before_the_launch():
    from deploy.inject import WriteFile, validate_ops
    with pytest.raises(CloneError, match="/etc/x injected twice"):
        validate_ops((WriteFile("/etc/x", b"a"), WriteFile("/etc/x", b"b")), "athena")
    with pytest.raises(CloneError, match="must be absolute"):
        validate_ops((WriteFile("etc/x", b"a"),), "athena")


def test_env_file_maps_keys_to_variables_and_keeps_the_collector_secret_out():
    from deploy.secrets import AgentSecrets, Secret
    env = openclaw_config.build_env(AgentSecrets("athena", {"collector_secret": Secret("c"),
                                                            "gateway_token": Secret("g"),
                                                            "mattermost_bot_token": Secret("m")}))
    assert env == "OPENCLAW_GATEWAY_TOKEN=g\nMATTERMOST_BOT_TOKEN=m\n"


def test_destroy_dry_run_lists_what_would_go_and_removes_nothing(site, capsys):
    from deploy import clone
    tmp, overlay, _ = site
    storage = tmp / "storage"
    storage.mkdir()
    for name in ("athena-root-v1.qcow2", "athena-data.qcow2"):
        (storage / name).write_bytes(b"disk")
    assert clone.main(["--overlay", str(overlay), "--connect", "test:///default", "athena", "--destroy",
                       "--purge-data", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"remove {storage / 'athena-root-v1.qcow2'}" in out and f"remove {storage / 'athena-data.qcow2'}" in out
    assert "athena: destroy  - dry run: would remove the domain and 1 root disk(s); data disk purged" in out
    assert sorted(p.name for p in storage.iterdir()) == ["athena-data.qcow2", "athena-root-v1.qcow2"]


def _athena_with(tmp_path, **overlay):
    from tests.clone_support import load_inventory_with
    inv = load_inventory_with(tmp_path, overlay)
    return inv, inv.agent("athena")


def test_the_seed_agent_answers_mentions_in_its_channels_and_dms_from_the_listed_people():
    """Before: `groupPolicy: allowlist` with nobody allowed dropped every channel post."""
    inv = inventory.load()
    mm = openclaw_config.build_config(inv, inv.agent("athena"))["channels"]["mattermost"]
    assert (mm["groupPolicy"], mm["requireMention"], mm["chatmode"]) == ("open", True, "oncall")
    assert (mm["dmPolicy"], mm["allowFrom"], mm["dangerouslyAllowNameMatching"]) == ("allowlist", ["jefcox"], True)


@pytest.mark.parametrize("chat, expected", [
    ({"channels": [], "dm_from": []}, {"groupPolicy": "disabled", "dmPolicy": "pairing"}),
    ({"require_mention": False}, {"groupPolicy": "open", "requireMention": False, "chatmode": "onmessage"}),
    ({"dm_from": ["*"]}, {"dmPolicy": "open", "allowFrom": ["*"]}),
    ({"dm_from": ["a" * 26]}, {"dmPolicy": "allowlist", "allowFrom": ["a" * 26]}),   # user ids: no name matching
])
def test_an_agents_mattermost_settings_become_openclaws_policies(tmp_path, chat, expected):
    inv, athena = _athena_with(tmp_path, agents={"athena": {"mattermost": chat}})
    mm = openclaw_config.build_config(inv, athena)["channels"]["mattermost"]
    assert {k: mm.get(k) for k in expected} == expected
    if chat.get("dm_from") == ["a" * 26]:
        assert "dangerouslyAllowNameMatching" not in mm
    openclaw_config.validate_config(openclaw_config.build_config(inv, athena), TEST_SCHEMA, "athena")


def test_an_agents_own_mattermost_keys_override_the_fleets_and_the_rest_are_kept(tmp_path):
    inv, athena = _athena_with(tmp_path, agents={"athena": {"mattermost": {"channels": ["ops"]}}})
    assert athena.mattermost == inventory.Chat(channels=("ops",), require_mention=True, dm_from=("jefcox",))
    assert inv.agent("apollo").mattermost.channels == ("town-square", "dev")


def test_a_model_provider_of_ours_gets_its_url_api_and_key_reference(tmp_path):
    inv, athena = _athena_with(tmp_path, services={"model": {
        "provider": "lab", "model": "m-1", "base_url": "http://10.0.2.100:9000/v1", "api": "openai-completions",
        "api_key": "openai_api_key"}})
    config = openclaw_config.build_config(inv, athena)
    assert config["agents"]["defaults"]["model"]["primary"] == "lab/m-1"
    assert config["models"] == {"mode": "merge", "providers": {"lab": {
        "baseUrl": "http://10.0.2.100:9000/v1", "api": "openai-completions",
        "apiKey": {"source": "env", "provider": "default", "id": "OPENAI_API_KEY"},
        "models": [{"id": "m-1", "name": "m-1"}]}}}
    openclaw_config.validate_config(config, TEST_SCHEMA, "athena")


def test_the_seed_uses_openclaws_own_provider_and_logs_to_the_data_disk():
    inv = inventory.load()
    config = openclaw_config.build_config(inv, inv.agent("athena"))
    assert config["agents"]["defaults"]["model"]["primary"] == "anthropic/claude-sonnet-4-6"
    assert "models" not in config
    assert config["logging"]["file"] == "/home/agent/.openclaw/logs/openclaw.log"


@pytest.mark.slow   # the baked image's: after the full bake (in `make test`, once the background bake has it)
def test_the_config_validates_against_the_schema_of_a_baked_openclaw(baked_image):
    """The real schema, OpenClaw 2026.9.2's, published beside the baked image."""
    schema = json.loads(baked_image.schema_path.read_text())
    inv = inventory.load()
    for agent in inv.agents.values():
        openclaw_config.validate_config(openclaw_config.build_config(inv, agent, ("/opt/openclaw/plugins/m",)),
                                        schema, agent.name)


def test_a_model_or_mattermost_url_at_the_forward_address_is_forwarded_to_the_hypervisors_loopback(site):
    tmp, overlay, _ = site
    data = yaml.safe_load(overlay.read_text())
    data["services"].update(mattermost_url="http://10.0.2.100:8065", model={
        "provider": "lab", "model": "m", "base_url": "http://10.0.2.100:9100/v1", "api_key": "openai_api_key"})
    overlay.write_text(yaml.safe_dump(data))
    from deploy.domain import user_netdev
    inv = inventory.load(None, [overlay])
    netdev = user_netdev(inv, inv.agent("athena"))
    assert "guestfwd=tcp:10.0.2.100:8065-cmd:nc 127.0.0.1 8065" in netdev
    assert "guestfwd=tcp:10.0.2.100:9100-cmd:nc 127.0.0.1 9100" in netdev
