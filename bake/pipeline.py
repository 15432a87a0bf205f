"""The bake as a recipe: spec -> inputs -> (cache hit | fetch -> base tree -> app tree -> disk -> verify -> publish)."""
from __future__ import annotations

import errno
import fcntl
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bake import assemble, dib, fetch, layers, manifest, plugin_cache, publish, tree_diff
from bake.errors import BakeError, input_errors
from bake.inputs import Inputs, collect, explain_miss
from bake.lock import Lock, check_lock
from bake.spec import Spec, load_spec
from bake.verify import Readback, verify_image
from host import exit_codes
from host.errors import HostError
from host.progress import Progress, deadline_for
from host.run import run

MIN_FREE_GB = 12
# Generous per-phase deadlines (seconds; AGENTFLEET_DEADLINE_SCALE scales them): about 10x what each phase took on
# a loaded 2-core CI machine under TCG, so only a hang reaches them.
DEADLINES_S = {"fetch": 1800, "base": 3600, "app": 2400, "unpack": 900, "filesystem": 900, "bootloader": 1200,
               "compress": 900, "verify": 1200, "publish": 300, "base_layer": 3000, "diff": 900, "app_layer": 1200}


@dataclass(frozen=True)
class Layout:
    """Where a bake keeps things; all under one build dir so `make clean` and CI caches are simple. A variant (the
    small test image, a test's pin bump) publishes into its own images dir, so it never becomes the newest image of
    build/images that a clone without --image would take, while sharing the caches."""
    build: Path
    images_dir: Optional[Path] = None

    @property
    def images(self) -> Path: return self.images_dir or self.build / "images"
    @property
    def cache(self) -> Path: return self.build / "cache"
    @property
    def downloads(self) -> Path: return self.cache / "downloads"
    @property
    def tools(self) -> Path: return self.cache / "tools"
    @property
    def npm_cache(self) -> Path: return self.cache / "npm"
    @property
    def plugin_cache(self) -> Path: return self.cache / "npm-plugins"
    @property
    def dib_cache(self) -> Path: return self.cache / "dib"
    @property
    def base_trees(self) -> Path: return self.cache / "base"
    @property
    def base_layers(self) -> Path: return self.cache / "layers"
    @property
    def logs(self) -> Path: return self.build / "logs"

    def work(self, version: str) -> Path:
        return self.build / "work" / version


@dataclass
class Outcome:
    image: publish.Published
    cache_hit: bool
    changed: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    base_cache_hit: bool = False
    base_layer_hit: Optional[bool] = None   # a layered bake: its base layer was found rather than baked


def plan(spec_path: Path) -> tuple[Spec, Inputs]:
    """The spec, its lock and their agreement are the bake's input: their errors are usage errors (exit 2)."""
    with input_errors():
        spec = load_spec(spec_path)
        if spec.npm_trees:                 # the lock pins the npm trees (OpenClaw's, aws-cdk's); without them, none
            check_lock(spec, Lock.load(spec))
    return spec, collect(spec)


def bake(spec_path: Path, layout: Layout, verify_checksum: bool = False, force: bool = False,
         quiet: bool = False, keep_work: bool = False, layered: bool = True) -> Outcome:
    """`layered` (the default): publish a chain, a base layer and a thin app layer (bake/layers.py); False: one flat
    qcow2. The version names the inputs, not the form: a published version is a cache hit whichever form it was
    baked in. --force never rewrites an image other published images stack their app layers on."""
    spec, inputs = plan(spec_path)
    version = inputs.version
    existing = publish.find(layout.images, spec.name, version)
    if existing and not force:
        publish.check_published(existing, full=verify_checksum)
        return Outcome(existing, cache_hit=True)
    if existing and (above := publish.stacked_on(layout.images, existing)):
        raise BakeError(f"{existing.qcow2.name} is a layer of {', '.join(i.version for i in above)}: rebaking it "
                        f"would break their chains (remove those images first)", exit_codes.USAGE)
    with exclusive(layout.build, quiet):
        existing = publish.find(layout.images, spec.name, version)  # another bake may have just published it
        if existing and not force:
            publish.check_published(existing, full=verify_checksum)
            return Outcome(existing, cache_hit=True)
        return _bake_locked(spec, inputs, layout, quiet, keep_work, layered)


