"""File change events from watchdog, reduced to a set of dirty paths and a wake-up for the agent loop.

Also the two ways a watcher goes blind: the inotify queue overflowing (events lost) and the watch limit
(fs.inotify.max_user_watches) being reached. Both are logged and answered with an immediate full rescan.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Callable, Iterable, List, Set

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from . import inotify_overflow

log = logging.getLogger(__name__)

IGNORED_EVENT_TYPES = ("opened", "closed_no_write")  # reads are not changes (newer watchdogs report them)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "Watcher"):
        self.watcher = watcher

    def on_any_event(self, event) -> None:
        if event.event_type in IGNORED_EVENT_TYPES:
            return
        paths = [event.src_path]
        dest = getattr(event, "dest_path", None)
        if dest:
            paths.append(dest)
        self.watcher._mark(os.fsdecode(p) for p in paths)


class Watcher:
    """Watches host paths recursively; `take()` hands the agent loop what changed since the last call."""

    def __init__(self, host_paths: Iterable[str], wake: threading.Event,
                 on_blind: Callable[[str], None]):
        self.host_paths = tuple(host_paths)
        self.wake = wake
        self.on_blind = on_blind  # called with a reason when events were or will be missed: rescan now
        self._dirty: Set[str] = set()
        self._lock = threading.Lock()
        self._observer = None
        self.unwatched: List[str] = []
        self.limit_reached = False
        self.overflows = 0
        self.events = 0

    def _mark(self, paths: Iterable[str]) -> None:
        with self._lock:
            for p in paths:
                self._dirty.add(p)
                self.events += 1
        self.wake.set()

    def take(self) -> Set[str]:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def _overflowed(self) -> None:
        self.overflows += 1
        log.warning("inotify queue overflowed: events were lost; full rescan now")
        self.on_blind("inotify queue overflow")

    def start(self) -> None:
        inotify_overflow.install()
        inotify_overflow.add_listener(self._overflowed)
        observer = Observer()
        observer.start()
        handler = _Handler(self)
        self.unwatched = []
        self.limit_reached = False
        for path in self.host_paths:
            if not os.path.isdir(path):
                log.warning("watched path %s is not a directory; covered by full scans only", path)
                self.unwatched.append(path)
                continue
            try:
                observer.schedule(handler, path, recursive=True)
            except OSError as e:
                self.unwatched.append(path)
                if e.errno == errno.ENOSPC:
                    self.limit_reached = True
                    log.error("inotify watch limit reached watching %s (raise fs.inotify.max_user_watches); "
                              "full rescan now, retrying at each scan", path)
                    self.on_blind("inotify watch limit reached")
                else:
                    log.error("cannot watch %s: %s", path, e)
        self._observer = observer

    def healthy(self) -> bool:
        """False when an emitter thread died (watchdog 2.1.6 lets an error while adding a watch kill it)."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        alive = sum(1 for e in observer.emitters if e.is_alive())
        return alive >= len(self.host_paths) - len(self.unwatched)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        inotify_overflow.remove_listener(self._overflowed)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
