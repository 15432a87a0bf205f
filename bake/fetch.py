"""The fetch phase: every download verified by sha256 (or npm integrity) on the host, then staged for the chroot.

The chroot never touches the network: what it installs is in the staging dir, proven here.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, TextIO

from bake.engine import check_engine
from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.inputs import AGENTD_SOURCE
from bake.spec import Artifact, NpmTree, Spec
from host.run import Command, run


def download(artifact: Artifact, cache: Path, log: Optional[TextIO] = None, timeout: float = 60) -> Path:
    """Fetch once into a content-addressed cache; a file whose sha256 differs from the pin is never used."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{artifact.sha256}-{Path(artifact.url).name}"
    if target.exists():
        return target
    part = target.with_suffix(target.suffix + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(artifact.url, timeout=timeout) as r, open(part, "wb") as f:
            while block := r.read(1 << 20):
                h.update(block)
                f.write(block)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise BakeError(f"artifacts.{artifact.name}: {artifact.url} answered {e.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        part.unlink(missing_ok=True)
        if isinstance(e, OSError) and getattr(e, "errno", None) == 28:
            raise BakeError(f"artifacts.{artifact.name}: no space left on device in {cache}") from None
        raise BakeError(f"artifacts.{artifact.name}: {artifact.url} unreachable ({getattr(e, 'reason', e)})") from None
    if h.hexdigest() != artifact.sha256:
        part.unlink(missing_ok=True)
        raise BakeError(f"artifacts.{artifact.name}.sha256: checksum mismatch for {artifact.url}: "
                        f"expected {artifact.sha256}, got {h.hexdigest()}")
    part.rename(target)
    if log:
        log.write(f"fetched {artifact.url} -> {target} (sha256 ok)\n")
    return target


def host_npm(spec: Spec, downloads: Path, tools: Path, log: Optional[TextIO] = None) -> list[str]:
    """The pinned Node and npm, unpacked on the host, so the lock and the cache are made by the versions we bake."""
    node_dir = tools / f"node-{spec.node.version}"
    npm_dir = tools / f"npm-{spec.npm.version}"
    for artifact, target in ((spec.node, node_dir), (spec.npm, npm_dir)):
        if not (target / ".complete").exists():
            tarball = download(artifact, downloads, log)
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(tarball) as tf:
                tf.extractall(target, filter="tar") if hasattr(tarfile, "tar_filter") else tf.extractall(target)
            (target / ".complete").touch()
    return [str(node_dir / "package" / "bin" / "node"), str(npm_dir / "package" / "bin" / "npm-cli.js")]


def fill_npm_cache(spec: Spec, tree: NpmTree, npm_cmd: list[str], cache: Path, scratch: Path,
                   log: Optional[TextIO] = None) -> str:
    """`npm ci` on the host checks every tarball of one locked tree against its package-lock's integrity and leaves
    them in `cache` (shared by every tree: npm's cache is content-addressed). Returns the engines.node that the
    fetched root package really declares (checked against the pinned Node)."""
    tree_dir = spec.tree_dir(tree.name)
    stamp = cache / f".verified-{file_sha256(tree_dir / 'package-lock.json')[:16]}"
    if stamp.exists():  # this exact tree was integrity-checked into the cache before (npm re-checks on install)
        engines = stamp.read_text()
        check_engine(spec.node.version, tree.version, engines, tree.name)
        return engines
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(tree_dir / name, scratch / name)
    node_bin_dir = str(Path(npm_cmd[0]).parent)
    run(Command((*npm_cmd, "ci", "--cache", str(cache), "--ignore-scripts", "--no-audit", "--no-fund",
                 "--prefer-offline", "--engine-strict=false"),
                env=(("PATH", node_bin_dir + ":/usr/bin:/bin"),), cwd=str(scratch)), log=log)
    manifest = json.loads((scratch / "node_modules" / tree.name / "package.json").read_text())
    engines = (manifest.get("engines") or {}).get("node", "*")
    if manifest.get("version") != tree.version:
        raise BakeError(f"artifacts.{tree.name}.version: fetched {tree.name} {manifest.get('version')}, "
                        f"pinned {tree.version}")
    check_engine(spec.node.version, tree.version, engines, tree.name)
    shutil.rmtree(scratch)
    stamp.write_text(engines)
    return engines


def stage(spec: Spec, version: str, staging: Path, downloads: Path, npm_cache: Path, plugin_cache: Path,
          log: Optional[TextIO] = None) -> None:
    """Lay out the staging dir that the agentfleet-common element copies into the chroot (docs/contracts.md).
    Every pinned file is downloaded and checked first: one that fails its sha256 leaves the staging dir untouched."""
    files = [(artifact, rel) for artifact, rel in ((spec.node, "node/node.tgz"), (spec.npm, "npm/npm.tgz")) if artifact]
    files += [(artifact, f"upstream/{artifact.name}/{Path(artifact.url).name}") for artifact in spec.upstream]
    if spec.cpython:
        files.append((spec.cpython, f"cpython/{Path(spec.cpython.url).name}"))
    fetched = [(download(artifact, downloads, log), rel) for artifact, rel in files]
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path, rel in fetched:
        (staging / rel).parent.mkdir(parents=True)
        _link_or_copy(path, staging / rel)
    for tree in spec.npm_trees:      # each tree's manifests under npm-trees/<name>/, the one npm cache beside them
        (staging / "npm-trees" / tree.name).mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(spec.tree_dir(tree.name) / name, staging / "npm-trees" / tree.name / name)
    if spec.npm_trees:
        shutil.copytree(npm_cache, staging / "npm-cache", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".verified-*", "_logs"))
    if spec.openclaw:
        shutil.copytree(plugin_cache, staging / "openclaw" / "plugin-cache", copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".verified-*", "_logs"))
    unit = AGENTD_SOURCE / "systemd" / "agentd.service"
    if not unit.exists():
        raise BakeError(f"agentd: {unit} missing; the image needs agentd's unit")
    shutil.copytree(AGENTD_SOURCE, staging / "agentd" / "agentd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(unit, staging / "agentd" / "agentd.service")
    for rel in spec.files.values():
        shutil.copytree(spec.images_dir / rel, staging / Path(rel).name)
    env = {
        "AGENTFLEET_IMAGE_NAME": spec.name,
        "AGENTFLEET_IMAGE_VERSION": version,
        "AGENTFLEET_NODE_VERSION": spec.node.version if spec.node else "",
        "AGENTFLEET_NPM_VERSION": spec.npm.version if spec.npm else "",
        "AGENTFLEET_OPENCLAW_VERSION": spec.openclaw.version if spec.openclaw else "",
        "AGENTFLEET_OPENCLAW_ALLOW_SCRIPTS": " ".join(spec.openclaw.allow_scripts) if spec.openclaw else "",
        "AGENTFLEET_OPENCLAW_PLUGINS": " ".join(spec.openclaw.plugin_specs) if spec.openclaw else "",
        "AGENTFLEET_CPYTHON_VERSION": spec.cpython.version if spec.cpython else "",
        "AGENTFLEET_NPM_TOOLS": " ".join(f"{t.name}@{t.version}" for t in spec.npm_tools),
    }
    (staging / "image.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))


def _link_or_copy(src, dst) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
