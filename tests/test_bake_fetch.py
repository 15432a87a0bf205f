"""The fetch phase against the real npm registry: a download is used only when its sha256 matches the pin."""
import json
import shutil

import pytest

from bake import fetch, pipeline
from bake.errors import BakeError
from bake.fetch import download
from bake.plugin_cache import fill_plugin_cache
from bake.spec import Artifact, load_spec
from tests.bake_fixtures import REPO, copy_images, edit

NPM_URL = "https://registry.npmjs.org/npm/-/npm-10.9.8.tgz"
NPM_SHA = "3e68f9b5fcaf1a94ba0e37e6a565c920b2be6bd98998c50970385d6a692af780"


def test_download_is_verified_and_cached_by_sha256(tmp_path):
    path = download(Artifact("npm", "10.9.8", NPM_URL, NPM_SHA), tmp_path)
    assert path.name.startswith(NPM_SHA) and path.stat().st_size > 1_000_000
    assert download(Artifact("npm", "10.9.8", NPM_URL, NPM_SHA), tmp_path) == path  # no second download


def test_checksum_mismatch_names_the_artifact_and_keeps_nothing(tmp_path):
    wrong = "0" * 64
    with pytest.raises(BakeError, match=r"artifacts.npm.sha256: checksum mismatch .* expected 0000"):
        download(Artifact("npm", "10.9.8", NPM_URL, wrong), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_source_names_the_artifact_and_the_status(tmp_path):
    with pytest.raises(BakeError,
                       match=r"artifacts.npm: https://registry.npmjs.org/npm/-/npm-0.0.0-nope.tgz answered 404"):
        download(Artifact("npm", "0.0.0", "https://registry.npmjs.org/npm/-/npm-0.0.0-nope.tgz", NPM_SHA), tmp_path)


def test_unreachable_source_names_the_artifact(tmp_path):
    with pytest.raises(BakeError, match=r"artifacts.dart: https://dart.invalid/x.zip unreachable"):
        download(Artifact("dart", "3.5.0", "https://dart.invalid/x.zip", NPM_SHA), tmp_path)


def test_bake_with_an_engine_mismatch_publishes_nothing(tmp_path):
    spec = copy_images(tmp_path)
    lock = spec.with_suffix(".lock.json")
    edit(lock, '"engines_node": ">=22.22.3 <23', '"engines_node": ">=24.16.0 <25')
    with pytest.raises(BakeError, match="requires node"):
        pipeline.bake(spec, pipeline.Layout(tmp_path / "build"), quiet=True)
    assert not (tmp_path / "build" / "images").exists()


def test_bake_without_disk_space_says_so_before_starting(tmp_path, monkeypatch):
    spec = copy_images(tmp_path)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=2 * 10**9))  # a full disk, simulated
    with pytest.raises(BakeError, match=r"no space left: 2.0 GB free"):
        pipeline.bake(spec, pipeline.Layout(tmp_path / "build"), quiet=True)
    assert not (tmp_path / "build" / "images").exists()


def test_dry_run_prints_both_dib_runs_and_touches_nothing(tmp_path):
    spec = copy_images(tmp_path)
    lines = pipeline.dry_run(spec, pipeline.Layout(tmp_path / "build"))
    assert lines[0].startswith("would bake agent-")
    assert any("disk-image-create" in line and "ubuntu-minimal" in line for line in lines)
    assert any("agentfleet-base-tree" in line for line in lines)
    assert not (tmp_path / "build").exists()


def test_plugin_tarball_the_package_lock_does_not_pin_is_refused_and_nothing_is_kept(tmp_path):
    """The plugin cache comes from the real registry; its tarball must have the package-lock's integrity."""
    path = copy_images(tmp_path)
    package_lock = path.parent / "openclaw" / "package-lock.json"
    data = json.loads(package_lock.read_text())
    data["packages"]["node_modules/@openclaw/mattermost"]["integrity"] = "sha512-" + "A" * 86 + "=="
    package_lock.write_text(json.dumps(data))
    layout = pipeline.Layout(REPO / "build")
    spec = load_spec(path)
    npm_cmd = fetch.host_npm(spec, layout.downloads, layout.tools)
    cache = tmp_path / "plugin-cache"
    with pytest.raises(BakeError, match=r"plugins.@openclaw/mattermost: the registry's @openclaw/mattermost@2026.9.2 "
                                        r"has integrity sha512-dyIV.* package-lock.json pins sha512-AAA"):
        fill_plugin_cache(spec, npm_cmd, cache, tmp_path / "scratch")
    assert not list(cache.glob(".verified-*"))
