"""Day-2 sizes (fast): the inventory's reserve, root_gb and docker_gb; the plan's disk count and reserve; the refusal of
a clone past a host's reserve; shrinking refused; the domain's Docker disk; the resize plan's lines."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deploy import clone, disks, docker_data, plan, resize
from deploy.domain import domain_xml, spec_for
from deploy.errors import CloneError
from deploy.inventory import Reserve, percent
from deploy.state import new_state
from tests.clone_support import load_inventory_with

SMALL = {"vcpu": 1, "ram_gb": 1, "disk_gb": 10, "role": "test"}


def lab(tmp_path, **over):
    """One host of 100 GB disk and 16 GB RAM with the fleet's agents moved off it, and the named agents on it."""
    agents = over.pop("agents", {})
    overlay = {"hosts": {"lab": {"uri": "test:///default", "storage_dir": str(tmp_path / "storage"),
                                 "state_dir": str(tmp_path / "state"), "ram_gb": 16, "disk_gb": 100, **over}},
               "agents": {n: {"host": "lab", "ip": f"10.220.1.{200 + i}", **SMALL, **a}
                          for i, (n, a) in enumerate(agents.items())}}
    return load_inventory_with(tmp_path, overlay)


@pytest.mark.parametrize("raw, pct", [("15%", 15.0), (15, 15.0), ("7.5 %", 7.5), (0, 0.0), ("90%", 90.0),
                                      ("95%", None), ("-1%", None), ("lots", None), (True, None)])
def test_a_reserve_is_a_percentage_from_0_to_90(raw, pct):
    assert percent(raw) == pct


def test_the_reserve_has_defaults_a_fleet_setting_and_a_per_host_override(tmp_path):
    inv = lab(tmp_path, reserve={"ram": "20%"})
    assert inv.hosts["lab"].reserve == Reserve(ram_pct=20.0, disk_pct=15.0)   # disk from fleet.yaml's 15 %
    assert inv.hosts["r820"].reserve == Reserve(ram_pct=10.0, disk_pct=5.0)    # fleet.yaml's r820 override


@pytest.mark.parametrize("overlay, message", [
    ({"reserve": {"disk": "150%"}}, "reserve.disk: '150%' is not a percentage from 0% to 90%"),
    ({"reserve": {"cpu": "10%"}}, "reserve: unknown key 'cpu' (ram, disk)"),
    ({"hosts": {"r420": {"reserve": "10%"}}}, "hosts.r420.reserve: must be a mapping like {ram: 10%, disk: 15%}"),
    ({"agents": {"athena": {"root_gb": 0}}}, "agents.athena: root_gb must be positive and docker_gb 0 (none)"),
    ({"agents": {"athena": {"docker_gb": "big"}}}, "agents.athena.docker_gb: must be a number"),
])
def test_bad_sizes_and_reserves_name_their_key(tmp_path, overlay, message):
    with pytest.raises(CloneError) as err:
        load_inventory_with(tmp_path, overlay)
    assert message in str(err.value)


def test_the_plan_counts_data_root_docker_and_golden_images_against_the_reserve(tmp_path):
    inv = lab(tmp_path, agents={"ra": {"docker_gb": 20}, "rb": {"root_gb": 12}})
    row = plan.usage(inv.hosts["lab"], inv.agents.values(), plan.DiskFacts(image_root_gb=8, golden_gb={"lab": 3}))
    assert (row.data_gb, row.root_gb, row.docker_gb, row.golden_gb) == (20, 20, 20, 3)   # roots: 8 (image) + 12
    assert row.disk_used_gb == 63 and row.disk_usable_gb == 85 and row.over_reserve == ()
    row = plan.usage(inv.hosts["lab"], inv.agents.values(), plan.DiskFacts(image_root_gb=8, golden_gb={"lab": 30}))
    assert row.over_reserve == ("disk",)
    assert row.to_json()["over_reserve"] == ["disk"] and row.to_json()["disk_usable_gb"] == 85
    text = plan.render([row])
    assert "90G/100G" in text and "10/15%" in text and "lab: past its reserve (disk)" in text


