"""Reading one file's drift-relevant state (hash, mode, owner), with a stat-signature cache so rescans stay cheap."""
from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
from functools import lru_cache
from typing import Dict, Optional, Tuple

from .vm_files import FileState, symlink_sha256

Signature = Tuple[int, int, int, int]


@lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@lru_cache(maxsize=256)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class FileStateReader:
    """Hashes a file only when its (inode, size, mtime, ctime) changed: ctime cannot be set back by a user."""

    def __init__(self) -> None:
        self._cache: Dict[str, Tuple[Signature, Optional[str]]] = {}

    def read(self, host_path: str) -> Optional[FileState]:
        """None when the path is gone or is not a regular file or symlink (directories are walked, not compared)."""
        try:
            st = os.lstat(host_path)
        except OSError:
            self._cache.pop(host_path, None)
            return None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(host_path)
        if cached is not None and cached[0] == sig:
            digest = cached[1]
        else:
            try:
                if stat.S_ISLNK(st.st_mode):  # a symlink's content is its target (hashed as bake/manifest.py does)
                    digest = symlink_sha256(os.readlink(host_path))
                else:
                    digest = sha256_file(host_path)
            except OSError:  # unreadable or vanished between stat and open
                digest = None
            self._cache[host_path] = (sig, digest)
        return FileState(digest, "%04o" % stat.S_IMODE(st.st_mode), f"{_user(st.st_uid)}:{_group(st.st_gid)}")

    def forget(self, host_path: str) -> None:
        self._cache.pop(host_path, None)
