"""The lock is checked against the spec offline; the version is a pure function of the inputs."""
import json

import pytest

from bake.errors import BakeError
from bake.inputs import collect, explain_miss
from bake.lock import Lock, check_lock
from bake.spec import load_spec
from tests.bake_fixtures import REPO, copy_images, edit


def test_committed_lock_matches_committed_spec():
    spec = load_spec(REPO / "images" / "agent.yaml")
    check_lock(spec, Lock.load(spec))


def test_pin_bump_without_relock_is_refused(tmp_path):
    path = copy_images(tmp_path)
    edit(path, "version: 2026.9.2", "version: 2026.9.1")
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"artifacts.openclaw.version: spec pins 2026.9.1 but agent.lock.json has"):
        check_lock(spec, Lock.load(spec))


def test_plugin_pin_change_without_relock_is_refused(tmp_path):
    path = copy_images(tmp_path)
    edit(path, '"@openclaw/mattermost": 2026.9.2', '"@openclaw/mattermost": 2026.9.6')
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"artifacts.openclaw.plugins: spec pins .*2026.9.6.* but agent.lock.json"):
        check_lock(spec, Lock.load(spec))


def test_engine_mismatch_recorded_in_lock_is_refused(tmp_path):
    path = copy_images(tmp_path)
    lock_path = path.with_suffix(".lock.json")
    data = json.loads(lock_path.read_text())
    data["openclaw"]["engines_node"] = ">=24.16.0 <25 || >=26.1.0"  # what 2026.9.3 declares
    lock_path.write_text(json.dumps(data))
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"requires node"):
        check_lock(spec, Lock.load(spec))


def test_edited_package_lock_is_refused(tmp_path):
    path = copy_images(tmp_path)
    (path.parent / "openclaw" / "package-lock.json").write_text("{}")
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"package-lock.json: changed since agent.lock.json"):
        check_lock(spec, Lock.load(spec))


def test_same_inputs_give_the_same_version_in_another_checkout(tmp_path):
    a = collect(load_spec(copy_images(tmp_path / "a")))
    b = collect(load_spec(copy_images(tmp_path / "b")))
    assert a.version == b.version and len(a.version) == 12
    assert a.base_key == b.base_key


def test_one_pin_bump_changes_the_version_but_not_the_base_tree_key(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    edit(path, "allow_scripts: []", "allow_scripts: [koffi]")
    after = collect(load_spec(path))
    assert after.version != before.version
    assert after.base_key == before.base_key
    assert explain_miss(after.hashes, before.hashes) == [
        f"spec: changed ({before.hashes['spec'][:10]} -> {after.hashes['spec'][:10]})"]


def test_a_base_package_change_invalidates_the_base_tree(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    edit(path, "      - tmux\n", "      - tmux\n      - htop\n")
    assert collect(load_spec(path)).base_key != before.base_key


def test_enabling_an_upstream_artifact_rebakes_the_base_tree_that_installs_it(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    edit(path, "dart: {enabled: false}",
         f"dart: {{version: 3.99.0, url: 'https://example.invalid/dart.zip', sha256: {'a' * 64}}}")
    assert collect(load_spec(path)).base_key != before.base_key


def test_an_element_edit_is_named_in_the_miss(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    readme = path.parent / "elements" / "nodejs" / "README.rst"
    readme.write_text(readme.read_text() + "\nedited\n" if readme.exists() else "edited\n")
    lines = explain_miss(collect(load_spec(path)).hashes, before.hashes)
    assert lines and lines[0].startswith("element/nodejs: changed")


def test_bumping_the_archive_refresh_rebakes_the_base_and_only_that_names_it(tmp_path):
    spec_path = copy_images(tmp_path)
    before = collect(load_spec(spec_path))
    text = spec_path.read_text()
    assert "refresh: " in text, "the committed spec names its archive refresh"
    edit(spec_path, f"refresh: {load_spec(spec_path).base.refresh}", "refresh: 2099-01-01")
    after = collect(load_spec(spec_path))
    assert load_spec(spec_path).base.refresh == "2099-01-01"      # YAML's date read back as the token written
    assert after.base_key != before.base_key and after.version != before.version
    assert explain_miss(after.hashes, before.hashes) == [f"spec: changed ({before.hashes['spec'][:10]} -> "
                                                         f"{after.hashes['spec'][:10]})"]


def test_a_malformed_refresh_token_is_refused_naming_the_entry(tmp_path):
    spec_path = copy_images(tmp_path)
    edit(spec_path, f"refresh: {load_spec(spec_path).base.refresh}", "refresh: 'two weeks ago'")
    with pytest.raises(BakeError, match=r"base.refresh: must be a date"):
        load_spec(spec_path)


def test_an_aws_cdk_pin_bump_without_relock_is_refused_and_rebuilds_only_the_app_stage(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    edit(path, "version: 2.1148.1", "version: 2.1148.0")
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"artifacts.aws-cdk.version: spec pins 2.1148.0 but agent.lock.json has"):
        check_lock(spec, Lock.load(spec))
    assert collect(spec).base_key == before.base_key


def test_an_edited_aws_cdk_package_lock_is_refused_and_is_an_input(tmp_path):
    path = copy_images(tmp_path)
    before = collect(load_spec(path))
    assert {"aws-cdk/package-lock.json", "aws-cdk/package.json", "openclaw/package-lock.json"} <= set(before.hashes)
    (path.parent / "aws-cdk" / "package-lock.json").write_text("{}")
    spec = load_spec(path)
    with pytest.raises(BakeError, match=r"aws-cdk/package-lock.json: changed since agent.lock.json"):
        check_lock(spec, Lock.load(spec))
    assert explain_miss(collect(spec).hashes, before.hashes)[0].startswith("aws-cdk/package-lock.json: changed")


def test_a_lock_without_the_aws_cdk_entry_says_to_relock(tmp_path):
    path = copy_images(tmp_path)
    lock_path = path.with_suffix(".lock.json")
    data = json.loads(lock_path.read_text())
    del data["aws-cdk"]
    lock_path.write_text(json.dumps(data))
    with pytest.raises(BakeError, match=r"has no entry for aws-cdk, which the spec pins; run `make lock`"):
        Lock.load(load_spec(path))


def test_the_cpython_source_is_part_of_the_base_tree_key(tmp_path):
    before = collect(load_spec(copy_images(tmp_path / "a")))
    path = copy_images(tmp_path / "b")
    sha = load_spec(path).cpython.sha256
    edit(path, f"sha256: {sha}", f"sha256: {'a' * 64}")
    after = collect(load_spec(path))
    assert after.base_key != before.base_key and after.version != before.version
