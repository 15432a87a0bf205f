"""Real qcow2 chains for the gc tests: flat and layered images published by the bake's own publish(), agent root
overlays backed by them (absolute path, as the clone makes them), and the agents' state.json naming them."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.clone_support import publish as publish_flat_copy

T0 = time.time() - 30 * 86400      # images "published" a day apart from a month ago, oldest first


def qcow2(path: Path, backing: str = "", size: str = "16M") -> Path:
    """`qemu-img create`: a base (no backing) or an overlay backed by `backing` (a bare name or an absolute path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    argv += ["-F", "qcow2", "-b", backing, str(path)] if backing else [str(path), size]
    subprocess.run(argv, check=True, cwd=path.parent)
    return path


def _dated(images: Path, version: str, day: int) -> None:
    """Publication order is the manifests' mtime: day N of T0, so the order never depends on the clock's grain."""
    manifest = images / f"agent-{version}.manifest.json"
    os.utime(manifest, (T0 + day * 86400, T0 + day * 86400))


def publish_flat(images: Path, version: str, day: int, work: Path) -> Path:
    """A flat image: one qcow2, no backing file (tests/clone_support.publish, the bake's publish())."""
    source = qcow2(work / f"flat-{version}.qcow2")
    published = publish_flat_copy(source, images, version, schema={"type": "object"})
    (images / f"agent-{version}.log").write_text("bake log\n")
    _dated(images, version, day)
    return published


def base_layer(work: Path, key: str) -> Path:
    """A base layer as the layered bake leaves it in its cache: `agent-base-<key>.qcow2`."""
    return qcow2(work / "cache" / f"agent-base-{key}.qcow2")


def publish_layered(images: Path, version: str, day: int, base: Path, work: Path) -> Path:
    """A layered image: an app layer backed by `base` by bare name, published with publish(base_layer=base)."""
    from bake import publish
    app_dir = work / f"app-{version}"
    app_dir.mkdir(parents=True)
    (app_dir / base.name).symlink_to(base)
    top = qcow2(app_dir / "app-layer.qcow2", backing=base.name)
    image_json = {"name": "agent", "version": version, "baseline": {}, "packages": {}}
    published = publish.publish(images, "agent", version, top, image_json, None, None, base_layer=base)
    _dated(images, version, day)
    return published.qcow2


def agent_overlay(storage: Path, agent: str, image: Path) -> Path:
    """An agent's root disk as deploy/disks.py create_overlay makes it: backed by the image's qcow2, absolute."""
    return qcow2(storage / f"{agent}-root-{image.name.removeprefix('agent-')}", backing=str(image.resolve()))


def agent_state(state_dir: Path, agent: str, current: tuple[str, Path], previous: tuple[str, Path] | None = None,
                data_disk: Path | None = None) -> Path:
    """`<state dir>/<agent>/state.json` naming its current (and previous) image and root disk."""
    slot = lambda s: {"image_version": s[0], "root_disk": str(s[1])} if s else None  # noqa: E731
    path = state_dir / agent / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": agent, "uuid": "u", "mac": "m", "machine_id": "x",
                                "data_disk": str(data_disk or ""), "current": slot(current),
                                "previous": slot(previous), "pending": None, "snapshots": []}))
    return path


def names(images: Path) -> set[str]:
    return {p.name for p in images.iterdir()}
