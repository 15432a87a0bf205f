"""fleet trust / doctor / status against three real sshd "hypervisors" on loopback, one of them down, and a real
collector (fast: no VM; libvirt is its in-process test driver, whose one domain `test` is running)."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from deploy.fleet.errors import FleetError
from deploy.fleet.ssh import Ssh, SshConfig
from deploy.inventory import load
from tests.collector_server import report, running_collector
from tests.fleet_support import REPO, running_lab, short_dir

AGENT = {"vcpu": 1, "ram_gb": 1, "disk_gb": 1, "role": "test"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-ds")
    with running_collector(work / "collector") as collector, running_lab(work, ("h1", "h2", "h3"), 10) as lab:
        lab.collector = collector
        agents = {"test": {"host": "h1", "ip": "10.220.1.200", **AGENT},      # the test driver's running domain
                  "zeta": {"host": "h1", "ip": "10.220.1.201", **AGENT},
                  "kappa": {"host": "h2", "ip": "10.220.1.202", **AGENT},
                  "omega": {"host": "h3", "ip": "10.220.1.203", **AGENT}}
        lab.overlay(agents, services={"collector_api_url": collector.url})
        yield lab


@pytest.fixture
def control():
    """A fresh control dir short enough for SSH master sockets: no master reused from earlier tests."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fleet(lab, *args, **kw):
    return lab.fleet(*args, *[f"--host={h}" for h in lab.hosts], **kw)


def state_json(host, agent, version):
    d = host.state / agent
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps({"agent": agent, "current": {"image_version": version,
                                                                          "root_disk": "x"}}))


def test_a_host_never_contacted_is_refused_until_trusted(lab):
    proc = fleet(lab, "doctor")
    assert proc.returncode == 1
    for name, host in lab.hosts.items():
        assert (f"{name}: no pinned host key for root@{host.address}:{host.port}; run `python -m deploy.fleet trust "
                f"{name}`") in proc.stdout
    trusted = lab.fleet("trust", "h1", "h2", "h3", )
    assert trusted.returncode == 0, trusted.stderr
    pinned = (lab.fleet_dir / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in pinned) == ["h1", "h2", "h3"]    # pinned by inventory name
    assert all(line.split()[1] == "ssh-ed25519" for line in pinned)


def test_doctor_over_three_hosts_with_one_down_names_it_and_says_not_ready(lab):
    lab.hosts["h3"].stop()
    try:
        proc = fleet(lab, "doctor")
        js = json.loads(fleet(lab, "doctor", "--json").stdout)
    finally:
        lab.hosts["h3"].start()
    assert proc.returncode == 1
    assert "2/3 hosts ready" in proc.stdout
    h3 = lab.hosts["h3"]
    assert f"h3: unreachable at root@{h3.address}:{h3.port} (connect to host {h3.address} port {h3.port}: " \
           f"Connection refused)" in proc.stdout
    assert {r["host"]: r["ready"] for r in js} == {"h1": True, "h2": True, "h3": False}
    checks = {c["name"]: c for c in js[0]["checks"]}
    assert checks["identity"]["ok"] and "says 'h1'" in checks["identity"]["detail"]
    assert checks["libvirt"]["ok"] and checks["libvirt"]["detail"].startswith("test:///default: TEST")
    assert checks["disk"]["ok"] and "GB free in " + str(lab.hosts["h1"].storage) in checks["disk"]["detail"]


def test_doctor_fails_a_host_with_another_identity_old_code_or_no_libvirt(lab, tmp_path):
    other = tmp_path / "af"
    for d in ("deploy", "host", "agentd", "bake"):
        shutil.copytree(REPO / d, other / d, ignore=shutil.ignore_patterns("__pycache__"))
    (other / "deploy" / "clone.py").write_text((REPO / "deploy" / "clone.py").read_text() + "# older\n")
    data = yaml.safe_load((lab.work / "inventory.yaml").read_text())
    data["hosts"]["h2"]["ssh"]["agentfleet"] = str(other)
    data["hosts"]["h3"]["uri"] = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(data))
    lab.hosts["h1"].host_file.write_text("h2\n")
    try:
        proc = lab.fleet("doctor", "--overlay", str(overlay), "--host=h1", "--host=h2", "--host=h3", "--json")
    finally:
        lab.hosts["h1"].host_file.write_text("h1\n")
    assert proc.returncode == 1
    failed = {r["host"]: [c["name"] for c in r["checks"] if not c["ok"]] for r in json.loads(proc.stdout)}
    assert failed == {"h1": ["identity"], "h2": ["agentfleet"], "h3": ["libvirt"]}


