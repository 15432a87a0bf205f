"""OpenClaw's `~/.openclaw/openclaw.json` for one agent, and the `.env` that holds the values it refers to.

The config holds secret *references* only ({"source": "env", ...}); values live in `.env` (0600), which OpenClaw loads
at start. The config is validated against the JSON Schema of the OpenClaw version baked into the image."""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence
from urllib.parse import urlsplit

import jsonschema

from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory, ModelSpec
from deploy.secrets import AgentSecrets

GATEWAY_PORT = 18789
# OpenClaw's own log, on the data disk with the agent's work (so it survives a replace), beside its config; OpenClaw
# rotates it at logging.maxFileBytes (100 MB) and keeps five archives. The journal keeps its console output too.
LOG_FILE = "/home/agent/.openclaw/logs/openclaw.log"
MM_USER_ID = re.compile(r"[a-z0-9]{26}")
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
        **chat_policy(agent),
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
        "logging": {"file": LOG_FILE},
        **model_config(inv.services.model),
    }


def chat_policy(agent: Agent) -> dict:
    """Who gets an answer, from the inventory's `mattermost` settings, in OpenClaw 2026.9's terms.

    Channels: OpenClaw's Mattermost channel has no allowlist of channels (its `groups` are keyed by channel id
    and only tune mentions; `groupPolicy: allowlist` is a list of *senders*, and empty it drops every post, as the
    config before this one did). Which channels an agent hears is its bot's membership in Mattermost (a `posted`
    event reaches a channel's members only): the inventory's channels are the ones its bot must be added to
    (docs/clone.md). There anyone may talk to it (`open`), and `requireMention` says whether a post must @mention
    it. No channels: channel posts are ignored (`disabled`).
    DMs: the listed people (`allowlist`), anyone (`*`: `open`), or, with nobody listed, OpenClaw's pairing (a
    stranger gets a code an admin approves in the VM). Usernames are matched only with OpenClaw's name matching on:
    a Mattermost user can be renamed, so list user ids where that matters."""
    chat = agent.mattermost
    policy: dict = {"groupPolicy": "open" if chat.channels else "disabled", "requireMention": chat.require_mention,
                    "chatmode": "oncall" if chat.require_mention else "onmessage"}
    if chat.dm_from == ("*",):
        policy.update(dmPolicy="open", allowFrom=["*"])
    elif chat.dm_from:
        policy.update(dmPolicy="allowlist", allowFrom=list(chat.dm_from))
        if not all(MM_USER_ID.fullmatch(who) for who in chat.dm_from):
            policy["dangerouslyAllowNameMatching"] = True
    else:
        policy["dmPolicy"] = "pairing"
    return policy


def model_config(model: ModelSpec) -> dict:
    """The model the agent answers with: OpenClaw's own provider by name, or ours at `base_url` (its key a
    reference to the `.env`). A provider of ours keeps OpenClaw's built-in ones (`merge`)."""
    out: dict = {"agents": {"defaults": {"model": {"primary": f"{model.provider}/{model.model}"}}}}
    if model.base_url:
        out["models"] = {"mode": "merge", "providers": {model.provider: {
            "baseUrl": model.base_url, "api": model.api, "apiKey": secret_ref(model.api_key),
            "models": [{"id": model.model, "name": model.model}]}}}
    return out


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
