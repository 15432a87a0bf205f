"""The manifest's baseline: what the image manages, hashed from an unpacked tree."""
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
