"""Drift against the baseline: each kind of change is reported as its own entry, events and scans agree."""
import json
import os

import pytest

from agentd.baseline import FileState, load_baseline
from agentd.config import load_config
from agentd.drift import DriftTracker, compare_file
from agentd.errors import AgentdError
from agentd.packages import package_drift, parse_dpkg_status
from agentd.protocol import DriftEntry
from tests.agentd_fixtures import DPKG_STATUS, drift_of, make_vm_tree


def tracker_for(root, **config):
    make_vm_tree(root, **config)
    return tracker_of(root)


def tracker_of(root):
    """A tracker over the tree as it is now (baseline files re-read)."""
    cfg = load_config(str(root / "etc/agentfleet/agentd.yaml"))
    baseline = load_baseline(cfg, str(root))
    t = DriftTracker(baseline, str(root), cfg.watched_paths, cfg.drift_ignore, cfg.dpkg_status,
                     exclude=[cfg.image_json, cfg.injected_json])
    t.full_scan()
    return t


def kinds(tracker):
    return {(d.path, d.kind) for d in tracker.drift()}


def test_an_untouched_tree_has_no_drift(tmp_path):
    assert tracker_for(tmp_path).drift() == []


def test_modified_missing_added_mode_and_owner_are_each_reported(tmp_path):
    t = tracker_for(tmp_path)
    (tmp_path / "etc/hosts").write_text("6.6.6.6 evil\n")
    (tmp_path / "usr/local/bin/tool").unlink()
    (tmp_path / "etc/cron.d").mkdir()
    (tmp_path / "etc/cron.d/backdoor").write_text("* * * * * root sh\n")
    (tmp_path / "etc/ssh/sshd_config").chmod(0o644)
    os.chown(tmp_path / "etc/hostname", 1000, 1000)
    t.full_scan()
    assert kinds(t) == {("/etc/hosts", "modified"), ("/usr/local/bin/tool", "missing"),
                        ("/etc/cron.d/backdoor", "added"), ("/etc/ssh/sshd_config", "mode"),
                        ("/etc/hostname", "owner")}
    mode = drift_of({"drift": [d.__dict__ for d in t.drift()]})[("/etc/ssh/sshd_config", "mode")]
    assert (mode["expected"], mode["actual"]) == ("0600", "0644")


def test_an_event_for_one_path_updates_drift_without_a_full_scan(tmp_path):
    t = tracker_for(tmp_path)
    (tmp_path / "etc/hosts").write_text("changed\n")
    assert t.rescan_path(str(tmp_path / "etc/hosts")) is True
    assert kinds(t) == {("/etc/hosts", "modified")}
    assert t.full_scans == 1
    assert t.rescan_path(str(tmp_path / "etc/hosts")) is False  # nothing new


def test_a_deleted_directory_event_removes_every_file_below_it(tmp_path):
    t = tracker_for(tmp_path)
    for f in (tmp_path / "etc/ssh").iterdir():
        f.unlink()
    (tmp_path / "etc/ssh").rmdir()
    t.rescan_path(str(tmp_path / "etc/ssh"))
    assert kinds(t) == {("/etc/ssh/sshd_config", "missing")}


def test_a_baseline_file_outside_the_watched_paths_is_checked_by_the_full_scan(tmp_path):
    t = tracker_for(tmp_path)
    (tmp_path / "opt/baseline-only/unwatched.conf").write_text("changed\n")
    assert t.drift() == []
    t.full_scan()
    assert kinds(t) == {("/opt/baseline-only/unwatched.conf", "modified")}


def test_ignored_globs_and_agentd_own_files_are_never_drift(tmp_path):
    t = tracker_for(tmp_path, drift_ignore=["*.swp"])
    (tmp_path / "etc/hosts.swp").write_text("editor\n")
    (tmp_path / "etc/agentfleet/image.json").write_text("{}")  # the reference itself
    t.full_scan()
    assert t.drift() == []


