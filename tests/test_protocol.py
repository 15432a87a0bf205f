"""The report contract shared by agentd and the collector."""
import pytest

from agentd.protocol import Report, agent_token, token_matches


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
    ({"agent": "athena", "seq": 1, "sent_at": 0, "image_version": "v", "checks": [{"name": "x", "status": "bad"}]}, "status"),
])
def test_malformed_report_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        Report.from_json(bad)
