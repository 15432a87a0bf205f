"""Secrets for the clone, read from the source the inventory names: a 0600 YAML file, environment variables, a
command whose output is YAML (e.g. `ansible-vault view`), or standard input (what the fleet tool sends over SSH).
Values are wrapped in Secret so repr/str/format mask them; only `reveal()` gives the value, and only the injection
calls it.

YAML shape (file and command): {shared: {key: value}, agents: {<agent>: {key: value}}}.
Environment: <prefix><KEY> for shared keys, <prefix><AGENT>_<KEY> for per-agent keys (upper case).
With a key map in the inventory (secrets.key_map), the file or command holds one flat mapping instead, such as the
seed's Ansible Vault (`vault_openclaw_anthropic_api_key: ...`), and the map names the source key of each of ours."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping

import yaml

from deploy.errors import CloneError
from deploy.inventory import SecretsSpec

MASK = "******"


class Secret:
    """A secret value that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = lambda self: MASK  # noqa: E731
    __format__ = lambda self, spec: MASK  # noqa: E731

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        raise TypeError("Secret values are not picklable")


@dataclass(frozen=True)
class AgentSecrets:
    """Every secret one agent needs: the shared keys plus its own."""

    agent: str
    values: Mapping[str, Secret]

    def __getitem__(self, key: str) -> Secret:
        return self.values[key]


def load_secrets(spec: SecretsSpec, agents: Iterable[str]) -> dict[str, AgentSecrets]:
    """Read the source once and check that every required key is there for every agent, before anything is written."""
    agents = list(agents)
    if spec.source == "env":
        shared, per_agent = _from_env(spec, agents)
    else:
        raw = {"file": _read_file, "command": _run_command, "stdin": _read_stdin}[spec.source](spec)
        if spec.key_map:
            shared, per_agent = _from_flat(raw, spec, agents)
        else:
            shared, per_agent = _from_yaml(raw, where=_where(spec))
    missing = [f"shared.{k}" for k in spec.shared if not shared.get(k)]
    out: dict[str, AgentSecrets] = {}
    for agent in agents:
        own = per_agent.get(agent, {})
        missing += [f"agents.{agent}.{k}" for k in spec.per_agent if not own.get(k)]
        values = {k: Secret(shared[k]) for k in spec.shared if shared.get(k)}
        values.update({k: Secret(own[k]) for k in spec.per_agent if own.get(k)})
        out[agent] = AgentSecrets(agent, values)
    if missing:
        raise CloneError(f"secrets ({_where(spec)}): missing {', '.join(missing)}")
    return out


def _where(spec: SecretsSpec) -> str:
    if spec.source == "file":
        return str(spec.file)
    if spec.source == "env":
        return f"environment {spec.env_prefix}*"
    if spec.source == "stdin":
        return "standard input"
    return f"command {spec.command[0]}"


def _read_stdin(spec: SecretsSpec) -> str:
    """What is left of standard input (the fleet tool sends the inventory line first, then this)."""
    return sys.stdin.read()


def _read_file(spec: SecretsSpec) -> str:
    try:
        st = os.stat(spec.file)
    except FileNotFoundError:
        raise CloneError(f"secrets file {spec.file}: not found") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise CloneError(f"secrets file {spec.file}: mode {stat.S_IMODE(st.st_mode):04o} is readable by others; "
                         f"chmod 0600 it")
    return spec.file.read_text()


def _run_command(spec: SecretsSpec) -> str:
    """Run the command with the caller's environment (a vault may need its password file variable)."""
    try:
        proc = subprocess.run(list(spec.command), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=120)
    except FileNotFoundError:
        raise CloneError(f"secrets command {spec.command[0]!r}: not found") from None
    if proc.returncode != 0:
        # stderr only: stdout may hold secret values
        tail = (proc.stderr or "").strip().splitlines()[-1:]
        raise CloneError(f"secrets command {spec.command[0]!r} failed (exit {proc.returncode}): {' '.join(tail)}")
    return proc.stdout


def _from_yaml(raw: str, where: str) -> tuple[dict, dict]:
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError:
        raise CloneError(f"secrets ({where}): not valid YAML") from None  # no detail: it would quote the value
    if not isinstance(data, dict):
        raise CloneError(f"secrets ({where}): must be a mapping with 'shared' and 'agents'")
    shared = data.get("shared") or {}
    agents = data.get("agents") or {}
    if not isinstance(shared, dict) or not isinstance(agents, dict) or \
            not all(isinstance(v, dict) for v in agents.values()):
        raise CloneError(f"secrets ({where}): 'shared' must map keys to values, 'agents' agent names to such maps")
    return ({k: str(v) for k, v in shared.items() if v is not None},
            {a: {k: str(v) for k, v in m.items() if v is not None} for a, m in agents.items()})


def _from_flat(raw: str, spec: SecretsSpec, agents: list[str]) -> tuple[dict, dict]:
    """A flat mapping read through the key map; `{agent}` in a per-agent source key is the agent's name."""
    where = _where(spec)
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError:
        raise CloneError(f"secrets ({where}): not valid YAML") from None
    if not isinstance(data, dict):
        raise CloneError(f"secrets ({where}): must be a flat mapping of the keys named in secrets.key_map")
    key_map = dict(spec.key_map)
    value = lambda key: None if data.get(key) is None else str(data[key])  # noqa: E731
    shared = {k: value(key_map[k]) for k in spec.shared if value(key_map[k])}
    per_agent = {a: {k: value(key_map[k].replace("{agent}", a)) for k in spec.per_agent
                     if value(key_map[k].replace("{agent}", a))} for a in agents}
    return shared, per_agent


def _from_env(spec: SecretsSpec, agents: list[str]) -> tuple[dict, dict]:
    env = os.environ
    shared = {k: env[spec.env_prefix + k.upper()] for k in spec.shared if env.get(spec.env_prefix + k.upper())}
    per_agent = {}
    for agent in agents:
        stem = spec.env_prefix + agent.upper().replace("-", "_") + "_"
        per_agent[agent] = {k: env[stem + k.upper()] for k in spec.per_agent if env.get(stem + k.upper())}
    return shared, per_agent