def test_a_rewritten_file_with_the_same_stat_signature_is_not_rehashed(tmp_path, monkeypatch):
    t = tracker_for(tmp_path)
    calls = []
    import agentd.filestate as fs
    real = fs.sha256_file
    monkeypatch.setattr(fs, "sha256_file", lambda p: calls.append(p) or real(p))
    t.full_scan()
    assert calls == []
    (tmp_path / "etc/hosts").write_text("new content\n")
    t.full_scan()
    assert calls == [str(tmp_path / "etc/hosts")]


def test_dpkg_status_parser_keeps_only_installed_packages():
    assert parse_dpkg_status(DPKG_STATUS) == {"bash": "5.1-6ubuntu1", "curl": "7.81.0-1ubuntu1.15"}


def test_package_drift_reports_changed_removed_and_added_packages():
    entries = package_drift({"bash": "1", "curl": "2"}, {"bash": "1.1", "netcat": "9"})
    assert entries == [DriftEntry("pkg:bash", "package", "1", "1.1"), DriftEntry("pkg:curl", "package", "2", None),
                       DriftEntry("pkg:netcat", "package", None, "9")]
    assert package_drift({}, {"anything": "1"}) == []


def test_package_drift_follows_the_dpkg_status_file(tmp_path):
    t = tracker_for(tmp_path)
    status = tmp_path / "var/lib/dpkg/status"
    status.write_text(DPKG_STATUS + "\nPackage: nmap\nStatus: install ok installed\nVersion: 7.91\n")
    assert kinds(t) == {("pkg:nmap", "package")}


def test_compare_file_pads_short_modes():
    assert compare_file("/x", FileState("a", "644", "root:root"), FileState("a", "0644", "root:root")) == []


def test_a_symlink_is_compared_by_its_target_as_the_bake_records_it(tmp_path):
    import hashlib
    import json
    make_vm_tree(tmp_path)
    os.symlink("/usr/bin/vim.basic", tmp_path / "usr/local/bin/vi")
    image = json.loads((tmp_path / "etc/agentfleet/image.json").read_text())
    image["baseline"]["/usr/local/bin/vi"] = {"sha256": hashlib.sha256(b"symlink:/usr/bin/vim.basic").hexdigest(),
                                              "mode": "0777", "owner": "root:root"}
    (tmp_path / "etc/agentfleet/image.json").write_text(json.dumps(image))
    t = tracker_of(tmp_path)
    assert t.drift() == []
    os.unlink(tmp_path / "usr/local/bin/vi")
    os.symlink("/tmp/evil", tmp_path / "usr/local/bin/vi")
    t.full_scan()
    assert kinds(t) == {("/usr/local/bin/vi", "modified")}


@pytest.mark.parametrize("edit, message", [
    (lambda image: image["baseline"]["/etc/hosts"].update(mode=420), "/etc/hosts: mode must be a string, not int"),
    (lambda image: image["baseline"]["/etc/hosts"].update(owner=0), "/etc/hosts: owner must be a string, not int"),
    (lambda image: image["packages"]["dpkg"].update(curl=7.81), "packages.dpkg must map names to version strings"),
    (lambda image: image.update(version=2026), "version must be a string, not int"),
    (lambda image: image.pop("version"), "version is missing"),
])
def test_a_baseline_value_of_the_wrong_type_is_refused_not_converted_into_drift_forever(tmp_path, edit, message):
    """str(420) is not "0644": the file would be reported as mode drift in every report, for good."""
    config = load_config(str(make_vm_tree(tmp_path)))
    image_json = tmp_path / "etc/agentfleet/image.json"
    image = json.loads(image_json.read_text())
    edit(image)
    image_json.write_text(json.dumps(image))
    with pytest.raises(AgentdError, match=message):
        load_baseline(config, str(tmp_path))


def test_a_null_identity_field_is_empty_not_the_word_none(tmp_path):
    config = load_config(str(make_vm_tree(tmp_path)))
    identity_json = tmp_path / "etc/agentfleet/identity.json"
    identity_json.write_text(json.dumps({**json.loads(identity_json.read_text()), "role": None}))
    assert load_baseline(config, str(tmp_path)).identity.role == ""
