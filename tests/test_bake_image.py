"""The real pipeline end to end: a DIB tree, libguestfs assembly and verification, a published image that boots."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from bake import publish
from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.publish import Published, check_published
from bake.verify import verify_image
from host.accel import kvm_works
from host.run import run
from tests.conftest import BUILD, REPO

pytestmark = pytest.mark.slow


def test_published_image_carries_a_manifest_that_matches_it(baked_image):
    m = baked_image.manifest
    assert m.version == baked_image.version and len(m.version) == 12
    assert m.pins == {"node": "22.23.3", "npm": "10.9.8", "openclaw": "2026.9.2",
                      "@openclaw/mattermost": "2026.9.2", "cpython": "3.12.3", "aws-cdk": "2.1148.1"}
    assert m.toolchains == {"go": "1.26", "rustc": "1.91", "cargo": "1.91", "python3": "3.10", "python3.12": "3.12",
                            "cdk": "2.1148.1"}
    assert m.qcow2.sha256 == file_sha256(baked_image.qcow2)
    assert m.qcow2.size == baked_image.qcow2.stat().st_size
    assert baked_image.qcow2.stat().st_mode & 0o222 == 0, "published images are read-only"
    assert "linux-image-virtual" in m.packages["dpkg"] and "grub-pc" in m.packages["dpkg"]
    assert m.packages["npm"]["openclaw"] == "2026.9.2" and m.packages["npm"]["aws-cdk"] == "2.1148.1"
    assert not {"libssl-dev", "libsqlite3-dev", "zlib1g-dev"} & set(m.packages["dpkg"]), "CPython's build deps left"
    assert "build-essential" in m.packages["dpkg"]
    assert m.baseline["/etc/passwd"]["owner"] == "root:root"
    assert m.baseline["/etc/passwd"]["mode"] == "0644"
    assert "/etc/machine-id" not in m.baseline
    schema = json.loads(baked_image.schema_path.read_text())
    assert "properties" in schema
    assert publish.paths(baked_image.qcow2.parent, "agent", m.version).log.exists()
    assert publish.newest(baked_image.qcow2.parent, "agent").manifest == m, "what the bake wrote is what it reads"


def test_unchanged_spec_is_a_cache_hit_that_bakes_nothing(baked_image):
    t0 = time.monotonic()
    out = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "bake.cli", "--build-dir", str(BUILD), "bake",
                          "images/agent.yaml"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert f"cache hit: {baked_image.qcow2}" in out.stdout
    assert time.monotonic() - t0 < 30  # generous bound: the figure itself is bench/bake.py's job


def test_cache_hit_notices_a_modified_image(baked_image, tmp_path):
    for path, _ in baked_image.chain:   # a layered image's whole chain: its layers are named relative to the top
        shutil.copy(path, tmp_path / path.name)
    copy = tmp_path / baked_image.qcow2.name
    os.chmod(copy, 0o644)
    with open(copy, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    image = Published(copy, baked_image.manifest_path, baked_image.manifest)
    check_published(image, full=False)  # same size: only --verify can tell
    with pytest.raises(BakeError, match="sha256 differs from its manifest"):
        check_published(image, full=True)
    with open(copy, "ab") as f:
        f.write(b"x")
    with pytest.raises(BakeError, match="size .* differs from its manifest"):
        check_published(image, full=False)


def test_verify_refuses_an_image_that_carries_identity_or_lacks_its_baked_plugins(baked_image, tmp_path):
    from host.appliance import Drive, appliance
    dirty = tmp_path / "dirty.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(baked_image.qcow2), str(dirty)])
    with appliance([Drive(dirty)]) as g:
        g.mount(g.inspect_os()[0], "/")
        g.write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
        g.write("/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
        g.write("/root/.bash_history", "ls\n")
        g.rm_rf("/opt/openclaw/plugins/mattermost")
        g.rm("/opt/openclaw/plugin-state/state/openclaw.sqlite")
        g.write("/opt/openclaw/plugin-state/config-journal-fingerprint.key", "k" * 32)
        g.rm("/usr/local/bin/go")                         # the toolchain link: `go` is then not on PATH
        g.rm("/usr/local/bin/agentd")
        g.rm("/usr/local/bin/cdk")                        # aws-cdk's link
        for ssl in g.glob_expand("/opt/python3.12/lib/python3.12/lib-dynload/_ssl*.so"):
            g.rm(ssl)                                     # a Python 3.12 without TLS
    problems = verify_image(dirty, baked_image.manifest.pins, tmp_path, toolchains=baked_image.manifest.toolchains)
    text = "; ".join(problems)
    assert "go version says" in text and "pinned 1.26" in text
    assert "agentd --help in the image fails" in text
    assert "cdk --version says" in text and "pinned 2.1148.1" in text
    assert "python3.12 cannot import ssl, venv, sqlite3, ensurepip: \"ModuleNotFoundError: No module named '_ssl'\"" \
        in text
    assert not [p for p in problems if p.startswith(("rustc", "cargo", "python3 "))], problems
    assert "/opt/openclaw/plugins holds nothing, pinned @openclaw/mattermost@2026.9.2" in text
    assert "/opt/openclaw/plugin-state/state/openclaw.sqlite missing" in text
    assert "/opt/openclaw/plugin-state/config-journal-fingerprint.key must not be in the golden image" in text
    assert "/etc/machine-id is not empty" in text
    assert "SSH host keys present: /etc/ssh/ssh_host_ed25519_key" in text
    assert "/root/.bash_history must not be in the golden image" in text
    assert baked_image.manifest.qcow2.sha256 == file_sha256(baked_image.qcow2), "the golden image was written"


def test_golden_image_boots_to_a_login_prompt_and_its_unconfigured_agentd_says_so_on_the_console(baked_image,
                                                                                                  tmp_path):
    """The image boots by itself; agentd, which has no identity or config before a clone, fails and its unit writes
    the line a --replace watches for on the serial console (deploy/console.py)."""
    from deploy.console import ConsoleWatch

    overlay, console = tmp_path / "boot.qcow2", tmp_path / "console.log"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(baked_image.qcow2), str(overlay)])
    accel = "kvm" if kvm_works() else "tcg"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", accel, "-m", "2048", "-smp", "2", "-nodefaults", "-display", "none",
         "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "none", "-serial", f"file:{console}",
         "-no-reboot"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = ConsoleWatch(console, failures=2)
    try:
        deadline = time.monotonic() + 600
        text = ""
        while time.monotonic() < deadline:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "login:" in text and watch.agentd_failed():
                break
            assert qemu.poll() is None, f"qemu exited: {qemu.stderr.read().decode()[-500:]}\n{text[-2000:]}"
            time.sleep(2)
        else:
            pytest.fail("no login prompt and no 'agentd failed' line within 600 s; console tail:\n" + text[-3000:])
        assert "Ubuntu 22.04" in text
        assert "agentfleet: agentd failed (exit-code, exited 2)" in text
    finally:
        qemu.kill()
        qemu.wait()
