"""fleet clone/replace/rollback/destroy through each host's deploy/clone.py over SSH (fast: --dry-run and the
refusals; tests/test_fleet_clone_vm.py clones for real). Secrets come from the seed-style flat Ansible Vault through
the inventory's key map, are read on the workstation and travel on SSH standard input only: a canary value is
looked for in every process's argv and environment during the run, in the hosts' sshd logs (DEBUG3) and files."""
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.clone_support import TEST_SCHEMA, publish
from tests.fleet_support import ProcessWatch, files_holding, running_lab, write_vault

CANARY = "canary-7f3a9c1e-do-not-leak"
AGENT = {"vcpu": 1, "ram_gb": 1, "disk_gb": 1, "role": "test"}
KEY_MAP = {"collector_secret": "vault_agentfleet_collector_secret",
           "anthropic_api_key": "vault_openclaw_anthropic_api_key",
           "openai_api_key": "vault_openclaw_openai_api_key", "google_api_key": "vault_openclaw_google_api_key",
           "mattermost_bot_token": "vault_mattermost_bot_token",
           "gateway_token": "vault_openclaw_gateway_token_{agent}"}
VAULT = {"vault_agentfleet_collector_secret": "collector-secret", "vault_openclaw_anthropic_api_key": CANARY,
         "vault_openclaw_openai_api_key": "sk-openai", "vault_openclaw_google_api_key": "google",
         "vault_mattermost_bot_token": "mm-bot", "vault_mattermost_postgres_password": "pg",
         "vault_openclaw_gateway_token_fa": "gw-fa", "vault_openclaw_gateway_token_fb": "gw-fb",
         "vault_openclaw_gateway_token_fc": "gw-fc"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-clone")
    with running_lab(work, ("c1", "c2"), 50, log_level="DEBUG3") as lab:
        for host in lab.hosts.values():
            raw = host.root / "raw.qcow2"
            raw.write_bytes(b"not really an image")
            publish(raw, host.images, "v1", TEST_SCHEMA)
            raw.unlink()
        vault, password = write_vault(work, VAULT)
        ansible_vault = str(Path(sys.executable).parent / "ansible-vault")
        lab.overlay({"fa": {"host": "c1", "ip": "10.220.1.210", **AGENT},
                     "fc": {"host": "c1", "ip": "10.220.1.212", **AGENT},
                     "fb": {"host": "c2", "ip": "10.220.1.211", **AGENT}},
                    secrets={"source": {"file": None,   # the base's kind nulled: an overlay switching sources
                                        "command": [ansible_vault, "view", "--vault-password-file", str(password),
                                                    str(vault)]},
                             "key_map": KEY_MAP},
                    services={"collector_url": "http://10.0.2.100:8765"})
        assert lab.fleet("trust", "c1", "c2").returncode == 0
        yield lab


def fleet(lab, *args, overlay=None):
    return lab.fleet(*args, *(["--overlay", str(overlay)] if overlay else []))


def test_dry_run_of_agents_on_two_hosts_runs_each_hosts_clone_once_with_vault_secrets(lab):
    with ProcessWatch(CANARY.encode()) as watch:
        proc = fleet(lab, "clone", "fa", "fb", "fc", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.index("=== host c1: fa, fc") < proc.stdout.index("=== host c2: fb")
    for agent in ("fa", "fb", "fc"):
        assert f"== {agent} (clone, image v1, domain type" in proc.stdout
    assert "file  /home/agent/.openclaw/.env 0600 " in proc.stdout and "<secret, masked>" in proc.stdout
    assert watch.scans > 3 and watch.seen == []                     # never in any process's argv or environment
    assert CANARY not in proc.stdout + proc.stderr
    for host in lab.hosts.values():
        log = host.log.read_text()
        assert "Starting session: command for root" in log     # the session ran there, logged at DEBUG3
        assert CANARY not in log
        assert files_holding(host.root, CANARY.encode()) == []
    assert files_holding(lab.fleet_dir, CANARY.encode()) == []


def test_an_agent_placed_on_another_host_is_refused_there_in_one_line(lab):
    lab.hosts["c1"].host_file.write_text("c2\n")                     # c1 believes it is c2
    try:
        proc = fleet(lab, "clone", "fa", "fb", "--dry-run")
    finally:
        lab.hosts["c1"].host_file.write_text("c1\n")
    assert proc.returncode == 2
    assert (f"fleet: c1: clone.py failed: this hypervisor is 'c2' ({lab.hosts['c1'].host_file}), a host the "
            f"inventory does not have (c1): is the inventory's address for it another machine's?") in proc.stderr
    assert "=== host c2: fb" in proc.stdout                           # the other host's work completed


def test_a_host_never_set_up_is_refused_when_the_fleet_drives_it(lab):
    host_file = lab.hosts["c2"].host_file
    host_file.unlink()
    try:
        proc = fleet(lab, "clone", "fb", "--dry-run")
    finally:
        host_file.write_text("c2\n")
    assert proc.returncode == 2
    assert f"c2: clone.py failed: this hypervisor has no identity ({host_file} is missing)" in proc.stderr


def test_a_secret_missing_on_the_workstation_stops_before_any_host_is_touched(lab, tmp_path):
    data = yaml.safe_load((lab.work / "inventory.yaml").read_text())
    data["secrets"]["key_map"]["gateway_token"] = "vault_gateway_of_{agent}"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(data))
    before = {h.name: h.log.read_text().count("deploy/clone.py") for h in lab.hosts.values()}
    proc = fleet(lab, "clone", "fa", "fb", overlay=overlay)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("fleet: secrets (command ")
    assert "missing agents.fa.gateway_token, agents.fb.gateway_token" in proc.stderr
    assert {h.name: h.log.read_text().count("deploy/clone.py") for h in lab.hosts.values()} == before


def test_an_unknown_agent_or_an_unreachable_host_is_one_line_each(lab):
    proc = fleet(lab, "clone", "fa", "nobody", "--dry-run")
    assert proc.returncode == 2 and proc.stderr.startswith("fleet: unknown agent 'nobody'")
    lab.hosts["c2"].stop()
    try:
        proc = fleet(lab, "rollback", "fa", "fb", "--json")
    finally:
        lab.hosts["c2"].start()
    assert proc.returncode == 2
    errors = json.loads(proc.stdout)["errors"]
    assert len(errors) == 2 and errors[0].startswith("c1: clone.py failed: fa: ")   # c1 answered for itself
    assert errors[1].startswith("c2: unreachable at root@")
    assert proc.stderr.splitlines() == [f"fleet: {e}" for e in errors]


def test_update_and_rollback_reach_each_hosts_clone_with_their_options(lab):
    """--update carries the secrets like a clone and the host refuses an agent with no VM yet; --rollback
    --restore-data reaches the host's clone.py (which refuses: nothing to roll back to)."""
    with ProcessWatch(CANARY.encode()) as watch:
        proc = fleet(lab, "update", "fa", "fb")
    assert proc.returncode == 2, proc.stderr
    assert "fa: no VM to update (clone it first)" in proc.stderr and "fb: no VM to update" in proc.stderr
    assert watch.seen == [] and CANARY not in proc.stdout + proc.stderr
    proc = fleet(lab, "rollback", "fa", "--restore-data")
    assert proc.returncode == 2 and "fa: nothing to roll back to" in proc.stderr, proc.stderr