def test_plan_json_has_the_disk_parts_and_the_reserve(tmp_path, capsys):
    overlay = tmp_path / "o.yaml"
    overlay.write_text(json.dumps({"agents": {"athena": {"docker_gb": 30, "root_gb": 20}}}))
    assert clone.main(["--overlay", str(overlay), "--plan", "--json"]) == 0
    rows = {r["host"]: r for r in json.loads(capsys.readouterr().out)}
    r420 = rows["r420"]
    assert (r420["data_gb"], r420["docker_gb"], r420["root_gb"]) == (250, 30, 20)
    assert (r420["ram_reserve_pct"], r420["disk_reserve_pct"], r420["over_reserve"]) == (10, 15, [])


def published(tmp_path: Path, size_mb: int = 512) -> Path:
    """A published image of `size_mb` (an empty qcow2: the clone's dry run never opens it)."""
    from tests.clone_support import publish
    raw = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(raw), f"{size_mb}M"], check=True)
    return publish(raw, tmp_path / "images", "v1")


def secrets_overlay(tmp_path, inv_overlay: dict) -> Path:
    from tests.clone_support import write_secrets
    secrets = write_secrets(tmp_path / "secrets.yaml", list(inv_overlay["agents"]))
    inv_overlay = {**inv_overlay, "images_dir": str(tmp_path / "images"),
                   "secrets": {"source": {"file": str(secrets)}}, "network": {"mode": "user"},
                   "services": {"collector_url": "http://10.0.2.100:8765"}}
    path = tmp_path / "overlay.yaml"
    path.write_text(json.dumps(inv_overlay))
    return path


