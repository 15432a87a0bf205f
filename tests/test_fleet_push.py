"""fleet push to three real sshd hosts at once: resumable after a kill (fewer bytes the second time), verified
against the manifest's sha256 on the host (a corrupted copy refused and removed), published manifest last, a no-op
where the version is present, a full disk named (fast: small images of random bytes)."""
import json
import os
import signal
import subprocess
import time

import pytest

from tests.clone_support import publish, sha256
from tests.fleet_support import PYTHON, REPO, running_lab

SIZE = 12 << 20


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-push")
    with running_lab(work, ("p1", "p2", "p3"), 30) as lab:
        images = work / "ws-images"
        raw = work / "raw.qcow2"
        raw.write_bytes(os.urandom(SIZE))
        publish(raw, images, "v1", schema={"type": "object"})
        raw.write_bytes(os.urandom(SIZE))
        publish(raw, images, "v2", schema={"type": "object"})
        lab.images = images
        lab.overlay({}, images_dir=str(images))
        assert lab.fleet("trust", "p1", "p2", "p3").returncode == 0
        yield lab


def push(lab, *args, hosts=("p1", "p2", "p3"), **kw):
    return lab.fleet("push", *args, *[f"--host={h}" for h in hosts],
                     **kw)


def test_push_sends_the_image_to_three_hosts_in_parallel_and_publishes_it_verified(lab):
    proc = push(lab, "v1", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = {r["host"]: r for r in json.loads(proc.stdout)["hosts"]}
    assert {h: r["result"] for h, r in hosts.items()} == {"p1": "pushed", "p2": "pushed", "p3": "pushed"}
    schema_size = (lab.images / "agent-v1.openclaw-schema.json").stat().st_size
    assert all(r["bytes_sent"] == SIZE + schema_size and r["rate_mbps"] > 0 for r in hosts.values())
    for host in lab.hosts.values():
        golden = host.images
        assert sha256(golden / "agent-v1.qcow2") == sha256(lab.images / "agent-v1.qcow2")
        assert (golden / "agent-v1.manifest.json").read_bytes() == (lab.images / "agent-v1.manifest.json").read_bytes()
        assert (golden / "agent-v1.openclaw-schema.json").exists()
        assert sorted(p.name for p in golden.iterdir()) == ["agent-v1.manifest.json", "agent-v1.openclaw-schema.json",
                                                            "agent-v1.qcow2"]           # no part left behind
        assert oct((golden / "agent-v1.qcow2").stat().st_mode & 0o777) == "0o644"


def test_a_host_that_has_the_version_costs_nothing(lab):
    proc = push(lab, "v1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(r["result"], r["bytes_sent"]) for r in json.loads(proc.stdout)["hosts"]] == [("present", 0)] * 3
    assert push(lab, "v1").stdout.count("present   (already published there: nothing sent)") == 3


def test_a_push_killed_midway_resumes_with_only_the_rest_and_never_publishes_a_half_image(lab):
    env = {**os.environ, **lab.env}
    argv = [PYTHON, "-m", "deploy.fleet", "push", "v2", "--limit-mbps", "6", "--overlay",
            str(lab.work / "inventory.yaml"), "--host=p1", "--host=p2"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    part = lab.hosts["p1"].images / ".agent-v2.qcow2.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < SIZE // 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)                       # the tool and its ssh processes, like a lost laptop
    proc.wait()
    time.sleep(0.5)                                           # the hosts see the end of their stream
    kept = part.stat().st_size
    assert SIZE // 3 <= kept < SIZE
    assert not (lab.hosts["p1"].images / "agent-v2.manifest.json").exists()     # not published
    done = push(lab, "v2", "--json", hosts=("p1", "p2"))
    assert done.returncode == 0, done.stderr
    sent = {r["host"]: r["bytes_sent"] for r in json.loads(done.stdout)["hosts"]}
    schema_size = (lab.images / "agent-v2.openclaw-schema.json").stat().st_size
    assert sent["p1"] == SIZE - kept + schema_size                     # only the rest travelled
    assert sha256(lab.hosts["p1"].images / "agent-v2.qcow2") == sha256(lab.images / "agent-v2.qcow2")
    assert sha256(lab.hosts["p2"].images / "agent-v2.qcow2") == sha256(lab.images / "agent-v2.qcow2")


def test_a_corrupted_copy_is_refused_removed_and_the_other_hosts_complete(lab):
    part = lab.hosts["p3"].images / ".agent-v2.qcow2.part"
    with open(lab.images / "agent-v2.qcow2", "rb") as f:
        head = bytearray(f.read(SIZE // 2))
    head[1000] ^= 0xFF                                          # one flipped bit in what the host already holds
    part.write_bytes(head)
    proc = push(lab, "v2", "--json", hosts=("p3",))
    assert proc.returncode == 2
    assert "fleet: p3: push of agent-v2.qcow2 failed: agent-v2.qcow2: sha256 " in proc.stderr
    assert "differs from the manifest's" in proc.stderr and "the corrupted copy was removed" in proc.stderr
    golden = lab.hosts["p3"].images
    assert not part.exists() and not (golden / "agent-v2.qcow2").exists()
    assert not (golden / "agent-v2.manifest.json").exists()
    again = push(lab, "v2", hosts=("p3",))
    assert again.returncode == 0, again.stderr
    total = (SIZE + (lab.images / "agent-v2.openclaw-schema.json").stat().st_size) / 1e6
    assert f"push p3: {total:.1f}/{total:.1f} MB, " in again.stderr and " MB/s" in again.stderr   # progress
    assert "p3        pushed" in again.stdout
    assert sha256(golden / "agent-v2.qcow2") == sha256(lab.images / "agent-v2.qcow2")


def test_a_host_without_the_space_is_named_and_nothing_is_sent_there(lab, tmp_path):
    import yaml
    data = yaml.safe_load((lab.work / "inventory.yaml").read_text())
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        data["hosts"]["p2"]["images_dir"] = str(small)
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(yaml.safe_dump(data))
        proc = lab.fleet("push", "v1", "--overlay", str(overlay), "--host=p1", "--host=p2")
        assert proc.returncode == 2
        assert f"fleet: p2: push of v1 needs 0.0 GB (+1 GB margin) in {small}, 0.0 GB free" in proc.stderr
        assert "p1        present" in proc.stdout
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_a_stream_without_progress_is_cut_and_one_with_progress_is_not():
    from deploy.fleet.push import StallWatch
    stalled, alive = [], []
    cut = StallWatch(0.3, lambda: stalled.append(time.monotonic()))
    kept = StallWatch(0.3, lambda: alive.append(time.monotonic()))
    for _ in range(8):
        kept.progress()
        time.sleep(0.1)
    cut.stop(), kept.stop()
    assert len(stalled) == 1 and alive == []


def test_a_second_push_writing_the_same_part_at_once_is_refused(tmp_path):
    import fcntl
    part = tmp_path / ".agent-v9.qcow2.part"
    with open(part, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        proc = subprocess.run([PYTHON, "-S", "-m", "deploy.fleet.hostside", "push-receive", "--images", str(tmp_path),
                               "--name", "agent-v9.qcow2", "--offset", "0", "--size", "3"], cwd=REPO, input=b"abc",
                              capture_output=True)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == ".agent-v9.qcow2.part: another push is writing it right now"
    assert part.read_bytes() == b""
