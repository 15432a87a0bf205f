"""Published golden images: `agent-<version>.qcow2` with its manifest beside it. An image without its manifest is
not published; "newest" is the manifest most recently renamed into place."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deploy.errors import CloneError


@dataclass(frozen=True)
class Image:
    version: str
    path: Path
    manifest: dict
    schema_path: Optional[Path]   # OpenClaw's config schema exported by the bake

    @property
    def baseline(self) -> dict:
        return self.manifest.get("baseline", {})


def _load(manifest_path: Path) -> Image:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise CloneError(f"image manifest {manifest_path}: unreadable ({e})") from None
    version = manifest.get("version") or manifest_path.name[len("agent-"):-len(".manifest.json")]
    qcow2 = manifest_path.with_name(f"agent-{version}.qcow2")
    if not qcow2.exists():
        raise CloneError(f"image {version}: manifest {manifest_path} has no {qcow2.name} beside it")
    schema = manifest_path.with_name(f"agent-{version}.openclaw-schema.json")
    return Image(version=str(version), path=qcow2, manifest=manifest, schema_path=schema if schema.exists() else None)


def find_image(images_dir: Path, wanted: Optional[str] = None) -> Image:
    """`wanted` is a version, a path to a .qcow2 (its manifest must be beside it) or None for the newest."""
    if wanted and (wanted.endswith(".qcow2") or "/" in wanted):
        path = Path(wanted)
        manifest = path.with_name(path.name[:-len(".qcow2")] + ".manifest.json")
        if not path.exists():
            raise CloneError(f"image {wanted}: no such file")
        if not manifest.exists():
            raise CloneError(f"image {wanted}: not published (no {manifest.name} beside it)")
        return _load(manifest)
    if wanted:
        manifest = images_dir / f"agent-{wanted}.manifest.json"
        if not manifest.exists():
            raise CloneError(f"image {wanted}: not published in {images_dir}")
        return _load(manifest)
    manifests = sorted(images_dir.glob("agent-*.manifest.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if not manifests:
        raise CloneError(f"no published image in {images_dir} (run `make bake`)")
    return _load(manifests[-1])
