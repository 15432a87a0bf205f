"""Does the pinned Node satisfy OpenClaw's `engines.node`? A small npm-semver range check, enough for engines fields."""
from __future__ import annotations

import re

from bake.errors import BakeError

_COMPARATOR = re.compile(r"^(>=|<=|>|<|=|\^|~)?v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?$")


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if not m:
        raise BakeError(f"not a version: {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def satisfies(version: str, range_text: str) -> bool:
    """True when `version` is inside the npm range (`>=22.22.3 <23 || >=24.15.0 <25`)."""
    v = parse_version(version)
    for alternative in range_text.split("||"):
        parts = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative).split()   # npm allows ">= 18.0.0" (aws-cdk)
        if not parts or parts == ["*"]:
            return True
        if all(_holds(v, part) for part in parts):
            return True
    return False


def _holds(v: tuple[int, int, int], comparator: str) -> bool:
    m = _COMPARATOR.match(comparator)
    if not m:
        raise BakeError(f"unsupported engines comparator {comparator!r}")
    op = m[1] or "="
    nums = [int(x) if x and x not in "x*" else None for x in (m[2], m[3], m[4])]
    given = [n for n in nums if n is not None]
    lo = tuple(given + [0] * (3 - len(given)))
    if op in ("^", "~") or (op == "=" and len(given) < 3):
        # ^1.2.3 := >=1.2.3 <2; ~1.2.3 := >=1.2.3 <1.3; 22 or 22.x := >=22 <23
        if op == "^":
            hi_index = next((i for i, n in enumerate(lo) if n != 0), 2) if lo[0] == 0 else 0
        elif op == "~":
            hi_index = 1 if len(given) >= 2 else 0
        else:
            hi_index = len(given) - 1
        hi = list(lo[: hi_index + 1])
        hi[-1] += 1
        hi_t = tuple(hi + [0] * (3 - len(hi)))
        return lo <= v < hi_t
    if op == "=":
        return v == lo
    if op == ">=":
        return v >= lo
    if op == ">":
        return v > lo if len(given) == 3 else v[: len(given)] > tuple(given)
    if op == "<":
        return v < lo
    if op == "<=":
        return v <= lo if len(given) == 3 else v[: len(given)] <= tuple(given)
    raise AssertionError(op)


def check_engine(node_version: str, version: str, engines_node: str, package: str = "openclaw") -> None:
    """Refuse a Node/package pair that the package itself declares incompatible (OpenClaw's, or an npm CLI's)."""
    if not satisfies(node_version, engines_node):
        hint = " (2026.9.2 is the newest accepting Node 22)" if package == "openclaw" else ""
        name = "OpenClaw" if package == "openclaw" else package
        raise BakeError(
            f"artifacts.{package}.version: {name} {version} requires node {engines_node!r}, "
            f"but artifacts.node.version pins {node_version}; pin a {name} release that accepts this Node"
            f"{hint} or a Node it accepts")
