"""A layered bake of the small image (bake --layered): a base layer baked once, a thin app layer on it that a
bump of the app stage replaces alone, a chain whose files the guest sees exactly as a flat bake's, and verification
that refuses a chain with a corrupted layer."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bake import layers, publish
from bake.hashing import file_sha256
from bake.inputs import collect
from bake.pipeline import Layout, bake, dry_run
from bake.spec import load_spec
from bake.verify import scan_image
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


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """The small image baked layered, then again after a one-file bump of the app stage, into their own images dir."""
    layout = variant_layout("layered-small-images")
    first = bake(REPO / "images" / "agent-small.yaml", layout, quiet=True, layered=True)
    base_file = first.image.chain[0][0]
    base_stat = base_file.stat()
    images = tmp_path_factory.mktemp("bump") / "images"
    shutil.copytree(REPO / "images", images)
    edit(images / "elements" / "agentd" / "install.d" / "40-agentd", *BUMP)
    bumped = bake(images / "agent-small.yaml", layout, quiet=True, layered=True, force=True)  # baked even on a rerun
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
