"""The images the VM tests need, made through the production pipeline and caches: the golden image
(images/agent.yaml), the small test image (images/agent-small.yaml) and its next version, a variant of a spec (a pin
bump), another version derived from a baked one, and a broken copy whose agentd cannot start."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from agentd import vm_files
from bake import fetch, lock, publish
from bake.pipeline import Layout, bake
from bake.spec import load_spec
from host.run import run
from tests.clone_support import guest_root, world_traversable

REPO = Path(__file__).resolve().parent.parent
# The build dir the tests bake into: build/ unless AGENTFLEET_BUILD_DIR names another (a branch's bake in its own dir
# leaves the shared base-tree cache, which keeps only the newest three trees, to the others).
BUILD = Path(os.environ.get("AGENTFLEET_BUILD_DIR") or REPO / "build")
# The small image's next version: a spec change outside the base stage (the small image pins nothing), so the app
# stage is rebaked on the cached base tree and the version changes, as a pin bump of the full image does.
SMALL_BUMP = ("name: agent\n", "name: agent\n# rollout test: the next version\n")
# agentd's unit overridden so that it cannot start: what a replace and a rollout must survive
BREAK_AGENTD = "[Service]\nExecStart=\nExecStart=/bin/false\n"


def variant_layout(images_dir: str) -> Layout:
    """The build dir's caches, but its own images dir under build/: a variant must not become the newest published
    image, which a later `deploy/clone.py athena` without --image would take."""
    return Layout(BUILD, world_traversable(BUILD / images_dir))


def full_image() -> publish.Published:
    """The golden image of images/agent.yaml in the build's images dir: a full bake at first, a cache hit after."""
    return bake(REPO / "images" / "agent.yaml", Layout(BUILD)).image


def small_image() -> publish.Published:
    """The small test image, baked once (a cache hit afterwards) into build/small-images."""
    return bake(REPO / "images" / "agent-small.yaml", variant_layout("small-images"), quiet=True).image


def small_flat_image() -> publish.Published:
    """The small image's inputs baked flat (one qcow2) into build/flat-small-images: the same version as
    small_image(), in the other form."""
    return bake(REPO / "images" / "agent-small.yaml", variant_layout("flat-small-images"), quiet=True,
                layered=False).image


def small_next_image(tmp: Path) -> publish.Published:
    """The small image's next version (SMALL_BUMP): its app stage rebaked on the small image's cached base tree."""
    return bake_variant(tmp, "small-bump", SMALL_BUMP, spec="agent-small.yaml", images_dir="small-images")


def bake_variant(tmp: Path, name: str, edit: tuple[str, str], spec: str = "agent.yaml",
                 images_dir: str = "e2e-images") -> publish.Published:
    """Bake images/<spec> with one text edit, through the same pipeline and caches as production."""
    images = tmp / name
    shutil.copytree(REPO / "images", images)
    spec_path = images / spec
    text = spec_path.read_text()
    assert edit[0] in text, f"{edit[0]!r} not in {spec}"
    spec_path.write_text(text.replace(*edit))
    layout, loaded = variant_layout(images_dir), load_spec(spec_path)
    if loaded.npm_trees:   # the lock pins every npm tree (OpenClaw's, aws-cdk's): re-resolved for the edited pins
        lock.resolve(loaded, fetch.host_npm(loaded, layout.downloads, layout.tools))
    return bake(spec_path, layout, quiet=True).image


def link_published(image: publish.Published, dest: Path) -> publish.Published:
    """`image` published in `dest` too: every file of its chain and its manifest hard-linked (copied across file
    systems), what is there already kept. Returns it as published there."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in [p for p, _ in image.chain] + [image.manifest_path]:
        target = dest / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return publish.beside(dest / image.qcow2.name)


def derive_image(good: publish.Published, dest: Path, suffix: str, edit=None) -> publish.Published:
    """`good` as version good.version + suffix: its /etc/agentfleet/image.json says the new version (agentd
    reports that one, so a replace with it turns healthy as itself), `edit(g)` applied to its root file system with
    libguestfs if given, published in `dest` (not the build's images dir, where a later clone could take it for the
    newest). A layered `good` gets one more app layer on its chain (linked into `dest`), a flat one is copied.
    Another version of an image without paying for a bake."""
    version = f"{good.version}{suffix}"
    work = dest / f".agent-{version}.work.qcow2"
    parent = link_published(good, dest) if good.manifest.layers else None
    if parent:
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", parent.qcow2.name, str(work)])
    else:
        shutil.copyfile(good.qcow2, work)
    with guest_root(work) as g:
        baked = json.loads(g.cat(vm_files.IMAGE_JSON))
        g.write(vm_files.IMAGE_JSON, json.dumps({**baked, "version": version}).encode())
        if edit is not None:
            edit(g)
    image_json = {k: v for k, v in good.manifest.to_json().items()
                  if k not in ("qcow2", "openclaw_schema", "layers")}
    return publish.publish(dest, "agent", version, work, {**image_json, "version": version}, good.schema_path, None,
                           parent=parent)


def derive_broken_image(good: publish.Published, dest: Path) -> Path:
    """`good` with agentd's unit overridden to /bin/false (what a replace must survive), as version V-broken."""
    def break_agentd(g) -> None:
        g.mkdir_p("/etc/systemd/system/agentd.service.d")
        g.write("/etc/systemd/system/agentd.service.d/broken.conf", BREAK_AGENTD.encode())
    return derive_image(good, dest, "-broken", break_agentd).qcow2
