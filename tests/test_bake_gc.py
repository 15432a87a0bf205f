"""bake gc (bake/gc.py, bake/gc_usage.py): which images, base layers and leftovers go, on real qcow2 chains made by
qemu-img and images published by the bake's own publish(). Fast: empty 16 MB qcow2 files, no bake, no VM."""
import json
import os
import time

import pytest

from bake import gc, publish
from bake.cli import main as bake_main
from bake.gc_usage import AgentDirs
from tests.gc_support import agent_overlay, agent_state, base_layer, names, publish_flat, publish_layered, qcow2


@pytest.fixture
def site(tmp_path):
    """An images dir with five images, oldest first: v1 layered on base A, v2 flat, v3..v5 layered on base B; a
    storage dir and a state dir for agents."""
    images, storage, state, work = (tmp_path / d for d in ("build/images", "storage", "state", "work"))
    for d in (images, storage, state):
        d.mkdir(parents=True)
    base_a, base_b = base_layer(work / "a", "aaaaaaaaaaaaaaaa"), base_layer(work / "b", "bbbbbbbbbbbbbbbb")
    publish_layered(images, "v1", 1, base_a, work)
    publish_flat(images, "v2", 2, work)
    for day, version in enumerate(("v3", "v4", "v5"), start=3):
        publish_layered(images, version, day, base_b, work)
    return images, storage, state, AgentDirs((storage,), (state,))


def _files(images, version):
    return {f"agent-{version}.manifest.json", f"agent-{version}.qcow2"}


def test_keeps_the_newest_and_what_an_agent_disk_uses_and_removes_the_rest_with_their_unused_base_layer(site):
    images, storage, state, agents = site
    overlay = agent_overlay(storage, "athena", images / "agent-v2.qcow2")   # an old flat image, in use
    before = names(images)
    plan = gc.plan(images, agents, keep=3)
    kept = {k.path.name: k for k in plan.kept}
    assert kept["agent-v2.qcow2"].reason == f"image v2: in use by agent disk {overlay}"
    assert {n for n in kept if n.endswith(".qcow2") and k_is_image(kept[n])} == {
        "agent-v2.qcow2", "agent-v3.qcow2", "agent-v4.qcow2", "agent-v5.qcow2"}
    removed = [(r.path.name, r.kind) for r in plan.removals]
    assert removed == [("agent-v1.manifest.json", "manifest"), ("agent-v1.qcow2", "image file"),
                       ("agent-base-aaaaaaaaaaaaaaaa.qcow2", "base layer")], "manifest first, base layer last"
    collected = gc.collect(plan)
    assert collected.error == "" and collected.removed == plan.removals
    assert names(images) == before - {"agent-v1.manifest.json", "agent-v1.qcow2", "agent-base-aaaaaaaaaaaaaaaa.qcow2"}
    assert [i.version for i in publish.published(images, "agent")] == ["v2", "v3", "v4", "v5"]
    for image in publish.published(images, "agent"):
        publish.check_published(image, full=True)                  # every kept image's chain is whole
    # the base layer's blocks stay with the build cache's hard link: nothing freed for it, and said so
    base = next(r for r in plan.removals if r.kind == "base layer")
    assert base.size > 0 and base.freed == 0
    assert plan.bytes_freed == sum(r.freed for r in plan.removals) > 0
    # without the agent's disk, v2 goes too at the next run (the same policy, nothing else kept it)
    overlay.unlink()
    again = gc.plan(images, agents, keep=3)
    assert [r.path.name for r in again.removals] == ["agent-v2.manifest.json", "agent-v2.qcow2",
                                                       "agent-v2.openclaw-schema.json", "agent-v2.log"]


def k_is_image(k: gc.Kept) -> bool:
    return k.kind == "image"


