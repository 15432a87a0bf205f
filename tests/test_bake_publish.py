"""bake/publish.py is the one reader and writer of the published layout: the bake, the clone and the tests go
through it, so they agree on file names, the manifest and which image is the newest (fast: tiny files)."""
import json
import os
import subprocess

import pytest

from bake import publish
from bake.errors import BakeError
from deploy.errors import CloneError
from deploy.images import find_image

IMAGE_JSON = {"name": "agent", "version": "ignored", "built_at": "2026-11-28T00:00:00Z", "pins": {"node": "22.23.3"},
              "inputs": {"spec": "ab" * 32}, "packages": {"dpkg": {"bash": "5.1"}},
              "baseline": {"/etc/hosts": {"sha256": "cd" * 32, "mode": "0644", "owner": "root:root"}},
              "openclaw_plugins": ["/opt/openclaw/plugins/mattermost"]}


def _candidate(tmp_path, name="disk.qcow2", data=b"qcow2 bytes"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_what_publish_writes_every_reader_reads_back_typed(tmp_path):
    images, schema = tmp_path / "images", tmp_path / "schema.json"
    schema.write_text("{}")
    log = tmp_path / "bake.log"
    log.write_text("log\n")
    written = publish.publish(images, "agent", "v1", _candidate(tmp_path), IMAGE_JSON, schema, log)
    assert written.qcow2 == images / "agent-v1.qcow2" and written.qcow2.stat().st_mode & 0o222 == 0
    assert written.manifest.version == "v1" and written.manifest.qcow2.size == len(b"qcow2 bytes")
    assert written.manifest.baseline == IMAGE_JSON["baseline"]
    assert written.manifest.openclaw_plugins == ("/opt/openclaw/plugins/mattermost",)
    assert written.schema_path == images / "agent-v1.openclaw-schema.json"
    for read in (publish.find(images, "agent", "v1"), publish.newest(images, "agent"), publish.beside(written.qcow2)):
        assert read == written
    publish.check_published(written, full=True)
    clone_view = find_image(images)
    assert (clone_view.version, clone_view.path, clone_view.schema_path) == ("v1", written.qcow2, written.schema_path)
    assert clone_view.baseline == IMAGE_JSON["baseline"]


def test_the_bake_and_the_clone_agree_on_the_newest_image_even_when_two_were_published_in_the_same_instant(tmp_path):
    images = tmp_path / "images"
    for version in ("v2", "v1"):
        publish.publish(images, "agent", version, _candidate(tmp_path), IMAGE_JSON, None, None)
    same = images.joinpath("agent-v1.manifest.json").stat().st_mtime
    os.utime(images / "agent-v2.manifest.json", (same, same))
    assert [p.version for p in publish.published(images, "agent")] == ["v1", "v2"]
    assert publish.newest(images, "agent").version == find_image(images).version == "v2"
    later = same + 10
    os.utime(images / "agent-v1.manifest.json", (later, later))  # renamed in last: the newest, whatever its name
    assert publish.newest(images, "agent").version == find_image(images).version == "v1"


def test_keep_source_publishes_a_copy_and_leaves_the_candidate(tmp_path):
    candidate = _candidate(tmp_path)
    publish.publish(tmp_path / "images", "agent", "v1", candidate, IMAGE_JSON, None, None, keep_source=True)
    assert candidate.read_bytes() == b"qcow2 bytes"


def test_a_malformed_manifest_is_one_line_naming_the_file_for_the_bake_and_the_clone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "agent-v1.manifest.json").write_text(json.dumps({"name": "agent", "version": "v1"}))
    with pytest.raises(BakeError, match=r"agent-v1.manifest.json: malformed image manifest \(KeyError: 'qcow2'\)"):
        publish.newest(images, "agent")
    with pytest.raises(CloneError, match=r"agent-v1.manifest.json: malformed image manifest"):
        find_image(images)


def test_a_manifest_whose_image_is_gone_is_refused_by_both(tmp_path):
    images = tmp_path / "images"
    written = publish.publish(images, "agent", "v1", _candidate(tmp_path), IMAGE_JSON, None, None)
    written.qcow2.chmod(0o644)
    written.qcow2.unlink()
    with pytest.raises(BakeError, match="listed by its manifest but missing"):
        publish.check_published(written, full=False)
    with pytest.raises(CloneError, match="has no agent-v1.qcow2 beside it"):
        find_image(images)


