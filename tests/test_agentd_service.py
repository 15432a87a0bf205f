"""The running service: real watchdog observers, a stub collector on loopback, real signals and sd_notify."""
import errno
import os
import signal
import socket
import struct
import threading
import time

import pytest

from agentd import inotify_overflow
from agentd.agent import Agent
from agentd.config import load_config, read_token
from tests.agentd_fixtures import StubCollector, drift_of, make_vm_tree, spawn_agentd


@pytest.fixture
def collector():
    stub = StubCollector()
    yield stub
    stub.close()


@pytest.fixture
def running_agent(tmp_path, collector):
    """An Agent running its service loop in a thread; yields a starter taking config overrides."""
    agents = []

    def start(**config):
        config.setdefault("scan_interval_s", 3600)  # so only events (or a forced rescan) can find drift
        config.setdefault("canary_interval_s", 3600)
        cfg = load_config(str(make_vm_tree(tmp_path, collector_url=collector.url, **config)))
        agent = Agent(cfg, str(tmp_path), read_token(cfg, str(tmp_path)))
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        agents.append((agent, thread))
        collector.wait_for(lambda r: r["seq"] == 1)
        return agent

    yield start
    for agent, thread in agents:
        agent.stop()
        thread.join(10)
        assert not thread.is_alive()


def test_a_file_change_reaches_the_collector_within_a_second(tmp_path, collector, running_agent):
    running_agent()
    written = time.time()
    (tmp_path / "etc/hosts").write_text("10.6.6.6 intruder\n")
    report = collector.wait_for(lambda r: ("/etc/hosts", "modified") in drift_of(r), timeout=5)
    arrived = max(t for a, s, t in collector.arrivals if s == report["seq"])
    assert arrived - written < 1.0


def test_a_new_file_in_a_new_directory_is_reported_as_added(tmp_path, collector, running_agent):
    running_agent()
    (tmp_path / "etc/cron.d").mkdir()
    (tmp_path / "etc/cron.d/job").write_text("* * * * * root true\n")
    collector.wait_for(lambda r: ("/etc/cron.d/job", "added") in drift_of(r), timeout=5)


def test_an_inotify_overflow_triggers_an_immediate_full_rescan(tmp_path, collector, running_agent):
    agent = running_agent()
    # a change no event will announce: the file is outside the watched paths, only a full scan sees it
    (tmp_path / "opt/baseline-only/unwatched.conf").write_text("changed while events were lost\n")
    time.sleep(0.3)
    assert not any(("/opt/baseline-only/unwatched.conf", "modified") in drift_of(r)
                   for r in collector.reports.values())
    scans = agent.tracker.full_scans
    # the kernel's overflow record (wd -1, IN_Q_OVERFLOW) through watchdog's own parser (hooked by agentd)
    inotify_overflow.parse(struct.pack("iIII", -1, inotify_overflow.IN_Q_OVERFLOW, 0, 0))
    report = collector.wait_for(lambda r: ("/opt/baseline-only/unwatched.conf", "modified") in drift_of(r), 3)
    assert agent.tracker.full_scans == scans + 1
    assert report["metrics"]["agentd_inotify_overflows"] == 1


def test_reaching_the_inotify_watch_limit_is_logged_and_answered_with_scans(tmp_path, collector, running_agent,
                                                                           monkeypatch, caplog):
    from watchdog.observers import Observer
    real_schedule = Observer.schedule

    def schedule(self, handler, path, recursive=False):
        if path.endswith("/etc"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real_schedule(self, handler, path, recursive=recursive)
    monkeypatch.setattr(Observer, "schedule", schedule)
    agent = running_agent(scan_interval_s=0.5)
    assert "inotify watch limit reached" in caplog.text
    (tmp_path / "etc/hosts").write_text("changed without a watch\n")
    report = collector.wait_for(lambda r: ("/etc/hosts", "modified") in drift_of(r), timeout=5)
    assert report["metrics"]["agentd_unwatched_paths"] == 1
    assert agent.watcher.healthy()


def test_the_canary_lag_is_measured_and_reported(tmp_path, collector, running_agent):
    running_agent(canary_interval_s=0.2)
    report = collector.wait_for(lambda r: r["canary_lag_s"] is not None, timeout=5)
    assert 0 < report["canary_lag_s"] < 1.0
    assert not any(d["path"] == "/etc/.agentd-canary" for d in report["drift"])


def test_a_dead_watcher_is_restarted_and_the_canary_shows_how_late_it_was(tmp_path, collector, running_agent):
    agent = running_agent()
    for emitter in list(agent.watcher._observer.emitters):
        emitter.stop()  # what an exception inside watchdog's emitter thread amounts to
        emitter.join(5)
    agent.wake.set()
    (tmp_path / "etc/hosts").write_text("changed while blind\n")
    collector.wait_for(lambda r: ("/etc/hosts", "modified") in drift_of(r), timeout=5)
    assert agent.watcher.healthy()


def test_reports_are_periodic_without_any_change(tmp_path, collector, running_agent):
    running_agent(interval_s=0.3)
    collector.wait_for(lambda r: r["seq"] >= 3, timeout=20)  # startup (imports, first scan) is slow on a loaded machine


def test_service_notifies_systemd_and_stops_cleanly_on_sigterm(tmp_path, collector):
    pytest.importorskip("systemd.daemon")
    make_vm_tree(tmp_path, collector_url=collector.url, interval_s=0.2)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    proc = spawn_agentd(root=tmp_path, env=env)
    try:
        messages = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                "WATCHDOG=1" in messages and any(m.startswith("STATUS=") for m in messages)):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1\nSTATUS=")
        assert any(m.startswith("STATUS=") and "reports" in m for m in messages)
        assert any(m == "WATCHDOG=1" for m in messages)
        collector.wait_for(lambda r: r["seq"] >= 2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert "SIGTERM" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_service_runs_without_systemd_at_all(tmp_path, collector):
    make_vm_tree(tmp_path, collector_url=collector.url, interval_s=0.2)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
    proc = spawn_agentd(root=tmp_path, env=env)
    try:
        collector.wait_for(lambda r: r["seq"] >= 2, timeout=15)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