def test_an_agent_state_keeps_its_current_and_previous_images_even_without_their_disks(site):
    images, storage, state, agents = site
    agent_state(state, "apollo", ("v5", storage / "apollo-root-v5.qcow2"), ("v1", storage / "apollo-root-v1.qcow2"))
    plan = gc.plan(images, agents, keep=1)
    kept = {k.path.name: k.reason for k in plan.kept}
    assert kept["agent-v1.qcow2"] == "image v1: apollo's previous image"     # a rollback boots it
    assert kept["agent-base-aaaaaaaaaaaaaaaa.qcow2"] == "under image v1"
    assert kept["agent-v5.qcow2"] == "image v5: the newest; apollo's current image"
    assert {r.path.name for r in plan.removals if r.kind == "manifest"} == {
        "agent-v2.manifest.json", "agent-v3.manifest.json", "agent-v4.manifest.json"}
    assert not any(r.kind == "base layer" for r in plan.removals), "base B is under v5"


def test_a_base_layer_under_a_kept_image_or_in_an_agent_disks_chain_is_never_removed(site, tmp_path):
    images, storage, state, agents = site
    work = tmp_path / "work2"
    base_c = base_layer(work / "c", "cccccccccccccccc")
    publish_layered(images, "v0", 0, base_c, work)                 # the oldest, on a base of its own
    overlay = agent_overlay(storage, "hermes", images / "agent-v0.qcow2")     # its chain: overlay, v0, base C
    publish_layered(images, "v6", 6, base_layer(tmp_path / "w3", "aaaaaaaaaaaaaaaa"), tmp_path / "w3")  # base A again
    plan = gc.plan(images, agents, keep=1)
    kept = {k.path.name: k.reason for k in plan.kept}
    assert kept["agent-v0.qcow2"] == f"image v0: in use by agent disk {overlay}"
    assert kept["agent-base-cccccccccccccccc.qcow2"] == "under image v0"
    assert kept["agent-base-aaaaaaaaaaaaaaaa.qcow2"] == "under image v6"   # v1 goes, its base stays under v6
    removed = {r.path.name for r in plan.removals}
    assert "agent-v1.manifest.json" in removed and "agent-base-bbbbbbbbbbbbbbbb.qcow2" in removed
    assert not removed & {"agent-base-aaaaaaaaaaaaaaaa.qcow2", "agent-base-cccccccccccccccc.qcow2", "agent-v0.qcow2"}

    # the VM's chain holds even when its image's manifest was removed by hand: the app layer and base C stay
    (images / "agent-v0.manifest.json").unlink()
    plan = gc.plan(images, agents, keep=1, now=time.time() + 2 * gc.RECENT_S)
    kept = {k.path.name: k.reason for k in plan.kept}
    assert kept["agent-v0.qcow2"] == f"in use by agent disk {overlay} (its manifest is gone)"
    assert kept["agent-base-cccccccccccccccc.qcow2"] == f"in use by agent disk {overlay}"
    assert not {r.path.name for r in plan.removals} & {"agent-v0.qcow2", "agent-base-cccccccccccccccc.qcow2"}
    gc.collect(plan)
    assert (images / "agent-v0.qcow2").exists() and (images / "agent-base-cccccccccccccccc.qcow2").exists()
    assert (images / "agent-base-aaaaaaaaaaaaaaaa.qcow2").exists()


def test_leftovers_and_files_of_unpublished_images_go_once_they_are_stale(site):
    images, storage, state, agents = site
    stale, fresh = images / ".agent-v9.qcow2.part", images / ".agent-v8.qcow2.verified"
    for path in (stale, fresh):
        path.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 2 * gc.LEFTOVER_AGE_S,) * 2)
    orphan = qcow2(images / "agent-v7.qcow2")                        # a qcow2 whose manifest is gone
    (images / "agent-v7.log").write_text("log\n")
    unnamed = qcow2(images / "agent-base-dddddddddddddddd.qcow2")   # a base layer no manifest names
    plan = gc.plan(images, agents, keep=5)
    assert [r.path.name for r in plan.removals] == [stale.name]
    kept = {k.path.name: k.reason for k in plan.kept}
    assert kept[fresh.name].startswith("written 0 min ago: a push or bake may be at work")
    assert kept[orphan.name].startswith("under no image, but changed 0 min ago: maybe an image being published")
    assert kept[unnamed.name].startswith("under no image, but changed 0 min ago")
    later = gc.plan(images, agents, keep=5, now=time.time() + 2 * gc.RECENT_S)
    assert {r.path.name: r.kind for r in later.removals} == {
        stale.name: "leftover", "agent-v7.qcow2": "orphan", "agent-v7.log": "orphan",
        unnamed.name: "base layer"}
    assert fresh.name in {k.path.name for k in later.kept}


