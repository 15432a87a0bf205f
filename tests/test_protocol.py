"""The report contract shared by agentd and the collector."""
import pytest

from agentd.protocol import (
    AGENT_NAME,
    MAX_JSON_DEPTH,
    Report,
    agent_token,
    json_depth_within,
    token_matches,
    valid_agent_name,
)


def test_token_is_hmac_of_agent_name_and_differs_per_agent():
    secret = b"collector-secret"
    assert token_matches(secret, "athena", agent_token(secret, "athena"))
    assert not token_matches(secret, "apollo", agent_token(secret, "athena"))


def test_report_round_trips_through_json():
    report = Report.from_json({"agent": "athena", "seq": 3, "sent_at": 1.5, "image_version": "abc",
                               "checks": [{"name": "cpu", "status": "ok"}],
                               "drift": [{"path": "/etc/x", "kind": "modified"}]})
    assert Report.from_json(report.to_json()) == report


@pytest.mark.parametrize("bad, field", [
    ({"agent": "Athena!", "seq": 1, "sent_at": 0, "image_version": "v"}, "agent"),
    ({"agent": "athena", "seq": 0, "sent_at": 0, "image_version": "v"}, "seq"),
    ({"agent": "athena", "seq": 1, "sent_at": 0}, "image_version"),
    ({"agent": "athena", "seq": 1, "sent_at": 0, "image_version": "v",
      "checks": [{"name": "x", "status": "bad"}]}, "status"),
])
def test_malformed_report_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        Report.from_json(bad)


@pytest.mark.parametrize("name", ["athena\n", "athena\r\n", "\nathena", "athena ", "Athena", "a" * 64, "", "9lives",
                                  "athe_na", "athena\x00"])
def test_agent_name_must_match_in_full(name):
    assert not valid_agent_name(name)
    assert AGENT_NAME.match(name) is None  # also for callers that still use .match (agentd's config)
    with pytest.raises(ValueError, match="agent"):
        Report.from_json({"agent": name, "seq": 1, "sent_at": 0, "image_version": "v"})


@pytest.mark.parametrize("name", ["athena", "a", "zeus-2", "a" * 63])
def test_valid_agent_names(name):
    assert valid_agent_name(name) and AGENT_NAME.fullmatch(name)


def test_report_nested_deeper_than_the_limit_is_refused_even_under_an_unknown_key():
    deep: dict = {}
    inner = deep
    for _ in range(MAX_JSON_DEPTH):
        inner["x"] = {}
        inner = inner["x"]
    base = {"agent": "athena", "seq": 1, "sent_at": 0, "image_version": "v"}
    with pytest.raises(ValueError, match="nested deeper"):
        Report.from_json({**base, "future_field": deep})
    assert Report.from_json({**base, "future_field": deep["x"]["x"]}).agent == "athena"  # 1 + 7 levels
    assert json_depth_within([[[]]], 3) and not json_depth_within([[[[]]]], 3)


def test_drift_class_travels_as_class_and_an_older_agents_entry_without_it_is_unexplained():
    base = {"agent": "athena", "seq": 1, "sent_at": 0, "image_version": "v"}
    report = Report.from_json({**base, "drift": [{"path": "/etc/a", "kind": "added", "class": "package"},
                                                 {"path": "/etc/b", "kind": "added"}]})
    assert [d.class_ for d in report.drift] == ["package", "unexplained"]
    assert report.to_json()["drift"][0] == {"path": "/etc/a", "kind": "added", "expected": None, "actual": None,
                                            "class": "package"}
    assert Report.from_json(report.to_json()) == report


@pytest.mark.parametrize("entry, message", [
    ({"path": "/etc/a", "kind": "added", "class": "trusted"}, "class: must be one of"),
    ({"path": "/etc/a", "kind": "added", "class_": "package"}, "unknown field class_"),
])
def test_a_drift_class_outside_the_contract_is_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        Report.from_json({"agent": "athena", "seq": 1, "sent_at": 0, "image_version": "v", "drift": [entry]})


def test_accepted_drift_in_an_answer_is_parsed_strictly():
    from agentd.protocol import AcceptedDrift, accepted_in_answer
    item = {"path": "/etc/a", "kind": "modified", "expected": "e", "actual": "f", "accepted_at": 5.0, "by": "ops"}
    assert accepted_in_answer({"status": "stored", "accepted": [item]}) == [AcceptedDrift("/etc/a", "modified", "e",
                                                                                         "f", 5.0, "ops")]
    assert accepted_in_answer({"status": "stored"}) == []
    with pytest.raises(ValueError, match=r"accepted\[0\].by"):
        accepted_in_answer({"accepted": [{**item, "by": 7}]})
