"""The store's contract, the same for SQLite and a real PostgreSQL server: idempotent ingest, contiguous seq,
latest state, retention that keeps the latest state, persistent incidents, and "unavailable" as a clean error."""
import asyncio
import json
import time

import pytest

from agentd.protocol import Report
from collector.store import Incident, StoreUnavailable, open_store

from .collector_server import report
from .postgres_server import postgres_server


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


_counter = iter(range(10 ** 6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/store.db")
    else:
        pg = request.getfixturevalue("postgres")
        s = open_store(pg.url)
    s.test_agent = f"agent-{next(_counter)}"  # one PostgreSQL database serves every test of the module
    yield s
    s.close()


def run(awaitable):
    """The store is used from an event loop; each step of these tests is one."""
    return asyncio.run(awaitable)


def ingest(store, seq, received_at=None, **fields):
    data = report(store.test_agent, seq, **fields)
    return run(store.ingest(Report.from_json(data), time.time() if received_at is None else received_at))


def test_ingest_is_idempotent_on_agent_and_seq(store):
    assert ingest(store, 1).stored
    again = ingest(store, 1, image_version="something else")
    assert not again.stored and not again.latest
    assert run(store.agent(store.test_agent)).image_version == "2024.1-abc"
    assert run(store.report_count(store.test_agent)) == 1


def test_contiguous_seq_walks_over_reports_that_arrived_early(store):
    for seq in (3, 4, 1, 6):
        ingest(store, seq)
    assert (run(store.agent(store.test_agent)).contiguous_seq, run(store.agent(store.test_agent)).last_seq) == (1, 6)
    filled = ingest(store, 2)
    assert (filled.contiguous_seq, filled.last_seq, filled.latest) == (4, 6, False)
    assert run(store.agent(store.test_agent)).gap_since is not None
    ingest(store, 5)
    state = run(store.agent(store.test_agent))
    assert (state.contiguous_seq, state.gap_since) == (6, None)


def test_latest_state_comes_from_the_highest_seq(store):
    ingest(store, 2, checks=[{"name": "disk", "status": "fail"}], drift=[{"path": "/etc/x", "kind": "added"}])
    ingest(store, 1)
    state = run(store.agent(store.test_agent))
    assert (state.healthy, state.drift_count, state.last_seq) == (False, 1, 2)
    assert state.to_json()["checks"][0] == {"name": "disk", "status": "fail", "detail": "", "value": None,
                                            "duration_ms": 0.0}


def test_prune_drops_old_delivered_reports_but_keeps_the_latest_and_the_undelivered(store):
    old = time.time() - 30 * 86400
    for seq in (1, 2, 3, 5):
        ingest(store, seq, received_at=old)
    ingest(store, 7, received_at=time.time())
    pruned = run(store.prune(time.time() - 7 * 86400))
    assert pruned == 3  # 1, 2, 3: delivered and superseded; 5 is above the gap at 4, 7 is recent and latest
    assert [p.seq for p in run(store.history(store.test_agent))] == [5, 7]
    ingest(store, 4)
    ingest(store, 6)
    assert run(store.agent(store.test_agent)).contiguous_seq == 7  # the gap closes over what was kept


def test_prune_keeps_the_latest_report_however_old(store):
    ingest(store, 1, received_at=0.0)
    ingest(store, 2, received_at=1.0)
    run(store.prune(time.time()))
    assert [p.seq for p in run(store.history(store.test_agent))] == [2]
    assert run(store.agent(store.test_agent)).last_seq == 2


def test_history_is_oldest_first_with_metrics_and_failing_checks(store):
    ingest(store, 1, metrics={"load1": 1.0})
    ingest(store, 2, metrics={"load1": 2.0}, checks=[{"name": "memory", "status": "fail"}])
    history = run(store.history(store.test_agent))
    assert [(p.seq, p.metrics["load1"], p.failing) for p in history] == [(1, 1.0, []), (2, 2.0, ["memory"])]


def test_incidents_persist_until_closed(store):
    incident = Incident(store.test_agent, "check", "disk", 123.0, "disk: 97%")
    run(store.record_incidents([incident], []))
    run(store.record_incidents([incident], []))
    assert [i for i in run(store.incidents()) if i.agent == store.test_agent] == [incident]
    run(store.record_incidents([], [incident]))
    assert [i for i in run(store.incidents()) if i.agent == store.test_agent] == []


@pytest.mark.slow
def test_postgres_outage_is_store_unavailable_and_the_store_reconnects(postgres):
    store = open_store(postgres.url)
    store.test_agent = "outage"
    try:
        assert ingest(store, 1).stored
        postgres.stop()
        with pytest.raises(StoreUnavailable):
            ingest(store, 2)
        postgres.start()
        assert ingest(store, 2).stored
        assert run(store.agent("outage")).contiguous_seq == 2
    finally:
        store.close()


@pytest.mark.slow
def test_collector_service_runs_on_postgresql(postgres, tmp_path):
    from .collector_server import running_collector

    with running_collector(tmp_path, "--interval-s", "60", db_url=postgres.url) as collector:
        assert collector.post(report("pg-agent", 1)) == (200, {"status": "stored"})
        assert collector.post(report("pg-agent", 1)) == (200, {"status": "duplicate"})
        assert collector.post(report("pg-agent", 3)) == (200, {"status": "stored"})
        state = collector.get("/api/v1/agents/pg-agent")[1]
        assert (state["contiguous_seq"], state["last_seq"]) == (1, 3)
        assert collector.get("/agents/pg-agent")[0] == 200


@pytest.mark.slow
def test_drift_accepted_with_the_cli_reaches_the_agent_through_a_postgresql_collector(postgres, tmp_path):
    import subprocess
    import sys

    from .collector_server import ROOT, running_collector

    drift = [{"path": "/etc/pg-accept", "kind": "added", "actual": "abc"}]
    with running_collector(tmp_path, "--interval-s", "60", "--sweep-s", "0.1", db_url=postgres.url) as collector:
        collector.post(report("pg-accept", 1, drift=drift))
        result = subprocess.run([sys.executable, "-m", "collector", "accept-drift", "pg-accept", "--db", postgres.url,
                                 "--by", "dana"], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        deadline, answer = time.monotonic() + 10, {}
        for seq in range(2, 200):
            answer = collector.post(report("pg-accept", seq, drift=drift))[1]
            if "accepted" in answer or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answer["accepted"][0]["by"] == "dana"


def test_retention_prunes_old_reports_while_the_service_runs(tmp_path):
    from .collector_server import running_collector

    retention_days = 1.0 / 86400  # one second
    with running_collector(tmp_path, "--interval-s", "60", "--retention-days", str(retention_days),
                           "--sweep-s", "0.1") as collector:
        for seq in range(1, 6):
            collector.post(report("short-lived", seq))
        time.sleep(1.2)
        collector.post(report("short-lived", 6))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(collector.get("/api/v1/agents/short-lived/history")[1]) > 1:
            time.sleep(0.1)
        assert [p["seq"] for p in collector.get("/api/v1/agents/short-lived/history")[1]] == [6]
        state = collector.get("/api/v1/agents/short-lived")[1]
        assert (state["last_seq"], state["contiguous_seq"]) == (6, 6)


def test_acknowledged_gap_moves_contiguous_to_last_and_is_kept(store):
    for seq in (1, 3, 5):
        ingest(store, seq)
    ack = run(store.acknowledge_gap(store.test_agent, 100.0, "restored"))
    assert (ack.from_seq, ack.to_seq, ack.missing, ack.reason) == (2, 4, 2, "restored")
    state = run(store.agent(store.test_agent))
    assert (state.contiguous_seq, state.last_seq, state.gap_since) == (5, 5, None)
    assert run(store.acknowledge_gap(store.test_agent, 101.0, "again")) is None
    assert run(store.gap_acknowledgements(store.test_agent)) == [ack]
    ingest(store, 6)
    assert run(store.agent(store.test_agent)).contiguous_seq == 6


def test_drift_classes_and_acceptances_are_kept_per_agent_oldest_first(store):
    from collector.records import DriftAcceptance
    agent = store.test_agent
    ingest(store, 1, drift=[{"path": "/etc/a", "kind": "added", "actual": "x", "class": "package"},
                            {"path": "/etc/b", "kind": "missing", "expected": "y"}])
    assert [d.class_ for d in run(store.agent(agent)).drift] == ["package", "unexplained"]
    later = DriftAcceptance(agent, "2024.1-abc", "/etc/b", "missing", "y", None, 200.5, "bob", "")
    first = DriftAcceptance(agent, "2024.1-abc", "/etc/a", "added", None, "x", 100.25, "alice", "apt install")
    run(store.accept_drift([later]))
    run(store.accept_drift([first, first]))  # the same acceptance twice is one
    assert run(store.drift_acceptances(agent)) == [first, later]
    assert [a for a in run(store.drift_acceptances()) if a.agent == agent] == [first, later]
    assert run(store.drift_acceptances("someone-else")) == []


@pytest.mark.slow
def test_postgres_row_lock_held_elsewhere_is_store_unavailable_in_time_and_reads_still_answer(postgres):
    import psycopg

    store = open_store(postgres.url, timeout_s=1.0)
    store.test_agent = "row-locked"
    try:
        assert ingest(store, 1).stored
        with psycopg.connect(postgres.url) as other:
            other.execute("SELECT * FROM agents WHERE agent = 'row-locked' FOR UPDATE")  # held until the block ends
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                ingest(store, 2)
            assert time.monotonic() - started < 3
            started = time.monotonic()
            assert run(store.agent("row-locked")).last_seq == 1
            assert time.monotonic() - started < 1
            assert not store.health().ok
        assert ingest(store, 2).stored
    finally:
        store.close()


def test_canonical_form_is_the_reports_own_json():
    from collector.records import canonical_json

    parsed = Report.from_json(report("athena", 3, drift=[{"path": "/etc/x", "kind": "added"}],
                                     checks=[{"name": "disk", "status": "fail"}], unknown_field={"a": [1]}))
    assert json.loads(canonical_json(parsed)) == parsed.to_json()
