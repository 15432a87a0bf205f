"""Secret sources and the masking of values (fast)."""
import sys

import pytest

from deploy.errors import CloneError
from deploy.inventory import SecretsSpec
from deploy.secrets import MASK, Secret, load_secrets

SPEC = dict(shared=("collector_secret", "anthropic_api_key"), per_agent=("mattermost_bot_token",))
GOOD = "shared: {collector_secret: c1, anthropic_api_key: a1}\nagents: {athena: {mattermost_bot_token: m-athena}}\n"


def _file(tmp_path, text=GOOD, mode=0o600):
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    path.chmod(mode)
    return SecretsSpec(source="file", file=path, **SPEC)


def test_secret_values_never_print_themselves():
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r} {s:>20} {[s]} {dict(k=s)}"
    assert str(s) == MASK and s.reveal() == "hunter2"


def test_file_source_gives_each_agent_shared_and_own_keys(tmp_path):
    got = load_secrets(_file(tmp_path), ["athena"])["athena"]
    assert got["collector_secret"].reveal() == "c1" and got["mattermost_bot_token"].reveal() == "m-athena"


def test_clone_refuses_world_readable_secrets_file(tmp_path):
    with pytest.raises(CloneError, match="mode 0644 is readable by others"):
        load_secrets(_file(tmp_path, mode=0o644), ["athena"])


def test_missing_secret_names_every_missing_key_and_no_value(tmp_path):
    with pytest.raises(CloneError) as err:
        load_secrets(_file(tmp_path), ["athena", "apollo"])
    assert "agents.apollo.mattermost_bot_token" in str(err.value)
    assert "c1" not in str(err.value) and "m-athena" not in str(err.value)


def test_env_source_reads_prefixed_variables(monkeypatch):
    monkeypatch.setenv("T_COLLECTOR_SECRET", "c2")
    monkeypatch.setenv("T_ANTHROPIC_API_KEY", "a2")
    monkeypatch.setenv("T_ATHENA_MATTERMOST_BOT_TOKEN", "m2")
    got = load_secrets(SecretsSpec(source="env", env_prefix="T_", **SPEC), ["athena"])["athena"]
    assert got["mattermost_bot_token"].reveal() == "m2"


def test_command_source_reads_yaml_from_stdout_like_ansible_vault_view(tmp_path):
    script = tmp_path / "vault.py"
    script.write_text(f"print({GOOD!r})")
    spec = SecretsSpec(source="command", command=(sys.executable, str(script)), **SPEC)
    assert load_secrets(spec, ["athena"])["athena"]["anthropic_api_key"].reveal() == "a1"


def test_failing_command_reports_its_stderr_not_its_stdout(tmp_path):
    script = tmp_path / "vault.py"
    script.write_text("import sys; print('collector_secret: leaked'); sys.exit('Decryption failed')")
    with pytest.raises(CloneError, match="Decryption failed") as err:
        load_secrets(SecretsSpec(source="command", command=(sys.executable, str(script)), **SPEC), ["athena"])
    assert "leaked" not in str(err.value)
