"""`clone.py --update`'s audit trail (deploy/audit.py): which .env keys changed, from salted fingerprints the previous
injection left, never a value; posted to a real collector with the audit token; a collector that is down is one
warning line and the update stands."""
import json
import logging
import time
from types import SimpleNamespace

from agentd.protocol import AuditEvent
from deploy import audit, recipe
from deploy.inject import WriteFile
from deploy.secrets import Secret

from .collector_server import SECRET, free_port, running_collector

ENV = "/home/agent/.openclaw/.env"
YAML = "/etc/agentfleet/agentd.yaml"


def ops(env: str):
    return (WriteFile(YAML, b"agent: athena\n"), WriteFile(ENV, Secret(env), 0o600, "agent:agent"),
            WriteFile("/etc/agentfleet/agentd.token", Secret("tok\n"), 0o600))


def test_the_changed_keys_of_env_are_named_and_no_value_is_kept_or_shown(tmp_path):
    first, later = "OPENAI_API_KEY=sk-old-1\nGOOGLE_API_KEY=g-1\nOLD_KEY=o\n", \
        "OPENAI_API_KEY=sk-new-2\nGOOGLE_API_KEY=g-1\nNEW_KEY=n\n"
    none, initial = audit.record_prints(tmp_path, ops(first))
    assert none is None
    previous, current = audit.record_prints(tmp_path, ops(later))
    assert previous == initial and current.salt == initial.salt
    lines = audit.describe((YAML, ENV), previous, current)
    assert lines == (f"{YAML} changed", f"{ENV}: NEW_KEY added", f"{ENV}: OLD_KEY removed",
                     f"{ENV}: OPENAI_API_KEY changed")
    stored = (tmp_path / audit.FINGERPRINTS)
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    for value in ("sk-old-1", "sk-new-2", "g-1"):
        assert value not in stored.read_text() and all(value not in line for line in lines)


def test_an_agent_without_an_earlier_record_says_so_and_a_mode_change_names_no_key(tmp_path):
    _, current = audit.record_prints(tmp_path, ops("A=1\n"))
    assert audit.describe((ENV,), None, current) == (f"{ENV} changed (which keys is unknown: no earlier record)",)
    assert audit.describe((ENV,), current, current) == (f"{ENV} changed (mode or owner; no key)",)


def test_the_same_value_fingerprints_differently_for_two_agents(tmp_path):
    a = audit.record_prints(tmp_path / "a", ops("OPENAI_API_KEY=shared\n"))[1]
    b = audit.record_prints(tmp_path / "b", ops("OPENAI_API_KEY=shared\n"))[1]
    assert a.files[ENV]["OPENAI_API_KEY"] != b.files[ENV]["OPENAI_API_KEY"]


def test_an_event_posted_with_the_audit_token_is_on_the_agents_record(tmp_path):
    event = AuditEvent("athena", time.time(), audit.operator(), (f"{ENV}: OPENAI_API_KEY changed",))
    with running_collector(tmp_path) as collector:
        assert audit.post_event(collector.url, SECRET, event) is None
        events = collector.get("/api/v1/agents/athena/audit")[1]
        assert [(e["who"], e["changes"]) for e in events] == [(event.who, list(event.changes))]
        assert "@" in event.who
        assert audit.post_event(collector.url, b"another secret", event).startswith("HTTP 401: token is not")


def fake_run(api_url: str):
    """What _audit_update reads of a CloneRun: the inventory's collector and the agent's collector secret."""
    return SimpleNamespace(inv=SimpleNamespace(services=SimpleNamespace(collector_api_url=api_url)),
                           secrets={"athena": {"collector_secret": Secret(SECRET.decode())}})


def test_a_collector_that_is_down_costs_one_warning_line_and_no_failure(caplog):
    work = SimpleNamespace(agent=SimpleNamespace(name="athena"))
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING):
        recipe._audit_update(fake_run(url), work, ("x changed",))
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith(f"athena: updated, but the collector at {url} did not record it in its audit trail (")
    assert "\n" not in message and SECRET.decode() not in message


def test_no_collector_in_the_inventory_posts_nothing(caplog):
    with caplog.at_level(logging.DEBUG):
        recipe._audit_update(fake_run(""), SimpleNamespace(agent=SimpleNamespace(name="athena")), ())
    assert not caplog.records


def test_the_fingerprint_file_is_json_with_a_salt(tmp_path):
    audit.record_prints(tmp_path, ops("A=1\n"))
    data = json.loads((tmp_path / audit.FINGERPRINTS).read_text())
    assert len(data["salt"]) == 32 and set(data["files"]) == {ENV}
