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


@pytest.mark.parametrize("literal, yaml_type, coerced", [
    ("012345", "an integer", "5349"),        # YAML 1.1 octal
    ("yes", "a boolean", "True"),
    ("12:30:00", "an integer", "45000"),     # YAML 1.1 sexagesimal
    ("0x1F", "an integer", "31"),
    ("3.14", "a number", "3.14"),
    ("2026-11-28", "a date", "2026-11-28"),
    ("[a, b]", "a list", "['a', 'b']"),
])
def test_clone_refuses_a_secret_yaml_reads_as_something_other_than_a_string(tmp_path, literal, yaml_type, coerced):
    spec = _file(tmp_path, f"shared: {{collector_secret: {literal}, anthropic_api_key: a1}}\n"
                           f"agents: {{athena: {{mattermost_bot_token: m-athena}}}}\n")
    with pytest.raises(CloneError) as err:
        load_secrets(spec, ["athena"])
    message = str(err.value)
    assert message == (f"secrets ({spec.file}): shared.collector_secret: YAML reads this value as {yaml_type}, "
                       f"not a string; quote it so it is used exactly as written")
    said = message.replace(str(spec.file), "")    # the tmp path may hold "31" (pytest-31)
    assert literal not in said and coerced not in said and "\n" not in message


def test_a_quoted_secret_is_used_exactly_as_written(tmp_path):
    spec = _file(tmp_path, "shared: {collector_secret: '012345', anthropic_api_key: \"yes\"}\n"
                           "agents: {athena: {mattermost_bot_token: '12:30:00'}}\n")
    got = load_secrets(spec, ["athena"])["athena"]
    assert [got[k].reveal() for k in ("collector_secret", "anthropic_api_key", "mattermost_bot_token")] == [
        "012345", "yes", "12:30:00"]


def test_a_per_agent_secret_of_another_type_is_refused_from_a_command_too(tmp_path):
    script = tmp_path / "vault.py"
    script.write_text("print('shared: {collector_secret: c1, anthropic_api_key: a1}')\n"
                      "print('agents: {athena: {mattermost_bot_token: 0755}}')\n")
    spec = SecretsSpec(source="command", command=(sys.executable, str(script)), **SPEC)
    with pytest.raises(CloneError, match=r"^secrets \(command .*python.*\): agents\.athena\.mattermost_bot_token: "
                                         r"YAML reads this value as an integer") as err:
        load_secrets(spec, ["athena"])
    assert "0755" not in str(err.value) and "493" not in str(err.value)


def test_an_agent_named_like_a_yaml_boolean_must_be_quoted_in_the_secrets(tmp_path):
    spec = _file(tmp_path, "shared: {collector_secret: c1, anthropic_api_key: a1}\n"
                           "agents: {no: {mattermost_bot_token: m-no}}\n")
    with pytest.raises(CloneError, match=r"agents: the key False is read by YAML as a boolean, not a name; quote it"):
        load_secrets(spec, ["no"])


def test_a_secret_holds_only_a_string():
    with pytest.raises(TypeError):
        Secret(12345)


def test_a_secret_given_twice_is_refused_not_silently_the_last_one(tmp_path):
    spec = _file(tmp_path, "shared:\n  collector_secret: old-one\n  anthropic_api_key: a1\n"
                           "  collector_secret: new-one\nagents: {athena: {mattermost_bot_token: m}}\n")
    with pytest.raises(CloneError) as err:
        load_secrets(spec, ["athena"])
    assert str(err.value) == (f"secrets ({spec.file}): the key 'collector_secret' is given twice (line 4); "
                              f"YAML would silently keep the last")


def test_a_secrets_command_that_hangs_or_cannot_run_is_one_clone_error(tmp_path, monkeypatch):
    monkeypatch.setattr("deploy.secrets.COMMAND_TIMEOUT_S", 0.5)
    hang = SecretsSpec(source="command", command=(sys.executable, "-c", "import time; time.sleep(30)"), **SPEC)
    with pytest.raises(CloneError, match=r"no answer within 0.5 s"):
        load_secrets(hang, ["athena"])
    script = tmp_path / "vault"
    script.write_text("#!/bin/sh\necho shared: {}\n")
    script.chmod(0o600)  # not executable
    with pytest.raises(CloneError, match=r"secrets command '.*vault': Permission denied"):
        load_secrets(SecretsSpec(source="command", command=(str(script),), **SPEC), ["athena"])
