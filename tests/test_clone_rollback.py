"""A manual rollback keeps the agent's work unless told otherwise (fast: a state file and a real qcow2 data disk with a
real snapshot; --dry-run and refusals never reach a hypervisor, and `--connect test:///default` makes sure none of
them could touch a real one)."""
import json
import subprocess

import pytest

from deploy import clone
from deploy.data_snapshots import DataSnapshot
from deploy.state import Slot, load_state, new_state, save_state
from tests.clone_support import write_overlay, write_secrets


@pytest.fixture
def site(tmp_path):
    """athena on v2 (previous v1), its data disk holding the snapshot pre-v2 taken before v2 was swapped in."""
    overlay = write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=tmp_path / "images",
                            secrets_file=write_secrets(tmp_path / "secrets.yaml", ["athena", "apollo"]),
                            collector_port=18000)
    storage = tmp_path / "storage"
    storage.mkdir()
    data = storage / "athena-data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "16M"], check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "pre-v2", str(data)], check=True)
    st = new_state("athena", data).evolve(current=Slot("v2", str(storage / "athena-root-v2.qcow2")),
                                          previous=Slot("v1", str(storage / "athena-root-v1.qcow2")),
                                          snapshots=("pre-v2",))
    save_state(tmp_path / "state" / "athena", st)
    return tmp_path, overlay, st


def run(site, *args):
    _, overlay, _ = site
    return clone.main(["--overlay", str(overlay), "--connect", "test:///default", "athena", "--rollback", *args])


def test_rollback_dry_run_says_the_root_only_goes_back_and_the_data_disk_is_kept(site, capsys):
    tmp, _, before = site
    assert run(site, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "athena: would roll back to v1, root only: the data disk is kept as it is; snapshot pre-v2 (taken " in out
    assert "min ago) not restored (--restore-data)" in out and "athena-root-v1.qcow2" in out
    assert load_state(tmp / "state" / "athena") == before


def test_rollback_dry_run_with_restore_data_shows_the_snapshots_age_and_what_is_discarded(site, capsys):
    tmp, _, before = site
    assert run(site, "--restore-data", "--dry-run", "--json") == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["dry_run"] is True and result["image_version"] == "v1"
    assert "root and data: /home/agent back to snapshot pre-v2 (taken " in result["message"]
    assert "what the agent wrote since is discarded" in result["message"]
    assert load_state(tmp / "state" / "athena") == before
    listed = subprocess.run(["qemu-img", "snapshot", "-l", before.data_disk], capture_output=True, text=True).stdout
    assert "pre-v2" in listed


def test_restore_data_without_a_snapshot_is_refused_before_any_vm_is_stopped(site, capsys):
    tmp, _, before = site
    subprocess.run(["qemu-img", "snapshot", "-d", "pre-v2", before.data_disk], check=True)
    assert run(site, "--restore-data") == 2
    err = capsys.readouterr().err
    assert err.strip() == ("clone: athena: --restore-data: the data disk has no snapshot pre-v2 (taken before v2 "
                           "was swapped in); nothing was changed")
    assert load_state(tmp / "state" / "athena") == before


def test_restore_data_goes_only_with_rollback(site, capsys):
    _, overlay, _ = site
    assert clone.main(["--overlay", str(overlay), "athena", "--restore-data", "--dry-run"]) == 2
    assert "--restore-data only goes with --rollback" in capsys.readouterr().err


@pytest.mark.parametrize("seconds, said", [(30, "0 min ago"), (3 * 3600 + 12 * 60, "3 h 12 min ago"),
                                           (2 * 86400 + 5 * 3600, "2 d 5 h ago")])
def test_a_snapshots_age_reads_as_a_date_and_a_duration(seconds, said):
    snap = DataSnapshot("pre-v2", taken_at=1_795_900_000)
    assert snap.age(now=1_795_900_000 + seconds) == f"taken 2026-11-28 21:06 UTC, {said}"