def test_an_unreadable_manifest_or_state_stops_everything(site):
    images, storage, state, agents = site
    (state / "ares").mkdir()
    (state / "ares" / "state.json").write_text("{")
    with pytest.raises(gc.BakeError, match="ares/state.json: unreadable agent state .* so nothing is removed"):
        gc.plan(images, agents, keep=1)
    (state / "ares" / "state.json").unlink()
    (images / "agent-v9.manifest.json").write_text("{}")
    with pytest.raises(gc.BakeError, match="agent-v9.manifest.json: malformed image manifest .*nothing is removed"):
        gc.plan(images, agents, keep=1)


def _bake_gc(capsys, build, *args):
    code = bake_main(["--build-dir", str(build), "gc", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_removes_nothing_and_lists_the_plan_the_real_run_then_carries_out(site, capsys, monkeypatch):
    images, storage, state, _ = site
    monkeypatch.setenv("AGENTFLEET_HOST_FILE", str(images / "no-such-host-file"))    # a workstation
    agent_overlay(storage, "athena", images / "agent-v2.qcow2")
    build = images.parent
    dirs = ["--storage-dir", str(storage), "--state-dir", str(state)]
    snapshot = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in images.iterdir()}
    code, out, err = _bake_gc(capsys, build, "--keep", "2", "--dry-run", "--json", *dirs)
    assert code == 0, err
    dry = json.loads(out)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in images.iterdir()} == snapshot
    assert dry["dry_run"] is True and dry["removed"] == [] and not (build / "bake.lock").exists()
    planned = [(r["path"], r["kind"]) for r in dry["removals"]]
    assert planned == [(str(images / "agent-v1.manifest.json"), "manifest"),
                       (str(images / "agent-v3.manifest.json"), "manifest"),
                       (str(images / "agent-v1.qcow2"), "image file"),
                       (str(images / "agent-v3.qcow2"), "image file"),
                       (str(images / "agent-base-aaaaaaaaaaaaaaaa.qcow2"), "base layer")]
    code, out, err = _bake_gc(capsys, build, "--keep", "2", "--dry-run", *dirs)
    assert code == 0 and names(images) == set(snapshot)
    lines = out.splitlines()
    assert lines[0] == (f"kept agent-v2.qcow2 (image): image v2: in use by agent disk "
                        f"{storage / 'athena-root-v2.qcow2'}")
    assert lines[1].startswith("would remove agent-v1.manifest.json (manifest, ")
    assert lines[1].endswith("): image v1: older than the 2 newest, and no agent uses or names it")
    assert lines[-1].startswith("would remove 5 file(s) from ") and lines[-1].endswith("; 3 image(s) kept")

    code, out, err = _bake_gc(capsys, build, "--keep", "2", "--json", *dirs)
    assert code == 0, err
    done = json.loads(out)
    assert [(r["path"], r["kind"]) for r in done["removed"]] == planned
    assert done["removed"] == dry["removals"] and done["freed"] == dry["bytes_freed"]
    assert not any(os.path.exists(path) for path, _ in planned)
    code, out, _ = _bake_gc(capsys, build, "--keep", "2", *dirs)
    assert (code, out.splitlines()[-1].split(" from ")[0]) == (0, "removed 0 file(s)")