def test_a_clone_past_the_hosts_disk_reserve_is_refused_naming_host_and_numbers(tmp_path, capsys):
    published(tmp_path)
    overlay = secrets_overlay(tmp_path, {
        "hosts": {"lab": {"uri": "test:///default", "storage_dir": str(tmp_path / "s"),
                          "state_dir": str(tmp_path / "t"), "ram_gb": 16, "disk_gb": 100, "reserve": {"disk": "20%"}}},
        "agents": {"rza": {"host": "lab", "ip": "10.220.1.201", **SMALL, "disk_gb": 60, "docker_gb": 20}}})
    assert clone.main(["--overlay", str(overlay), "rza", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clone: lab: rza would bring disk to 80.5 GB of 100 GB, past the 20% reserve (80 GB usable)")
    assert len(err.splitlines()) == 1


def test_a_clone_within_the_reserve_shows_the_docker_disk_and_its_mount_in_the_dry_run(tmp_path, capsys):
    published(tmp_path)
    overlay = secrets_overlay(tmp_path, {
        "hosts": {"lab": {"uri": "test:///default", "storage_dir": str(tmp_path / "s"),
                          "state_dir": str(tmp_path / "t"), "ram_gb": 16, "disk_gb": 100}},
        "agents": {"rzb": {"host": "lab", "ip": "10.220.1.202", **SMALL, "docker_gb": 20, "root_gb": 2}}})
    assert clone.main(["--overlay", str(overlay), "rzb", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"disk docker: {tmp_path / 's' / 'rzb-docker.qcow2'} (new, 20 GB, mounted at /var/lib/docker)" in out
    assert "resize root disk rzb-root-v1.qcow2: 0.5 GB -> 2 GB (file system grown)" in out
    assert "file  /etc/systemd/system/docker.service.d/agentfleet-docker-disk.conf" in out
    assert "<target dev='vdc' bus='virtio'/>" in out


def test_a_root_smaller_than_the_image_is_refused(tmp_path, capsys):
    published(tmp_path, size_mb=2048)
    overlay = secrets_overlay(tmp_path, {
        "hosts": {"lab": {"uri": "test:///default", "storage_dir": str(tmp_path / "s"),
                          "state_dir": str(tmp_path / "t"), "ram_gb": 16, "disk_gb": 100}},
        "agents": {"rzc": {"host": "lab", "ip": "10.220.1.203", **SMALL, "root_gb": 1}}})
    assert clone.main(["--overlay", str(overlay), "rzc", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == ("clone: rzc: root_gb 1 is smaller than the image's root disk (2 GB); "
                                               "the root can only be the image's size or larger")


def test_a_data_disk_only_grows_shrinking_is_refused_in_one_line(tmp_path):
    inv = lab(tmp_path, agents={"rzd": {"disk_gb": 1}})
    data = tmp_path / "rzd-data.qcow2"
    disks.create_data_disk(data, 2, "agent-home")
    agent = inv.agents["rzd"]
    with pytest.raises(CloneError) as err:
        resize.persistent_growth(agent, new_state("rzd", data))
    assert str(err.value) == (f"rzd: disk_gb 1 is smaller than its data disk (2 GB, {data}); disks only grow "
                              f"(shrinking would cut the file system)")
    bigger = lab(tmp_path, agents={"rzd": {"disk_gb": 3}}).agents["rzd"]
    growth = resize.persistent_growth(bigger, new_state("rzd", data))
    assert [(g.role, g.from_bytes, g.to_bytes) for g in growth] == [("data", 2 << 30, 3 << 30)]
    resize.grow_disks(growth)
    assert disks.virtual_size(data) == 3 << 30
    assert resize.persistent_growth(bigger, new_state("rzd", data)) == ()     # grown: nothing left to do


def test_the_resize_plan_says_a_vcpu_and_ram_change_needs_the_restart():
    xml = "<domain><memory unit='KiB'>1048576</memory><vcpu placement='static'>1</vcpu></domain>"
    before = resize.resources_of(xml)
    assert before == resize.Resources(1, 1024)
    p = resize.ResizePlan("ra", (resize.DiskGrowth("data", Path("/s/ra-data.qcow2"), 1 << 30, 2 << 30),), before,
                          resize.Resources(2, 2048))
    assert p.lines() == ["data disk ra-data.qcow2: 1 GB -> 2 GB (file system grown)",
                         "domain: 1 -> 2 vCPU, 1 GB -> 2 GB RAM (applied by the restart: a clean shutdown, then start)"]
    assert resize.ResizePlan("ra", (), before, before).lines() == []


def test_the_domain_attaches_the_docker_disk_as_vdc_only_when_there_is_one(tmp_path):
    inv = lab(tmp_path, agents={"rze": {}})
    common = dict(uuid="u", mac="52:54:00:00:00:01", root_disk=Path("/s/r.qcow2"), data_disk=Path("/s/d.qcow2"),
                  console_log=Path("/s/c.log"), domain_type="qemu")
    plain = domain_xml(spec_for(inv, inv.agents["rze"], **common))
    assert "vdc" not in plain
    xml = domain_xml(spec_for(inv, inv.agents["rze"], docker_disk=Path("/s/rze-docker.qcow2"), **common))
    assert '<source file="/s/rze-docker.qcow2"/><target dev=\'vdc\' bus=\'virtio\'/>' in xml


def test_the_docker_mount_is_by_label_nofail_and_required_by_dockers_units():
    assert docker_data.fstab_line() == ("LABEL=agent-docker /var/lib/docker ext4 "
                                        "defaults,nofail,x-systemd.device-timeout=10min 0 2")
    files = {op.path: op.data() for op in docker_data.mount_ops() if hasattr(op, "data")}
    assert set(files) == {"/etc/systemd/system/docker.service.d/agentfleet-docker-disk.conf",
                          "/etc/systemd/system/containerd.service.d/agentfleet-docker-disk.conf"}
    assert all(b"RequiresMountsFor=/var/lib/docker\n" in data for data in files.values())
