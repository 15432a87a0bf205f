"""Garbage collection of an images dir (`bake gc` on the workstation, `fleet gc` on each hypervisor): which files may
go, and removing them in an order that never leaves a half-collected image published.

Why: every bake publishes an image (a layered one maybe a base layer too) and every push brings them to each host;
nothing else ever removes one. Why so careful: what agents use (bake/gc_usage.py) must stay, and so must what a
clone, a rollout or a rollback would take next. So:

- **kept**: the `keep` newest published images; every image any file of which is in an agent disk's backing chain,
  or whose version an agent's state names (current, previous, pending); every file a kept image's manifest lists
  (its base layer) or a manifest of another image name lists; a file no manifest names that changed within
  RECENT_S (an image being published: its qcow2 and base layer are renamed in before its manifest);
- **removed**, in this order: the other published images' manifests (synced to disk first: from then on the image
  is not published), their qcow2, schema and log; leftovers (hidden `.part`, `.tmp`, `.verified` files untouched
  for LEFTOVER_AGE_S) and files of images whose manifest is gone; the base layers no kept image's chain names;
  on the workstation, cached base layers beyond the newest `cache_keep` (bake/layers.py KEEP_CACHED).

plan() only reads (names, stats, qcow2 headers) and returns the whole decision; collect() carries it out."""
from __future__ import annotations

import argparse
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bake import publish, tree_diff
from bake.errors import BakeError
from bake.gc_usage import AgentDirs, Usage, Uses, backing_chain, survey

KEEP = 3                       # published images kept besides those in use: what a clone, rollout or rollback takes
RECENT_S = 3600                # a file no manifest names, changed this recently, may be an image being published
LEFTOVER_AGE_S = 86400         # a hidden .part/.tmp/.verified untouched this long is no push or bake at work
LEFTOVER_SUFFIXES = (".part", ".tmp", ".verified")
IMAGE_SUFFIXES = (".qcow2", publish.SCHEMA_SUFFIX, ".log")   # an image's files beside its manifest


