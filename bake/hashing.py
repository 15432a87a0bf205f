"""Content hashes of files and trees: the basis of versions, cache keys and manifests."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

_SKIP = {"__pycache__", ".pytest_cache"}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_files(root: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Files under root, sorted, skipping caches and the relative paths in `exclude`."""
    excluded = {root / e for e in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if n not in _SKIP and d / n not in excluded)
        found += [d / n for n in filenames if not n.endswith(".pyc") and d / n not in excluded]
    return sorted(found)


def tree_sha256(root: Path, exclude: Iterable[str] = ()) -> str:
    """Hash of names, executable bits and contents: what changes what an element or package does."""
    h = hashlib.sha256()
    for f in tree_files(root, exclude):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(b"x" if os.access(f, os.X_OK) else b"-")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def digest(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(parts):
        h.update(f"{key}={parts[key]}\n".encode())
    return h.hexdigest()
