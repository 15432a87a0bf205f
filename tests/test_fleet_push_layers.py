"""fleet push of layered images (issue 17) to real sshd hosts: the first push sends every layer and the host's
chain is intact; a bump on the same base sends only its app layer; a corrupted layer is refused by the host that
needed it while a host already holding it completes; a host holding an app layer without its base does not count as
having the version; a chain whose backing names disagree with the manifest is refused (fast: small qcow2 layers made
with qemu-img, no bake)."""
import json
import shutil
import subprocess

import pytest
import yaml

from bake import publish as bake_publish
from deploy.fleet import hostside
from tests.clone_support import publish
from tests.fleet_support import PYTHON, REPO, running_lab
from tests.layered_support import make_app_layer, make_base_layer

BASE = "agent-base-t1.qcow2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-push-layers")
    with running_lab(work, ("q1", "q2", "q3"), 60) as lab:
        build, images = work / "build", work / "ws-images"
        build.mkdir()
        base = make_base_layer(build / BASE, 16)
        for version, pattern in (("v1", 0x5A), ("v2", 0x3C), ("v3", 0x77), ("v4", 0x21)):
            app = make_app_layer(base, build / f"app-{version}.qcow2", pattern)
            publish(app, images, version, schema={"type": "object"}, base_layer=base)
        lab.images = images
        lab.sizes = {p.name: p.stat().st_size for p in images.iterdir()}
        lab.overlay({}, images_dir=str(images))
        assert lab.fleet("trust", "q1", "q2", "q3").returncode == 0
        yield lab


def push(lab, *args, hosts, **kw):
    proc = lab.fleet("push", *args, *[f"--host={h}" for h in hosts], **kw)
    return proc, ({r["host"]: r for r in json.loads(proc.stdout)["hosts"]} if "--json" in args else {})


def images_from(lab, images, tmp_path):
    """An inventory overlay: the lab's, the workstation's images in another dir."""
    data = yaml.safe_load((lab.work / "inventory.yaml").read_text())
    data["images_dir"] = str(images)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(data))
    return overlay


def chain_intact(golden, version):
    """The host's copy as the clone will take it: every layer's size, sha256 and backing name, and qemu-img
    following the chain there."""
    image = bake_publish.load(golden / f"agent-{version}.manifest.json")
    bake_publish.check_published(image, full=True)
    assert bake_publish.backing_name(golden / f"agent-{version}.qcow2") == BASE
    info = subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", "-U",
                           str(golden / f"agent-{version}.qcow2")], capture_output=True, text=True, check=True)
    assert [i["filename"].rpartition("/")[2] for i in json.loads(info.stdout)] == [f"agent-{version}.qcow2", BASE]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p, _ in image.chain)


def test_the_first_push_of_a_layered_image_sends_every_layer_and_the_host_has_its_chain(lab):
    proc, hosts = push(lab, "v1", "--json", hosts=("q1",))
    assert proc.returncode == 0, proc.stderr
    r = hosts["q1"]
    assert r["result"] == "pushed" and r["layers_sent"] == ["base layer", "app layer"] and r["layers_present"] == []
    assert r["bytes_sent"] == sum(lab.sizes[n] for n in (BASE, "agent-v1.qcow2", "agent-v1.openclaw-schema.json"))
    assert r["bytes_skipped"] == 0
    golden = lab.hosts["q1"].images
    chain_intact(golden, "v1")
    assert sorted(p.name for p in golden.iterdir()) == sorted([BASE, "agent-v1.qcow2", "agent-v1.manifest.json",
                                                               "agent-v1.openclaw-schema.json"])  # no part left
    assert hostside.published(golden) == ["v1"]


def test_a_bump_on_the_same_base_sends_only_its_app_layer(lab):
    if not (lab.hosts["q1"].images / BASE).exists():
        push(lab, "v1", hosts=("q1",))
    proc, hosts = push(lab, "v2", "--json", hosts=("q1",))
    assert proc.returncode == 0, proc.stderr
    r = hosts["q1"]
    assert r["layers_sent"] == ["app layer"] and r["layers_present"] == ["base layer"]
    assert r["bytes_sent"] == lab.sizes["agent-v2.qcow2"] + lab.sizes["agent-v2.openclaw-schema.json"]
    assert r["bytes_skipped"] == lab.sizes[BASE]
    assert r["bytes_sent"] < lab.sizes[BASE] / 5                  # the 1 MiB written, not the 16 MiB base
    chain_intact(lab.hosts["q1"].images, "v2")
    chain_intact(lab.hosts["q1"].images, "v1")                     # the base it shares is untouched
    text, _ = push(lab, "v3", hosts=("q1",))
    assert text.returncode == 0, text.stderr
    assert "(app layer; base layer already there)" in text.stdout
    assert "push q1: " in text.stderr and " MB to send (app layer; base layer already there)" in text.stderr


