"""The clone against real parts: libguestfs injects into real overlays, a real libvirtd defines, starts, replaces
and destroys TCG domains, a loopback stub plays the collector. One module-wide site; tests run in file order and
build on each other (clone -> no-op -> update -> refuse -> replace -> rolled-back replace -> rollback (root only,
then with its data) -> destroy)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.clone_support import (
    REPO,
    TEST_SCHEMA,
    CollectorStub,
    clone_cli,
    ensure_libvirtd,
    libvirt_workdir,
    make_synthetic_image,
    publish,
    sha256,
    write_overlay,
    write_secrets,
)

pytestmark = pytest.mark.slow
CANARY = "CANARY-7f3a9c1e-never-leak"
# Own names, and per run: this file running from two checkouts at once (CI and an engineer) must not share domains
# (one run's teardown destroyed the other's cvm-athena) nor forwarded SSH ports.
RUN = f"{os.getpid() % 100000:05d}"
AGENTS = A, B = (f"cvm{RUN}-athena", f"cvm{RUN}-apollo")


def free_port_pair(start: int = 22300, end: int = 23300) -> int:
    """A base port whose next port is free too (user-mode networking forwards base + agent index)."""
    import socket
    for base in range(start, end, 2):
        try:
            with socket.socket() as s1, socket.socket() as s2:
                s1.bind(("127.0.0.1", base))
                s2.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no two free ports in {start}..{end}")


@pytest.fixture(scope="module")
def site():
    ensure_libvirtd()
    work = libvirt_workdir("clone-vm-")
    golden = work / "synthetic.qcow2"
    make_synthetic_image(golden)
    images = work / "images"
    for version in ("v1", "v2", "v3"):
        publish(golden, images, version, TEST_SCHEMA)
    stub = CollectorStub()
    secrets = write_secrets(work / "secrets.yaml", AGENTS, canary=CANARY)
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=images, secrets_file=secrets,
                            collector_port=stub.port, ssh_port_base=free_port_pair(), agents=AGENTS)
    site = {"work": work, "images": images, "overlay": overlay, "stub": stub, "secrets": secrets,
            "golden_sha": {v: sha256(images / f"agent-{v}.qcow2") for v in ("v1", "v2", "v3")}}
    yield site
    clone_cli("--overlay", str(overlay), *AGENTS, "--destroy", "--purge-data")
    stub.close()
    shutil.rmtree(work, ignore_errors=True)


def cli(site, *args, env=None):
    return clone_cli("--overlay", str(site["overlay"]), *args, env=env)


def virsh(*args) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout


def state(site, agent):
    return json.loads((site["work"] / "state" / agent / "state.json").read_text())


def read_guest(disks: list[tuple[Path, Path]], paths: list[str]) -> list[dict]:
    """Per (root, data) pair, path -> (bytes, mode, uid, gid), read from inside the disks (read-only, one launch)."""
    from host.appliance import Drive, appliance

    out = []
    with appliance([Drive(p, readonly=True) for pair in disks for p in pair]) as g:
        devices = g.list_devices()
        for i in range(len(disks)):
            g.mount_ro(devices[2 * i] + "1", "/")
            g.mount_ro(devices[2 * i + 1], "/home/agent")
            files = {}
            for p in paths:
                if g.exists(p):
                    st = g.statns(p)
                    files[p] = (g.read_file(p) if g.is_file(p) else b"", stat.S_IMODE(st["st_mode"]), st["st_uid"],
                                st["st_gid"])
            out.append(files)
            g.umount_all()
    return out


@pytest.fixture(scope="module")
def cloned(site):
    """A and B cloned in one run, with libguestfs tracing on (the canary must not show in the trace)."""
    proc = cli(site, *AGENTS, "--image", "v1", "--json", "-v", env={"LIBGUESTFS_TRACE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


INJECTED = ["/etc/hostname", "/etc/hosts", "/etc/machine-id", "/etc/netplan/01-agentfleet.yaml", "/etc/fstab",
            "/etc/agentfleet/identity.json", "/etc/agentfleet/agentd.yaml", "/etc/agentfleet/agentd.token",
            "/etc/agentfleet/injected.json", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub",
            "/home/agent/.ssh/authorized_keys", "/home/agent/.openclaw/openclaw.json", "/home/agent/.openclaw/.env",
            "/home/agent/.bashrc", "/home/agent"]


def test_clone_starts_both_agents_as_tcg_domains_with_autostart_and_loopback_display(site, cloned):
    results = {r["agent"]: r for r in json.loads(cloned.stdout)}
    assert {a: r["action"] for a, r in results.items()} == {A: "clone", B: "clone"}
    assert cloned.stderr.count("appliance up with 4 drives") == 1          # one launch for both agents
    for agent in AGENTS:
        assert virsh("domstate", agent).strip() == "running"
        xml = virsh("dumpxml", agent)
        assert "<domain type='qemu'" in xml and "listen='127.0.0.1'" in xml and "console.log" in xml
        assert "Autostart:      enable" in virsh("dominfo", agent)
    from deploy import inventory
    port = inventory.load(None, [site["overlay"]]).agent(A).ssh_port
    assert results[A]["ssh"] == {"host": "127.0.0.1", "port": port, "user": "agent"}
    assert results[B]["ssh"]["port"] != port
    assert any("ssh-ed25519" in line for line in results[A]["known_hosts"])


def test_golden_image_is_never_written(site, cloned):
    for version, digest in site["golden_sha"].items():
        assert sha256(site["images"] / f"agent-{version}.qcow2") == digest
    root = site["work"] / "storage" / f"{A}-root-v1.qcow2"
    from deploy.disks import backing_file
    assert root.exists(), sorted(p.name for p in root.parent.iterdir())
    assert backing_file(root) == str(site["images"] / "agent-v1.qcow2")


@pytest.fixture(scope="module")
def guest_files(site, cloned):
    storage = site["work"] / "storage"
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", B], capture_output=True)  # free its locks
    disks = [(storage / f"{a}-root-v1.qcow2", storage / f"{a}-data.qcow2") for a in AGENTS]
    files = dict(zip(AGENTS, read_guest(disks, INJECTED)))
    subprocess.run(["virsh", "-c", "qemu:///system", "start", B], capture_output=True)
    return files


def test_every_injected_file_has_its_content_mode_and_owner_inside_the_disk(site, guest_files):
    f = guest_files[A]
    assert f["/etc/hostname"][0] == f"{A}\n".encode()
    assert f"10.0.2.15 {A}".encode() in f["/etc/hosts"][0]
    assert len(f["/etc/machine-id"][0].strip()) == 32 and f["/etc/machine-id"][0] != guest_files[B][
        "/etc/machine-id"][0]
    netplan = f["/etc/netplan/01-agentfleet.yaml"]
    assert b"10.0.2.15/24" in netplan[0] and netplan[1] == 0o600
    assert b"/home/agent ext4" in f["/etc/fstab"][0] and b"LABEL=cloudimg-rootfs /" in f["/etc/fstab"][0]
    identity = json.loads(f["/etc/agentfleet/identity.json"][0])
    assert (identity["agent"], identity["host"], identity["ip"], identity["image_version"]) == \
        (A, "local", "10.220.1.200", "v1")
    assert f"agent: {A}".encode() in f["/etc/agentfleet/agentd.yaml"][0]
    assert f"collector_url: http://10.0.2.100:{site['stub'].port}".encode() in f["/etc/agentfleet/agentd.yaml"][0]
    from agentd.protocol import agent_token
    assert f["/etc/agentfleet/agentd.token"] == (
        (agent_token(b"collector-secret-for-tests", A) + "\n").encode(), 0o600, 0, 0)
    assert f["/etc/ssh/ssh_host_ed25519_key"][1:] == (0o600, 0, 0)
    pub = (site["work"] / f"state/{A}/ssh/ssh_host_ed25519_key.pub").read_bytes()
    assert f["/etc/ssh/ssh_host_ed25519_key.pub"][0] == pub
    assert f["/home/agent/.ssh/authorized_keys"][1:] == (0o600, 1000, 1000)
    assert f["/home/agent/.ssh/authorized_keys"][0].startswith(b"ssh-ed25519 ")
    config = json.loads(f["/home/agent/.openclaw/openclaw.json"][0])
    assert config["channels"]["mattermost"]["botToken"] == {"source": "env", "provider": "default",
                                                           "id": "MATTERMOST_BOT_TOKEN"}
    assert f["/home/agent/.openclaw/.env"][1:] == (0o600, 1000, 1000)
    assert f"MATTERMOST_BOT_TOKEN=mm-{A}-{CANARY}\n".encode() in f["/home/agent/.openclaw/.env"][0]
    assert f["/home/agent/.bashrc"][0] == b"# agent skeleton\n"               # data disk seeded from the skeleton
    assert f["/home/agent"][1:] == (0o750, 1000, 1000)
    baseline = json.loads(f["/etc/agentfleet/injected.json"][0])["baseline"]
    assert baseline["/home/agent/.openclaw/.env"]["mode"] == "0600"
    assert baseline["/home/agent/.openclaw/.env"]["owner"] == "agent:agent"
    import hashlib
    assert baseline["/etc/hostname"]["sha256"] == hashlib.sha256(f"{A}\n".encode()).hexdigest()


def test_secret_canary_is_in_the_guest_env_and_nowhere_else(site, cloned, guest_files):
    assert CANARY.encode() in guest_files[A]["/home/agent/.openclaw/.env"][0]
    assert CANARY.encode() not in guest_files[A]["/etc/agentfleet/injected.json"][0]
    assert "libguestfs: trace" in cloned.stderr                              # the trace was really on
    assert CANARY not in cloned.stdout + cloned.stderr                       # --json output, logs, trace
    for agent in AGENTS:
        assert CANARY not in virsh("dumpxml", agent)
    for path in (site["work"] / "state").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    assert CANARY.encode() not in (site["work"] / "storage" / f"{A}-root-v1.qcow2").read_bytes()
    dry = cli(site, A, "--image", "v1", "--dry-run")
    assert dry.returncode == 0 and CANARY not in dry.stdout + dry.stderr
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout   # qemu's argv among them
    assert A in ps and CANARY not in ps


def test_rerunning_with_the_same_image_is_a_no_op(site, cloned):
    before = virsh("domid", A)
    proc = cli(site, A, "--image", "v1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["action"] == "noop"
    assert "appliance" not in proc.stderr and virsh("domid", A) == before


SECOND_CANARY = "CANARY-second-2b8e44d0"   # the rotated value


def test_update_rotates_a_secret_in_the_current_overlay_and_updates_the_drift_baseline(site, cloned):
    storage = site["work"] / "storage"
    before, uuid, domid = state(site, A), virsh("domuuid", A).strip(), virsh("domid", A).strip()
    write_secrets(site["secrets"], AGENTS, canary=SECOND_CANARY)                # A's bot token rotated
    try:
        dry = cli(site, A, "--update", "--dry-run")
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert "changed   /home/agent/.openclaw/.env (secret, value not shown)" in dry.stdout
        listed = [line for line in dry.stdout.splitlines() if line.lstrip().startswith(("changed ", "unchanged "))]
        assert "unchanged /etc/agentfleet/agentd.yaml" in dry.stdout, dry.stdout
        assert f"1 of {len(listed)} injected files would change" in dry.stdout, dry.stdout    # the count is the list's
        assert virsh("domid", A).strip() == domid                               # read while it ran; not stopped
        proc = cli(site, A, "--update", "--stop-timeout", "2", "--json", "-v", env={"LIBGUESTFS_TRACE": "1"})
    finally:
        write_secrets(site["secrets"], AGENTS, canary=CANARY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for output in (dry.stdout + dry.stderr, proc.stdout + proc.stderr):
        assert CANARY not in output and SECOND_CANARY not in output
    result = json.loads(proc.stdout)[0]
    assert (result["action"], result["image_version"]) == ("update", "v1")
    assert result["message"] == ("re-injected, 1 file(s) changed: /home/agent/.openclaw/.env; "
                                 "restarted on the same overlay")
    assert virsh("domstate", A).strip() == "running" and virsh("domid", A).strip() != domid     # restarted
    assert virsh("domuuid", A).strip() == uuid and f"{A}-root-v1.qcow2" in virsh("dumpxml", A)
    assert state(site, A) == before                                              # same overlay, same identity
    assert not list(storage.glob(f"{A}-root-*.partial")) and len(list(storage.glob(f"{A}-root-*"))) == 1
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", A], capture_output=True)
    files = read_guest([(storage / f"{A}-root-v1.qcow2", storage / f"{A}-data.qcow2")], INJECTED)[0]
    subprocess.run(["virsh", "-c", "qemu:///system", "start", A], capture_output=True)
    env = files["/home/agent/.openclaw/.env"]
    assert f"MATTERMOST_BOT_TOKEN=mm-{A}-{SECOND_CANARY}\n".encode() in env[0] and env[1:] == (0o600, 1000, 1000)
    for path, (content, *_) in files.items():
        assert CANARY.encode() not in content, path                            # the old value is gone everywhere
    import hashlib
    injected = json.loads(files["/etc/agentfleet/injected.json"][0])
    assert injected["baseline"]["/home/agent/.openclaw/.env"]["sha256"] == hashlib.sha256(env[0]).hexdigest()
    assert injected["baseline"]["/etc/fstab"]["sha256"] == hashlib.sha256(files["/etc/fstab"][0]).hexdigest()
    assert SECOND_CANARY.encode() not in files["/etc/agentfleet/injected.json"][0]


def test_a_different_image_without_replace_is_refused_while_the_vm_runs(site, cloned):
    proc = cli(site, A, "--image", "v2")
    assert proc.returncode == 2
    assert f"{A}: runs image v1; v2 differs (use --replace to upgrade)" in proc.stderr
    assert virsh("domstate", A).strip() == "running"


def test_a_replace_whose_appliance_hangs_fails_the_inject_phase_and_restarts_the_old_vm(site, cloned):
    hung_qemu = site["work"] / "hung-qemu"        # a real qemu whose vCPUs never run: the appliance never answers
    hung_qemu.write_text('#!/bin/sh\nexec qemu-system-x86_64 "$@" -S\n')
    hung_qemu.chmod(0o755)
    before = state(site, A)
    proc = cli(site, A, "--image", "v2", "--replace", "--stop-timeout", "2",
               env={"LIBGUESTFS_HV": str(hung_qemu), "AGENTFLEET_DEADLINES": "inject=20"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "clone: inject: 1 agent(s) in one libguestfs launch: no end after 20 s (deadline")
    after = state(site, A)
    assert (after["current"], after["pending"]) == (before["current"], None)
    assert not list((site["work"] / "storage").glob("*.partial")), "no half-injected disk is left"
    assert virsh("domstate", A).strip() == "running" and f"{A}-root-v1.qcow2" in virsh("dumpxml", A)


def test_replace_keeps_identity_and_data_disk_and_snapshots_it(site, cloned):
    before = state(site, A)
    site["stub"].report(A, "v2", healthy=True)
    proc = cli(site, A, "--image", "v2", "--replace", "--stop-timeout", "2", "--health-timeout", "60",
               "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)[0]
    assert (result["action"], result["image_version"], result["snapshots"]) == ("replace", "v2", ["pre-v2"])
    after = state(site, A)
    assert (after["uuid"], after["mac"], after["machine_id"], after["data_disk"]) == \
        (before["uuid"], before["mac"], before["machine_id"], before["data_disk"])
    assert after["current"]["root_disk"].endswith(f"{A}-root-v2.qcow2") and after["previous"]["image_version"] == "v1"
    assert after["pending"] is None
    xml = virsh("dumpxml", A)
    assert f"{A}-root-v2.qcow2" in xml and before["uuid"] in xml and virsh("domstate", A).strip() == "running"
    assert sha256(site["images"] / "agent-v2.qcow2") == site["golden_sha"]["v2"]


def test_replace_without_a_healthy_report_rolls_back_with_exit_code_3(site, cloned):
    write_secrets(site["secrets"], AGENTS, canary="ROTATED")                 # v3's injection writes a new .env
    site["stub"].report(A, "v2", healthy=True)                        # the collector never sees v3
    proc = cli(site, A, "--image", "v3", "--replace", "--stop-timeout", "2", "--health-timeout", "8",
               "--json")
    write_secrets(site["secrets"], AGENTS, canary=CANARY)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "rolled back to v2 (health deadline" in proc.stderr
    st = state(site, A)
    assert (st["current"]["image_version"], st["previous"]["image_version"], st["pending"]) == ("v2", "v3", None)
    assert st["snapshots"] == ["pre-v2", "pre-v3"]
    assert f"{A}-root-v2.qcow2" in virsh("dumpxml", A) and virsh("domstate", A).strip() == "running"


def write_guest_data(data_disk: Path, path: str, content: bytes) -> None:
    """Write a file into an agent's (stopped) data disk, as the agent's work would be; path as inside the VM."""
    from host.appliance import Drive, appliance

    with appliance([Drive(data_disk)]) as g:
        g.mount(g.list_devices()[0], "/")
        g.write(path.removeprefix("/home/agent"), content)


WORK = "/home/agent/work-since-the-upgrade.txt"


def test_manual_rollback_goes_back_on_the_root_only_and_keeps_the_agents_work(site, cloned):
    data = site["work"] / "storage" / f"{A}-data.qcow2"
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", A], capture_output=True)  # free the disk's lock
    probe = site["work"] / "storage" / "probe-root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(site["images"] / "agent-v1.qcow2"), str(probe)], check=True)
    env = read_guest([(probe, data)], ["/home/agent/.openclaw/.env"])[0]["/home/agent/.openclaw/.env"][0]
    # v3's replace wrote a .env with the ROTATED token; its automatic rollback restored the snapshot
    assert CANARY.encode() in env and b"ROTATED" not in env
    write_guest_data(data, WORK, b"the agent's work after the upgrade\n")
    proc = cli(site, A, "--rollback", "--stop-timeout", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)[0]
    assert result["image_version"] == "v3"                        # the previous slot was the rolled-back v3
    assert "data disk kept as it is" in result["message"] and "restoring" not in proc.stderr
    assert f"{A}-root-v3.qcow2" in virsh("dumpxml", A) and virsh("domstate", A).strip() == "running"
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", A], capture_output=True)
    assert read_guest([(probe, data)], [WORK])[0][WORK][0] == b"the agent's work after the upgrade\n"


def test_manual_rollback_with_restore_data_shows_the_snapshots_age_first_and_restores_it(site, cloned):
    data = site["work"] / "storage" / f"{A}-data.qcow2"
    before = state(site, A)
    dry = cli(site, A, "--rollback", "--restore-data", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would roll back to v2, root and data: /home/agent back to snapshot pre-v3 (taken " in dry.stdout
    assert state(site, A) == before and virsh("domstate", A).strip() == "shut off"     # the dry run changed nothing
    proc = cli(site, A, "--rollback", "--restore-data", "--stop-timeout", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["image_version"] == "v2"
    assert f"clone: {A}: restoring /home/agent to snapshot pre-v3 (taken " in proc.stderr
    assert "what the agent wrote since is discarded" in proc.stderr
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", A], capture_output=True)
    probe = site["work"] / "storage" / "probe-root.qcow2"
    files = read_guest([(probe, data)], [WORK, "/home/agent/.openclaw/.env"])[0]
    assert WORK not in files and CANARY.encode() in files["/home/agent/.openclaw/.env"][0]
    subprocess.run(["virsh", "-c", "qemu:///system", "start", A], capture_output=True)
    assert virsh("domstate", A).strip() == "running"


def test_a_replace_killed_midway_converges_when_run_again(site, cloned):
    import signal
    import time
    site["stub"].report(B, "v2", healthy=True)
    args = [str(REPO / ".venv/bin/python"), str(REPO / "deploy/clone.py"), "--overlay", str(site["overlay"]), B,
            "--image", "v2", "--replace", "--stop-timeout", "2", "--health-timeout", "60"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state(site, B).get("pending") and proc.poll() is None):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                                      # mid-swap: the old VM is stopping
    proc.wait()
    assert state(site, B)["pending"]["image_version"] == "v2"
    again = subprocess.run(args + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    st = state(site, B)
    assert (st["current"]["image_version"], st["previous"]["image_version"], st["pending"]) == ("v2", "v1", None)
    assert st["snapshots"] == ["pre-v2"] and virsh("domstate", B).strip() == "running"
    assert not list((site["work"] / "storage").glob("*.partial"))


def test_destroy_refuses_a_domain_whose_uuid_is_not_the_recorded_one(site, cloned):
    """Another run's (or tool's) VM of the same name is never removed."""
    path = site["work"] / "state" / B / "state.json"
    original = path.read_text()
    path.write_text(original.replace(state(site, B)["uuid"], "00000000-0000-4000-8000-000000000000"))
    try:
        proc = cli(site, B, "--destroy")
    finally:
        path.write_text(original)
    assert proc.returncode == 2 and "not removing a VM agentfleet did not make here" in proc.stderr
    assert B in virsh("list", "--all", "--name").split()


def test_destroy_removes_domain_and_root_disks_but_keeps_the_data_disk(site, cloned):
    proc = cli(site, A, "--destroy")
    assert proc.returncode == 0, proc.stderr
    storage = site["work"] / "storage"
    assert A not in virsh("list", "--all", "--name").split()
    assert not list(storage.glob(f"{A}-root-*")) and (storage / f"{A}-data.qcow2").exists()
    assert (site["work"] / f"state/{A}/ssh/ssh_host_ed25519_key").exists()    # identity survives for a re-clone
