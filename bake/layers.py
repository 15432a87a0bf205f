"""A layered image (the default; `bake --flat` makes one self-contained qcow2): a chain of qcow2 files.

The base layer is the base stage's tree as a disk of its own (MBR, ext4, grub), baked once per base layer key and
cached; an app layer is a thin qcow2 overlay (backing file by relative name, so the chain moves as a directory)
holding only what differs from the layer under it, written through one libguestfs launch: no new file system, no
grub run. The first image on a base layer holds what the app stage added, changed or removed in the base tree; a
bump stacks its app layer on the newest published image of the same base (its parent: the app tree's index of every
image is kept, so the diff is against the parent's tree) while the chain has fewer than MAX_APP_LAYERS app layers,
and starts again on the base layer when it is full. A pin bump then costs the app tree, a tar diff and one small
write, and sends a host that holds the previous version only what the bump changed.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from bake import assemble, publish, tree_diff
from bake.errors import BakeError
from bake.hashing import digest
from bake.publish import Published
from bake.spec import Spec
from bake.tree_diff import Entry, TreeDiff, xattr_bytes
from bake.verify import HISTORY_FILES, SECRET_FILES
from host.appliance import Drive, appliance
from host.run import run

# How a base layer is assembled from its tree (assemble.py's disk layout, finish_tree): bump it when that changes,
# so cached and published base layers of the old assembly are not reused under the same key.
BASE_ASSEMBLY = "2"
KEEP_CACHED = 3   # base layers kept in the cache (the full and the small image's, one older)
# App layers in one chain at most: each one more is one more qcow2 lookup level for the guest's reads of what it does
# not hold and one more file hosts must keep while an image above it is used; a full chain restarts on the base layer.
MAX_APP_LAYERS = 3
# What the app stage's identity-free element removes and verify refuses (bake/verify.py identity_problems), left out
# of the base layer: else the build's SSH host keys, logs and apt lists would stay in the base layer's file and in the
# guest's free blocks, under the app layer's removal of them.
LEFT_OUT_FILES = {"etc/machine-id", "var/lib/dbus/machine-id", "var/lib/systemd/random-seed",
                  "var/lib/systemd/credential.secret", *(p.lstrip("/") for p in (*SECRET_FILES, *HISTORY_FILES))}
LEFT_OUT_PREFIXES = ("etc/ssh/ssh_host_", "var/log/", "var/lib/dhcp/", "var/lib/apt/lists/", "var/cache/apt/")
KEPT_FILES = {"var/lib/apt/lists/lock"}   # apt's lock stays, as identity-free leaves it


def base_layer_key(spec: Spec, base_key: str) -> str:
    """The base stage's inputs (its tree's key) and what turns the tree into a disk (size, file system, assembly)."""
    return digest({"base_key": base_key, "disk": json.dumps([spec.disk.size_gb, spec.disk.filesystem]),
                   "assembly": BASE_ASSEMBLY})[:16]


def base_layer_name(name: str, key: str) -> str:
    """`<name>-base-<key>.qcow2`: never matched as an image (an image is named by its manifest, which it lacks)."""
    return f"{name}-base-{key}.qcow2"


def left_out(name: str, entry: Entry) -> bool:
    """Whether the base layer leaves out this path of the base tree (directories stay). The tree diff compares the
    app tree with the base tree without them, so an app tree that kept one would write it into the app layer."""
    if entry.kind == "dir":
        return False
    return name in LEFT_OUT_FILES or (name.startswith(LEFT_OUT_PREFIXES) and name not in KEPT_FILES)


def in_base_layer(base_tree: dict[str, Entry]) -> dict[str, Entry]:
    """The base tree's index as the base layer holds it."""
    return {name: entry for name, entry in base_tree.items() if not left_out(name, entry)}


def find_base_layer(name: str, images: Path, cache: Path) -> Optional[Path]:
    """The published base layer if the images dir has it (the app layer must be written against the very bytes hosts
    already hold: a rebuilt disk of the same tree differs in UUIDs and times), else the cached one, else None."""
    return next((p for p in (images / name, cache / name) if p.is_file()), None)


