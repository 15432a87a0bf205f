"""bake/publish.py is the one reader and writer of the published layout: the bake, the clone and the tests go
through it, so they agree on file names, the manifest and which image is the newest (fast: tiny files)."""
import json
import os

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
