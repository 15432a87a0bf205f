"""Which drift the package manager explains, read from dpkg's own database (no dpkg subprocess).

Agents have passwordless sudo and run `apt`; without this, every package they install or upgrade is drift that
alerts until the next replace, and nothing tells it from an intrusion. Each entry gets a class (protocol.DRIFT_CLASSES):
- "package": dpkg put it there. A `pkg:<name>` entry is dpkg's own record. A modified or added file is "package" when
  its md5 is the one dpkg's `<pkg>.md5sums` (or, for a conffile, the status file's `Conffiles:`) lists for a package
  whose installed version differs from the version the bake recorded in image.json (`packages.dpkg`), or that the bake
  did not have. Versions, not file times: exact, free of clocks, and a reinstall of the bake's own version restores
  the bake's content anyway (no drift). No "package" at all when image.json records no packages (nothing to compare).
- "conffile": the path is a conffile of the package that owns it and its content is not that package's: an admin's
  edit, which dpkg itself preserves across upgrades.
- "unexplained": everything else, including mode and owner changes of non-conffiles (md5sums say nothing about
  them: a setuid bit on an upgraded binary must still alert) and missing files (the database cannot say who owned a
  file it no longer lists).
Not a defence against root: root can rewrite dpkg's database too. It separates the expected from the rest.

dpkg's layout (`dpkg --admindir`): `status` and `info/` side by side, so the database is found next to the
configured `dpkg_status`. The index is built once per change of the status file (dpkg rewrites it on every run) and
only when there is drift to classify; it holds only the paths drift can be about (watched or in the baseline).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Callable, Dict, List, Optional, Set, Tuple

from .packages import installed_stanzas
from .protocol import CONFFILE, PACKAGE, UNEXPLAINED, DriftEntry

log = logging.getLogger(__name__)

CONTENT_KINDS = ("modified", "added")  # the kinds md5sums can explain


@dataclasses.dataclass(frozen=True)
class DpkgIndex:
    """dpkg's database as far as drift needs it; built by `read_dpkg_index`."""
    versions: Dict[str, str]                       # installed package -> version
    owners: Dict[str, Tuple[str, ...]]             # path (only wanted ones) -> packages listing it (info file stems)
    conffiles: Dict[str, Dict[str, str]]           # package -> conffile path -> md5 (status's Conffiles:)
    info_dir: str

    def md5sums(self, stem: str) -> Dict[str, str]:
        """path -> md5 of one package's files (`info/<stem>.md5sums`, paths stored without the leading /)."""
        sums: Dict[str, str] = {}
        try:
            with open(os.path.join(self.info_dir, stem + ".md5sums"), encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    digest, _, rel = line.rstrip("\n").partition("  ")
                    if rel:
                        sums["/" + rel.lstrip("/")] = digest
        except OSError:
            pass
        return sums


def package_name(stem: str) -> str:
    """`libc6:amd64` (a Multi-Arch: same package's info files) -> `libc6`, the name image.json records."""
    return stem.partition(":")[0]


def parse_conffiles(value: str) -> Dict[str, str]:
    """status's `Conffiles:` lines (` /etc/x <md5> [obsolete|remove-on-upgrade]`) -> path -> md5."""
    found: Dict[str, str] = {}
    for line in value.splitlines():
        parts = line.split()
        while len(parts) > 2 and parts[-1] in ("obsolete", "remove-on-upgrade"):
            parts.pop()
        if len(parts) >= 2 and parts[0].startswith("/"):
            found[" ".join(parts[:-1])] = parts[-1]
    return found


def read_dpkg_index(dpkg_status: str, wanted: Callable[[str], bool]) -> DpkgIndex:
    """One pass over `status` and `info/*.list`; paths are kept only when `wanted` (the rest is most of the disk)."""
    info_dir = os.path.join(os.path.dirname(dpkg_status), "info")
    try:
        with open(dpkg_status, encoding="utf-8", errors="replace") as f:
            stanzas = installed_stanzas(f.read())
    except OSError:
        stanzas = []
    versions = {s["Package"]: s.get("Version", "") for s in stanzas}
    conffiles = {s["Package"]: parse_conffiles(s["Conffiles"]) for s in stanzas if s.get("Conffiles")}
    owners: Dict[str, List[str]] = {}
    try:
        names = sorted(n for n in os.listdir(info_dir) if n.endswith(".list"))
    except OSError:
        names = []
    for name in names:
        stem = name[:-len(".list")]
        if package_name(stem) not in versions:
            continue  # removed, config-files only, half-installed: it explains nothing
        try:
            with open(os.path.join(info_dir, name), encoding="utf-8", errors="surrogateescape") as f:
                for line in f:
                    path = line.rstrip("\n")
                    if wanted(path):
                        owners.setdefault(path, []).append(stem)
        except OSError:
            continue
    return DpkgIndex(versions, {p: tuple(s) for p, s in owners.items()}, conffiles, info_dir)


def md5_file(path: str) -> Optional[str]:
    """A regular file's md5 (dpkg's md5sums hash); None for a symlink or what cannot be read."""
    if os.path.islink(path):
        return None
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class DriftClassifier:
    """Classifies a drift list against dpkg's database; `builds` counts index builds (once per dpkg state)."""

    def __init__(self, dpkg_status_host: str, to_host: Callable[[str], str], wanted: Callable[[str], bool],
                 baked_packages: Dict[str, str]):
        self.dpkg_status = dpkg_status_host
        self.to_host = to_host                      # in-VM path -> host path (the --root mapping)
        self.wanted = wanted
        self.baked_packages = dict(baked_packages)  # image.json's packages.dpkg, never what was accepted since
        self.builds = 0
        self._index: Optional[DpkgIndex] = None
        self._signature: Optional[Tuple[int, int, int]] = None
        self._md5: Dict[str, Tuple[Optional[str], Optional[str]]] = {}    # path -> (sha256 seen, md5)
        self._sums: Dict[str, Dict[str, str]] = {}                       # stem -> its md5sums, per index

    def classify(self, entries: List[DriftEntry]) -> List[DriftEntry]:
        if not entries:
            return entries
        index = self._current_index()
        return [dataclasses.replace(e, class_=self.class_of(e, index)) for e in entries]

    def class_of(self, entry: DriftEntry, index: DpkgIndex) -> str:
        if entry.kind == "package":
            return PACKAGE  # dpkg's own record of what it installed, upgraded or removed
        stems = index.owners.get(entry.path, ())
        if not stems:
            return UNEXPLAINED
        after_bake = [s for s in stems if self._changed_since_bake(package_name(s), index)]
        md5 = self._current_md5(entry) if entry.kind in CONTENT_KINDS and after_bake else None
        for stem in stems:
            conffile_md5 = index.conffiles.get(package_name(stem), {}).get(entry.path)
            if conffile_md5 is not None:
                return PACKAGE if md5 is not None and stem in after_bake and md5 == conffile_md5 else CONFFILE
        if md5 is not None and any(self._sums_of(s, index).get(entry.path) == md5 for s in after_bake):
            return PACKAGE
        return UNEXPLAINED

    def _changed_since_bake(self, name: str, index: DpkgIndex) -> bool:
        return bool(self.baked_packages) and self.baked_packages.get(name) != index.versions.get(name)

    def _current_md5(self, entry: DriftEntry) -> Optional[str]:
        """The file's md5, computed again only when its sha256 (what the scan already read) changed."""
        cached = self._md5.get(entry.path)
        if cached is not None and cached[0] == entry.actual:
            return cached[1]
        md5 = md5_file(self.to_host(entry.path))
        self._md5[entry.path] = (entry.actual, md5)
        return md5

    def _sums_of(self, stem: str, index: DpkgIndex) -> Dict[str, str]:
        if stem not in self._sums:
            self._sums[stem] = index.md5sums(stem)
        return self._sums[stem]

    def _current_index(self) -> DpkgIndex:
        try:
            st = os.stat(self.dpkg_status)
            info = os.stat(os.path.join(os.path.dirname(self.dpkg_status), "info"))
            signature: Optional[Tuple[int, int, int]] = (st.st_mtime_ns, st.st_size, info.st_mtime_ns)
        except OSError:
            signature = None
        if self._index is None or signature != self._signature:
            self._index = read_dpkg_index(self.dpkg_status, self.wanted)
            self._signature = signature
            self._sums = {}
            self.builds += 1
            log.debug("dpkg index built: %d packages, %d paths of interest", len(self._index.versions),
                      len(self._index.owners))
        return self._index

    def forget_md5s(self, keep: Set[str]) -> None:
        """Drop cached md5s of paths no longer drifting (bounded by the drift, not by history)."""
        for path in [p for p in self._md5 if p not in keep]:
            del self._md5[path]
