"""Accepted drift end to end: real agentd, real collector, real HTTP. An operator accepts one entry with the CLI, the
answer to agentd's next report carries it, agentd puts it into its own baseline layer and the drift is gone; the
layer outlives a restart, and a later change of the same file is drift again."""
import json
import os
import subprocess
import sys
import time

from agentd.accepted import AcceptedLayer, load_layer, save_layer
from agentd.baseline import Baseline
from agentd.protocol import AcceptedDrift, DriftEntry
from agentd.vm_files import FileState

from .agentd_fixtures import REPO, make_vm_tree, run_agentd, spawn_agentd
from .collector_server import running_collector


def drift_at(collector, agent="athena"):
    status, state = collector.get(f"/api/v1/agents/{agent}")
    return {} if status != 200 else {(d["path"], d["kind"]): d for d in state["drift"]}


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def accept(collector, *args):
    result = subprocess.run([sys.executable, "-m", "collector", "accept-drift", "athena", "--db", collector.db_url,
                             *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result


def test_drift_accepted_at_the_collector_leaves_the_running_agents_reports(tmp_path):
    root = tmp_path / "vm"
    with running_collector(tmp_path / "collector", "--interval-s", "1", "--sweep-s", "0.1") as c:
        make_vm_tree(root, collector_url=c.url, interval_s=1)
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.0.5 build-cache\n")
        (root / "etc/cron.d").mkdir()
        (root / "etc/cron.d/job").write_text("* * * * * agent true\n")
        agentd = spawn_agentd(root=root)
        try:
            wait_for(lambda: {("/etc/hosts", "modified"), ("/etc/cron.d/job", "added")} <= set(drift_at(c)),
                     what="both entries at the collector")
            assert drift_at(c)[("/etc/hosts", "modified")]["class"] == "unexplained"
            accept(c, "--path", "/etc/hosts", "--by", "alice", "--reason", "the build cache")
            wait_for(lambda: ("/etc/hosts", "modified") not in drift_at(c), what="/etc/hosts accepted")
            assert ("/etc/cron.d/job", "added") in drift_at(c), "only what was accepted goes"
            [row] = c.get("/api/v1/agents/athena")[1]["drift_acceptances"]
            assert (row["status"], row["accepted_by"]) == ("adopted", "alice")
        finally:
            agentd.terminate()
            output = agentd.communicate(timeout=20)[0]
        assert "drift accepted by alice at the collector: modified /etc/hosts" in output
        layer = json.loads((root / "var/lib/agentd/accepted.json").read_text())
        assert layer["image_version"] == "v1abc" and [e["by"] for e in layer["log"]] == ["alice"]

        assert run_agentd("--once", root=root).returncode == 0  # a restart keeps the accepted baseline
        assert ("/etc/hosts", "modified") not in drift_at(c)
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n6.6.6.6 evil\n")
        assert run_agentd("--once", root=root).returncode == 0
        assert drift_at(c)[("/etc/hosts", "modified")]["expected"] == row["actual"], "a later value is drift again"


def entry(path, kind, expected, actual):
    return DriftEntry(path, kind, expected, actual), AcceptedDrift(path, kind, expected, actual, 1.0, "ops")


def test_each_kind_of_accepted_drift_changes_the_baseline_as_it_says():
    baseline = Baseline("v1", {"/etc/a": FileState("sha-a", "0644", "root:root"),
                               "/etc/gone": FileState("sha-g", "0644", "root:root")}, {"curl": "1", "old": "2"})
    layer = AcceptedLayer("v1")
    for drift, accepted, current in [
        (*entry("/etc/a", "modified", "sha-a", "sha-a2"), None),
        (*entry("/etc/a", "mode", "0644", "0600"), None),
        (*entry("/etc/gone", "missing", "sha-g", None), None),
        (*entry("/etc/new", "added", None, "sha-n"), FileState("sha-n", "0640", "root:adm")),
        (*entry("pkg:curl", "package", "1", "2"), None),
        (*entry("pkg:old", "package", "2", None), None),
    ]:
        layer = layer.adopt(layer.over(baseline), drift, current, accepted)
    effective = layer.over(baseline)
    assert effective.files == {"/etc/a": FileState("sha-a2", "0600", "root:root"),
                               "/etc/new": FileState("sha-n", "0640", "root:adm")}
    assert effective.packages == {"curl": "2"} and len(layer.log) == 6


def test_the_layer_round_trips_and_another_images_or_a_damaged_one_is_empty(tmp_path, caplog):
    path = str(tmp_path / "accepted.json")
    drift, accepted = entry("/etc/gone", "missing", "sha", None)
    layer = AcceptedLayer("v1").adopt(Baseline("v1", {"/etc/gone": FileState("sha", "0644", "root:root")}), drift,
                                      None, accepted)
    save_layer(path, layer)
    assert load_layer(path, "v1") == layer
    assert load_layer(path, "v2") == AcceptedLayer("v2"), "a replaced VM starts from its new image's baseline"
    with open(path, "w") as f:
        f.write("{not json")
    assert load_layer(path, "v1") == AcceptedLayer("v1")
    assert "accepted drift is reported again" in caplog.text
    assert not os.path.exists(path + ".tmp")


def test_an_acceptance_lapses_when_the_clone_records_a_new_baseline_for_its_path():
    injected = Baseline("v1", {"/etc/agentfleet/agentd.yaml": FileState("sha-1", "0644", "root:root")})
    drift, accepted = entry("/etc/agentfleet/agentd.yaml", "modified", "sha-1", "sha-edited")
    layer = AcceptedLayer("v1").adopt(injected, drift, None, accepted)
    assert layer.over(injected).files["/etc/agentfleet/agentd.yaml"].sha256 == "sha-edited"
    updated = Baseline("v1", {"/etc/agentfleet/agentd.yaml": FileState("sha-2", "0644", "root:root")})
    assert layer.over(updated) == updated, "clone.py --update injected a new file: its record holds"
