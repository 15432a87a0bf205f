"""Reading what one `clone.py --replace --json` run did to each agent, from its exit code, stdout and stderr.

The first test runs the real deploy/clone.py to pin the part of its contract that needs no hypervisor: a clone
error is exit 2 with one line on stderr and no JSON."""
import json
import subprocess
import sys

from deploy.rollout import Outcome, outcomes_from_clone

from .conftest import REPO


def test_a_clone_error_of_the_real_clone_py_is_an_error_for_every_agent_with_its_stderr_line():
    proc = subprocess.run([sys.executable, str(REPO / "deploy" / "clone.py"), "zeus", "--replace", "--json",
                           "--image", "v2"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    got = outcomes_from_clone(["zeus"], proc.returncode, proc.stdout, proc.stderr)
    assert got["zeus"].outcome is Outcome.ERROR and got["zeus"].version is None
    assert "unknown agent 'zeus'" in got["zeus"].message and got["zeus"].message.startswith("exit 2: clone: ")


def test_exit_3_keeps_the_passed_agents_replaced_and_the_rolled_back_ones_on_their_old_version():
    stdout = json.dumps([
        {"agent": "prometheus", "action": "replace", "image_version": "v2", "message": "healthy on v2 (seq 9)"},
        {"agent": "ares", "action": "rollback", "image_version": "v1",
         "message": "ares: rolled back to v1 (agentd failed: ...)"}])
    got = outcomes_from_clone(["prometheus", "ares", "poseidon"], 3, stdout,
                              "clone: ares: replace failed\nclone: ares: rolled back to v1 (agentd failed: ...)\n")
    assert (got["prometheus"].outcome, got["prometheus"].version) == (Outcome.REPLACED, "v2")
    assert (got["ares"].outcome, got["ares"].version) == (Outcome.ROLLED_BACK, "v1")
    # an agent clone.py said nothing about is an error, never a success
    assert got["poseidon"].outcome is Outcome.ERROR and "rolled back to v1" in got["poseidon"].message


def test_exit_0_noop_counts_as_replaced_and_garbage_or_a_transport_failure_is_an_error():
    ok = outcomes_from_clone(["apollo", "artemis"], 0, json.dumps([
        {"agent": "apollo", "action": "noop", "image_version": "v2", "message": "already runs this image"},
        {"agent": "artemis", "action": "replace", "image_version": "v2", "message": "healthy"}]), "")
    assert all(o.ok and o.version == "v2" for o in ok.values())
    garbage = outcomes_from_clone(["apollo"], 0, "Traceback (most recent call last):", "")
    assert garbage["apollo"].outcome is Outcome.ERROR and "no result" in garbage["apollo"].message
    ssh = outcomes_from_clone(["apollo"], 255, "", "ssh: connect to host 10.220.1.8 port 22: Connection refused\n")
    assert ssh["apollo"].outcome is Outcome.ERROR and "exit 255: ssh: connect to host" in ssh["apollo"].message
