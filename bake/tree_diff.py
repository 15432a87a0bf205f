"""What the app stage added, changed or removed in the tree under it: the content of a layered image's app layer.

Both trees are DIB's tar output. Each member is reduced to what a guest can tell apart (type, mode, owner by number,
mtime, content sha256, symlink target, device numbers, xattrs, and every name of a hard-linked inode), so a member
whose state is the same in both tars (its mtime aside: see diff) is left alone, and everything else is rewritten
whole. Pure Python (tarfile):
the fast tier tests it on small synthetic tars.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Optional

from bake.errors import BakeError

XATTR_PREFIX = "SCHILY.xattr."
_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.GNUTYPE_SPARSE: "file",
          tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo"}


@dataclass(frozen=True)
class Entry:
    """One path of a tree as the guest sees it."""
    kind: str                               # file, dir, symlink, char, block, fifo
    mode: int                               # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime: float
    content: str                            # a file's sha256, a symlink's target, a device's "major:minor"
    xattrs: tuple[tuple[str, str], ...] = ()
    links: tuple[str, ...] = ()             # every name of a hard-linked file's inode, sorted (empty: one name)


@dataclass(frozen=True)
class TreeDiff:
    """`changed`: names to take from the new tree, in its order (a hard link after its target). `removed`: the
    top-most names to delete first (gone from the new tree, or of another type there, so the new one can be written)."""
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def member_name(name: str) -> str:
    """A member's path relative to the tree's root, as both tars may spell it (`./etc/x`, `etc/x/`); the root is `.`."""
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return name or "."


def index(tar_path: Path) -> dict[str, Entry]:
    """Every member's state, by member_name, reading the tar once (file contents are hashed as they stream by)."""
    entries: dict[str, Entry] = {}
    primary: dict[str, str] = {}   # hard-linked name -> the first name of its inode in the tar
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                name = member_name(member.name)
                if member.islnk():
                    target = member_name(member.linkname)
                    if target not in entries:
                        raise BakeError(f"{tar_path}: hard link {name} to {target}, which comes later or not at all")
                    primary[name] = primary.get(target, target)
                    entries[name] = entries[target]
                    continue
                kind = _KINDS.get(member.type)
                if kind is None:
                    raise BakeError(f"{tar_path}: {name}: unsupported tar member type {member.type!r}")
                entries[name] = Entry(kind, member.mode, member.uid, member.gid, member.mtime,
                                      _content(tar, member, kind), _xattrs(member))
                primary.pop(name, None)
    except (OSError, tarfile.TarError) as e:
        raise BakeError(f"{tar_path}: unreadable tree ({e})") from None
    groups: dict[str, list[str]] = {}
    for name, first in primary.items():
        groups.setdefault(first, [first]).append(name)
    for names in groups.values():
        links = tuple(sorted(names))
        for name in links:
            entries[name] = replace(entries[name], links=links)
    return entries


def cached_index(tar_path: Path, index_path: Path) -> dict[str, Entry]:
    """index(), kept in `index_path` for the next bake on the same tar (the base tree: read once per base key, not
    once per bump); recomputed when the tar's size or mtime is not the one it was made from."""
    stamp = _stamp(tar_path)
    kept = load_index(index_path, stamp)
    if kept is not None:
        return kept
    entries = index(tar_path)
    save_index(entries, index_path, stamp)
    return entries


TREE_INDEX_SUFFIX = ".tree.json"


def index_path(cache: Path, image_name: str, version: str) -> Path:
    """Where a layered bake keeps its app tree's index, for the next bump to diff against (bake/layers.py
    find_parent; `bake gc` removes it with the image). Here, not in layers.py: gc runs on hypervisors, whose Python
    has none of the bake's dependencies."""
    return cache / f"{image_name}-{version}{TREE_INDEX_SUFFIX}"


def save_index(entries: dict[str, Entry], index_path: Path, stamp: Optional[list[int]] = None) -> None:
    """Written whole or not at all (a temporary file renamed in). `stamp`: what load_index must be given back."""
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f".{index_path.name}.tmp")
    tmp.write_text(json.dumps({"tar": stamp, "entries": [[n, astuple(e)] for n, e in entries.items()]}))
    tmp.rename(index_path)


