"""Notice when the kernel's inotify queue overflows, which watchdog 2.1.6 (Ubuntu 22.04) silently ignores.

The kernel reports an overflow as an event with wd == -1 and IN_Q_OVERFLOW; watchdog 2.1.6's read_events drops
every wd == -1 event. We wrap watchdog's event-buffer parser (a static method, on `Inotify` in 2.1.x and on
`InotifyFD` in later releases) so each overflow calls our listeners, who log it and rescan at once.
This touches a private watchdog API on purpose: the version is pinned by the image, and tests cover the hook.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, List

log = logging.getLogger(__name__)

IN_Q_OVERFLOW = 0x00004000

_listeners: List[Callable[[], None]] = []
_lock = threading.Lock()
_installed = False


def _parser_owner():
    try:
        from watchdog.observers import inotify_c
    except ImportError:  # not Linux: no inotify, nothing to hook
        return None
    for name in ("Inotify", "InotifyFD"):
        cls = getattr(inotify_c, name, None)
        if cls is not None and "_parse_event_buffer" in vars(cls):
            return cls
    return None


def _notify() -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener()
        except Exception:  # a listener's bug must not kill watchdog's reader thread
            log.exception("inotify overflow listener failed")


def install() -> bool:
    """Idempotent; False when this watchdog has no inotify parser to hook (then only full scans catch overflows)."""
    global _installed
    with _lock:
        if _installed:
            return True
        owner = _parser_owner()
        if owner is None:
            log.warning("inotify overflow hook unavailable in this watchdog; relying on periodic full scans")
            return False
        original = owner._parse_event_buffer

        def parse_event_buffer(event_buffer):
            for wd, mask, cookie, name in original(event_buffer):
                if wd == -1 and mask & IN_Q_OVERFLOW:
                    _notify()
                yield wd, mask, cookie, name

        owner._parse_event_buffer = staticmethod(parse_event_buffer)
        _installed = True
        return True


def parse(event_buffer: bytes) -> list:
    """Run watchdog's (hooked) parser over a raw inotify buffer: how tests inject a kernel overflow event."""
    owner = _parser_owner()
    return list(owner._parse_event_buffer(event_buffer)) if owner else []


def add_listener(listener: Callable[[], None]) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)