def test_the_workstation_run_prunes_the_build_caches_base_layers_and_refuses_keep_0(site, tmp_path, capsys,
                                                                                   monkeypatch):
    images, storage, state, _ = site
    monkeypatch.setenv("AGENTFLEET_HOST_FILE", str(images / "no-such-host-file"))    # a workstation
    cache = images.parent / "cache" / "layers"
    for i, key in enumerate("0123"):
        layer = qcow2(cache / f"agent-base-{key * 16}.qcow2")
        os.utime(layer, (1000 + i, 1000 + i))
    code, out, err = _bake_gc(capsys, images.parent, "--keep", "5")
    assert code == 0, err
    first, last = out.splitlines()
    assert first.startswith(f"removed {cache / ('agent-base-' + '0' * 16 + '.qcow2')} (cached base layer, ")
    assert first.endswith(" MB): older than the 3 newest in the cache")
    assert last.startswith(f"removed 1 file(s) from {images}, ") and last.endswith(" MB freed; 5 image(s) kept")
    assert sorted(p.name[11:15] for p in cache.iterdir()) == ["1111", "2222", "3333"]
    with pytest.raises(SystemExit):
        bake_main(["--build-dir", str(images.parent), "gc", "--keep", "0"])
    assert "--keep: 0: the newest image at least must be kept" in capsys.readouterr().err


def test_on_a_hypervisor_the_run_needs_its_storage_and_state_dirs(site, tmp_path, capsys, monkeypatch):
    images, storage, state, _ = site
    host_file = tmp_path / "host"
    host_file.write_text("r420\n")
    monkeypatch.setenv("AGENTFLEET_HOST_FILE", str(host_file))
    before = names(images)
    code, out, err = _bake_gc(capsys, images.parent, "--keep", "1", "--storage-dir", str(storage))
    assert (code, out) == (2, "")
    assert err == (f"bake: error: this machine is hypervisor 'r420' ({host_file}): pass its --storage-dir and "
                   f"--state-dir (its agents' disks use images), or run `python -m deploy.fleet gc --host NAME` from "
                   f"the workstation\n")
    assert names(images) == before
    code, out, err = _bake_gc(capsys, images.parent, "--keep", "1", "--storage-dir", str(storage),
                              "--state-dir", str(state))
    assert code == 0, err
    assert out.splitlines()[-1].startswith("removed 11 file(s)")


def test_a_manifest_naming_a_file_outside_the_images_dir_never_gets_it_removed(site):
    images, storage, state, agents = site
    outside = qcow2(images.parent / "outside.qcow2")
    manifest = json.loads((images / "agent-v1.manifest.json").read_text())
    manifest.update(version="v0", layers=[], qcow2={"file": "../outside.qcow2", "size": 1, "sha256": "ab"})
    (images / "agent-v0.manifest.json").write_text(json.dumps(manifest))
    os.utime(images / "agent-v0.manifest.json", (1000, 1000))
    plan = gc.plan(images, agents, keep=1)
    assert (images / "agent-v0.manifest.json") in [r.path for r in plan.removals]
    assert outside not in [r.path for r in plan.removals]
    assert {k.path: k.reason for k in plan.kept}[images / "../outside.qcow2"] == f"outside {images}: never removed"
    gc.collect(plan)
    assert outside.exists()


def test_the_tree_index_a_bump_would_stack_on_goes_with_its_image(site):
    """Every layered bake keeps its app tree's index in the cache for the next bump to diff against; once its image
    is collected no bump can stack on it, and the index (megabytes for the full image) goes too."""
    images, _, _, agents = site
    cache = images.parent / "cache" / "layers"
    cache.mkdir(parents=True)
    for version in ("v1", "v5", "elsewhere"):   # elsewhere: an image of another images dir sharing the cache
        (cache / f"agent-{version}.tree.json").write_text("{}")
    plan = gc.plan(images, agents, keep=3, cache_dir=cache)
    assert [(r.path.name, r.kind) for r in plan.removals if r.kind == "cached tree index"] == [
        ("agent-v1.tree.json", "cached tree index")]
    gc.collect(plan)
    assert sorted(p.name for p in cache.iterdir()) == ["agent-elsewhere.tree.json", "agent-v5.tree.json"]
