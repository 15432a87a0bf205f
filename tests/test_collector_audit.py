"""The audit endpoint (collector/audit.py): an operator's change to an agent's config, recorded with the audit token
HMAC(secret, "audit:" + agent), shown on the agent's page and as JSON, stored the same in SQLite and PostgreSQL."""
import asyncio
import json
import time
import urllib.request

import pytest

from agentd.protocol import AUDIT_PATH, AuditEvent, audit_token
from collector.store import AuditRecord, open_store

from .collector_server import SECRET, _send, report, running_collector
from .postgres_server import postgres_server

CHANGES = ["/home/agent/.openclaw/.env: OPENAI_API_KEY changed", "/etc/agentfleet/agentd.yaml changed"]


def post_audit(collector, event: dict, token=None, raw: bytes = None):
    body = raw if raw is not None else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    if token is not False:
        headers["Authorization"] = f"Bearer {token or audit_token(SECRET, event['agent'])}"
    return _send(urllib.request.Request(collector.url + AUDIT_PATH, data=body, method="POST", headers=headers))


def event(agent="athena", **fields):
    return {"agent": agent, "at": time.time(), "who": "alice@r420", "changes": CHANGES, **fields}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("audit"), "--interval-s", "60") as c:
        yield c


def test_an_audit_event_is_recorded_and_shown_as_json_newest_first(collector):
    older, newer = event("hermes", at=1000.0), event("hermes", at=2000.0, who="bob@r710", changes=[])
    assert post_audit(collector, older) == (200, {"status": "recorded"})
    assert post_audit(collector, newer) == (200, {"status": "recorded"})
    status, events = collector.get("/api/v1/agents/hermes/audit")
    assert status == 200
    assert [(e["at"], e["who"], e["changes"]) for e in events] == [(2000.0, "bob@r710", []),
                                                                   (1000.0, "alice@r420", CHANGES)]
    assert all(e["agent"] == "hermes" and e["received_at"] > 1000 for e in events)


def test_the_same_event_sent_twice_is_stored_once(collector):
    e = event("ares")
    assert post_audit(collector, e)[1] == {"status": "recorded"}
    assert post_audit(collector, e)[1] == {"status": "duplicate"}
    assert len(collector.get("/api/v1/agents/ares/audit")[1]) == 1


def test_the_agents_own_report_token_cannot_write_its_audit_trail(collector):
    status, body = post_audit(collector, event("apollo"), token=collector.token("apollo"))
    assert status == 401 and body == {"detail": "token is not the audit token of agent 'apollo'"}
    assert post_audit(collector, event("apollo"), token=False)[0] == 401
    assert post_audit(collector, event("apollo"), token=audit_token(SECRET, "athena"))[0] == 401
    assert collector.get("/api/v1/agents/apollo/audit") == (200, [])


@pytest.mark.parametrize("fields,detail", [
    ({"agent": "Athena"}, "agent: must be"),
    ({"who": ""}, "who: must be one non-empty line"),
    ({"who": "alice\nroot@forged"}, "who: must be one non-empty line"),
    ({"changes": ["a" * 201]}, "changes[0]: must be one non-empty line of at most 200 characters"),
    ({"changes": "OPENAI_API_KEY"}, "changes: must be a list"),
    ({"at": "yesterday"}, "at: must be a number"),
    ({"value": "sk-secret"}, "unknown field value"),
])
def test_a_malformed_event_is_a_422_naming_the_field(collector, fields, detail):
    e = {**event("perseus"), **fields}
    status, body = post_audit(collector, e, token=audit_token(SECRET, "perseus"))
    assert status == 422 and detail in body["detail"]


def test_not_json_is_a_400_and_an_oversized_body_a_413(collector):
    assert post_audit(collector, {"agent": "athena"}, raw=b"{not json")[0] == 400
    assert post_audit(collector, {"agent": "athena"}, raw=b" " * (64 * 1024 + 1))[0] == 413


def test_the_agents_page_lists_its_config_changes_escaped(collector):
    assert collector.post(report("poseidon", 1))[0] == 200
    assert "None recorded." in collector.get("/agents/poseidon")[1]
    post_audit(collector, event("poseidon", who="<b>eve</b>@r820"))
    page = collector.get("/agents/poseidon")[1]
    assert 'id="audit"' in page and "&lt;b&gt;eve&lt;/b&gt;@r820" in page and "<b>eve" not in page
    assert "/home/agent/.openclaw/.env: OPENAI_API_KEY changed" in page


def test_audit_of_an_agent_that_never_reported_is_kept_and_a_bad_name_is_404(collector):
    post_audit(collector, event("artemis"))
    assert collector.get("/api/v1/agents/artemis")[0] == 404            # no report yet
    assert len(collector.get("/api/v1/agents/artemis/audit")[1]) == 1   # but its update is on record
    assert collector.get("/api/v1/agents/Not_A_Name/audit")[0] == 404


def test_the_event_parser_is_the_one_both_sides_share():
    e = AuditEvent.from_json(event())
    assert AuditEvent.from_json(e.to_json()) == e and e.changes == tuple(CHANGES)


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite" else request.getfixturevalue("postgres").url
    s = open_store(url)
    yield s
    s.close()


def test_both_backends_store_audit_events_the_same(store):
    agent = f"agent-{time.monotonic_ns()}"
    first = AuditRecord(agent, 10.0, "alice@r420", tuple(CHANGES), 11.0)
    second = AuditRecord(agent, 20.0, "bob@r710", (), 21.0)

    async def steps():
        assert await store.record_audit(first) is True
        assert await store.record_audit(second) is True
        assert await store.record_audit(first) is False
        return await store.audit_events(agent), await store.audit_events(agent, limit=1)

    everything, newest = asyncio.run(steps())
    assert everything == [second, first] and newest == [second]
