"""One clone.py at a time per agent (deploy/agent_lock.py): a second one for the same agent waits for the first, as
the rerun of a killed rollout must (the first run's clone.py goes on with its replace on the hypervisor); another
agent, or a dry run, does not wait."""
from __future__ import annotations

import os
import subprocess

import pytest

from deploy import agent_lock
from deploy.inventory import load
from host.progress import Progress
from tests.clone_support import REPO, write_overlay, write_secrets

WAIT_S = 3          # long enough for a clone.py that does not wait to have finished its destroy of nothing


@pytest.fixture
def site(tmp_path):
    overlay = write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=tmp_path / "images",
                            secrets_file=write_secrets(tmp_path / "secrets.yaml", ["athena", "apollo"]),
                            collector_port=18000)
    return {"overlay": overlay, "inv": load(None, [overlay])}


def start(site, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(REPO / ".venv/bin/python"), str(REPO / "deploy/clone.py"), "--overlay",
                             str(site["overlay"]), "--connect", "test:///default", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, within_s: float) -> bool:
    try:
        proc.wait(within_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_a_second_clone_py_for_the_same_agent_waits_for_the_first_and_says_whom_it_waits_for(site):
    with agent_lock.holding(site["inv"], ["athena"], Progress(quiet=True)):
        waiting = start(site, "athena", "--destroy")
        assert not finished(waiting, WAIT_S), waiting.communicate()
    assert finished(waiting, 60)
    _, err = waiting.communicate()
    assert waiting.returncode == 0, err
    assert f"athena: waiting for the clone.py working on it (pid {os.getpid()}) to finish" in err


def test_another_agent_and_a_dry_run_do_not_wait(site):
    with agent_lock.holding(site["inv"], ["athena"], Progress(quiet=True)):
        other = start(site, "apollo", "--destroy")
        dry = start(site, "athena", "--destroy", "--dry-run")
        assert finished(other, 60) and finished(dry, 60)      # while athena's lock is held throughout
    assert other.returncode == 0 and dry.returncode == 0, (other.stderr.read(), dry.stderr.read())
