"""The seed's core flow against a real OpenClaw gateway on this machine (slow: the pinned tree and plugin installed
from the bake's caches once, then a gateway start of seconds): the config the clone writes, the real Mattermost
plugin, and the Mattermost and model stand-ins on loopback.

An @mention in a channel the agent listens in gets the model's (canned) reply in that channel; a post without the
mention (which reaches the model only as the channel's history in the next turn), a post in a channel its bot is not
in, and a DM from someone the inventory does not allow get none; the
model saw the person's text and the key from the secrets; OpenClaw's log is where the config puts it."""
from __future__ import annotations

import time

import pytest
import yaml

from deploy import inventory, openclaw_config
from tests.collector_server import free_port
from tests.mattermost_standin import MattermostStandIn
from tests.model_standin import ModelStandIn
from tests.openclaw_host import Gateway, install, missing_caches

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPLY = "On it: issue #42 created for the login bug."
MODEL_KEY = "sk-model-from-secrets-7c1f"
BOT_TOKEN = "mm-athena-host-test"


def wait_for(what, predicate, deadline_s, interval=0.2):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def openclaw(baked_image):   # the full bake fills the caches the install takes OpenClaw from
    why = missing_caches()
    if why:
        pytest.skip(why)
    t0 = time.monotonic()
    oc = install()
    print(f"\nOpenClaw install (cached after the first): {time.monotonic() - t0:.0f} s", flush=True)
    return oc


def test_athena_answers_a_mention_in_her_channel_and_nothing_else(openclaw, tmp_path):
    mm = MattermostStandIn(channels=("town-square", "dev", "random"))
    model = ModelStandIn(REPLY)
    gateway = None
    try:
        mm.add_user("athena", bot_token=BOT_TOKEN, channels=["dev"])   # the bot's membership: its channels
        mm.add_user("alice", channels=["town-square", "dev", "random"])
        mm.add_user("mallory", channels=["dev"])
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(yaml.safe_dump({
            "services": {"mattermost_url": mm.url, "mattermost_team": "agentfleet",
                         "model": {"provider": "lab", "model": model.model, "base_url": f"{model.url}/v1",
                                   "api": "openai-completions", "api_key": "openai_api_key"}},
            "secrets": {"shared": ["collector_secret", "openai_api_key"]},
            "mattermost": {"channels": ["dev"], "require_mention": True, "dm_from": ["alice"]}}))
        inv = inventory.load(None, [overlay])
        config = openclaw_config.build_config(inv, inv.agent("athena"), openclaw.plugin_dirs)
        home = tmp_path / "home"
        log_file = home / ".openclaw" / "logs" / "openclaw.log"
        config["logging"]["file"] = str(log_file)   # the VM's is /home/agent/.openclaw/logs/openclaw.log
        port = free_port()
        gateway = Gateway(openclaw, home, config, port=port, env_text=(
            f"MATTERMOST_BOT_TOKEN={BOT_TOKEN}\nOPENCLAW_GATEWAY_TOKEN=gw-host-test\nOPENAI_API_KEY={MODEL_KEY}\n"))
        wait_for("athena's websocket", lambda: mm.connected("athena") or gateway.process.poll() is not None, 240)
        assert gateway.process.poll() is None, gateway.log()[-3000:]
        print(f"gateway started and connected in {time.monotonic() - gateway.t0:.1f} s", flush=True)

        mm.say("alice", "random", "@athena are you in here?")          # her bot is not in #random
        mm.say("alice", "dev", "anyone seen the login bug?")           # no mention
        mm.dm("mallory", "athena", "hi athena, create an issue")       # not in dm_from
        t0 = time.monotonic()
        mm.say("alice", "dev", "@athena create an issue for the login bug")
        reply = wait_for("athena's reply in #dev", lambda: [p for p in mm.posts_by("athena", "dev")
                                                             if p["message"] == REPLY], 90)
        print(f"reply in #dev {time.monotonic() - t0:.1f} s after the mention", flush=True)
        time.sleep(3)   # anything else she would say arrives by now (the reply took longer than this)

        assert len(reply) == 1 and len(mm.posts_by("athena", "dev")) == 1
        assert mm.posts_by("athena", "random") == []
        assert mm.posts_by("athena", mm.direct_channel("mallory", "athena")) == []
        assert len(model.requests) == 1, [r["body"].get("messages", [])[-1:] for r in model.requests]
        request = model.requests[0]
        assert request["auth"] == f"Bearer {MODEL_KEY}" and request["path"] == "/v1/chat/completions"
        assert request["body"]["model"] == model.model
        texts = model.user_texts()
        assert any("create an issue for the login bug" in t for t in texts)
        assert not any("are you in here" in t or "hi athena" in t for t in texts)
        # a post without the mention triggers nothing, but OpenClaw hands it to the next turn as the channel's
        # recent history (the plugin's pending history): context, not a request of its own
        assert any("anyone seen the login bug" in t for t in texts)
        assert log_file.exists() and "mattermost" in log_file.read_text(errors="replace")
        assert MODEL_KEY not in log_file.read_text(errors="replace") + gateway.log()
    finally:
        if gateway:
            gateway.stop()
        mm.close()
        model.close()