def test_doctor_says_where_agentfleet_is_missing(lab, tmp_path):
    data = yaml.safe_load((lab.work / "inventory.yaml").read_text())
    data["hosts"]["h2"]["ssh"]["agentfleet"] = "/nonexistent/agentfleet"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(data))
    proc = lab.fleet("doctor", "--overlay", str(overlay), "--host=h2")
    assert proc.returncode == 1
    assert "h2: agentfleet not found at /nonexistent/agentfleet" in proc.stdout


def test_a_changed_host_key_is_refused_naming_the_host_while_the_others_answer(lab, control):
    h2 = lab.hosts["h2"]
    key = h2.root / "ssh_host_ed25519_key"
    saved = key.read_bytes(), key.with_suffix(".pub").read_bytes()
    h2.stop()
    key.unlink(), key.with_suffix(".pub").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    h2.start()
    try:
        proc = fleet(lab, "doctor", env={"AGENTFLEET_SSH_CONTROL_DIR": control})
    finally:
        h2.stop()
        key.write_bytes(saved[0]), key.with_suffix(".pub").write_bytes(saved[1])
        h2.start()
    assert proc.returncode == 1 and "2/3 hosts ready" in proc.stdout
    assert "h2: host key of root@" in proc.stdout and "differs from the one pinned in" in proc.stdout


def test_status_shows_domains_disk_versions_collector_health_and_differences(lab):
    h1, h2 = lab.hosts["h1"], lab.hosts["h2"]
    state_json(h1, "test", "v1")
    state_json(h1, "stray", "v1")                     # an agent the inventory does not have
    state_json(h2, "zeta", "v1")                      # zeta is placed on h1
    assert lab.collector.post(report("test", image_version="v1", drift=[
        {"path": "/etc/x", "kind": "modified", "expected": "a" * 64, "actual": "b" * 64}]))[0] == 200
    assert lab.collector.post(report("kappa", image_version="v0", checks=[
        {"name": "disk", "status": "fail", "detail": "99%", "value": 99.0}]))[0] == 200
    lab.hosts["h3"].stop()
    try:
        started = time.monotonic()
        proc = fleet(lab, "status", "--json")
        took = time.monotonic() - started
        text = fleet(lab, "status").stdout
    finally:
        lab.hosts["h3"].start()
    assert proc.returncode == 1
    st = json.loads(proc.stdout)
    rows = {(r["agent"], r["problem"].split(":")[0]): r for r in st["agents"]}
    test = rows[("test", "")]
    assert (test["host"], test["domain"], test["image_on_disk"], test["health"], test["reported_version"],
            test["drift"]) == ("h1", "running", "v1", "healthy", "v1", 1)
    assert rows[("zeta", "wrong host")]["problem"] == "wrong host: on h2"
    assert rows[("zeta", "extra on h2")]["host"] == "h1"
    assert rows[("stray", "extra on h1")]["host"] == ""
    kappa = rows[("kappa", "missing")]
    assert (kappa["health"], kappa["reported_version"]) == ("unhealthy", "v0")
    assert rows[("omega", "host unreachable")]["domain"] == "?"
    assert [e.split(":")[0] for e in st["host_errors"]] == ["h3"] and st["drift_total"] == 1
    assert "test   h1    running" in text and "5 differing from the inventory" in text
    assert took < 10


def test_every_call_has_a_hard_timeout_and_reuses_one_connection(lab, control):
    inv = load(lab.work / "inventory.yaml")
    control = Path(control)
    ssh = Ssh(SshConfig(known_hosts=lab.fleet_dir / "known_hosts", control_dir=control, identity=lab.client_key))
    h1 = inv.hosts["h1"]
    log_before = lab.hosts["h1"].log.read_text().count("Accepted publickey")
    for _ in range(3):
        assert ssh.run(h1, ["true"]).rc == 0
    assert lab.hosts["h1"].log.read_text().count("Accepted publickey") == log_before + 1
    assert len(list(control.iterdir())) == 1                                # the master's socket
    started = time.monotonic()
    with pytest.raises(FleetError, match=r"^h1: no answer within 1 s"):
        ssh.run(h1, ["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 5
    ssh.close(h1)


def test_a_control_dir_too_long_for_a_socket_is_refused_in_one_line(lab, tmp_path):
    proc = fleet(lab, "doctor", env={"AGENTFLEET_SSH_CONTROL_DIR": str(tmp_path / ("x" * 60))})
    assert proc.returncode == 1 and "path too long for a socket; set AGENTFLEET_SSH_CONTROL_DIR" in proc.stdout