@contextmanager
def exclusive(build: Path, quiet: bool):
    """One bake at a time per build dir: bakes share the work dirs, DIB's apt cache and the base-tree cache (and
    `bake gc` takes it too: a bake's base layer and image are in place a moment before its manifest)."""
    build.mkdir(parents=True, exist_ok=True)
    with open(build / "bake.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another bake in {build} to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _bake_locked(spec: Spec, inputs: Inputs, layout: Layout, quiet: bool, keep_work: bool, layered: bool) -> Outcome:
    version = inputs.version
    previous = publish.newest(layout.images, spec.name)
    changed = explain_miss(inputs.hashes, previous.manifest.inputs) if previous else ["no image yet"]
    _check_free_space(layout.build)
    progress = Progress(layout.logs / f"{spec.name}-{version}-{time.strftime('%Y%m%dT%H%M%S')}.log", quiet=quiet)
    progress.say(f"baking {spec.name}-{version}; cache miss because: " + "; ".join(changed))
    work = layout.work(version)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ok = False
    try:
        image, base_hit, layer_hit = _build(spec, inputs, layout, work, progress, layered)
        ok = True
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BakeError(f"no space left on device while baking (log: {progress.log_path})") from None
        raise
    except (BakeError, HostError) as e:  # a host tool's failure or a phase deadline becomes the bake's, naming the log
        raise BakeError(f"{e} (log: {progress.log_path})", getattr(e, "exit_code", exit_codes.FAILED)) from None
    finally:
        if ok or not keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress.say(f"kept the failed bake's work dir for inspection: {work}")
        progress.close()
    return Outcome(image, cache_hit=False, changed=changed, phases=progress.phases, base_cache_hit=base_hit,
                   base_layer_hit=layer_hit)


def _build(spec: Spec, inputs: Inputs, layout: Layout, work: Path, progress: Progress, layered: bool):
    log = progress.log
    version = inputs.version
    staging, generated = work / "staging", work / "elements"
    with _phase(progress, "fetch", "fetch: downloads verified, npm trees cached"):
        if spec.npm_trees:
            npm_cmd = fetch.host_npm(spec, layout.downloads, layout.tools, log)
            for tree in spec.npm_trees:
                fetch.fill_npm_cache(spec, tree, npm_cmd, layout.npm_cache, work / "npm-scratch", log)
        if spec.openclaw:
            plugin_cache.fill_plugin_cache(spec, npm_cmd, layout.plugin_cache, work / "plugin-scratch", log)
        fetch.stage(spec, version, staging, layout.downloads, layout.npm_cache, layout.plugin_cache, log)
        dib.write_package_element(spec, generated)
    base_tar = layout.base_trees / f"{inputs.base_key}.tar"
    base_hit = base_tar.exists()
    base_label = f"base tree ({'cached ' + base_tar.name if base_hit else 'diskimage-builder'})"
    with _phase(progress, "base", base_label):
        if not base_hit:
            run(dib.base_command(spec, staging, generated, layout.dib_cache, work / "base"), log=log)
            layout.base_trees.mkdir(parents=True, exist_ok=True)
            for old in sorted(layout.base_trees.glob("*.tar"), key=lambda p: p.stat().st_mtime)[:-2]:
                old.unlink()  # keep the newest three base trees (the full and the small image's, one older)
                _base_index(old).unlink(missing_ok=True)
            (work / "base.tar").rename(base_tar)
    with _phase(progress, "app", "app tree (diskimage-builder)"):
        run(dib.app_command(spec, staging, generated, layout.dib_cache, base_tar, work / "app"), log=log)
    tree, root = work / "app.tar", work / "root"
    schema = work / "openclaw-schema.json"
    with _phase(progress, "unpack", "unpack tree, manifest: baseline, packages"):
        tree_size = tree.stat().st_size
        assemble.unpack(tree, root, log)
        if not layered:
            tree.unlink()
        if spec.openclaw:
            if not (root / manifest.SCHEMA_FILE).exists():
                raise BakeError(f"manifest: the tree has no /{manifest.SCHEMA_FILE} (openclaw element)")
            shutil.copy2(root / manifest.SCHEMA_FILE, schema)
        base = {"refresh": spec.base.refresh,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base_tar.stat().st_mtime))}
        image_json = manifest.image_json(spec.name, version, inputs.hashes, inputs.base_key,
                                         manifest.scan_tree(root), spec.pins, spec.services, base,
                                         spec.tool_versions)
        if layered:
            shutil.rmtree(root)
        else:
            assemble.finish_tree(root, image_json)
    stack = _layers(spec, inputs, layout, work, progress, base_tar, tree, image_json) if layered else None
    qcow2 = stack.qcow2 if stack else _flat_disk(spec, work, progress, root)
    with _phase(progress, "verify", "verify offline (libguestfs)" + (", through the chain" if layered else "")):
        readback = None
        if stack:
            readback = Readback(image_json["baseline"], stack.parent.manifest.baseline if stack.parent else None,
                                frozenset(stack.written))
        problems = verify_image(qcow2, spec.pins, work, log, spec.tool_versions, readback=readback)
        if problems:
            raise BakeError("verify: refusing to publish: " + "; ".join(problems))
    with _phase(progress, "publish", "publish"):
        image_json["tree_size"] = tree_size
        image = publish.publish(layout.images, spec.name, version, qcow2, image_json,
                                schema if spec.openclaw else None, progress.log_path,
                                base_layer=stack.base_layer if stack and not stack.parent else None,
                                parent=stack.parent if stack else None)
        if stack:   # the next bump diffs against this image's tree
            tree_diff.save_index(stack.tree, tree_diff.index_path(layout.base_layers, spec.name, version))
    on = ""
    if stack:
        on = f", on {stack.parent.qcow2.name}" if stack.parent else f", on {stack.base_layer.name}"
    progress.say(f"published {image.qcow2} ({image.qcow2.stat().st_size / 1e6:.0f} MB, tree {tree_size / 1e6:.0f} MB"
                 f"{on})")
    return image, base_hit, stack.base_layer_found if stack else None


