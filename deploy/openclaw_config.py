"""OpenClaw's `~/.openclaw/openclaw.json` for one agent, and the `.env` that holds the values it refers to.

The config holds secret *references* only ({"source": "env", ...}); values live in `.env` (0600), which OpenClaw loads
at start. The config is validated against the JSON Schema of the OpenClaw version baked into the image."""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Mapping, Optional, Sequence
from urllib.parse import urlsplit

import jsonschema

from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory
from deploy.secrets import AgentSecrets

GATEWAY_PORT = 18789
LOCAL_SUFFIXES = (".lan", ".local", ".internal", ".home.arpa")
NOT_IN_ENV = ("collector_secret",)  # hypervisor-side secrets: used to mint agentd's token, never given to OpenClaw


def env_name(key: str) -> str:
    """Secret key -> environment variable: `mattermost_bot_token` -> `MATTERMOST_BOT_TOKEN`,
    except the gateway token, whose name OpenClaw knows."""
    return "OPENCLAW_GATEWAY_TOKEN" if key == "gateway_token" else key.upper()


def secret_ref(key: str) -> dict:
    return {"source": "env", "provider": "default", "id": env_name(key)}


def on_private_network(url: str) -> bool:
    """True for a URL on the fleet's own network: a private, loopback or link-local address, or a name that is not
    a public DNS name (no dot, or .lan/.local/.internal/.home.arpa)."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
        return address.is_private or address.is_loopback or address.is_link_local
    except ValueError:
        return "." not in host or host.endswith(LOCAL_SUFFIXES)


def build_config(inv: Inventory, agent: Agent, plugin_dirs: Sequence[str] = ()) -> dict:
    """Gateway on the LAN with token auth, and the Mattermost channel; secrets as references.

    Mattermost is an official plugin: enabled here explicitly. `plugin_dirs` are the image's baked plugins (its
    manifest's `openclaw_plugins`), loaded from there; OpenClaw trusts them because the agent's state database
    starts with their install records (the openclaw element). An older image, which installs the plugin at boot,
    has none, and a load path to a missing dir would make the whole config invalid. OpenClaw refuses private
    addresses for channel APIs unless told the server is a trusted one; a self-hosted Mattermost on the home
    lab's network is exactly that."""
    mattermost = {
        "enabled": True,
        "baseUrl": inv.services.mattermost_url,
        "botToken": secret_ref("mattermost_bot_token"),
        "dmPolicy": "pairing",
        "groupPolicy": "allowlist",  # required by OpenClaw 2026.9's schema; its documented default
    }
    if on_private_network(inv.services.mattermost_url):
        mattermost["network"] = {"dangerouslyAllowPrivateNetwork": True}
    plugins: dict = {"entries": {"mattermost": {"enabled": True}}}
    if plugin_dirs:
        plugins["load"] = {"paths": list(plugin_dirs)}
    return {
        "gateway": {
            "mode": "local",
            "port": GATEWAY_PORT,
            "bind": "lan",
            "auth": {"mode": "token", "token": secret_ref("gateway_token")},
        },
        "channels": {"mattermost": mattermost},
        "plugins": plugins,
    }


def build_env(secrets: AgentSecrets) -> str:
    """The `.env` text: one VAR=value per secret OpenClaw may use. Contains secret values: upload it, never log it."""
    lines = [f"{env_name(k)}={v.reveal()}" for k, v in sorted(secrets.values.items()) if k not in NOT_IN_ENV]
    return "\n".join(lines) + "\n"


def load_schema(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CloneError(f"OpenClaw schema {path}: unreadable ({e})") from None


def validate_config(config: Mapping, schema: Optional[dict], where: str) -> None:
    """Raise CloneError naming the first invalid field; no schema (an image without one) skips the check."""
    if schema is None:
        return
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        field = ".".join(map(str, first.absolute_path)) or "(root)"
        raise CloneError(f"{where}: openclaw.json invalid at {field}: {first.message[:200]}")
