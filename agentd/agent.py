"""The agent: one loop that scans, watches, checks, reports and delivers.

Single-threaded on purpose (watchdog's threads only mark paths dirty and wake it), so there is one place where
state changes. Periodic reports run every check; reports triggered by drift or the canary reuse the last check
results, so a file change reaches the collector in well under a second even when a network check is slow.
"""
from __future__ import annotations

import logging
import resource
import threading
import time
from typing import Iterable, List, Optional

from .accepted import accepted_path, load_layer, save_layer
from .baseline import load_baseline
from .canary import Canary
from .checks import CheckContext, run_checks
from .config import Config
from .drift import DriftTracker
from .errors import AgentdError
from .fsutil import rooted
from .notify import Notifier
from .protocol import AcceptedDrift, CheckResult
from .report import build_report
from .sender import Backoff, FlushResult, Sender
from .spool import Spool
from .watcher import Watcher

log = logging.getLogger(__name__)

FLUSH_BATCH = 50  # reports sent per loop turn, so a long backlog never starves the watchdog ping


class Agent:
    def __init__(self, config: Config, root: str, token: str, notifier: Optional[Notifier] = None):
        self.config = config
        self.root = root
        image_baseline = load_baseline(config, root)
        self.accepted_path = accepted_path(config, root)
        self.accepted = load_layer(self.accepted_path, image_baseline.image_version)
        self.baseline = self.accepted.over(image_baseline)  # what an operator accepted counts as the baseline
        self.canary = Canary(rooted(root, config.canary_path), config.canary_interval_s)
        # the baseline files are the reference, not subjects: they cannot contain their own hashes
        self.tracker = DriftTracker(self.baseline, root, config.watched_paths, config.drift_ignore, config.dpkg_status,
                                    exclude=[config.canary_path, config.image_json, config.injected_json],
                                    baked_packages=image_baseline.packages)
        self.spool = Spool(rooted(root, config.spool_dir), rooted(root, config.state_dir), config.spool_max)
        self.sender = Sender(config.reports_url, token, config.http_timeout_s,
                             Backoff(config.backoff_initial_s, config.backoff_max_s))
        self.ctx = CheckContext(config, root, self.baseline)
        self.notifier = notifier or Notifier()
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self._rescan = threading.Event()
        self.watcher = Watcher([rooted(root, p) for p in config.watched_paths], self.wake, self.request_rescan)
        self.last_checks: List[CheckResult] = []
        self.reports_made = 0
        self.seq_synced = False
        self._baseline_changed = False  # drift was accepted: report the smaller drift at once

    # --- building blocks (also used by --once and the benchmark) -------------------------------------
    def request_rescan(self, reason: str) -> None:
        """From any thread: events were lost, so rescan everything now rather than at the next scan."""
        log.info("full rescan requested: %s", reason)
        self._rescan.set()
        self.wake.set()

    def sync_seq(self) -> None:
        """Once per start, before reporting: number reports above what the collector already holds from this agent.
        Its state (/var/lib/agentd) lives on the root disk, which a replace or rollback swaps; restarting from a
        lower seq would make the collector drop every report as a duplicate. Retried until the collector answers."""
        if self.seq_synced:
            return
        last = self.sender.collector_last_seq(self.config.agent_url)
        if last is None:
            return
        self.seq_synced = True
        if self.spool.raise_floor(last):
            log.warning("the collector holds reports up to seq %d from %s (a newer or replaced VM): numbering "
                        "continues above it", last, self.config.agent)

    def make_report(self, run_checks_now: bool = True) -> dict:
        """Build the next report and put it in the spool (durably) before anything is sent."""
        if run_checks_now or not self.last_checks:
            self.last_checks = run_checks(self.ctx)
        drift = self.tracker.drift()
        canary_lag = self.canary.lag_for_report()
        metrics = self._own_metrics()

        def make(seq, spool_state):
            return build_report(self.config.agent, seq, time.time(), self.baseline, self.last_checks, metrics,
                                drift, spool_state, canary_lag)
        report = self.spool.append(make)
        self.reports_made += 1
        return report

    def _own_metrics(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "agentd_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
            "agentd_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "agentd_files_tracked": float(self.tracker.file_count()),
            "agentd_full_scans": float(self.tracker.full_scans),
            "agentd_watch_events": float(self.watcher.events),
            "agentd_inotify_overflows": float(self.watcher.overflows),
            "agentd_unwatched_paths": float(len(self.watcher.unwatched)),
            "agentd_reports_rejected": float(self.sender.set_aside_total),  # set aside to the quarantine
        }

    def flush(self, force: bool = False, limit: Optional[int] = FLUSH_BATCH) -> FlushResult:
        result = self.sender.flush(self.spool, limit=limit, force=force)
        if result.accepted:
            self.adopt(result.accepted)
        return result

    def adopt(self, accepted: Iterable[AcceptedDrift]) -> int:
        """Take drift an operator accepted into the baseline, each only while our drift holds exactly that entry
        (the collector sends an acceptance with every answer until a report no longer shows it). Returns how many."""
        layer, adopted = self.accepted, 0
        for item in accepted:
            entry = next((d for d in self.tracker.drift() if item.matches(d)), None)
            if entry is None:
                continue  # already adopted (answers to a backlog repeat it), or the file changed again since
            layer = layer.adopt(self.baseline, entry, self.tracker.current(entry.path), item)
            self.baseline = layer.over(self.baseline)
            self.tracker.set_baseline(self.baseline)
            adopted += 1
            log.warning("drift accepted by %s at the collector: %s %s (now %s) is part of the baseline",
                        item.by, item.kind, item.path, item.actual)
        if adopted:
            self.accepted = layer
            try:
                save_layer(self.accepted_path, layer)
            except AgentdError as e:  # adopted until agentd restarts; then reported again, accepted again
                log.error("%s: the accepted drift holds until agentd restarts", e)
            self._baseline_changed = True
            self.wake.set()
        return adopted

    def run_once(self) -> FlushResult:
        """`agentd --once`: scan, check, spool one report, try to deliver the spool once."""
        self.tracker.full_scan()
        self.sync_seq()
        self.make_report()
        return self.flush(force=True, limit=None)

    # --- the service ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        cfg = self.config
        self.watcher.start()  # before the scan: a change during the scan is then an event, not a miss
        # Ready before the first scan: on a slow (TCG) boot it takes minutes, and units ordered after agentd
        # should not wait for it; the scan pings the watchdog as it goes.
        self.notifier.ready("first full scan")
        self.tracker.on_progress = self.notifier.watchdog
        self.tracker.full_scan()
        self.notifier.status(self._status())
        log.info("agentd %s: watching %s, reporting to %s every %gs", cfg.agent, ", ".join(cfg.watched_paths),
                 cfg.collector_url, cfg.interval_s)
        now = time.monotonic()
        next_report, next_scan = now, now + cfg.scan_interval_s
        try:
            while not self.stop_event.is_set():
                urgent = False
                if self._rescan.is_set():
                    self._rescan.clear()
                    urgent |= self._full_scan()
                if not self.watcher.healthy():
                    log.error("file watcher died; restarting it and rescanning")
                    self.watcher.restart()
                    urgent |= self._full_scan()
                urgent |= self._apply_events()
                if self._baseline_changed:
                    self._baseline_changed, urgent = False, True
                if self.canary.due():
                    self.canary.touch()
                now = time.monotonic()
                if now >= next_scan:
                    if self.watcher.limit_reached:
                        self.watcher.restart()  # retry the paths that hit the watch limit
                    urgent |= self._full_scan()
                    next_scan = now + cfg.scan_interval_s
                if now >= next_report or urgent:
                    self.sync_seq()
                    self.make_report(run_checks_now=now >= next_report)
                    if now >= next_report:
                        next_report = now + cfg.interval_s
                if len(self.spool) and self.sender.ready():
                    self.flush()
                self.notifier.watchdog()
                self.notifier.status(self._status())
                if len(self.spool) and self.sender.ready():
                    continue  # backlog left and the collector answers: keep sending
                self._sleep_until(min(next_report, next_scan, self._canary_deadline(),
                                      self.sender.not_before if len(self.spool) else next_report))
        finally:
            self.notifier.stopping()
            self.watcher.stop()
            self.sender.close()

    def _sleep_until(self, deadline: float) -> None:
        timeout = max(0.0, deadline - time.monotonic())
        if self.notifier.watchdog_interval_s:
            timeout = min(timeout, self.notifier.watchdog_interval_s)
        if self.wake.wait(timeout):
            self.wake.clear()
            if not self.stop_event.is_set():
                time.sleep(self.config.debounce_s)  # let a burst of writes settle into one report

    def _canary_deadline(self) -> float:
        return time.monotonic() + self.canary.seconds_to_next_touch()

    def _full_scan(self) -> bool:
        before = self.tracker.drift()
        self.tracker.full_scan()
        return self.tracker.drift() != before

    def _apply_events(self) -> bool:
        """Re-read what the watcher saw change; True when drift changed or the canary came through."""
        dirty = self.watcher.take()
        if not dirty:
            return False
        seen_canary = self.canary.observed(dirty)
        before = self.tracker.drift()
        changed = False
        for path in dirty:
            changed |= self.tracker.rescan_path(path)
        return seen_canary or (changed and self.tracker.drift() != before)

    def _status(self) -> str:
        state = self.spool.state()
        failing = f", delivery failing: {self.sender.last_error}" if self.sender.last_error else ""
        return (f"{self.reports_made} reports, {len(self.tracker.drift())} drift, spool {state.depth} "
                f"(dropped {state.dropped}){failing}")
