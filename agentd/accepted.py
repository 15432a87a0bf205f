"""Drift an operator accepted, kept by agentd as a layer over the baseline: `<state_dir>/accepted.json`.

image.json and injected.json are the bake's and the clone's record and are never rewritten; what an operator
accepted since (`collector accept-drift`, the agent page) lives beside agentd's other state. It is on the root disk,
so a replace or a rollback starts again from the new image's baseline, and entries recorded under another image
version are ignored. An acceptance is adopted only while agentd's own drift holds exactly the accepted entry (same
path, kind and current value): a file changed again after the operator looked is still drift.

Format: {"image_version": V, "files": {path: {"from": S, "to": S}}, "packages": {name: {"from": V, "to": V}},
"log": [AcceptedDrift...]}, S a baseline entry {sha256, mode, owner} or null, V a version or null: "to" null removes
the path or package from the baseline (an accepted deletion), "from" is the record's entry it was accepted over.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Dict, Optional, Tuple

from .baseline import Baseline
from .errors import AgentdError
from .fsutil import rooted
from .protocol import AcceptedDrift, DriftEntry
from .vm_files import Config, FileState, baseline_from_json

log = logging.getLogger(__name__)

ACCEPTED_FILE = "accepted.json"
LOG_LIMIT = 1000  # the local record of who accepted what (the collector keeps the full one)


def accepted_path(config: Config, root: str) -> str:
    return rooted(root, os.path.join(config.state_dir, ACCEPTED_FILE))


FileChange = Tuple[Optional[FileState], Optional[FileState]]   # (the record's entry it was accepted over, the new)
PackageChange = Tuple[Optional[str], Optional[str]]


@dataclasses.dataclass(frozen=True)
class AcceptedLayer:
    """Each accepted change is kept with the baseline entry it was accepted over: when the bake's or the clone's
    record of that path changes (`clone.py --update` injects a new file), theirs holds and the acceptance lapses,
    instead of a stale acceptance turning the new file into drift."""
    image_version: str
    files: Dict[str, FileChange] = dataclasses.field(default_factory=dict)
    packages: Dict[str, PackageChange] = dataclasses.field(default_factory=dict)
    log: Tuple[AcceptedDrift, ...] = ()

    def over(self, baseline: Baseline) -> Baseline:
        """The baseline (image.json + injected.json) with every accepted entry still over the same record."""
        files, packages = dict(baseline.files), dict(baseline.packages)
        for path, (was, now) in self.files.items():
            if baseline.files.get(path) == was:
                _put(files, path, now)
        for name, (was_v, now_v) in self.packages.items():
            if baseline.packages.get(name) == was_v:
                _put(packages, name, now_v)
        return dataclasses.replace(baseline, files=files, packages=packages)

    def adopt(self, baseline: Baseline, entry: DriftEntry, current: Optional[FileState],
              accepted: AcceptedDrift) -> "AcceptedLayer":
        """This layer plus one accepted entry; `baseline` is the effective one, `current` what is on disk now."""
        files, packages = dict(self.files), dict(self.packages)
        if entry.kind == "package":
            name = entry.path[len("pkg:"):]
            was_v = self.packages[name][0] if name in self.packages else baseline.packages.get(name)
            packages[name] = (was_v, entry.actual)
        else:
            was = self.files[entry.path][0] if entry.path in self.files else baseline.files.get(entry.path)
            now = _accepted_state(baseline.files.get(entry.path), entry, current)
            files[entry.path] = (was, now)
        return AcceptedLayer(self.image_version, files, packages, (self.log + (accepted,))[-LOG_LIMIT:])

    def to_json(self) -> dict:
        return {"image_version": self.image_version,
                "files": {p: {"from": _state_json(was), "to": _state_json(now)}
                          for p, (was, now) in sorted(self.files.items())},
                "packages": {n: {"from": was, "to": now} for n, (was, now) in sorted(self.packages.items())},
                "log": [a.to_json() for a in self.log]}


def _put(mapping: dict, key: str, value: object) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _accepted_state(before: Optional[FileState], entry: DriftEntry,
                    current: Optional[FileState]) -> Optional[FileState]:
    """The baseline entry a path gets when this drift entry is accepted (None: the path leaves the baseline)."""
    if entry.kind == "missing":
        return None
    if entry.kind == "added" or before is None:
        return current if current is not None else FileState(entry.actual, "", "")
    if entry.kind == "modified":
        return dataclasses.replace(before, sha256=entry.actual)
    if entry.kind == "mode":
        return dataclasses.replace(before, mode=entry.actual or "")
    return dataclasses.replace(before, owner=entry.actual or "")


def _state_json(state: Optional[FileState]) -> Optional[dict]:
    return None if state is None else state.to_json()


def load_layer(path: str, image_version: str) -> AcceptedLayer:
    """The layer for this image version; an absent file or another version's is empty. A damaged file is an error
    in the journal, not a refusal to start: the accepted drift then shows again, which is visible and safe."""
    empty = AcceptedLayer(image_version)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as e:
        log.error("cannot read %s (%s): accepted drift is reported again until accepted anew", path, e)
        return empty
    try:
        return _layer_from_json(data, path, image_version)
    except (ValueError, TypeError, KeyError) as e:
        log.error("%s: %s: accepted drift is reported again until accepted anew", path, e)
        return empty


def _layer_from_json(data: object, where: str, image_version: str) -> AcceptedLayer:
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    if data.get("image_version") != image_version:
        return AcceptedLayer(image_version)  # accepted on another image: this VM's baseline is the new image's
    files: Dict[str, FileChange] = {}
    for path, change in _mapping(data, "files").items():
        if not isinstance(change, dict) or set(change) != {"from", "to"}:
            raise ValueError(f"files: {path!r}: must be {{from, to}}")
        was, now = (baseline_from_json({path: change[k]}, where)[path] if change[k] is not None else None
                    for k in ("from", "to"))
        files[path] = (was, now)
    packages: Dict[str, PackageChange] = {}
    for name, change in _mapping(data, "packages").items():
        if not isinstance(change, dict) or set(change) != {"from", "to"} or not all(
                v is None or isinstance(v, str) for v in change.values()):
            raise ValueError(f"packages: {name!r}: must be {{from, to}} versions or null")
        packages[name] = (change["from"], change["to"])
    entries = data.get("log") or []
    if not isinstance(entries, list):
        raise ValueError("log: must be a list")
    return AcceptedLayer(image_version, files, packages, tuple(AcceptedDrift.from_json(e, "log") for e in entries))


def _mapping(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}: must be an object")
    return value


def save_layer(path: str, layer: AcceptedLayer) -> None:
    """Atomically (write, fsync, rename): a crash leaves the old layer or the new one."""
    directory = os.path.dirname(path)
    tmp = path + ".tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(layer.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise AgentdError(f"cannot write {path}: {e.strerror}") from None
