"""Reliability against the real collector: nothing lost, nothing stored twice, across collector and agentd kills."""
import random
import signal
import time

import pytest

from tests.agentd_fixtures import Collector, make_vm_tree, run_agentd, spawn_agentd

pytestmark = pytest.mark.slow


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path)
    yield c
    c.stop()


def spooled_seqs(root):
    return sorted(int(p.name[:-5]) for p in (root / "var/lib/agentd/spool").glob("*.json"))


def sent_count(root) -> int:
    """Every report an agentd made has a seq up to its counter or a file still in its spool."""
    counter = root / "var/lib/agentd/seq"
    return max([int(counter.read_text()) if counter.exists() else 0] + spooled_seqs(root))


def wait_until(predicate, timeout=60, what="condition"):
    """The machine is shared and loaded: wait for the state, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def spooled(root):
    return len(list((root / "var/lib/agentd/spool").glob("*.json")))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_collector_killed_mid_stream_of_several_agents_stores_every_report_exactly_once(tmp_path, collector):
    collector.start()
    names = ["athena", "apollo", "hermes"]
    roots = {n: tmp_path / n for n in names}
    for name, root in roots.items():
        make_vm_tree(root, agent=name, collector_url=collector.url, interval_s=0.05, spool_max=100000,
                     backoff_initial_s=0.1, backoff_max_s=0.5, http_timeout_s=2)
    agents = {n: spawn_agentd(root=r) for n, r in roots.items()}
    try:
        wait_until(lambda: all(collector.agent(n).get("last_seq", 0) > 5 for n in names), what="first reports")
        collector.kill()  # mid-stream: agents are posting every 50 ms
        wait_until(lambda: all(spooled(r) > 5 for r in roots.values()), what="reports piling up in the spools")
        before = {n: sent_count(r) for n, r in roots.items()}
        collector.start()
        wait_until(lambda: all(collector.agent(n)["contiguous_seq"] > before[n] for n in names),
                   what="the backlog delivered after the restart")
    finally:
        for proc in agents.values():
            stop(proc)
    for name, root in roots.items():
        assert run_agentd("--once", root=root).returncode == 0  # delivers whatever the last turn left spooled
        sent = sent_count(root)
        assert sent > 20
        assert collector.stored_seqs(name) == list(range(1, sent + 1)), name  # sent == stored, once each
        state = collector.agent(name)
        assert state["contiguous_seq"] == state["last_seq"] == sent
        assert not list((root / "var/lib/agentd/spool").glob("*.json"))


def test_agentd_killed_while_writing_its_spool_restarts_and_loses_nothing(tmp_path, collector):
    root = tmp_path / "athena"
    make_vm_tree(root, collector_url=collector.url, interval_s=0.005, spool_max=100000,
                 backoff_initial_s=0.05, backoff_max_s=0.2)
    rng = random.Random(4)
    for _ in range(6):  # collector down: every turn writes the spool; kill at random points of that
        proc = spawn_agentd(root=root)
        time.sleep(rng.uniform(0.8, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    made = sent_count(root)
    assert made > 20 and spooled_seqs(root) == list(range(1, made + 1))  # no hole, nothing torn
    collector.start()
    assert run_agentd("--once", root=root).returncode == 0
    made = sent_count(root)
    assert collector.stored_seqs("athena") == list(range(1, made + 1))
    assert collector.agent("athena")["contiguous_seq"] == made
    assert not [p for p in (root / "var/lib/agentd/spool").iterdir() if p.name.startswith(".")]
