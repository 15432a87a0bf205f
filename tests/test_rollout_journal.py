"""The rollout's journal file and what a rollout does when it cannot read the collector; no collector process."""
import argparse
import io
import os
import stat

import pytest

from deploy.rollout import CollectorHealth, RolloutError, add_arguments, run_verb
from deploy.rollout.journal import Journal, fleet_lock

from .test_rollout_support import fleet_inventory

NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


def test_each_journal_step_replaces_the_file_whole_with_owner_only_permissions(tmp_path):
    path = tmp_path / "j" / "fleet.json"
    journal = Journal.create(path, version="v2", agents={"apollo": {"phase": "pending"}}, waves=[])
    journal.set_agent("apollo", phase="replacing")
    assert Journal.read(path).data["agents"]["apollo"]["phase"] == "replacing"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["fleet.json"]      # no temp file left behind


def test_a_corrupt_journal_is_one_clear_line_and_the_lock_names_its_holder(tmp_path):
    path = tmp_path / "fleet.json"
    path.write_text('{"schema": 1, "state": "runn')
    with pytest.raises(RolloutError, match=r"journal .*fleet.json: not valid JSON; move it away to start over"):
        Journal.read(path)
    with fleet_lock(path):
        with pytest.raises(RolloutError, match=f"another rollout of this fleet is running \\(pid {os.getpid()}"):
            with fleet_lock(path):
                pass
    with fleet_lock(path):  # released when the first block ended
        pass


def verb(tmp_path, *argv):
    parser = argparse.ArgumentParser(prog="fleet rollout")
    add_arguments(parser)
    args = parser.parse_args([*argv, "--journal-dir", str(tmp_path / "journal")])
    stdout, stderr = io.StringIO(), io.StringIO()

    def untouchable(*_):
        raise AssertionError("nothing may be replaced, pushed or rolled back")
    code = run_verb(args, fleet_inventory(), replace_on_host=untouchable, rollback_on_host=untouchable,
                    push=untouchable, health=CollectorHealth(NOWHERE), stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_without_the_collector_a_dry_run_plans_every_agent_and_a_real_run_refuses_before_touching_anything(tmp_path):
    code, out, err = verb(tmp_path, "v2", "--dry-run")
    assert code == 0 and "versions unknown (collector http://127.0.0.1:9/api/v1/agents: " in out
    assert "8 to replace in 5 wave(s)" in out
    code, out, err = verb(tmp_path, "v2")
    assert (code, out) == (2, "") and err.startswith("rollout: collector http://127.0.0.1:9/api/v1/agents: ")
    assert not (tmp_path / "journal").exists() or not list((tmp_path / "journal").glob("*.json"))