def _flat_disk(spec: Spec, work: Path, progress: Progress, root: Path) -> Path:
    """One self-contained qcow2 of the finished tree: a new ext4, grub, compression."""
    log = progress.log
    raw, qcow2 = work / "disk.raw", work / "disk.qcow2"
    with _phase(progress, "filesystem", "filesystem: MBR + ext4 from the tree (mke2fs -d)"):
        assemble.make_disk(root, raw, spec.disk.size_gb, log)
        shutil.rmtree(root)
    with _phase(progress, "bootloader", "bootloader: grub-install, update-grub (libguestfs)"):
        assemble.install_bootloader(raw, log)
    with _phase(progress, "compress", "compress: sparse zstd qcow2"):
        assemble.compress(raw, qcow2, log)
        raw.unlink()
    return qcow2


@dataclass(frozen=True)
class _Stack:
    """A layered bake's new app layer and what it sits on."""
    qcow2: Path                        # the new app layer, in the work dir
    base_layer: Path                   # the chain's bottom (published or cached)
    base_layer_found: bool             # found rather than baked by this bake
    parent: Optional[publish.Published]  # the image it is stacked on, or None: straight on the base layer
    tree: dict                         # the app tree's index (tree_diff), kept for the next bump
    written: tuple[str, ...]           # the tree names the layer wrote or removed (verify reads those back)