@dataclass(frozen=True)
class Kept:
    """A file that stays though it might have gone, and why (an image by its qcow2): what an operator reads to see
    why space was not freed."""
    path: Path
    kind: str                  # image | base layer | orphan | leftover | cached base layer
    reason: str

    def to_json(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Removal:
    """A file to remove. `freed`: the bytes its removal gives back (0 while another hard link to it stays)."""
    path: Path
    kind: str                  # manifest | image file | orphan | leftover | base layer | cached base layer
    #                            | cached tree index
    reason: str
    size: int
    freed: int

    def to_json(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "reason": self.reason, "size": self.size,
                "freed": self.freed}


@dataclass(frozen=True)
class Plan:
    """The decision for one images dir: what is kept and why, and `removals` in the order they must happen."""
    images_dir: Path
    keep: int
    kept: tuple[Kept, ...]
    removals: tuple[Removal, ...]

    @property
    def bytes_freed(self) -> int:
        return sum(r.freed for r in self.removals)

    @property
    def images_kept(self) -> int:
        return sum(1 for k in self.kept if k.kind == "image")

    def to_json(self) -> dict:
        return {"images_dir": str(self.images_dir), "keep": self.keep, "kept": [k.to_json() for k in self.kept],
                "removals": [r.to_json() for r in self.removals], "bytes_freed": self.bytes_freed}

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """A plan a host sent back (fleet gc), as the type the workstation renders its own with."""
        return cls(Path(data["images_dir"]), int(data["keep"]),
                   tuple(Kept(Path(k["path"]), k["kind"], k["reason"]) for k in data["kept"]),
                   tuple(Removal(Path(r["path"]), r["kind"], r["reason"], int(r["size"]), int(r["freed"]))
                         for r in data["removals"]))


@dataclass(frozen=True)
class Collected:
    """What collect() removed; `error` is the one line that stopped it ('' when every removal was done)."""
    removed: tuple[Removal, ...]
    error: str = ""

    @property
    def bytes_freed(self) -> int:
        return sum(r.freed for r in self.removed)


def keep_count(text: str) -> int:
    """`--keep N` of both CLIs: a whole number, at least 1 (a host without its newest image could clone nothing)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: the newest image at least must be kept")
    return n


def plan(images_dir: Path, agents: Optional[AgentDirs] = None, keep: int = KEEP, name: str = "agent",
         now: Optional[float] = None, cache_dir: Optional[Path] = None, cache_keep: int = 3) -> Plan:
    """What to keep and remove in `images_dir` (and among `cache_dir`'s cached base layers). BakeError for a
    manifest, a state or an agent disk it cannot read: then what is free is unknown and nothing may go."""
    if keep < 1:
        raise BakeError(f"--keep {keep}: the newest image at least must be kept")
    return _Planner(Path(os.path.abspath(images_dir)), survey(agents or AgentDirs(), images_dir), keep, name,
                    time.time() if now is None else now).plan(cache_dir, cache_keep)


class _Planner:
    """One plan's working state: what is protected, kept and removed so far (each path once)."""

    def __init__(self, images_dir: Path, usage: Usage, keep: int, name: str, now: float):
        self.images_dir, self.usage, self.keep, self.name, self.now = images_dir, usage, keep, name, now
        self.files = sorted(p for p in images_dir.iterdir() if p.is_file()) if images_dir.is_dir() else []
        self.protected = Uses()            # files a kept image (or another name's image) needs
        self.named = Uses()                # files some manifest lists, before anything is removed
        self.kept: dict[str, Kept] = {}
        self.removals: dict[str, tuple[Path, str, str]] = {}
        self.cache_dir: Optional[Path] = None
        self.doomed_versions: set[str] = set()

    def plan(self, cache_dir: Optional[Path], cache_keep: int) -> Plan:
        doomed = self._images()
        for image in doomed:               # manifests first: from their removal on, these images are not published
            self._remove(image.manifest_path, "manifest", self._why_doomed(image))
        layers: list[tuple[Path, str]] = []
        for image in doomed:
            for path in self._own_files(image):
                if not self._needed(path):
                    self._remove(path, "image file", self._why_doomed(image))
            layers += [(p, f"a layer of image {image.version}, which goes") for p, _ in image.chain[:-1]]
        layers += self._loose_files()
        for path, why in layers:
            self._layer(path, why)
        if cache_dir is not None:
            self.cache_dir = Path(os.path.abspath(cache_dir))
            self._cache(self.cache_dir, cache_keep)
        return Plan(self.images_dir, self.keep, tuple(self.kept.values()), _sized(list(self.removals.values())))

    def _images(self) -> list[publish.Published]:
        """Decide every published image; returns those that go, and protects the files of those that stay."""
        manifests = []
        for path in self.files:
            if path.name.endswith(publish.MANIFEST_SUFFIX) and not path.name.startswith("."):
                try:
                    manifests.append(publish.load(path))
                except BakeError as e:
                    raise BakeError(f"{e}; nothing is removed until it is fixed or removed") from None
        for image in manifests:
            for path in _image_files(image):
                self.named.add(path, f"image {image.version}")
                if image.manifest.name != self.name:
                    self.protected.add(path, f"listed by {image.manifest_path.name}")
        ours = sorted((m for m in manifests if m.manifest.name == self.name),
                      key=lambda m: (m.manifest_path.stat().st_mtime, m.manifest_path.name), reverse=True)
        doomed = []
        for rank, image in enumerate(ours):
            reasons = [_among_newest(self.keep)] if rank < self.keep else []
            reasons += list(self.usage.images.get(image.version, ()))
            reasons += sorted({f"in use by {u}" for p in _image_files(image) if (u := self.usage.chains.of(p))})
            if not reasons:
                doomed.append(image)
                self.doomed_versions.add(image.version)
                continue
            self._keep(image.qcow2, "image", f"image {image.version}: {'; '.join(reasons)}")
            for path in _image_files(image):
                self.protected.add(path, f"under image {image.version}")
        for version, whos in self.usage.images.items():       # a named image whose manifest is gone
            paths = publish.paths(self.images_dir, self.name, version)
            for path in (paths.qcow2, paths.schema, paths.log, *backing_chain(paths.qcow2)):
                self.protected.add(path, f"image {version} ({whos[0]})")
        return doomed[::-1]            # the oldest goes first

    def _loose_files(self) -> list[tuple[Path, str]]:
        """Leftovers and files of images whose manifest is gone are decided here; base layers are returned, to be
        decided once every image's fate is known."""
        layers = []
        for path in self.files:
            if path.name.startswith("."):
                if path.name.endswith(LEFTOVER_SUFFIXES):
                    self._leftover(path)
            elif path.name.startswith(f"{self.name}-base-") and path.name.endswith(".qcow2"):
                layers.append((path, "under no kept image"))
            elif (stem := _image_stem(path.name, self.name)) and not self.named.of(path) \
                    and not (self.images_dir / f"{stem}{publish.MANIFEST_SUFFIX}").exists() \
                    and not self.usage.disks.of(path):         # an agent disk kept in the images dir is no orphan
                if reason := self._needed(path):
                    self._keep(path, "orphan", f"{reason} (its manifest is gone)")
                elif self._recent(path):
                    self._keep(path, "orphan", self._recent_reason(path))
                else:
                    self._remove(path, "orphan", "its image's manifest is gone")
        return layers

    def _leftover(self, path: Path) -> None:
        age = self.now - path.stat().st_mtime
        if reason := self._needed(path):
            self._keep(path, "leftover", reason)
        elif age >= LEFTOVER_AGE_S:
            self._remove(path, "leftover", f"an unfinished push or bake's, untouched for {age / 3600:.0f} h")
        else:
            self._keep(path, "leftover", f"written {age / 60:.0f} min ago: a push or bake may be at work "
                                         f"(collected after {LEFTOVER_AGE_S // 3600} h)")

    def _layer(self, path: Path, why: str) -> None:
        key = os.path.abspath(path)
        if key in self.removals or key in self.kept:
            return
        if reason := self._needed(path):
            self._keep(path, "base layer", reason)
        elif not self.named.of(path) and self._recent(path):
            self._keep(path, "base layer", self._recent_reason(path))
        else:
            self._remove(path, "base layer", why)

    def _cache(self, cache_dir: Path, cache_keep: int) -> None:
        """The build cache's base layers, newest first by the same order the bake prunes them in."""
        if not cache_dir.is_dir():
            return
        cached = sorted((p for p in cache_dir.glob("*-base-*.qcow2") if p.is_file()),
                        key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        for rank, path in enumerate(cached):
            if rank < cache_keep:
                self._keep(path, "cached base layer", f"{_among_newest(cache_keep)} in the cache")
            elif user := self.usage.chains.of(path):
                self._keep(path, "cached base layer", f"in use by {user}")
            else:
                self._remove(path, "cached base layer", f"older than {_newest(cache_keep)} in the cache")
        for path in sorted(cache_dir.glob(f"{self.name}-*{tree_diff.TREE_INDEX_SUFFIX}")):
            version = path.name[len(self.name) + 1:-len(tree_diff.TREE_INDEX_SUFFIX)]
            if version in self.doomed_versions:   # a bump stacks on a published image only (the cache is shared
                # by every images dir of the build: an index of another dir's image is not ours to judge)
                self._remove(path, "cached tree index", f"image {version} goes: no bump will stack on it")

    def _needed(self, path: Path) -> Optional[str]:
        user = self.usage.chains.of(path)
        return self.protected.of(path) or (f"in use by {user}" if user else None)

    def _recent(self, path: Path) -> bool:
        return self.now - path.stat().st_ctime < RECENT_S

    def _recent_reason(self, path: Path) -> str:
        return (f"under no image, but changed {(self.now - path.stat().st_ctime) / 60:.0f} min ago: maybe an image "
                f"being published (collected after {RECENT_S // 60} min)")

    def _why_doomed(self, image: publish.Published) -> str:
        return f"image {image.version}: older than {_newest(self.keep)}, and no agent uses or names it"

    def _own_files(self, image: publish.Published) -> list[Path]:
        paths = publish.paths(self.images_dir, self.name, image.version)
        own = [image.qcow2, paths.schema, paths.log]
        if image.manifest.openclaw_schema:
            own.append(image.qcow2.parent / image.manifest.openclaw_schema)
        return own

    def _keep(self, path: Path, kind: str, reason: str) -> None:
        self.kept.setdefault(os.path.abspath(path), Kept(path, kind, reason))

    def _remove(self, path: Path, kind: str, reason: str) -> None:
        """Only a file directly in the images dir (or the cache, for its own kind) is ever removed: a manifest
        naming `../elsewhere` must not reach outside."""
        home = self.cache_dir if kind.startswith("cached ") else self.images_dir
        if Path(os.path.abspath(path)).parent != home:
            self._keep(path, kind, f"outside {home}: never removed")
        elif path.is_file() or path.is_symlink():
            self.removals.setdefault(os.path.abspath(path), (path, kind, reason))


def _newest(n: int) -> str:
    return "the newest" if n == 1 else f"the {n} newest"


def _among_newest(n: int) -> str:
    return "the newest" if n == 1 else f"one of the {n} newest"


def _image_files(image: publish.Published) -> list[Path]:
    """Every file of a published image: its manifest, schema, log, and its chain as listed and as the headers say."""
    paths = publish.paths(image.manifest_path.parent, image.manifest.name, image.version)
    files = [image.manifest_path, paths.schema, paths.log, *(p for p, _ in image.chain), image.qcow2]
    if image.manifest.openclaw_schema:
        files.append(image.qcow2.parent / image.manifest.openclaw_schema)
    return files + backing_chain(image.qcow2)


def _image_stem(file_name: str, name: str) -> Optional[str]:
    """`agent-<version>` for an image's qcow2, schema or log; None for any other file."""
    if file_name.startswith(f"{name}-"):
        for suffix in IMAGE_SUFFIXES:
            if file_name.endswith(suffix) and len(file_name) > len(name) + 1 + len(suffix):
                return file_name[:-len(suffix)]
    return None


def _sized(removals: list[tuple[Path, str, str]]) -> tuple[Removal, ...]:
    """Each removal with its size and the bytes it frees: a file's blocks come back with its last link, so a base
    layer hard-linked from the build cache frees nothing unless the cache's link goes too; a symlink frees nothing."""
    stats = [p.lstat() for p, _, _ in removals]
    planned: dict[tuple[int, int], int] = {}
    for st in stats:
        planned[(st.st_dev, st.st_ino)] = planned.get((st.st_dev, st.st_ino), 0) + 1
    left = dict(planned)
    out = []
    for (path, kind, reason), st in zip(removals, stats):
        inode = (st.st_dev, st.st_ino)
        left[inode] -= 1
        last = left[inode] == 0 and st.st_nlink <= planned[inode] and not stat.S_ISLNK(st.st_mode)
        out.append(Removal(path, kind, reason, st.st_size, st.st_blocks * 512 if last else 0))
    return tuple(out)


def collect(plan: Plan, removed: Callable[[Removal], None] = lambda r: None) -> Collected:
    """Remove what the plan lists, in its order, the manifests' removal synced to disk before any other file goes;
    `removed` is called after each file. Stops at the first file that cannot be removed (one line says which):
    gc run again goes on from there."""
    done: list[Removal] = []
    synced = False
    try:
        for r in plan.removals:
            if r.kind != "manifest" and not synced:
                _fsync_dir(plan.images_dir)
                synced = True
            try:
                r.path.unlink()
            except FileNotFoundError:
                pass             # gone meanwhile (another gc): nothing left to do
            done.append(r)
            removed(r)
        _fsync_dir(plan.images_dir)
    except OSError as e:
        return Collected(tuple(done), f"{e.filename or plan.images_dir}: cannot remove ({e.strerror}); "
                                      f"{len(done)} of {len(plan.removals)} removed, run gc again")
    return Collected(tuple(done))


def _fsync_dir(path: Path) -> None:
    if not path.is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