def load_index(index_path: Path, stamp: Optional[list[int]] = None) -> Optional[dict[str, Entry]]:
    """An index save_index wrote with the same `stamp`, or None (missing, unreadable, or of another tar)."""
    try:
        data = json.loads(index_path.read_text())
        if data["tar"] == stamp:
            return {name: Entry(kind, mode, uid, gid, mtime, content, tuple(map(tuple, xattrs)), tuple(links))
                    for name, (kind, mode, uid, gid, mtime, content, xattrs, links) in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _stamp(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def diff(old: dict[str, Entry], new: dict[str, Entry], new_order: list[str]) -> TreeDiff:
    """`new_order`: the new tree's names in tar order (index()'s dict keeps it: pass list(new)).

    A path whose only difference is its mtime is left alone: every rebuild of the app stage gives the files npm
    installs (OpenClaw's 37,000) the time of that build, and rewriting them for it made a one-pin bump's layer as big
    as the whole app stage. One exception keeps Python's caches valid: a rewritten `__pycache__/<m>.*.pyc` records its
    source's mtime, so that source (`<m>.py`) is rewritten with it."""
    changed = {name for name in new_order if not _same(old.get(name), new[name])}
    changed |= {source for name in changed if (source := _pyc_source(name)) in new}
    ordered = [name for name in new_order if name in changed]
    gone = [name for name in old if name not in new and name != "."]
    retyped = [name for name in ordered if name in old and old[name].kind != new[name].kind]
    return TreeDiff(tuple(ordered), top_most(gone + retyped))


def _same(old: Optional[Entry], new: Entry) -> bool:
    return old is not None and replace(old, mtime=0) == replace(new, mtime=0)


def _pyc_source(name: str) -> Optional[str]:
    """`a/b/__pycache__/m.cpython-312.pyc` -> `a/b/m.py`; None for any other name."""
    head, _, file = name.rpartition("/__pycache__/")
    if not head or not file.endswith(".pyc") or "/" in file:
        return None
    return f"{head}/{file.split('.', 1)[0]}.py"


def top_most(names: list[str]) -> tuple[str, ...]:
    """The names no other name of the list contains (removing `a` removes `a/b`), sorted."""
    listed = set(names)
    return tuple(sorted(name for name in listed
                        if not any("/".join(name.split("/")[:i]) in listed for i in range(1, name.count("/") + 1))))


def write_changes(new_tar: Path, changed: tuple[str, ...], out: Path) -> int:
    """The members of `new_tar` named in `changed`, as a tar to extract over the old tree; returns their count.
    Owners are by number only (names blanked: the extracting tar would map them through its own /etc/passwd), and
    xattrs are left out: GNU tar restores only user.* ones by default, so the caller sets them itself."""
    wanted = set(changed)
    written = 0
    try:
        with tarfile.open(new_tar, "r:") as src, tarfile.open(out, "w:", format=tarfile.PAX_FORMAT) as dst:
            for member in src:
                name = member_name(member.name)
                if name not in wanted:
                    continue
                info = tarfile.TarInfo(name)
                info.type = tarfile.REGTYPE if _KINDS.get(member.type) == "file" else member.type
                info.mode, info.uid, info.gid, info.mtime = member.mode, member.uid, member.gid, member.mtime
                info.uname = info.gname = ""
                info.devmajor, info.devminor = member.devmajor, member.devminor
                if member.islnk():
                    info.linkname = member_name(member.linkname)
                    if info.linkname not in wanted:
                        raise BakeError(f"{new_tar}: hard link {name} changed but not its target {info.linkname}")
                elif member.issym():
                    info.linkname = member.linkname
                if info.type == tarfile.REGTYPE:
                    info.size = member.size
                    dst.addfile(info, src.extractfile(member))
                else:
                    dst.addfile(info)
                written += 1
    except (OSError, tarfile.TarError) as e:
        raise BakeError(f"{new_tar}: cannot write its changes to {out} ({e})") from None
    return written


def _content(tar: tarfile.TarFile, member: tarfile.TarInfo, kind: str) -> str:
    if kind == "file":
        h = hashlib.sha256()
        f = tar.extractfile(member)
        while block := f.read(1 << 20):
            h.update(block)
        return h.hexdigest()
    if kind == "symlink":
        return member.linkname
    if kind in ("char", "block"):
        return f"{member.devmajor}:{member.devminor}"
    return ""


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k.removeprefix(XATTR_PREFIX), v) for k, v in member.pax_headers.items()
                        if k.startswith(XATTR_PREFIX)))


def xattr_bytes(value: str) -> bytes:
    """An xattr's value as tarfile decoded it from the pax header (binary values survive as surrogate escapes)."""
    return value.encode("utf-8", "surrogateescape")
