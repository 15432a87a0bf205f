"""The npm cache from which the bake installs OpenClaw's official plugins into the image, offline.

OpenClaw trusts a channel plugin (opens its ingress queue) only when it installed the plugin itself from the official
npm package and recorded that in the state database it runs with. So the openclaw element runs
`openclaw plugins install <name>@<version>` in the chroot, offline, against this cache: the package's registry
document and its tarball, whose integrity must be the one the committed package-lock pins.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional, TextIO

from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.spec import Spec
from host.run import Command, run

# What OpenClaw 2026.9 runs for `plugins install <spec>`: a registry lookup, then an install with these flags.
VIEW_FIELDS = ("name", "version", "dist.integrity", "dist.shasum", "openclaw")
INSTALL_FLAGS = ("--omit", "dev", "--omit", "peer", "--legacy-peer-deps", "--ignore-scripts", "--no-audit",
                 "--no-fund")


def fill_plugin_cache(spec: Spec, npm_cmd: list[str], cache: Path, scratch: Path,
                      log: Optional[TextIO] = None) -> None:
    """Fill `cache` with exactly what the plugins' offline install needs; refuse a tarball the lock does not pin."""
    package_lock = spec.openclaw_dir / "package-lock.json"
    key = hashlib.sha256(json.dumps([spec.openclaw.plugin_specs, file_sha256(package_lock)]).encode()).hexdigest()
    stamp = cache / f".verified-{key[:16]}"
    if stamp.exists():
        return
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    if not spec.openclaw.plugins:
        stamp.touch()
        return
    pins = json.loads(package_lock.read_text()).get("packages", {})
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = (("PATH", str(Path(npm_cmd[0]).parent) + ":/usr/bin:/bin"),)
    for name, version in spec.openclaw.plugins:
        pinned = pins.get(f"node_modules/{name}", {})
        if pinned.get("version") != version or not pinned.get("integrity"):
            raise BakeError(f"artifacts.openclaw.plugins.{name}: {package_lock.name} does not pin {name}@{version}; "
                            f"run `make lock`")
        said = run(Command((*npm_cmd, "view", f"{name}@{version}", *VIEW_FIELDS, "--json", "--loglevel", "error",
                            "--cache", str(cache)), env=env, cwd=str(scratch)), log=log, capture=True)
        integrity = json.loads(said).get("dist.integrity")
        if integrity != pinned["integrity"]:
            raise BakeError(f"artifacts.openclaw.plugins.{name}: the registry's {name}@{version} has integrity "
                            f"{integrity}, {package_lock.name} pins {pinned['integrity']}")
    (scratch / "package.json").write_text(json.dumps(
        {"private": True, "dependencies": dict(spec.openclaw.plugins)}, indent=2) + "\n")
    run(Command((*npm_cmd, "install", *INSTALL_FLAGS, "--cache", str(cache)), env=env, cwd=str(scratch)), log=log)
    for path, entry in json.loads((scratch / "package-lock.json").read_text())["packages"].items():
        if not path or entry.get("inBundle"):
            continue  # the root, and files inside a tarball that is itself checked
        pinned = pins.get(path, {})
        if entry.get("integrity") != pinned.get("integrity"):
            raise BakeError(f"artifacts.openclaw.plugins: the plugins' install took {path} "
                            f"{entry.get('version')} ({entry.get('integrity')}), which {package_lock.name} "
                            f"does not pin; run `make lock`")
    shutil.rmtree(scratch)
    stamp.touch()
