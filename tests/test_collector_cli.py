"""The collector's command line: credentials never in argv, every setting declared once, one clear line per mistake."""
import dataclasses
import os
import sqlite3
import subprocess
import sys

import pytest

from collector.cli import build_parser
from collector.config import CollectorConfig, CollectorError, read_webhook_url, tunables

from .collector_server import ROOT

HOOK = "https://mattermost.example/hooks/s3cr3tk3y"


def collector(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


def test_webhook_url_in_argv_is_refused_in_one_line_that_does_not_repeat_it(tmp_path, secret):
    result = collector("serve", "--db", f"sqlite:///{tmp_path}/c.db", "--secret-file", str(secret),
                       "--webhook-url", HOOK)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--webhook-file" in result.stderr and "AGENTFLEET_WEBHOOK_URL" in result.stderr
    assert "s3cr3tk3y" not in result.stderr + result.stdout


def test_webhook_file_readable_by_others_is_refused_without_showing_the_url(tmp_path, secret):
    hook = tmp_path / "hook"
    hook.write_text(HOOK + "\n")
    hook.chmod(0o644)
    result = collector("serve", "--db", f"sqlite:///{tmp_path}/c.db", "--secret-file", str(secret),
                       "--webhook-file", str(hook))
    assert result.returncode == 2 and "0644" in result.stderr and "s3cr3tk3y" not in result.stderr


def test_webhook_url_comes_from_a_private_file_or_the_environment_once(tmp_path):
    hook = tmp_path / "hook"
    hook.write_text(HOOK + "\n")
    hook.chmod(0o600)
    assert read_webhook_url(hook, {}) == HOOK
    assert read_webhook_url(None, {"AGENTFLEET_WEBHOOK_URL": HOOK}) == HOOK
    assert read_webhook_url(None, {}) is None
    with pytest.raises(CollectorError, match="both"):
        read_webhook_url(hook, {"AGENTFLEET_WEBHOOK_URL": HOOK})
    with pytest.raises(CollectorError, match="one http") as bad:
        read_webhook_url(None, {"AGENTFLEET_WEBHOOK_URL": "ftp://x/s3cr3tk3y"})
    assert "s3cr3tk3y" not in str(bad.value)


def test_every_setting_is_declared_once_with_the_same_default_for_flag_and_config():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    defaults = {action.dest: action.default for action in serve._actions}
    for setting in tunables():
        assert defaults[setting.name] == setting.default, setting.name
    assert defaults["listen"] == f"{CollectorConfig.host}:{CollectorConfig.port}"
    shown = repr(CollectorConfig("sqlite:///x", b"s3cret", webhook_url=HOOK))
    assert "s3cret" not in shown and "s3cr3tk3y" not in shown
    assert {f.name for f in dataclasses.fields(CollectorConfig)} >= {"store_timeout_s", "body_timeout_s"}


def test_a_setting_that_is_not_positive_is_one_line(tmp_path, secret):
    result = collector("serve", "--db", f"sqlite:///{tmp_path}/c.db", "--secret-file", str(secret),
                       "--store-timeout-s", "0")
    assert result.returncode == 2 and result.stderr.strip() == "collector: --store-timeout-s: must be positive"


def test_ack_gap_of_an_unknown_agent_or_database_is_one_line(tmp_path):
    result = collector("ack-gap", "nobody", "--db", f"sqlite:///{tmp_path}/c.db")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such database" in result.stderr
    assert not (tmp_path / "c.db").exists()
    sqlite3.connect(tmp_path / "c.db").close()
    result = collector("ack-gap", "nobody", "--db", f"sqlite:///{tmp_path}/c.db")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "nobody" in result.stderr
