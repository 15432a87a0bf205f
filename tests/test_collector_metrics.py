"""/metrics is valid Prometheus text (parsed with prometheus_client's parser) and says what the reports said."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .collector_server import report, running_collector

ODD_HOST = 'hv"1\\\nx'


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("metrics"), "--interval-s", "60") as c:
        c.post(report("athena", 1, host=ODD_HOST, checks=[{"name": "disk", "status": "fail"}],
                      drift=[{"path": "/etc/a", "kind": "added"}, {"path": "/etc/b", "kind": "missing"}],
                      spool={"depth": 4, "oldest_age_s": 95.5, "dropped": 2}, canary_lag_s=0.25))
        c.post(report("athena", 3, host=ODD_HOST, spool={"depth": 4, "oldest_age_s": 95.5, "dropped": 2}))
        c.post(report("athena", 3))
        c.post(report("apollo", 1, canary_lag_s=None))
        c.post(report("apollo", 1), token="bad")
        c.post(report("apollo", 0))
        status, text = c.get("/metrics")
        assert status == 200
        yield samples(text)


def value(metrics, name, **labels):
    return metrics[(name, frozenset(labels.items()))]


def test_per_agent_gauges_follow_the_latest_report(scraped):
    assert value(scraped, "agentfleet_agent_healthy", agent="athena") == 1  # seq 3 has no failing check
    assert value(scraped, "agentfleet_agent_drift_entries", agent="athena") == 0
    assert value(scraped, "agentfleet_agent_last_seq", agent="athena") == 3
    assert value(scraped, "agentfleet_agent_contiguous_seq", agent="athena") == 1
    assert value(scraped, "agentfleet_agent_missing_reports", agent="athena") == 2
    assert value(scraped, "agentfleet_agent_canary_lag_seconds", agent="athena") == 0.12
    assert value(scraped, "agentfleet_agent_stale", agent="athena") == 0
    assert value(scraped, "agentfleet_agent_spool_depth", agent="athena") == 4
    assert value(scraped, "agentfleet_agent_spool_dropped_reports", agent="athena") == 2
    assert value(scraped, "agentfleet_agent_spool_oldest_age_seconds", agent="athena") == 95.5
    assert value(scraped, "agentfleet_agent_last_seen_timestamp_seconds", agent="athena") > 1.7e9


def test_labels_with_quotes_and_backslashes_are_escaped(scraped):
    assert ("agentfleet_agent_info", frozenset({"agent": "athena", "host": ODD_HOST, "role": "developer",
                                                "image_version": "2024.1-abc"}.items())) in scraped


def test_agent_without_canary_has_no_canary_sample(scraped):
    assert ("agentfleet_agent_canary_lag_seconds", frozenset({"agent": "apollo"}.items())) not in scraped
    assert value(scraped, "agentfleet_agent_spool_depth", agent="apollo") == 0


def test_collector_counters_count_stored_duplicates_and_rejects(scraped):
    assert value(scraped, "agentfleet_collector_reports_received_total") == 6
    assert value(scraped, "agentfleet_collector_reports_stored_total") == 3
    assert value(scraped, "agentfleet_collector_reports_duplicates_total") == 1
    assert value(scraped, "agentfleet_collector_reports_rejected_total", reason="bad_token") == 1
    assert value(scraped, "agentfleet_collector_reports_rejected_total", reason="invalid") == 1
    assert value(scraped, "agentfleet_collector_agents") == 2
    assert value(scraped, "agentfleet_collector_store_up") == 1


def test_open_alerts_are_counted_by_kind(scraped):
    assert value(scraped, "agentfleet_collector_alerts_open", kind="check") == 0
    assert value(scraped, "agentfleet_collector_alerts_open", kind="drift") == 0
