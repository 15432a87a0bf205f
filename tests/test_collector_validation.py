"""What `Report.from_json` refuses, found by fuzzing the collector: each must be a ValueError (a 4xx), never a
TypeError or OverflowError (a 500), and never a value the database would choke on."""
import math

import pytest

from agentd.protocol import MAX_INT, Report, token_matches

GOOD = {"agent": "athena", "seq": 1, "sent_at": 1.0, "image_version": "v"}


@pytest.mark.parametrize("change, field", [
    ({"sent_at": math.nan}, "sent_at"),
    ({"sent_at": math.inf}, "sent_at"),
    ({"sent_at": 10 ** 400}, "sent_at"),
    ({"sent_at": True}, "sent_at"),
    ({"seq": MAX_INT + 1}, "seq"),
    ({"seq": 1.0}, "seq"),
    ({"image_version": None}, "image_version"),
    ({"host": "a\x00b"}, "host"),
    ({"role": "\ud800"}, "role"),
    ({"metrics": {"load": -math.inf}}, "metrics"),
    ({"metrics": {"load": "high"}}, "metrics"),
    ({"metrics": []}, "metrics"),
    ({"checks": [{"status": "ok"}]}, "name"),
    ({"checks": [{"name": "cpu"}]}, "status"),
    ({"checks": [{"name": 5, "status": "ok"}]}, "name"),
    ({"checks": [{"name": "cpu", "status": "ok", "value": "12"}]}, "value"),
    ({"checks": [{"name": "cpu", "status": "ok", "duration_ms": None}]}, "duration_ms"),
    ({"checks": [{"name": "cpu", "status": ["ok"]}]}, "status"),
    ({"checks": ["cpu"]}, "checks"),
    ({"drift": [{"kind": "added"}]}, "path"),
    ({"drift": [{"path": "/etc/x", "kind": "added", "actual": 644}]}, "actual"),
    ({"drift": [{"path": "/etc/x", "kind": {"a": 1}}]}, "kind"),
    ({"spool": {"depth": -1}}, "depth"),
    ({"spool": {"dropped": 2 ** 64}}, "dropped"),
    ({"spool": {"oldest_age_s": math.nan}}, "oldest_age_s"),
    ({"spool": {"depth": 1, "backlog": 3}}, "backlog"),
    ({"spool": 3}, "spool"),
    ({"canary_lag_s": "soon"}, "canary_lag_s"),
    ({"schema": "1"}, "schema"),
])
def test_bad_field_is_a_value_error_naming_it(change, field):
    with pytest.raises(ValueError, match=field):
        Report.from_json({**GOOD, **change})


def test_optional_values_may_be_null_and_ints_become_floats():
    report = Report.from_json({**GOOD, "canary_lag_s": None, "checks": [{"name": "cpu", "status": "ok", "value": 3}],
                               "drift": [{"path": "/etc/x", "kind": "missing", "expected": "ab", "actual": None}],
                               "spool": {"depth": 2, "oldest_age_s": 5, "dropped": 0}})
    assert report.checks[0].value == 3.0 and isinstance(report.checks[0].value, float)
    assert report.spool.oldest_age_s == 5.0 and report.canary_lag_s is None


def test_non_ascii_token_is_a_mismatch_not_an_error():
    assert token_matches(b"secret", "athena", "caf\u00e9") is False
