"""Crash-safe file writes and root-relative paths, shared by the spool, the sequence counter and the canary."""
from __future__ import annotations

import os


def rooted(root: str, path: str) -> str:
    """Map an absolute in-VM path under `root` (so tests run against fixture trees, as node_exporter does)."""
    if root in ("", "/"):
        return path
    return os.path.join(root, path.lstrip("/"))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write-to-temp, fsync, rename, fsync the directory: after a crash the file is either old or new, never torn."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, ".%s.tmp" % os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)


def read_int(path: str, default: int = 0) -> int:
    """Read a counter written by atomic_write; a missing file is the default, garbage is an error."""
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or default)
    except FileNotFoundError:
        return default
