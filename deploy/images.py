"""The clone's view of the published golden images; bake/publish.py is the one reader of their layout (file names,
manifest, "newest"), so the bake and the clone can never disagree on which image is which."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bake import publish
from bake.errors import BakeError
from deploy.errors import CloneError

IMAGE_NAME = "agent"


@dataclass(frozen=True)
class Image:
    version: str
    path: Path
    manifest: publish.Manifest
    schema_path: Optional[Path]   # OpenClaw's config schema exported by the bake
    manifest_path: Optional[Path] = None

    @property
    def baseline(self) -> dict:
        return self.manifest.baseline

    @property
    def chain(self) -> list[tuple[Path, publish.ImageFile]]:
        """Every file of the image, the base layer first (the qcow2 alone when flat): bake/publish.py says which."""
        return publish.Published(self.path, self.manifest_path or self.path, self.manifest).chain


def find_image(images_dir: Path, wanted: Optional[str] = None) -> Image:
    """`wanted` is a version, a path to a .qcow2 (its manifest must be beside it) or None for the newest."""
    try:
        found = _find(images_dir, wanted)
    except BakeError as e:  # a malformed manifest: the bake's error, the clone's at this edge
        raise CloneError(str(e)) from None
    if not found.qcow2.exists():
        raise CloneError(f"image {found.version}: manifest {found.manifest_path} has no {found.qcow2.name} beside it")
    return Image(version=found.version, path=found.qcow2, manifest=found.manifest, schema_path=found.schema_path,
                 manifest_path=found.manifest_path)


def _find(images_dir: Path, wanted: Optional[str]) -> publish.Published:
    if wanted and (wanted.endswith(".qcow2") or "/" in wanted):
        path = Path(wanted)
        if not path.exists():
            raise CloneError(f"image {wanted}: no such file")
        found = publish.beside(path)
        if found is None:
            raise CloneError(f"image {wanted}: not published (no manifest beside it)")
        return found
    if wanted:
        found = publish.find(images_dir, IMAGE_NAME, wanted)
        if found is None:
            raise CloneError(f"image {wanted}: not published in {images_dir}")
        return found
    found = publish.newest(images_dir, IMAGE_NAME)
    if found is None:
        raise CloneError(f"no published image in {images_dir} (run `make bake`)")
    return found