def _layers(spec: Spec, inputs: Inputs, layout: Layout, work: Path, progress: Progress, base_tar: Path, tree: Path,
            image_json: dict) -> _Stack:
    """The base layer (found, or baked from the base tree once per key), the parent image to stack on if any
    (layers.find_parent), and the app layer: the tar diff between the tree under it and the app tree, written into a
    qcow2 overlay with the manifest."""
    log = progress.log
    key = layers.base_layer_key(spec, inputs.base_key)
    name = layers.base_layer_name(spec.name, key)
    found = layers.find_base_layer(name, layout.images, layout.base_layers)
    label = f"base layer ({'found ' + str(found) if found else 'disk from the base tree: ext4, grub, compress'})"
    with _phase(progress, "base_layer", label):
        base_tree = tree_diff.cached_index(base_tar, _base_index(base_tar))
        base_layer = found or layers.bake_base_layer(spec, name, base_tar, base_tree, layout.base_layers, work, log)
    parent = layers.find_parent(layout.images, spec.name, name, layout.base_layers, inputs.version)
    under = f"image {parent.image.version}" if parent else "the base layer"
    with _phase(progress, "diff", f"tree diff: what the app tree adds, changes and removes in {under}"):
        old, new = (parent.tree if parent else layers.in_base_layer(base_tree)), tree_diff.index(tree)
        diff = tree_diff.diff(old, new, list(new))
        changes = work / "changes.tar"
        tree_diff.write_changes(tree, diff.changed, changes)
        tree.unlink()
        progress.say(f"tree diff over {under}: {len(diff.changed)} paths to write "
                     f"({changes.stat().st_size / 1e6:.1f} MB), {len(diff.removed)} to remove")
        if log:
            log.writelines([*(f"remove /{name}\n" for name in diff.removed),
                            *(f"write /{name}\n" for name in diff.changed)])
    below = [path for path, _ in parent.image.chain] if parent else [base_layer]
    with _phase(progress, "app_layer", f"app layer: one libguestfs write into a qcow2 overlay on {under}, compress"):
        qcow2 = layers.app_layer(below, diff, changes, new, image_json, work, log)
        changes.unlink()
    return _Stack(qcow2, base_layer, found is not None, parent.image if parent else None, new,
                  diff.changed + diff.removed)


def _base_index(base_tar: Path) -> Path:
    """Where a layered bake keeps the base tree's tree_diff index, beside the tree."""
    return base_tar.with_suffix(".index.json")


def _phase(progress: Progress, key: str, label: str):
    """A timed phase with its deadline from DEADLINES_S (or AGENTFLEET_DEADLINES)."""
    return progress.phase(label, deadline_for(key, DEADLINES_S))


def _check_free_space(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free / 1e9
    if free < MIN_FREE_GB:
        raise BakeError(f"no space left: {free:.1f} GB free in {path}, a bake needs about {MIN_FREE_GB} GB")


def dry_run(spec_path: Path, layout: Layout, layered: bool = True) -> list[str]:
    """What a bake would do, touching nothing."""
    spec, inputs = plan(spec_path)
    version = inputs.version
    existing = publish.find(layout.images, spec.name, version)
    if existing:
        return [f"cache hit: {existing.qcow2} (nothing to bake)"]
    work = layout.work(version)
    base_tar = layout.base_trees / f"{inputs.base_key}.tar"
    previous = publish.newest(layout.images, spec.name)
    lines = [f"would bake {spec.name}-{version}",
             *("  changed: " + c for c in (explain_miss(inputs.hashes, previous.manifest.inputs)
                                          if previous else ["no image yet"]))]
    if base_tar.exists():
        lines.append(f"base tree: cached {base_tar}")
    else:
        lines.append("base tree: " + dib.base_command(spec, work / "staging", work / "elements",
                                                     layout.dib_cache, work / "base").shell_line())
    lines.append("app tree: " + dib.app_command(spec, work / "staging", work / "elements", layout.dib_cache,
                                                base_tar, work / "app").shell_line())
    if layered:
        name = layers.base_layer_name(spec.name, layers.base_layer_key(spec, inputs.base_key))
        found = layers.find_base_layer(name, layout.images, layout.base_layers)
        lines.append(f"base layer: {'found ' + str(found) if found else 'baked from the base tree into ' + name}")
        parent = layers.find_parent(layout.images, spec.name, name, layout.base_layers, version)
        under = f"image {parent.image.version} (stacked on its chain)" if parent else "the base layer"
        lines.append(f"app layer: the app tree's changes to {under}, written into a qcow2 overlay on it")
    lines.append(f"publish: {publish.paths(layout.images, spec.name, version).qcow2}")
    return lines
