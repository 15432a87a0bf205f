"""`bake diff A B`: which package versions differ between two published images, read from their manifests (dpkg
and npm, as the bake recorded them from the tree), so a rebake for security updates shows what it changed."""
from __future__ import annotations

from dataclasses import dataclass

from bake.publish import Manifest


@dataclass(frozen=True)
class Change:
    kind: str                 # "dpkg" or "npm"
    name: str
    before: str               # "" when B added it
    after: str                # "" when B removed it

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "before": self.before, "after": self.after}

    def line(self) -> str:
        if not self.before:
            return f"+ {self.kind:4} {self.name} {self.after}"
        if not self.after:
            return f"- {self.kind:4} {self.name} {self.before}"
        return f"~ {self.kind:4} {self.name} {self.before} -> {self.after}"


def package_changes(a: Manifest, b: Manifest) -> list[Change]:
    """Every package whose version differs from A to B, by kind then name."""
    changes = []
    for kind in sorted(set(a.packages) | set(b.packages)):
        old, new = a.packages.get(kind, {}), b.packages.get(kind, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                changes.append(Change(kind, name, old.get(name, ""), new.get(name, "")))
    return changes
