"""The manifest's baseline: what the image manages, hashed from an unpacked tree."""
import json
import os

from bake.manifest import managed, scan_tree


def test_clone_owned_files_are_unmanaged_but_their_neighbours_are_managed():
    assert not managed("etc/hosts") and managed("etc/hosts.allow")
    assert not managed("etc/agentfleet/identity.json") and managed("etc/agentfleet/bashrc.sh")
    assert not managed("etc/ssh/ssh_host_ed25519_key") and managed("etc/ssh/sshd_config")
    assert not managed("var/log/syslog")


def test_scan_names_the_baked_openclaw_plugins_by_their_in_vm_dirs(tmp_path):
    assert scan_tree(tmp_path)["openclaw_plugins"] == []
    plugins = tmp_path / "opt" / "openclaw" / "plugins"
    plugins.mkdir(parents=True)
    os.symlink("../plugin-state/npm/projects/p/node_modules/@openclaw/mattermost", plugins / "mattermost")
    assert scan_tree(tmp_path)["openclaw_plugins"] == ["/opt/openclaw/plugins/mattermost"]


def test_scan_records_files_and_symlinks_with_the_images_own_owner_names(tmp_path):
    (tmp_path / "etc" / "xdg" / "systemd").mkdir(parents=True)
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    (tmp_path / "etc" / "issue").write_text("Ubuntu\n")
    os.chmod(tmp_path / "etc" / "issue", 0o640)
    os.symlink("../../user", tmp_path / "etc" / "xdg" / "systemd" / "user")  # a symlink to a directory
    baseline = scan_tree(tmp_path)["baseline"]
    assert baseline["/etc/issue"]["mode"] == "0640"
    assert baseline["/etc/issue"]["owner"] == "root:root"
    assert "/etc/xdg/systemd/user" in baseline


def test_npm_versions_come_from_every_installed_tree(tmp_path):
    """OpenClaw's and aws-cdk's trees each keep their package-lock in /opt/<name>: the manifest lists both."""
    for name, deps in (("openclaw", {"openclaw": "2026.9.2", "ws": "8.18.0"}), ("aws-cdk", {"aws-cdk": "2.1148.1"})):
        (tmp_path / "opt" / name).mkdir(parents=True)
        (tmp_path / "opt" / name / "package-lock.json").write_text(json.dumps(
            {"packages": {"": {}, **{f"node_modules/{k}": {"version": v} for k, v in deps.items()},
                          "node_modules/ws/node_modules/x": {"version": "1"}}}))
    assert scan_tree(tmp_path)["packages"]["npm"] == {"openclaw": "2026.9.2", "ws": "8.18.0", "aws-cdk": "2.1148.1"}