def test_a_corrupted_layer_is_refused_by_the_host_that_needs_it_and_the_others_complete(lab, tmp_path):
    if not (lab.hosts["q1"].images / BASE).exists():
        push(lab, "v1", hosts=("q1",))
    bad = tmp_path / "ws-bad"
    shutil.copytree(lab.images, bad, copy_function=shutil.copyfile)   # its own inodes: the base is a hard link
    layer = bad / BASE
    layer.chmod(0o644)
    with open(layer, "r+b") as f:                      # same size: only the host's sha256 tells
        f.seek(lab.sizes[BASE] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc, hosts = push(lab, "v4", "--json", "--overlay", str(images_from(lab, bad, tmp_path)), hosts=("q1", "q3"))
    assert proc.returncode == 2
    assert hosts["q1"]["result"] == "pushed" and hosts["q1"]["layers_sent"] == ["app layer"]   # it holds the base
    assert hosts["q3"]["result"] == "failed"
    assert f"fleet: q3: push of {BASE} failed: {BASE}: sha256 " in proc.stderr
    assert "the corrupted copy was removed" in proc.stderr
    assert list(lab.hosts["q3"].images.iterdir()) == []                # nothing published, no part kept
    chain_intact(lab.hosts["q1"].images, "v4")


def test_a_host_with_an_app_layer_but_not_its_base_does_not_have_the_version(lab):
    golden = lab.hosts["q2"].images
    for name in ("agent-v1.qcow2", "agent-v1.manifest.json", "agent-v1.openclaw-schema.json"):
        shutil.copyfile(lab.images / name, golden / name)
    assert hostside.published(golden) == []                          # the clone would fail on the missing base
    proc, hosts = push(lab, "v1", "--json", hosts=("q2",))
    assert proc.returncode == 0, proc.stderr
    r = hosts["q2"]
    assert r["result"] == "pushed" and r["layers_sent"] == ["base layer"] and r["layers_present"] == ["app layer"]
    assert r["bytes_sent"] == lab.sizes[BASE] + lab.sizes["agent-v1.openclaw-schema.json"]
    chain_intact(golden, "v1")
    assert hostside.published(golden) == ["v1"]


def test_a_chain_whose_backing_name_is_not_the_layer_before_is_refused_and_nothing_published(lab, tmp_path):
    build, images = tmp_path / "build", tmp_path / "ws-odd"
    build.mkdir()
    base = make_base_layer(build / "agent-base-t9.qcow2", 1)
    make_base_layer(build / "agent-base-other.qcow2", 1)
    app = make_app_layer(base, build / "app.qcow2", 0x11, backing="agent-base-other.qcow2")
    publish(app, images, "v9", base_layer=base)                  # the manifest's chain: t9, then the app layer
    proc, _ = push(lab, "v9", "--overlay", str(images_from(lab, images, tmp_path)), hosts=("q3",))
    assert proc.returncode == 2
    assert ("fleet: q3: publish failed: agent-v9.qcow2: backing file 'agent-base-other.qcow2', the manifest's chain "
            "says 'agent-base-t9.qcow2'; nothing published") in proc.stderr
    golden = lab.hosts["q3"].images
    assert not (golden / "agent-v9.manifest.json").exists() and not (golden / "agent-v9.qcow2").exists()
    assert not (golden / "agent-base-t9.qcow2").exists()
    for p in golden.iterdir():
        p.unlink()


def test_a_lower_layer_of_another_size_on_the_host_is_never_rewritten(tmp_path):
    (tmp_path / "agent-base-x.qcow2").write_bytes(b"q" * 50)
    proc = subprocess.run([PYTHON, "-S", "-m", "deploy.fleet.hostside", "push-begin", "--images", str(tmp_path),
                           "--version", "v5", "--layer=agent-base-x.qcow2:100", "--layer=agent-v5.qcow2:10"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("agent-base-x.qcow2: here with 50 bytes, the manifest says 100; a layer other "
                                   "images back onto is never rewritten: check it (bake verify) and remove it with "
                                   "the images on it")
