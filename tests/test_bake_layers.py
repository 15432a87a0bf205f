"""A layered bake of the small image (bake --layered): a base layer baked once, a thin app layer on it that a
bump of the app stage replaces alone, a chain whose files the guest sees exactly as a flat bake's, and verification
that refuses a chain with a corrupted layer."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from bake import layers, publish, tree_diff
from bake.hashing import file_sha256
from bake.inputs import collect
from bake.pipeline import Layout, bake, dry_run
from bake.spec import load_spec
from bake.verify import baseline_problems, identity_problems, scan_image
from host.appliance import Drive, appliance
from tests.bake_fixtures import edit
from tests.conftest import REPO
from tests.image_variants import small_image, variant_layout

# what the bump changes: a file of the app stage's agentd element that lands in the image (a managed file)
WRAPPER = REPO / "images" / "elements" / "agentd" / "install.d" / "40-agentd"
BUMP = ("# agentfleet: agentd's command line", "# agentfleet: agentd's command line, bumped")
FLAT_SHARE_LIMIT = 0.15   # issue 17: a bump sends a host at most 15 % of the full image


def small_spec_copy(tmp_path):
    shutil.copytree(REPO / "images", tmp_path / "images")
    return tmp_path / "images" / "agent-small.yaml"


def base_layer_name(spec_path) -> str:
    spec = load_spec(spec_path)
    return layers.base_layer_name(spec.name, layers.base_layer_key(spec, collect(spec).base_key))


def test_the_base_layer_is_keyed_by_the_base_stage_and_the_disk_not_by_the_app_stage(tmp_path):
    spec_path = small_spec_copy(tmp_path)
    first = base_layer_name(spec_path)
    assert first.startswith("agent-base-") and first.endswith(".qcow2")
    edit(spec_path.parent / "elements" / "agentd" / "install.d" / "40-agentd", *BUMP)
    assert base_layer_name(spec_path) == first, "an app-stage bump reuses the base layer"
    edit(spec_path, "size_gb: 8", "size_gb: 9")
    assert base_layer_name(spec_path) != first, "another disk size is another base layer"
    edit(spec_path, "size_gb: 9", "size_gb: 8")
    edit(spec_path, "      - sudo\n", "      - sudo\n      - tmux\n")
    assert base_layer_name(spec_path) != first, "another base stage is another base layer"


def test_a_layered_dry_run_names_the_base_layer_it_would_bake_and_touches_nothing(tmp_path):
    spec_path = small_spec_copy(tmp_path)
    layout = Layout(tmp_path / "build")
    lines = dry_run(spec_path, layout, layered=True)
    assert f"base layer: baked from the base tree into {base_layer_name(spec_path)}" in lines
    assert not any(line.startswith("base layer") for line in dry_run(spec_path, layout))
    assert not layout.build.exists()


def test_the_base_layer_leaves_out_what_identity_free_removes_and_the_diff_knows_it():
    file, folder = (tree_diff.Entry(kind, 0o644, 0, 0, 0, "") for kind in ("file", "dir"))
    base_tree = {"etc/passwd": file, "etc/machine-id": file, "etc/ssh": folder, "etc/ssh/ssh_host_ed25519_key": file,
                 "var/log": folder, "var/log/dpkg.log": file, "var/lib/apt/lists": folder,
                 "var/lib/apt/lists/lock": file, "var/lib/apt/lists/archive.ubuntu.com_dists_jammy_InRelease": file,
                 "root/.bash_history": file}
    assert set(layers.in_base_layer(base_tree)) == {"etc/passwd", "etc/ssh", "var/log", "var/lib/apt/lists",
                                                    "var/lib/apt/lists/lock"}
    empty_machine_id = tree_diff.Entry("file", 0o444, 0, 0, 0, hashlib.sha256(b"").hexdigest())
    app_tree = {**{n: e for n, e in base_tree.items() if n in ("etc/passwd", "etc/ssh", "var/log")},
                "etc/machine-id": empty_machine_id}
    diff = tree_diff.diff(layers.in_base_layer(base_tree), app_tree, list(app_tree))
    assert diff.changed == ("etc/machine-id",), "what the base layer lacks and the app tree has is written"
    assert diff.removed == ("var/lib/apt/lists",), "nothing of what the base layer lacks is removed again"


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """The small image baked layered, then again after a one-file bump of the app stage, into their own images dir."""
    shutil.rmtree(REPO / "build" / "layered-small-images", ignore_errors=True)   # its own, from empty
    layout = variant_layout("layered-small-images")
    first = bake(REPO / "images" / "agent-small.yaml", layout, quiet=True, layered=True)
    base_file = first.image.chain[0][0]
    base_stat = base_file.stat()
    images = tmp_path_factory.mktemp("bump") / "images"
    shutil.copytree(REPO / "images", images)
    edit(images / "elements" / "agentd" / "install.d" / "40-agentd", *BUMP)
    bumped = bake(images / "agent-small.yaml", layout, quiet=True, layered=True)
    return first.image, bumped, base_file, base_stat


@pytest.mark.slow
def test_a_layered_image_is_a_chain_its_manifest_names_layer_by_layer(layered):
    image, _, base_file, _ = layered
    base, top = image.chain
    assert base[0] == base_file and base[0].name.startswith("agent-base-") and top[0] == image.qcow2
    for path, recorded in image.chain:
        assert recorded.sha256 == file_sha256(path) and recorded.size == path.stat().st_size
        assert path.stat().st_mode & 0o222 == 0, "published layers are read-only"
    assert publish.backing_name(image.qcow2) == base_file.name, "backed by name: the pair moves as a directory"
    assert publish.backing_name(base_file) == ""
    publish.check_published(image, full=True)


@pytest.mark.slow
def test_the_base_layer_alone_carries_no_identity_nor_build_leftovers(layered):
    """identity-free runs in the app stage; the base layer leaves out what it removes, so the build's host keys,
    logs and apt lists are neither in the base layer's file nor in the chain's free blocks."""
    _, _, base_file, _ = layered
    with appliance([Drive(base_file, readonly=True)]) as g:
        g.mount_ro("/dev/sda1", "/")
        assert identity_problems(g) == []
        assert not g.exists("/etc/machine-id")


@pytest.mark.slow
def test_a_bump_of_the_app_stage_replaces_only_the_app_layer(layered):
    image, bumped, base_file, base_stat = layered
    assert not bumped.cache_hit and bumped.base_layer_hit, "the base layer was found, not baked again"
    assert bumped.image.version != image.version
    assert bumped.image.manifest.layers[0] == image.manifest.layers[0]
    after = base_file.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (base_stat.st_ino, base_stat.st_mtime_ns,
                                                                base_stat.st_size), "the base layer file untouched"
    assert bumped.image.manifest.layers[1].sha256 != image.manifest.layers[1].sha256
    before, now = image.manifest.baseline, bumped.image.manifest.baseline
    assert {p for p in set(before) | set(now) if before.get(p) != now.get(p)} == {"/usr/local/bin/agentd"}
    flat = small_image()
    assert bumped.image.manifest.qcow2.size < FLAT_SHARE_LIMIT * flat.manifest.qcow2.size


@pytest.mark.slow
def test_the_chain_shows_the_guest_the_files_of_a_flat_bake_of_the_same_inputs(layered, tmp_path):
    image, _, _, _ = layered
    flat = small_image()
    assert flat.version == image.version and not flat.manifest.layers
    assert image.manifest.baseline == flat.manifest.baseline
    seen = scan_image(image.qcow2, tmp_path)
    assert seen == scan_image(flat.qcow2, tmp_path)
    assert seen == image.manifest.baseline


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["base", "app"])
def test_verify_refuses_a_chain_with_a_corrupted_layer(layered, tmp_path, layer):
    image, _, _, _ = layered
    for path, _ in image.chain:
        shutil.copyfile(path, tmp_path / path.name)
    shutil.copyfile(image.manifest_path, tmp_path / image.manifest_path.name)
    corrupted = tmp_path / image.chain[0 if layer == "base" else 1][0].name
    with open(corrupted, "r+b") as f:
        f.seek(corrupted.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "bake.cli", "--build-dir", str(tmp_path / "build"),
                          "verify", str(tmp_path / image.qcow2.name)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{corrupted}: sha256 differs from its manifest" in out.stderr


def test_verify_names_the_managed_files_the_guest_sees_otherwise_than_the_manifest():
    state = {"sha256": "ab" * 32, "mode": "0644", "owner": "root:root"}
    recorded = {"/etc/passwd": state, "/usr/local/bin/agentd": state, "/opt/agentd/agentd/__init__.py": state}
    assert baseline_problems(dict(recorded), recorded) == []
    seen = {"/etc/passwd": state, "/usr/local/bin/agentd": dict(state, mode="0755"), "/etc/extra": state}
    assert baseline_problems(seen, recorded) == [
        "3 managed file(s) differ from the manifest's baseline: /etc/extra (extra), "
        "/opt/agentd/agentd/__init__.py (missing), /usr/local/bin/agentd (differs)"]
