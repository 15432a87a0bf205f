"""`bake list` (with each image's base age) and `bake diff A B` (package versions that differ), as a user runs them,
on images published by the bake's own publish()."""
import json
import subprocess
import sys
import time

from bake import publish
from tests.bake_fixtures import REPO


def published(images, version: str, dpkg: dict, npm: dict, base_built_at: str, refresh: str = "2026-11-28"):
    raw = images / f"{version}.raw"
    raw.write_bytes(b"qcow2 stand-in " + version.encode())
    image_json = {"name": "agent", "version": version, "built_at": "2026-11-29T00:00:00Z",
                  "pins": {"node": "22.23.3"}, "packages": {"dpkg": dpkg, "npm": npm}, "baseline": {},
                  "base": {"refresh": refresh, "built_at": base_built_at}, "services": ["agentd", "openclaw"]}
    return publish.publish(images, "agent", version, raw, image_json, None, None)


def bake(build, *args):
    return subprocess.run([sys.executable, "-m", "bake.cli", "--build-dir", str(build), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_list_shows_each_images_base_refresh_and_age(tmp_path):
    images = tmp_path / "build" / "images"
    images.mkdir(parents=True)
    ten_days_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 10 * 86400))
    published(images, "aaaa11112222", {"openssl": "3.0.2-0ubuntu1.18"}, {}, ten_days_ago)
    out = bake(tmp_path / "build", "list")
    assert out.returncode == 0, out.stderr
    assert "aaaa11112222" in out.stdout and "base 2026-11-28, 10 d old" in out.stdout
    rows = json.loads(bake(tmp_path / "build", "list", "--json").stdout)
    assert rows[0]["base_refresh"] == "2026-11-28" and round(rows[0]["base_age_days"]) == 10
    assert rows[0]["layers"] == [], "a flat image"


def test_list_names_the_base_layer_a_layered_image_stands_on(tmp_path):
    images = tmp_path / "build" / "images"
    images.mkdir(parents=True)
    base = tmp_path / "agent-base-0123456789abcdef.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)], check=True)
    image_json = {"name": "agent", "version": "v", "baseline": {}, "base": {"refresh": "r", "built_at": ""}}
    publish.publish(images, "agent", "aaaa11112222", top, image_json, None, None, base_layer=base)
    out = bake(tmp_path / "build", "list")
    assert out.returncode == 0, out.stderr
    assert " MB on agent-base-0123456789abcdef.qcow2 " in out.stdout
    rows = json.loads(bake(tmp_path / "build", "list", "--json").stdout)
    assert rows[0]["layers"] == ["agent-base-0123456789abcdef.qcow2", "agent-aaaa11112222.qcow2"]


def test_diff_names_every_changed_added_and_removed_package(tmp_path):
    images = tmp_path / "build" / "images"
    images.mkdir(parents=True)
    published(images, "aaaa11112222", {"openssl": "3.0.2-0ubuntu1.18", "curl": "7.81.0-1ubuntu1.20", "gone": "1"},
              {"openclaw": "2026.9.2"}, "2026-11-01T00:00:00Z")
    published(images, "bbbb33334444", {"openssl": "3.0.2-0ubuntu1.19", "curl": "7.81.0-1ubuntu1.20", "new": "2"},
              {"openclaw": "2026.9.2"}, "2026-11-28T00:00:00Z", refresh="2026-11-28b")
    out = bake(tmp_path / "build", "diff", "aaaa11112222", "bbbb33334444")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["aaaa11112222 -> bbbb33334444: 3 package(s) differ",
                                       "  - dpkg gone 1",
                                       "  + dpkg new 2",
                                       "  ~ dpkg openssl 3.0.2-0ubuntu1.18 -> 3.0.2-0ubuntu1.19"]
    changes = json.loads(bake(tmp_path / "build", "diff", "aaaa11112222", "bbbb33334444", "--json").stdout)
    assert {c["name"] for c in changes["changes"]} == {"gone", "new", "openssl"}
    missing = bake(tmp_path / "build", "diff", "aaaa11112222", "cccc00000000")
    assert missing.returncode == 2 and missing.stderr.strip().endswith("cccc00000000: not a published image in "
                                                                     f"{images}")
