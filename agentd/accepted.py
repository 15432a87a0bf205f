"""Drift an operator accepted, kept by agentd as a layer over the baseline: `<state_dir>/accepted.json`.

image.json and injected.json are the bake's and the clone's record and are never rewritten; what an operator
accepted since (`collector accept-drift`, the agent page) lives beside agentd's other state. It is on the root disk,
so a replace or a rollback starts again from the new image's baseline, and entries recorded under another image
version are ignored. An acceptance is adopted only while agentd's own drift holds exactly the accepted entry (same
path, kind and current value): a file changed again after the operator looked is still drift.

Format: {"image_version": V, "files": {path: {sha256, mode, owner} | null}, "packages": {name: version | null},
"log": [AcceptedDrift...]}; null removes the path or package from the baseline (an accepted deletion).
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


@dataclasses.dataclass(frozen=True)
class AcceptedLayer:
    image_version: str
    files: Dict[str, Optional[FileState]] = dataclasses.field(default_factory=dict)
    packages: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    log: Tuple[AcceptedDrift, ...] = ()

    def over(self, baseline: Baseline) -> Baseline:
        """The baseline with every accepted entry in place of the bake's or the clone's."""
        files, packages = dict(baseline.files), dict(baseline.packages)
        for path, state in self.files.items():
            if state is None:
                files.pop(path, None)
            else:
                files[path] = state
        for name, version in self.packages.items():
            if version is None:
                packages.pop(name, None)
            else:
                packages[name] = version
        return dataclasses.replace(baseline, files=files, packages=packages)

    def adopt(self, baseline: Baseline, entry: DriftEntry, current: Optional[FileState],
              accepted: AcceptedDrift) -> "AcceptedLayer":
        """This layer plus one accepted entry; `baseline` is the effective one, `current` what is on disk now."""
        files, packages = dict(self.files), dict(self.packages)
        before = baseline.files.get(entry.path)
        if entry.kind == "package":
            packages[entry.path[len("pkg:"):]] = entry.actual
        elif entry.kind == "missing":
            files[entry.path] = None
        elif entry.kind == "added":
            files[entry.path] = current if current is not None else FileState(entry.actual, "", "")
        elif before is not None and entry.kind == "modified":
            files[entry.path] = dataclasses.replace(before, sha256=entry.actual)
        elif before is not None and entry.kind == "mode":
            files[entry.path] = dataclasses.replace(before, mode=entry.actual or "")
        elif before is not None and entry.kind == "owner":
            files[entry.path] = dataclasses.replace(before, owner=entry.actual or "")
        return AcceptedLayer(self.image_version, files, packages, (self.log + (accepted,))[-LOG_LIMIT:])

    def to_json(self) -> dict:
        return {"image_version": self.image_version,
                "files": {p: None if s is None else s.to_json() for p, s in sorted(self.files.items())},
                "packages": dict(sorted(self.packages.items())),
                "log": [a.to_json() for a in self.log]}


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
    raw_files = data.get("files") or {}
    if not isinstance(raw_files, dict):
        raise ValueError("files: must be an object")
    present = baseline_from_json({p: s for p, s in raw_files.items() if s is not None}, where)
    files: Dict[str, Optional[FileState]] = {p: present.get(p) for p in raw_files}
    packages = data.get("packages") or {}
    if not isinstance(packages, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                 for k, v in packages.items()):
        raise ValueError("packages: must map names to versions or null")
    entries = data.get("log") or []
    if not isinstance(entries, list):
        raise ValueError("log: must be a list")
    return AcceptedLayer(image_version, files, dict(packages),
                         tuple(AcceptedDrift.from_json(e, "log") for e in entries))


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
