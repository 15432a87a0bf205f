"""What goes into an image, hashed input by input: the version, the base-stage cache key, and why a bake missed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bake.hashing import digest, file_sha256, tree_sha256
from bake.spec import Spec

REPO = Path(__file__).resolve().parent.parent
AGENTD_SOURCE = REPO / "agentd"
COMMON_ELEMENTS = ("agentfleet-common",)


@dataclass(frozen=True)
class Inputs:
    hashes: dict[str, str]     # input name -> sha256
    base_key: str              # cache key of the base stage's tree

    @property
    def version(self) -> str:
        return digest(self.hashes)[:12]


def collect(spec: Spec) -> Inputs:
    hashes: dict[str, str] = {
        "spec": file_sha256(spec.path),
        "lock": file_sha256(spec.lock_path) if spec.lock_path.exists() else "missing",
        **{f"{tree.name}/{name}": file_sha256(spec.tree_dir(tree.name) / name)
           for tree in spec.npm_trees for name in ("package-lock.json", "package.json")},
        "agentd": tree_sha256(AGENTD_SOURCE),
        "dib": _dib_version(),
    }
    for element in sorted(p for p in spec.elements_dir.iterdir() if p.is_dir()):
        hashes[f"element/{element.name}"] = tree_sha256(element)
    for key, rel in sorted(spec.files.items()):
        hashes[f"files/{key}"] = tree_sha256(spec.images_dir / rel)
    base_stage = spec.stage("base")
    base_parts = {
        "base": json.dumps([spec.base.distro, spec.base.release, spec.base.mirror, spec.base.kernel]),
        **({"refresh": spec.base.refresh} if spec.base.refresh else {}),   # absent: the keys of before it existed
        # Dart and Starship are installed by base-stage elements (languages, devtools): enabling one must rebake the
        # base tree, not reuse one without it. Absent while none is enabled: today's keys stay as they were.
        **({"upstream": json.dumps([[a.name, a.version, a.sha256] for a in spec.upstream])} if spec.upstream else {}),
        # the CPython source the base stage builds (absent: the keys of before it existed)
        **({"cpython": json.dumps([spec.cpython.version, spec.cpython.sha256])} if spec.cpython else {}),
        "packages": json.dumps(list(base_stage.packages)),
        "elements": json.dumps(list(base_stage.elements)),
        "dib": hashes["dib"],
        **{k: v for k, v in hashes.items()
           if k.startswith("files/") or k.removeprefix("element/") in (*base_stage.elements, *COMMON_ELEMENTS)},
    }
    return Inputs(hashes, digest(base_parts)[:16])


def explain_miss(current: dict[str, str], previous: dict[str, str]) -> list[str]:
    """Lines naming each input that differs from the newest published image's."""
    lines = []
    for key in sorted(set(current) | set(previous)):
        if key not in previous:
            lines.append(f"{key}: new input")
        elif key not in current:
            lines.append(f"{key}: removed")
        elif current[key] != previous[key]:
            lines.append(f"{key}: changed ({previous[key][:10]} -> {current[key][:10]})")
    return lines


def _dib_version() -> str:
    try:
        from importlib.metadata import version
        return version("diskimage-builder")
    except Exception:
        return "unknown"