@dataclass(frozen=True)
class Parent:
    """A published image a bump stacks its app layer on, and its app tree as the guest sees it through its chain."""
    image: Published
    tree: dict[str, Entry]


def find_parent(images: Path, image_name: str, base_layer: str, cache: Path, version: str) -> Optional[Parent]:
    """The newest published image of `image_name` on `base_layer` whose chain has room for one more app layer and
    whose app tree index this build kept; None: the app layer goes straight on the base layer. `version` (the one
    being baked, e.g. with --force) is never its own parent."""
    for image in reversed(publish.published(images, image_name)):
        layers = image.manifest.layers
        if image.version == version or not layers or layers[0].file != base_layer:
            continue
        if len(layers) - 1 >= MAX_APP_LAYERS:
            return None   # the newest chain on this base is full: start a new one rather than stack on an older one
        tree = tree_diff.load_index(tree_diff.index_path(cache, image_name, image.version))
        return Parent(image, tree) if tree is not None else None
    return None


def bake_base_layer(spec: Spec, name: str, base_tar: Path, base_tree: dict[str, Entry], cache: Path, work: Path,
                    log: Optional[TextIO] = None) -> Path:
    """The base tree as a bootable disk, as a flat bake makes one (minus the image manifest and what left_out
    names), into the cache. `base_tree`: the tar's tree_diff index."""
    root, raw, qcow2 = work / "base-root", work / "base-disk.raw", work / "base-disk.qcow2"
    assemble.unpack(base_tar, root, log)
    for path, entry in base_tree.items():
        if left_out(path, entry):
            (root / path).unlink(missing_ok=True)
    assemble.finish_tree(root, None)
    assemble.make_disk(root, raw, spec.disk.size_gb, log)
    shutil.rmtree(root)
    assemble.install_bootloader(raw, log)
    assemble.compress(raw, qcow2, log)
    raw.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    for old in sorted(cache.glob("*-base-*.qcow2"), key=lambda p: p.stat().st_mtime)[:-(KEEP_CACHED - 1)]:
        old.unlink()
    os.chmod(qcow2, 0o444)
    qcow2.rename(cache / name)
    return cache / name


def app_layer(below: list[Path], diff: TreeDiff, changes_tar: Path, new: dict[str, Entry], image_json: dict,
              work: Path, log: Optional[TextIO] = None) -> Path:
    """The app layer in `work`, compressed, on the chain `below` (bottom first; each file linked into `work` under
    its name, so every relative backing name resolves there): the diff's removals, then the changed members
    (changes_tar) with their xattrs, then what finish_tree writes, all in one appliance launch. Returns the
    compressed overlay, whose backing file is the top of `below` by its bare name."""
    for layer in below:
        linked = work / layer.name
        linked.unlink(missing_ok=True)
        linked.symlink_to(layer.resolve())
    top = below[-1].name
    overlay, compressed = work / "app-layer.qcow2", work / "app-layer.compressed.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", top, str(overlay)], log=log)
    with appliance([Drive(overlay)]) as g:
        g.mount_options("noatime", "/dev/sda1", "/")
        try:
            for name in diff.removed:
                g.rm_rf(f"/{name}")
            if diff.changed:
                g.tar_in(str(changes_tar), "/")
            for name in diff.changed:
                for key, value in new[name].xattrs:
                    raw = xattr_bytes(value)
                    g.lsetxattr(key, raw, len(raw), "/" if name == "." else f"/{name}")
            assemble.finish_guest(g, image_json)
        except RuntimeError as e:
            raise BakeError(f"app layer: writing the app stage's changes failed: {str(e).splitlines()[0][:300]}") \
                from None
    # only the clusters the overlay holds are copied (-B: the output keeps the backing file), zstd-compressed
    run(["qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2", "-o", "compression_type=zstd", "-B", top,
         "-F", "qcow2", "-m", "4", "-W", str(overlay), str(compressed)], log=log)
    overlay.unlink()
    return compressed
