"""Drift = the baseline against the file system now, kept current by events (rescan_path) and full scans.

Paths are in-VM absolute paths ("/etc/hosts"); `root` maps them onto the host so tests run on fixture trees.
"""
from __future__ import annotations

import fnmatch
import os
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .baseline import Baseline, FileState
from .drift_class import DriftClassifier
from .filestate import FileStateReader
from .fsutil import rooted
from .packages import package_drift, parse_dpkg_status
from .protocol import DriftEntry


def compare_file(path: str, expected: FileState, actual: Optional[FileState]) -> List[DriftEntry]:
    """Pure: the drift entries of one baseline file (missing, or modified/mode/owner, each its own entry)."""
    if actual is None:
        return [DriftEntry(path, "missing", expected.sha256, None)]
    entries = []
    if expected.sha256 and actual.sha256 != expected.sha256:
        entries.append(DriftEntry(path, "modified", expected.sha256, actual.sha256))
    if expected.mode and actual.mode != expected.mode.rjust(4, "0"):
        entries.append(DriftEntry(path, "mode", expected.mode, actual.mode))
    if expected.owner and actual.owner != expected.owner:
        entries.append(DriftEntry(path, "owner", expected.owner, actual.owner))
    return entries


class DriftTracker:
    """The current state of every watched and baseline file; thread-safe, drift recomputed only after changes."""

    def __init__(self, baseline: Baseline, root: str, watched: Iterable[str], ignore: Iterable[str] = (),
                 dpkg_status: str = "/var/lib/dpkg/status", exclude: Iterable[str] = (),
                 baked_packages: Optional[Dict[str, str]] = None):
        """`baked_packages`: the bake's dpkg packages (image.json's) when `baseline` also holds accepted ones: what
        was installed after the bake stays so when an operator accepts its version (drift_class.py)."""
        self.baseline = baseline
        self.root = root
        self.watched = tuple(p.rstrip("/") or "/" for p in watched)
        self.ignore = tuple(ignore)
        self.exclude = set(exclude)  # agentd's own files (the canary): never drift
        self.dpkg_status = rooted(root, dpkg_status)
        self._reader = FileStateReader()
        self._current: Dict[str, FileState] = {}
        self._packages: Dict[str, str] = {}
        self._dpkg_sig: Optional[Tuple[int, int]] = None
        self._lock = threading.Lock()
        self._cache: Optional[List[DriftEntry]] = None
        self.classifier = DriftClassifier(self.dpkg_status, lambda p: rooted(root, p), self._may_drift,
                                          baseline.packages if baked_packages is None else baked_packages)
        self.full_scans = 0
        self._visited = 0
        self.on_progress: Optional[Callable[[], None]] = None  # called every few hundred files during a scan

    # --- path mapping -------------------------------------------------------------------------------
    def to_vm(self, host_path: str) -> Optional[str]:
        if self.root in ("", "/"):
            return host_path
        rel = os.path.relpath(host_path, self.root)
        return None if rel.startswith("..") else "/" + rel if rel != "." else "/"

    def is_watched(self, path: str) -> bool:
        return any(path == w or path.startswith(w.rstrip("/") + "/") for w in self.watched)

    def _ignored(self, path: str) -> bool:
        return path in self.exclude or any(fnmatch.fnmatchcase(path, pat) for pat in self.ignore)

    def _may_drift(self, path: str) -> bool:
        """Whether a path can ever be a drift entry (what the dpkg index keeps)."""
        return path in self.baseline.files or self.is_watched(path)

    def set_baseline(self, baseline: Baseline) -> None:
        """Measure against a new baseline from now on (drift an operator accepted: agentd/accepted.py)."""
        with self._lock:
            self.baseline = baseline
            self._cache = None

    def current(self, path: str) -> Optional[FileState]:
        """What the last scan or event read for an in-VM path (None when absent or not tracked)."""
        with self._lock:
            return self._current.get(path)

    # --- updates ------------------------------------------------------------------------------------
    def full_scan(self) -> None:
        """Walk every watched path and stat every baseline file: catches whatever events missed."""
        fresh: Dict[str, FileState] = {}
        for top in self.watched:
            self._walk(rooted(self.root, top), fresh)
        for path in self.baseline.files:
            if path not in fresh:
                state = self._reader.read(rooted(self.root, path))
                if state is not None:
                    fresh[path] = state
        self._refresh_packages(force=True)
        with self._lock:
            self._current = fresh
            self._cache = None
            self.full_scans += 1

    def _walk(self, host_top: str, into: Dict[str, FileState]) -> None:
        def visit(host_path: str) -> None:
            self._visited += 1
            if self.on_progress is not None and self._visited % 256 == 0:
                self.on_progress()  # a first scan on a slow VM can outlast the systemd watchdog
            vm = self.to_vm(host_path)
            if vm is None or self._ignored(vm):
                return
            state = self._reader.read(host_path)
            if state is not None:
                into[vm] = state
        if not os.path.isdir(host_top) or os.path.islink(host_top):
            visit(host_top)
            return
        for dirpath, dirnames, filenames in os.walk(host_top):
            for name in filenames:
                visit(os.path.join(dirpath, name))
            for name in dirnames:  # symlinks to directories are files for drift, not walked
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    visit(full)

    def rescan_path(self, host_path: str) -> bool:
        """Re-read one path after an event (a file, or a directory created/moved/deleted). True if state changed."""
        vm = self.to_vm(host_path)
        if vm is None:
            return False
        found: Dict[str, FileState] = {}
        if os.path.isdir(host_path) and not os.path.islink(host_path):
            self._walk(host_path, found)
        elif not self._ignored(vm):
            state = self._reader.read(host_path)
            if state is not None:
                found[vm] = state
        prefix = vm.rstrip("/") + "/"
        with self._lock:
            stale = [p for p in self._current if p == vm or p.startswith(prefix)]
            before = {p: self._current[p] for p in stale}
            if before == found:
                return False
            for p in stale:
                del self._current[p]
            self._current.update(found)
            self._cache = None
            return True

    def _refresh_packages(self, force: bool = False) -> bool:
        """Re-parse dpkg's status only when the file changed (it is rewritten, never appended, by dpkg). Any dpkg
        run may change how drift is classified, so it recomputes the drift even when no version changed."""
        try:
            st = os.stat(self.dpkg_status)
            sig: Optional[Tuple[int, int]] = (st.st_mtime_ns, st.st_size)
        except OSError:
            sig = None
        if sig == self._dpkg_sig and not force:
            return False
        self._dpkg_sig = sig
        packages: Dict[str, str] = {}
        if sig is not None and self.baseline.packages:
            with open(self.dpkg_status, encoding="utf-8", errors="replace") as f:
                packages = parse_dpkg_status(f.read())
        with self._lock:
            changed = packages != self._packages
            self._packages = packages
            self._cache = None
        return changed

    # --- result -------------------------------------------------------------------------------------
    def drift(self) -> List[DriftEntry]:
        self._refresh_packages()
        with self._lock:
            if self._cache is None:
                self._cache = self._compute()
            return list(self._cache)

    def _compute(self) -> List[DriftEntry]:
        entries: List[DriftEntry] = []
        for path, expected in sorted(self.baseline.files.items()):
            if self._ignored(path):
                continue
            entries.extend(compare_file(path, expected, self._current.get(path)))
        for path in sorted(self._current):
            if path not in self.baseline.files and self.is_watched(path):
                entries.append(DriftEntry(path, "added", None, self._current[path].sha256))
        entries.extend(package_drift(self.baseline.packages, self._packages))
        self.classifier.forget_md5s({e.path for e in entries})
        return self.classifier.classify(entries)

    def file_count(self) -> int:
        with self._lock:
            return len(self._current)
