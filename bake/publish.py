"""Published images: the one reader and writer of the layout in an images dir, for the bake, the clone and the tests.

`<name>-<version>.qcow2` (read-only), `.openclaw-schema.json` and `.log` beside it, and `<name>-<version>.manifest.json`
renamed in last: an image is published when its manifest is in place, so a reader never sees a partial image and a
failed bake leaves earlier images untouched. "Newest" is the manifest most recently renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from bake.errors import BakeError
from bake.hashing import file_sha256

MANIFEST_SUFFIX = ".manifest.json"
SCHEMA_SUFFIX = ".openclaw-schema.json"


@dataclass(frozen=True)
class ImageFile:
    """The published qcow2 as its manifest records it: checked on every cache hit (size) and --verify (sha256)."""
    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """`<name>-<version>.manifest.json`: the image's /etc/agentfleet/image.json plus what publication adds."""
    name: str
    version: str
    qcow2: ImageFile
    built_at: str = ""
    pins: dict[str, str] = field(default_factory=dict)       # node, npm, openclaw, plugins -> version
    inputs: dict[str, str] = field(default_factory=dict)     # input name -> sha256 (what the version hashes)
    base_key: str = ""
    base: dict[str, str] = field(default_factory=dict)       # refresh token, built_at of the base stage's tree
    toolchains: dict[str, str] = field(default_factory=dict)  # command -> version prefix verify checked
    packages: dict[str, dict] = field(default_factory=dict)  # dpkg / npm: name -> version
    baseline: dict[str, dict] = field(default_factory=dict)  # in-VM path -> agentd.vm_files.FileState.to_json()
    openclaw_schema: str = ""                                # file name of the exported schema, beside the qcow2
    # what the image runs for agentd to check (bake/spec.py); manifests from before the small image carry both
    services: tuple[str, ...] = ("agentd", "openclaw")
    tree_size: int = 0                                       # bytes of the root tree before it became a disk
    # in-VM dirs of the OpenClaw plugins baked in (agentd.vm_files.OPENCLAW_PLUGINS_DIR); none before issue 15
    openclaw_plugins: tuple[str, ...] = ()
    # a layered image (bake --layered): every file of its qcow2 chain, the base layer first, `qcow2` (the app layer,
    # whose backing file is the one before it, by name, in the same dir) last; empty for a flat image
    layers: tuple[ImageFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        """Parse a manifest; BakeError names the file and the entry at fault."""
        try:
            qcow2 = data["qcow2"]
            image_file = ImageFile(str(qcow2.get("file") or f"{data['name']}-{data['version']}.qcow2"),
                                   int(qcow2["size"]), str(qcow2["sha256"]))
            known = {f for f in cls.__dataclass_fields__} - {"qcow2"}
            fields = {k: v for k, v in data.items() if k in known}
            for key in ("services", "openclaw_plugins"):
                if key in fields:
                    fields[key] = tuple(str(s) for s in fields[key])
            if "layers" in fields:
                fields["layers"] = tuple(ImageFile(str(f["file"]), int(f["size"]), str(f["sha256"]))
                                         for f in fields["layers"])
            manifest = cls(qcow2=image_file, **fields)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BakeError(f"{where}: malformed image manifest ({type(e).__name__}: {e})") from None
        if not manifest.version or not manifest.name:
            raise BakeError(f"{where}: malformed image manifest (no name or version)")
        if manifest.layers and (len(manifest.layers) < 2 or manifest.layers[-1] != manifest.qcow2):
            raise BakeError(f"{where}: malformed image manifest (layers must end with the qcow2 itself)")
        return manifest


@dataclass(frozen=True)
class ImagePaths:
    """Where one image's files are (or will be) in an images dir."""
    qcow2: Path
    manifest: Path
    schema: Path
    log: Path


def paths(images_dir: Path, name: str, version: str) -> ImagePaths:
    stem = f"{name}-{version}"
    return ImagePaths(images_dir / f"{stem}.qcow2", images_dir / f"{stem}{MANIFEST_SUFFIX}",
                      images_dir / f"{stem}{SCHEMA_SUFFIX}", images_dir / f"{stem}.log")


@dataclass(frozen=True)
class Published:
    qcow2: Path
    manifest_path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def chain(self) -> list[tuple[Path, ImageFile]]:
        """Every file the image is made of, the bottom layer first: the qcow2 alone for a flat image."""
        files = self.manifest.layers or (self.manifest.qcow2,)
        return [(self.qcow2.parent / f.file, f) for f in files]

    @property
    def schema_path(self) -> Optional[Path]:
        """OpenClaw's config schema exported beside the image, or None (an image published without one)."""
        if not self.manifest.openclaw_schema:
            return None
        path = self.qcow2.parent / self.manifest.openclaw_schema
        return path if path.exists() else None


def load(manifest_path: Path) -> Published:
    """The image a manifest publishes (the qcow2 may be missing: check_published says so)."""
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise BakeError(f"{manifest_path}: unreadable image manifest ({e})") from None
    manifest = Manifest.from_json(data, str(manifest_path))
    return Published(manifest_path.parent / manifest.qcow2.file, manifest_path, manifest)


def find(images_dir: Path, name: str, version: str) -> Optional[Published]:
    manifest = paths(images_dir, name, version).manifest
    return load(manifest) if manifest.exists() else None


def beside(qcow2: Path) -> Optional[Published]:
    """The image published as `qcow2` (its manifest beside it), or None when it is not published."""
    manifest = qcow2.with_name(qcow2.name.removesuffix(".qcow2") + MANIFEST_SUFFIX)
    return load(manifest) if manifest.exists() else None


def published(images_dir: Path, name: str) -> list[Published]:
    """Every published image of `name`, oldest first: by the time its manifest was renamed in, then by name."""
    manifests = sorted(images_dir.glob(f"{name}-*{MANIFEST_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
    return [load(m) for m in manifests]


def newest(images_dir: Path, name: str) -> Optional[Published]:
    every = published(images_dir, name)
    return every[-1] if every else None


def stacked_on(images_dir: Path, image: Published) -> list[Published]:
    """The published images whose chain holds `image`'s qcow2 as a layer under them (their app layers stack on it):
    rewriting or removing it would break them."""
    name = image.qcow2.name
    return [other for other in published(images_dir, image.manifest.name)
            if other.qcow2.name != name and any(f.file == name for f in other.manifest.layers)]


def check_published(image: Published, full: bool) -> None:
    """Size always (instant); the full sha256 only when asked (it reads the whole file). A layered image: each layer,
    and that each one's backing file is the layer before it (the manifest describes the chain the guest sees)."""
    chain = image.chain
    for i, (path, want) in enumerate(chain):
        if not path.exists():
            raise BakeError(f"{path}: listed by its manifest but missing")
        size = path.stat().st_size
        if size != want.size:
            raise BakeError(f"{path}: size {size} differs from its manifest ({want.size}); the file was "
                            f"modified after publication: delete it and its manifest to rebake")
        if full and file_sha256(path) != want.sha256:
            raise BakeError(f"{path}: sha256 differs from its manifest; delete it and its manifest to rebake")
        if (found := backing_mismatch(chain, i, path)) is not None:
            raise BakeError(f"{path}: backing file {found[0] or '(none)'!r}, its manifest's chain says "
                            f"{found[1] or '(none)'!r}")


def backing_mismatch(chain: list[tuple[Path, ImageFile]], i: int, path: Path) -> Optional[tuple[str, str]]:
    """(the backing file name `path`'s qcow2 header records, the one the chain wants there: the name of the layer
    before it, none for the bottom) when they differ, for `path` standing as layer `i` of `chain`; None when they
    agree or the image is flat. `path` may be a copy not yet renamed in (a push's verified file)."""
    if len(chain) < 2:
        return None
    backing, expected = backing_name(path), chain[i - 1][0].name if i else ""
    return (backing, expected) if backing != expected else None


def backing_name(qcow2: Path) -> str:
    """The backing file name a qcow2 header records ('' for none), read without qemu-img (cache hits check it)."""
    try:
        with open(qcow2, "rb") as f:
            header = f.read(20)
            if header[:4] != b"QFI\xfb":
                raise BakeError(f"{qcow2}: not a qcow2 file")
            offset, size = int.from_bytes(header[8:16], "big"), int.from_bytes(header[16:20], "big")
            if not offset:
                return ""
            f.seek(offset)
            return f.read(size).decode("utf-8", "replace")
    except OSError as e:
        raise BakeError(f"{qcow2}: unreadable ({e.strerror or e})") from None


def publish(images_dir: Path, name: str, version: str, qcow2: Path, image_json: dict, schema: Optional[Path],
            log_path: Optional[Path], keep_source: bool = False, base_layer: Optional[Path] = None,
            parent: Optional["Published"] = None) -> Published:
    """Publish `qcow2` (moved in, or copied with keep_source) with its schema and log; the manifest goes last.
    `image_json` is the image's /etc/agentfleet/image.json; the manifest adds the qcow2's size and sha256.
    `base_layer`: `qcow2` is a layered image's app layer, backed by that file (by its name): it is published beside
    it unless the images dir has it already (other images share it), and the manifest lists both as `layers`.
    `parent`: `qcow2` is an app layer stacked on that published image (in the same dir), backed by its qcow2: the
    manifest's `layers` are the parent's and this one."""
    images_dir.mkdir(parents=True, exist_ok=True)
    final = paths(images_dir, name, version)
    top = {"file": final.qcow2.name, "size": qcow2.stat().st_size, "sha256": file_sha256(qcow2)}
    data = dict(image_json, name=name, version=version, qcow2=top, openclaw_schema=final.schema.name if schema else "")
    base_final = images_dir / base_layer.name if base_layer else None
    if parent:
        if parent.qcow2.parent.resolve() != images_dir.resolve():
            raise BakeError(f"publish: {parent.qcow2} is not in {images_dir}: a chain's layers name each other by "
                            f"bare name, in one dir")
        data["layers"] = [asdict(f) for f in parent.manifest.layers] + [top]
    elif base_layer:
        data["layers"] = [{"file": base_layer.name, "size": base_layer.stat().st_size,
                           "sha256": file_sha256(base_layer)}, top]
    manifest = Manifest.from_json(data, str(final.manifest))
    staged = []
    try:
        if base_final and not base_final.exists():
            tmp = base_final.with_name(f".{base_final.name}.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(base_layer.resolve(), tmp)   # the build cache's copy, when on the same file system
            except OSError:
                shutil.copyfile(base_layer, tmp)
            _fsync(tmp)
            os.chmod(tmp, 0o444)
            tmp.rename(base_final)   # shared by every image of this base, and useless alone: no manifest of its own
        for src, dst, move in ((qcow2, final.qcow2, not keep_source), (schema, final.schema, False)):
            if src is None:
                continue
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.move(src, tmp) if move else shutil.copyfile(src, tmp)
            _fsync(tmp)
            staged.append((tmp, dst))
        os.chmod(staged[0][0], 0o444)  # published images are read-only
        tmp_manifest = final.manifest.with_name(f".{final.manifest.name}.tmp")
        tmp_manifest.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n")
        _fsync(tmp_manifest)
        for tmp, dst in staged:
            tmp.rename(dst)
        if log_path:
            shutil.copy2(log_path, final.log)
        tmp_manifest.rename(final.manifest)  # last: this is the moment the image exists
        _fsync_dir(images_dir)
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise BakeError(f"publish to {images_dir} failed: {e.strerror or e}") from None
    return Published(final.qcow2, final.manifest, manifest)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
