"""agentd/vm_files.py: the one definition of the files agentfleet puts in a VM. The writers (the bake's scan, the
clone's payload and injection) and the reader (agentd) must agree on every file, so each test goes writer -> reader."""
import ast
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from agentd import vm_files
from agentd.baseline import load_baseline
from agentd.config import parse_config
from agentd.filestate import FileStateReader
from bake import publish
from bake.manifest import managed, scan_tree
from deploy import inventory, payload
from deploy.images import Image
from deploy.inject import WriteFile, baseline_of
from deploy.state import new_state

REPO = Path(__file__).resolve().parent.parent


def test_vm_files_is_stdlib_only_python_310_so_it_ships_in_the_image_and_bake_and_deploy_can_import_it():
    tree = ast.parse((REPO / "agentd" / "vm_files.py").read_text(), feature_version=(3, 10))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.module == "protocol", "only agentd's protocol module (stdlib-only too)"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert all(n.split(".")[0] in sys.stdlib_module_names for n in names), names


def image_with(services: tuple[str, ...]) -> Image:
    manifest = publish.Manifest("agent", "v7", publish.ImageFile("agent-v7.qcow2", 1, "0" * 64), services=services)
    return Image("v7", Path("/x.qcow2"), manifest, None)


FULL, SMALL = image_with(("agentd", "openclaw")), image_with(("agentd",))


def test_the_clones_agentd_yaml_parses_into_the_config_object_the_clone_built():
    inv = inventory.load()
    built = payload.agentd_config(inv, inv.agent("athena"), FULL)
    written = yaml.safe_dump(built.to_yaml_data(), sort_keys=False)
    assert parse_config(yaml.safe_load(written)) == built
    assert list(yaml.safe_load(written)) == list(vm_files.CLONE_WRITTEN)


def test_the_clone_keeps_agentds_defaults_a_busy_cpu_only_warns_and_a_starved_vm_fails_on_load():
    inv = inventory.load()
    built = payload.agentd_config(inv, inv.agent("athena"), FULL)
    defaults = vm_files.Config(agent="athena", collector_url="http://c")
    assert built.thresholds == defaults.thresholds and built.watched_paths == defaults.watched_paths
    assert built.thresholds["cpu_percent"].status(100.0) == "warn"
    assert built.thresholds["load_per_cpu"].status(4.0) == "fail"


def test_the_bakes_baseline_entries_are_what_agentds_drift_reads_from_the_same_files(tmp_path):
    """One writer (FileState.of) and one reader (baseline_from_json): a file, a mode, a symlink, names by number."""
    root = tmp_path / "root"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\nme:x:{os.getuid()}:{os.getgid()}::/:/bin/sh\n")
    (root / "etc" / "group").write_text(f"root:x:0:\nme:x:{os.getgid()}:\n")
    (root / "etc" / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
    (root / "etc" / "ssh" / "sshd_config").chmod(0o600)
    (root / "etc" / "alternatives").symlink_to("/usr/share/alternatives")
    scanned = vm_files.baseline_from_json(scan_tree(root)["baseline"], "image.json")
    reader = FileStateReader()
    for path in ("/etc/ssh/sshd_config", "/etc/alternatives", "/etc/passwd"):
        actual = reader.read(str(root) + path)
        assert scanned[path].sha256 == actual.sha256 and scanned[path].mode == actual.mode, path
    assert scanned["/etc/ssh/sshd_config"].mode == "0600"


def test_the_clones_injected_baseline_is_read_back_by_agentd(tmp_path):
    ops = (WriteFile("/etc/hostname", b"athena\n", 0o644),
           WriteFile("/home/agent/.env", b"K=V\n", 0o600, "agent:agent"))
    read = vm_files.baseline_from_json(baseline_of(ops), "injected.json")
    assert read["/home/agent/.env"] == vm_files.FileState(hashlib.sha256(b"K=V\n").hexdigest(), "0600", "agent:agent")
    assert read["/etc/hostname"].mode == "0644"


def test_the_clones_identity_is_what_agentd_reads(tmp_path):
    inv = inventory.load()
    state = new_state("athena", Path("/data.qcow2"))
    identity = payload.identity(inv, inv.agent("athena"), Image("v7", Path("/x.qcow2"), None, None), state)
    etc = tmp_path / vm_files.ETC.lstrip("/")
    etc.mkdir(parents=True)
    (etc / "image.json").write_text(json.dumps({"version": "v7"}))
    (etc / "identity.json").write_text(json.dumps(identity.to_json()))
    config = vm_files.Config(agent="athena", collector_url="http://c")
    assert load_baseline(config, str(tmp_path)).identity == identity
    assert identity.image_version == "v7" and identity.cloned_at > 0


def test_the_files_the_clone_owns_are_never_managed_by_the_image():
    for path in (*vm_files.CLONE_OWNED, vm_files.IMAGE_JSON):
        assert not managed(path.lstrip("/")), path


def test_agentd_and_the_clone_ask_the_collector_for_an_agent_at_the_same_url():
    config = vm_files.Config(agent="athena", collector_url="http://10.0.2.2:8765/")
    assert config.agent_url == vm_files.agent_api_url("http://10.0.2.2:8765", "athena") \
        == "http://10.0.2.2:8765/api/v1/agents/athena"


def test_an_image_without_openclaw_gets_no_openclaw_checks_config_or_keys_and_old_configs_keep_both():
    from agentd.baseline import Baseline
    from agentd.checks import CheckContext, for_services, run_checks
    from deploy.secrets import Secret
    inv = inventory.load()
    built = payload.agentd_config(inv, inv.agent("athena"), SMALL)
    parsed = parse_config(yaml.safe_load(yaml.safe_dump(built.to_yaml_data())))
    assert parsed.services == ("agentd",)
    assert not {"openclaw_gateway", "openclaw_ready", "openclaw_dashboard"} & set(for_services(parsed.services))
    names = [r.name for r in run_checks(CheckContext(parsed, "/", Baseline("v7")))]
    assert "agentd_unit" in names and not [n for n in names if n.startswith("openclaw")]
    old = parse_config({"agent": "athena", "collector_url": "http://c"})      # written before `services` existed
    assert "openclaw_ready" in for_services(old.services)
    state = new_state("athena", Path("/data.qcow2"))
    secrets = {"collector_secret": Secret("s3cret")}
    small_ops = payload.agent_ops(inv, inv.agent("athena"), SMALL, state, secrets, [])
    assert not [op for op in small_ops if ".openclaw" in op.path], "no OpenClaw config or API keys without OpenClaw"
