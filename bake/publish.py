"""Published images: atomic publication, lookup of the newest one, and the cache-hit check.

An image is published when its manifest is in place; the manifest is renamed in last, so a reader never sees a
partial image, and a failed bake leaves earlier images untouched.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bake.errors import BakeError
from bake.hashing import file_sha256


@dataclass(frozen=True)
class Published:
    qcow2: Path
    manifest_path: Path
    manifest: dict

    @property
    def version(self) -> str:
        return self.manifest["version"]


def paths(images_dir: Path, name: str, version: str) -> dict[str, Path]:
    stem = images_dir / f"{name}-{version}"
    return {"qcow2": stem.with_suffix(".qcow2"), "manifest": Path(f"{stem}.manifest.json"),
            "schema": Path(f"{stem}.openclaw-schema.json"), "log": Path(f"{stem}.log")}


def find(images_dir: Path, name: str, version: str) -> Optional[Published]:
    p = paths(images_dir, name, version)
    if not p["manifest"].exists():
        return None
    return Published(p["qcow2"], p["manifest"], json.loads(p["manifest"].read_text()))


def newest(images_dir: Path, name: str) -> Optional[Published]:
    manifests = sorted(images_dir.glob(f"{name}-*.manifest.json"), key=lambda p: p.stat().st_mtime)
    for m in reversed(manifests):
        qcow2 = Path(str(m).removesuffix(".manifest.json") + ".qcow2")
        if qcow2.exists():
            return Published(qcow2, m, json.loads(m.read_text()))
    return None


def check_published(image: Published, full: bool) -> None:
    """Size always (instant); the full sha256 only when asked (it reads the whole file)."""
    want = image.manifest["qcow2"]
    if not image.qcow2.exists():
        raise BakeError(f"{image.qcow2}: listed by its manifest but missing")
    size = image.qcow2.stat().st_size
    if size != want["size"]:
        raise BakeError(f"{image.qcow2}: size {size} differs from its manifest ({want['size']}); the file was "
                        f"modified after publication: delete it and its manifest to rebake")
    if full and file_sha256(image.qcow2) != want["sha256"]:
        raise BakeError(f"{image.qcow2}: sha256 differs from its manifest; delete it and its manifest to rebake")


def publish(images_dir: Path, name: str, version: str, qcow2: Path, manifest: dict, schema: Path,
            log_path: Path) -> Published:
    images_dir.mkdir(parents=True, exist_ok=True)
    final = paths(images_dir, name, version)
    manifest = dict(manifest, qcow2={"file": final["qcow2"].name, "size": qcow2.stat().st_size,
                                     "sha256": file_sha256(qcow2)},
                    openclaw_schema=final["schema"].name)
    staged = []
    try:
        for src, dst, move in ((qcow2, final["qcow2"], True), (schema, final["schema"], False)):
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.move(src, tmp) if move else shutil.copy2(src, tmp)
            _fsync(tmp)
            staged.append((tmp, dst))
        os.chmod(staged[0][0], 0o444)  # published images are read-only
        tmp_manifest = final["manifest"].with_name(f".{final['manifest'].name}.tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _fsync(tmp_manifest)
        for tmp, dst in staged:
            tmp.rename(dst)
        shutil.copy2(log_path, final["log"])
        tmp_manifest.rename(final["manifest"])  # last: this is the moment the image exists
        _fsync_dir(images_dir)
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise BakeError(f"publish to {images_dir} failed: {e.strerror or e}") from None
    return Published(final["qcow2"], final["manifest"], manifest)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
