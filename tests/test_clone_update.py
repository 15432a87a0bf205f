"""`clone.py AGENT --update` (fast): its refusals, which come before any VM is touched, and the dry run's diff against
the last injection's baseline, where a secret's value never shows. tests/test_clone_vm.py updates a real overlay."""
import hashlib

import pytest

from deploy import clone
from deploy.inject import WriteFile
from deploy.secrets import Secret
from deploy.state import Slot, new_state, save_state
from deploy.update_diff import compare, render
from tests.clone_support import write_overlay, write_secrets


@pytest.fixture
def overlay(tmp_path):
    return write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=tmp_path / "images",
                         secrets_file=write_secrets(tmp_path / "secrets.yaml", ["athena", "apollo"]),
                         collector_port=18000)


def update(overlay, *args):
    return clone.main(["--overlay", str(overlay), "--connect", "test:///default", "athena", "--update", *args])


@pytest.mark.parametrize("dry", [(), ("--dry-run",)])
def test_update_of_an_agent_with_no_vm_is_refused(overlay, capsys, dry):
    assert update(overlay, *dry) == 2
    assert capsys.readouterr().err.strip() == "clone: athena: no VM to update (clone it first)"


def test_update_during_an_unfinished_replace_is_refused(overlay, tmp_path, capsys):
    root = tmp_path / "storage" / "athena-root-v1.qcow2"
    st = new_state("athena", tmp_path / "storage" / "athena-data.qcow2")
    save_state(tmp_path / "state" / "athena", st.evolve(current=Slot("v1", str(root)), pending=Slot("v2", "x")))
    assert update(overlay) == 2
    assert "athena: a replace to v2 is not finished; run it again or --rollback before --update" in \
        capsys.readouterr().err


def test_update_keeps_the_image_and_refuses_another(overlay, capsys):
    assert update(overlay, "--image", "v2") == 2
    assert "--update keeps each agent's image; use --replace --image to change it" in capsys.readouterr().err


def _entry(data: bytes, mode: str = "0644", owner: str = "root:root") -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "mode": mode, "owner": owner}


OLD_YAML = b"agent: athena\ncollector_url: http://old:9000\n"
NEW_YAML = b"agent: athena\ncollector_url: http://new:9000\n"
OLD_ENV, NEW_ENV = "MATTERMOST_BOT_TOKEN=old-leaked-token\n", "MATTERMOST_BOT_TOKEN=new-rotated-token\n"


def test_dry_run_diff_shows_plain_files_as_a_unified_diff_and_secrets_only_as_changed():
    ops = (WriteFile("/etc/hostname", b"athena\n"),
           WriteFile("/etc/agentfleet/agentd.yaml", NEW_YAML),
           WriteFile("/home/agent/.openclaw/.env", Secret(NEW_ENV), 0o600, "agent:agent"),
           WriteFile("/etc/agentfleet/agentd.token", Secret("same-token\n"), 0o600))
    baseline = {"/etc/hostname": _entry(b"athena\n"), "/etc/agentfleet/agentd.yaml": _entry(OLD_YAML),
                "/home/agent/.openclaw/.env": _entry(OLD_ENV.encode(), "0600", "agent:agent"),
                "/etc/agentfleet/agentd.token": _entry(b"same-token\n", "0600"), "/etc/fstab": _entry(b"x")}
    guest = {"/etc/hostname": b"athena\n", "/etc/agentfleet/agentd.yaml": OLD_YAML}
    text = "\n".join(render(compare(ops, baseline, guest)))
    assert "unchanged /etc/hostname\n" in text
    assert "changed   /etc/agentfleet/agentd.yaml\n" in text
    assert "    -collector_url: http://old:9000\n    +collector_url: http://new:9000" in text
    assert "changed   /home/agent/.openclaw/.env (secret, value not shown)" in text
    assert "unchanged /etc/agentfleet/agentd.token (secret, value not shown)" in text
    assert "2 of 4 injected files would change" in text and "/etc/fstab" not in text
    for value in ("old-leaked-token", "new-rotated-token", "same-token"):
        assert value not in text


def test_dry_run_diff_names_new_files_mode_changes_drifted_copies_and_files_no_longer_injected():
    ops = (WriteFile("/etc/agentfleet/agentd.yaml", NEW_YAML, 0o640),
           WriteFile("/home/agent/.ssh/authorized_keys", b"ssh-ed25519 AAAA admin\n", 0o600, "agent:agent"))
    baseline = {"/etc/agentfleet/agentd.yaml": _entry(OLD_YAML), "/etc/ssh/ssh_host_dsa_key.pub": _entry(b"k")}
    guest = {"/etc/agentfleet/agentd.yaml": OLD_YAML + b"# edited in the guest\n"}
    changes = {c.path: c for c in compare(ops, baseline, guest)}
    yaml_change = changes["/etc/agentfleet/agentd.yaml"]
    assert yaml_change.status == "changed" and "mode 0644 -> 0640" in yaml_change.note
    assert "the guest's copy differs from what was injected (drift)" in yaml_change.note
    assert "-# edited in the guest" in yaml_change.diff
    assert changes["/home/agent/.ssh/authorized_keys"].status == "new"
    assert "+ssh-ed25519 AAAA admin" in changes["/home/agent/.ssh/authorized_keys"].diff
    assert changes["/etc/ssh/ssh_host_dsa_key.pub"].status == "kept"
