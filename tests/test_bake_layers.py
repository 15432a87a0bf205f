"""A layered bake of the small image (the default): a base layer baked once, a thin app layer on it, a bump that
stacks one more small layer and rewrites nothing under it, a chain whose files the guest sees exactly as a flat
bake's, and verification that refuses a chain with a corrupted layer. The slow tests use the session's small image
and its bump, and the same inputs baked flat (tests/prebake.py bakes all three in the background)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from bake import layers, publish, tree_diff
from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.inputs import collect
from bake.pipeline import Layout, bake, dry_run
from bake.spec import load_spec
from bake.verify import Readback, baseline_problems, identity_problems, readback_problems, scan_image
from host.appliance import Drive, appliance
from tests.bake_fixtures import edit
from tests.conftest import REPO
from tests.layered_support import make_app_layer, make_base_layer

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
    assert "app layer: the app tree's changes to the base layer, written into a qcow2 overlay on it" in lines
    assert not any(line.startswith("base layer") for line in dry_run(spec_path, layout, layered=False))
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


@pytest.mark.slow
def test_the_small_image_is_a_chain_its_manifest_names_layer_by_layer(small_baked_image):
    image = small_baked_image
    base, top = image.chain[0], image.chain[-1]
    assert base[0].name.startswith("agent-base-") and top[0] == image.qcow2
    for path, recorded in image.chain:
        assert recorded.sha256 == file_sha256(path) and recorded.size == path.stat().st_size
        assert path.stat().st_mode & 0o222 == 0, "published layers are read-only"
    for (lower, _), (upper, _) in zip(image.chain, image.chain[1:]):
        assert publish.backing_name(upper) == lower.name, "backed by name: the chain moves as a directory"
    assert publish.backing_name(base[0]) == ""
    publish.check_published(image, full=True)


@pytest.mark.slow
def test_the_base_layer_alone_carries_no_identity_nor_build_leftovers(small_baked_image):
    """identity-free runs in the app stage; the base layer leaves out what it removes, so the build's host keys,
    logs and apt lists are neither in the base layer's file nor in the chain's free blocks."""
    with appliance([Drive(small_baked_image.chain[0][0], readonly=True)]) as g:
        g.mount_ro("/dev/sda1", "/")
        assert identity_problems(g) == []
        assert not g.exists("/etc/machine-id")


@pytest.mark.slow
def test_a_bump_stacks_one_small_app_layer_on_the_previous_image_and_touches_no_layer_under_it(
        small_baked_image, small_next_baked_image, small_flat_baked_image):
    before, after = small_baked_image, small_next_baked_image
    assert after.version != before.version
    if len(before.manifest.layers) - 1 < layers.MAX_APP_LAYERS:
        assert after.manifest.layers[:-1] == before.manifest.layers, "stacked on the previous image's chain"
    else:
        assert after.manifest.layers[0] == before.manifest.layers[0], "a full chain restarts on the base layer"
    for path, recorded in before.chain:
        assert file_sha256(path) == recorded.sha256, "no layer under the bump was rewritten"
    assert after.manifest.baseline == before.manifest.baseline, "the bump changes no managed file"
    assert after.manifest.qcow2.size < FLAT_SHARE_LIMIT * small_flat_baked_image.manifest.qcow2.size
    publish.check_published(after, full=True)


@pytest.mark.slow
def test_the_chain_shows_the_guest_the_files_of_a_flat_bake_of_the_same_inputs(small_baked_image,
                                                                               small_flat_baked_image, tmp_path):
    image, flat = small_baked_image, small_flat_baked_image
    assert flat.version == image.version and not flat.manifest.layers
    assert image.manifest.baseline == flat.manifest.baseline
    seen = scan_image(image.qcow2, tmp_path)
    assert seen == scan_image(flat.qcow2, tmp_path)
    assert seen == image.manifest.baseline


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["base", "app"])
def test_verify_refuses_a_chain_with_a_corrupted_layer(small_next_baked_image, tmp_path, layer):
    image = small_next_baked_image
    for path, _ in image.chain:
        shutil.copyfile(path, tmp_path / path.name)
    shutil.copyfile(image.manifest_path, tmp_path / image.manifest_path.name)
    corrupted = tmp_path / image.chain[0 if layer == "base" else -1][0].name
    with open(corrupted, "r+b") as f:
        f.seek(corrupted.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "bake.cli", "--build-dir", str(tmp_path / "build"),
                          "verify", str(tmp_path / image.qcow2.name)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{corrupted}: sha256 differs from its manifest" in out.stderr


def synthetic_chain(images, versions, tmp_path, stack=True):
    """Tiny published layered images, one per version, each stacked on the one before (`stack`) or straight on
    one shared base layer, with their app tree indexes kept as a bake keeps them: what find_parent looks at."""
    cache = tmp_path / "cache"
    images.mkdir(parents=True)
    base = make_base_layer(images / "agent-base-0123456789abcdef.qcow2", 1)   # in place: names resolve there
    made = []
    for version in versions:
        under = made[-1].qcow2 if stack and made else base
        top = make_app_layer(base, images / f".app-{version}.qcow2", 0x40 + len(made), backing=under.name)
        image_json = {"name": "agent", "version": version, "baseline": {}, "packages": {}}
        made.append(publish.publish(images, "agent", version, top, image_json, None, None,
                                    base_layer=None if stack and made else base,
                                    parent=made[-1] if stack and made else None))
        tree_diff.save_index({"etc": tree_diff.Entry("dir", 0o755, 0, 0, 0, "")},
                             tree_diff.index_path(cache, "agent", version))
    return made, cache


def test_a_bump_stacks_on_the_newest_image_of_its_base_until_the_chain_is_full(tmp_path):
    images = tmp_path / "images"
    made, cache = synthetic_chain(images, ["v1", "v2"], tmp_path)
    assert [f.file for f in made[1].manifest.layers] == [made[0].chain[0][0].name, "agent-v1.qcow2",
                                                         "agent-v2.qcow2"]
    publish.check_published(made[1], full=True)
    parent = layers.find_parent(images, "agent", made[0].chain[0][0].name, cache, "v9")
    assert parent.image.version == "v2" and "etc" in parent.tree
    assert layers.find_parent(images, "agent", made[0].chain[0][0].name, cache, "v2").image.version == "v1", \
        "an image is never its own parent (a forced rebake)"
    assert layers.find_parent(images, "agent", "agent-base-another.qcow2", cache, "v9") is None
    tree_diff.index_path(cache, "agent", "v2").unlink()
    assert layers.find_parent(images, "agent", made[0].chain[0][0].name, cache, "v9") is None, \
        "without the parent's tree there is nothing to diff against: straight on the base layer"
    full, cache = synthetic_chain(tmp_path / "full", [f"f{i}" for i in range(layers.MAX_APP_LAYERS)], tmp_path / "x")
    assert len(full[-1].manifest.layers) == layers.MAX_APP_LAYERS + 1
    assert layers.find_parent(tmp_path / "full", "agent", full[0].chain[0][0].name, cache, "f9") is None, \
        "a full chain restarts on the base layer"


def test_a_forced_rebake_of_an_image_another_one_stacks_on_is_refused_and_rewrites_nothing(tmp_path):
    spec_path = small_spec_copy(tmp_path)
    version = collect(load_spec(spec_path)).version
    images = tmp_path / "published"
    made, _ = synthetic_chain(images, [version, "next"], tmp_path)
    before = {path: file_sha256(path) for path, _ in made[1].chain}
    with pytest.raises(BakeError, match=f"agent-{version}.qcow2 is a layer of next: rebaking it would break"):
        bake(spec_path, Layout(tmp_path / "build", images), quiet=True, force=True)
    assert {path: file_sha256(path) for path, _ in made[1].chain} == before
    assert not (tmp_path / "build").exists(), "refused before the bake took its lock or made its work dir"


def test_verify_names_the_managed_files_the_guest_sees_otherwise_than_the_manifest():
    state = {"sha256": "ab" * 32, "mode": "0644", "owner": "root:root"}
    recorded = {"/etc/passwd": state, "/usr/local/bin/agentd": state, "/opt/agentd/agentd/__init__.py": state}
    assert baseline_problems(dict(recorded), recorded) == []
    seen = {"/etc/passwd": state, "/usr/local/bin/agentd": dict(state, mode="0755"), "/etc/extra": state}
    assert baseline_problems(seen, recorded) == [
        "3 managed file(s) differ from the manifest's baseline: /etc/extra (extra), "
        "/opt/agentd/agentd/__init__.py (missing), /usr/local/bin/agentd (differs)"]


def test_a_stacked_layer_reads_back_only_the_dirs_it_wrote(tmp_path):
    written = frozenset({"opt/aws-cdk/lib/index.js", "etc/agentfleet/image.json"})
    readback = Readback({}, {}, written)
    assert [top for top in ("etc", "usr/local/bin", "opt/node-v22.23.3", "opt/aws-cdk") if readback.touches(top)] \
        == ["etc", "opt/aws-cdk"], "etc always: its passwd and group name the owners"
    assert Readback({}, {}, frozenset({"opt"})).touches("opt/node-v22.23.3"), "a written dir above a top touches it"


@pytest.mark.slow
def test_a_stacked_layers_verify_holds_what_it_did_not_write_to_the_image_under_it(small_baked_image,
                                                                                  small_next_baked_image, tmp_path):
    """The bump wrote nothing under /usr/local/bin: verify reads back /etc only, and every other managed file must
    be recorded as the image under it records it (that one was read back when it was baked)."""
    image, under = small_next_baked_image, small_baked_image.manifest.baseline
    agentd = "/usr/local/bin/agentd"
    assert agentd in under and agentd in image.manifest.baseline
    with appliance([Drive(image.qcow2, readonly=True)]) as g:
        g.mount_ro(g.inspect_os()[0], "/")
        assert readback_problems(g, tmp_path, Readback(image.manifest.baseline, under, frozenset())) == []
        tampered = {**under, agentd: {**under[agentd], "sha256": "0" * 64}}
        assert readback_problems(g, tmp_path, Readback(image.manifest.baseline, tampered, frozenset())) == [
            f"1 managed file(s) the layer did not write differ from the image under it: {agentd}"]