def test_a_manifest_from_before_the_plugins_were_baked_in_names_none(tmp_path):
    """Images published before issue 15 install their plugins at boot: the clone must give them no load paths."""
    data = {**IMAGE_JSON, "version": "old", "qcow2": {"file": "agent-old.qcow2", "size": 1, "sha256": "0" * 64}}
    del data["openclaw_plugins"]
    assert publish.Manifest.from_json(data, "old.manifest.json").openclaw_plugins == ()


def _chain(tmp_path):
    """A base layer in the build cache and an app layer backed by it by name, as the layered bake leaves them."""
    cache, work = tmp_path / "cache", tmp_path / "work"
    cache.mkdir(parents=True)
    work.mkdir()
    base = cache / "agent-base-0123456789abcdef.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    (work / base.name).symlink_to(base)
    top = work / "app-layer.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.name, str(top)], check=True)
    return base, top


def test_a_layered_image_is_published_with_its_base_layer_and_a_manifest_naming_the_chain(tmp_path):
    base, top = _chain(tmp_path)
    images = tmp_path / "images"
    written = publish.publish(images, "agent", "v1", top, IMAGE_JSON, None, None, base_layer=base)
    published_base = images / base.name
    assert published_base.stat().st_mode & 0o222 == 0
    assert [f.file for f in written.manifest.layers] == [base.name, "agent-v1.qcow2"]
    assert written.manifest.layers[-1] == written.manifest.qcow2
    assert written.chain == [(published_base, written.manifest.layers[0]), (written.qcow2, written.manifest.qcow2)]
    assert publish.backing_name(written.qcow2) == base.name
    assert publish.find(images, "agent", "v1") == written
    assert [p.version for p in publish.published(images, "agent")] == ["v1"], "the base layer is not an image"
    publish.check_published(written, full=True)
    _, top2 = _chain(tmp_path / "again")
    second = publish.publish(images, "agent", "v2", top2, IMAGE_JSON, None, None, base_layer=published_base)
    assert second.manifest.layers[0] == written.manifest.layers[0], "a published base layer is shared, not replaced"


def test_a_corrupted_or_swapped_layer_is_refused(tmp_path):
    base, top = _chain(tmp_path)
    images = tmp_path / "images"
    written = publish.publish(images, "agent", "v1", top, IMAGE_JSON, None, None, base_layer=base)
    published_base = images / base.name
    os.chmod(published_base, 0o644)
    data = bytearray(published_base.read_bytes())
    data[-1] ^= 0xFF
    published_base.write_bytes(bytes(data))
    publish.check_published(written, full=False)     # same size: only the sha256 tells
    with pytest.raises(BakeError, match=f"{published_base}: sha256 differs from its manifest"):
        publish.check_published(written, full=True)
    with open(published_base, "ab") as f:
        f.write(b"x")
    with pytest.raises(BakeError, match=f"{published_base}: size .* differs"):
        publish.check_published(written, full=False)
    published_base.unlink()
    with pytest.raises(BakeError, match="listed by its manifest but missing"):
        publish.check_published(written, full=False)


def test_an_app_layer_backed_by_another_file_than_its_manifest_says_is_refused(tmp_path):
    base, top = _chain(tmp_path)
    images = tmp_path / "images"
    written = publish.publish(images, "agent", "v1", top, IMAGE_JSON, None, None, base_layer=base)
    os.chmod(written.qcow2, 0o644)
    subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", "agent-base-ffffffffffffffff.qcow2",
                    str(written.qcow2)], check=True)
    manifest = json.loads(written.manifest_path.read_text())
    for entry in (manifest["qcow2"], manifest["layers"][1]):
        entry["size"] = written.qcow2.stat().st_size
    written.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BakeError, match="backing file 'agent-base-ffffffffffffffff.qcow2', its manifest's chain"):
        publish.check_published(publish.load(written.manifest_path), full=False)


def test_a_manifest_whose_layers_do_not_end_with_its_qcow2_is_malformed(tmp_path):
    data = dict(IMAGE_JSON, version="v1", qcow2={"file": "agent-v1.qcow2", "size": 1, "sha256": "ab"},
                layers=[{"file": "agent-base-k.qcow2", "size": 1, "sha256": "cd"},
                        {"file": "agent-v0.qcow2", "size": 1, "sha256": "ab"}])
    with pytest.raises(BakeError, match="layers must end with the qcow2 itself"):
        publish.Manifest.from_json(data, "m.json")
