"""agentd's configuration: defaults, validation that names the key, and the CLI's one-line errors."""
import pytest
import yaml

from agentd.config import DEFAULT_THRESHOLDS, Threshold, load_config, parse_config
from agentd.errors import AgentdError
from tests.agentd_fixtures import make_vm_tree, run_agentd


def test_minimal_config_gets_documented_defaults():
    config = parse_config({"agent": "athena", "collector_url": "http://10.0.2.2:8765"})
    assert config.interval_s == 30 and config.scan_interval_s == 300 and config.spool_max == 10000
    assert config.watched_paths == ("/etc", "/usr/local/bin", "/opt/agentd")
    assert config.reports_url == "http://10.0.2.2:8765/api/v1/reports"
    assert config.canary_path == "/etc/.agentd-canary"
    assert config.thresholds == DEFAULT_THRESHOLDS


def test_thresholds_from_config_override_only_the_named_check():
    config = parse_config({"agent": "athena", "collector_url": "http://c", "thresholds": {
        "disk_percent": {"warn": 50, "fail": 60}}})
    assert config.thresholds["disk_percent"] == Threshold(50, 60)
    assert config.thresholds["load_per_cpu"] == DEFAULT_THRESHOLDS["load_per_cpu"]


@pytest.mark.parametrize("data, key", [
    ({"collector_url": "http://c"}, "agent"),
    ({"agent": "Bad Name", "collector_url": "http://c"}, "agent"),
    ({"agent": "athena\n", "collector_url": "http://c"}, "agent"),  # "$" matches before a trailing newline
    ({"agent": "athena", "collector_url": "ftp://c"}, "collector_url"),
    ({"agent": "athena", "collector_url": "http://c", "interval_s": "often"}, "interval_s"),
    ({"agent": "athena", "collector_url": "http://c", "interval_s": 0}, "interval_s"),
    ({"agent": "athena", "collector_url": "http://c", "spool_max": 1.5}, "spool_max"),
    ({"agent": "athena", "collector_url": "http://c", "watched_paths": ["etc"]}, "watched_paths"),
    ({"agent": "athena", "collector_url": "http://c", "thresholds": {"cpu_percent": {"warn": 1}}}, "cpu_percent"),
    # a threshold YAML reads as a string or a boolean is not silently float()-ed
    ({"agent": "athena", "collector_url": "http://c", "thresholds": {"cpu_percent": {"warn": "80", "fail": 95}}},
     "cpu_percent: warn and fail must be numbers"),
    ({"agent": "athena", "collector_url": "http://c", "thresholds": {"cpu_percent": {"warn": True, "fail": 95}}},
     "cpu_percent: warn and fail must be numbers"),
])
def test_invalid_config_error_names_the_key(data, key):
    with pytest.raises(AgentdError, match=key):
        parse_config(data)


def test_threshold_levels_are_inclusive():
    t = Threshold(80, 95)
    assert [t.status(v) for v in (79.9, 80, 94.9, 95)] == ["ok", "warn", "warn", "fail"]


def test_cli_prints_one_line_without_traceback_for_a_broken_config(tmp_path):
    config = make_vm_tree(tmp_path)
    config.write_text("agent: athena\ncollector_url: [unclosed\n")
    result = run_agentd("--once", root=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "agentd.yaml" in result.stderr


def test_cli_refuses_a_missing_token_file_naming_it(tmp_path):
    make_vm_tree(tmp_path)
    (tmp_path / "etc/agentfleet/agentd.token").unlink()
    result = run_agentd("--once", root=tmp_path)
    assert result.returncode == 2 and "agentd.token" in result.stderr and "Traceback" not in result.stderr


def test_config_file_round_trips_through_yaml(tmp_path):
    path = make_vm_tree(tmp_path, interval_s=7)
    config = load_config(str(path))
    assert config.interval_s == 7.0
    assert yaml.safe_load(path.read_text())["agent"] == config.agent
