"""A rollout's progress on the collector: the executor's journal fed to a real collector at every step (the fleet page
shows the current wave and when each agent was replaced), its end said once in Mattermost (a webhook stand-in), bad
tokens and hostile text refused or made inert. Simulated hypervisors as in test_rollout_executor.py."""
import io
import json
import time
import urllib.request

import pytest

from agentd.protocol import ROLLOUTS_PATH, rollout_token
from deploy.rollout import CollectorHealth, run_rollout
from deploy.rollout.feed import CollectorFeed
from deploy.rollout.journal import fleet_id

from .collector_server import SECRET, Webhook, running_collector
from .test_rollout_support import EventLog, FakeClone, SimulatedHosts, fast_options, fleet_inventory

V1, V2 = "v1aaaaaaaaaa", "v2bbbbbbbbbb"


@pytest.fixture(scope="module")
def hook():
    webhook = Webhook()
    yield webhook
    webhook.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory, hook):
    with running_collector(tmp_path_factory.mktemp("collector"), webhook_url=hook.url) as c:
        yield c


def run(tmp_path, collector, feed, **flags):
    inv = fleet_inventory()
    placement = {a.name: a.host for a in inv.agents.values()}
    sim = SimulatedHosts(tmp_path / "hosts", collector.url, placement, V1, **flags).start()
    fake = FakeClone(tmp_path / "hosts", placement, collector.url)
    pages = []

    def replace(host, agents, version):                # what a person watching the page sees while a wave runs
        pages.append(page_marking(collector, agents))   # the feed posts in the background: give it a moment
        return fake.replace(host, agents, version)
    try:
        report = run_rollout(inv, V2, fast_options(tmp_path / "journal"), replace_on_host=replace,
                             rollback_on_host=fake.rollback, push=lambda version: None,
                             health=CollectorHealth(collector.url), out=EventLog(), feed=feed(inv))
    finally:
        sim.stop()
    return inv, report, pages


HOSTILE = '<img src=x onerror=alert(1)> @channel https://evil.example'


def rollout_messages(hook, before: int, count: int, timeout: float = 10.0) -> list[str]:
    """The Mattermost messages about rollouts since `before` (check alerts from the simulated VMs come too)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in hook.messages[before:] if "rollout of" in m]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def page_marking(collector, agents, timeout: float = 10.0) -> str:
    """The fleet page once it marks `agents` as the current wave (or as it is after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        page = collector.get("/")[1]
        if all(f'<tr id="agent-{a}" class="inwave">' in page for a in agents) or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def rollouts(collector) -> dict:
    status, body = collector.get(ROLLOUTS_PATH)
    assert status == 200
    return {r["fleet"]: r for r in body}


def test_the_page_follows_a_rollout_wave_by_wave_and_mattermost_hears_its_end_once(tmp_path, collector, hook):
    before = len(hook.messages)
    inv, report, pages = run(tmp_path, collector, lambda inv: CollectorFeed(collector.url, fleet_id(inv), SECRET))
    assert report.state == "done"
    shown = rollouts(collector)[fleet_id(inv)]
    assert (shown["state"], shown["version"]) == ("done", V2)
    assert all(a["version"] == V2 and a["replaced_at"] for a in shown["agents"].values())
    # during the canary wave the page marked the canary as in the current wave, and no one yet as replaced
    canary = '<tr id="agent-apollo" class="inwave">'
    assert canary in pages[0] and "wave 0 (canary) of 5: apollo" in pages[0]
    assert 'id="host-r710"' in pages[0]                                 # agents grouped by host
    assert f"<code>{V1}</code> &times; 8" in pages[0]                   # how many run which image
    last = pages[-1]                                                    # athena's wave: the others are done
    assert f"<code>{V2}</code> &times; 7" in last and f"<code>{V1}</code> &times; 1" in last
    assert '<tr id="agent-athena" class="inwave">' in last
    messages = rollout_messages(hook, before, 1)
    assert len(messages) == 1 and f"rollout of `{V2}` done: 8 of 8 agents replaced in 5 wave(s)" in messages[0]
    # the final state posted again (a rerun that finds nothing to do, a retry) is not a second message
    data = json.dumps(shown).encode()
    assert post(collector.url, data, rollout_token(SECRET, fleet_id(inv))) == 200
    time.sleep(0.5)
    assert len(rollout_messages(hook, before, 2, timeout=0)) == 1


def test_a_halted_rollout_says_who_runs_what_with_agent_text_made_inert(tmp_path, collector, hook):
    before = len(hook.messages)
    inv, report, _ = run(tmp_path, collector, lambda inv: CollectorFeed(collector.url, "hostile-fleet", SECRET),
                         broken=[("apollo", V2)])
    assert report.state == "halted"
    [text] = rollout_messages(hook, before, 1)
    assert text.startswith(":octagonal_sign: rollout of `v2bbbbbbbbbb` halted: 0 of 8 agents replaced")
    assert "still on `v1aaaaaaaaaa`: " in text and "apollo" in text
    shown = rollouts(collector)["hostile-fleet"]
    assert shown["state"] == "halted" and shown["agents"]["apollo"]["phase"] == "rolled-back"
    # a halt reason carrying an agent's words: inert in Mattermost (no mention, no link), escaped on the page
    hostile = {**shown, "updated_at": shown["updated_at"] + 1, "state": "running"}
    assert post(collector.url, json.dumps(hostile).encode(), rollout_token(SECRET, "hostile-fleet")) == 200
    hostile = {**hostile, "updated_at": hostile["updated_at"] + 1, "state": "halted", "halt": HOSTILE}
    assert post(collector.url, json.dumps(hostile).encode(), rollout_token(SECRET, "hostile-fleet")) == 200
    text = rollout_messages(hook, before, 2)[1]
    assert "@channel" not in text and "https://" not in text and "`<img" in text
    status, page = collector.get("/")
    assert "Rollout of <code>v2bbbbbbbbbb</code>" in page and "halted" in page
    assert HOSTILE not in page and "&lt;img" in page


def test_a_wrong_token_is_refused_and_the_rollout_goes_on_with_one_warning(tmp_path, collector):
    warnings = io.StringIO()
    inv, report, _ = run(tmp_path, collector,
                         lambda inv: CollectorFeed(collector.url, "other-fleet", b"not-the-secret", warn=warnings))
    assert report.state == "done"
    assert warnings.getvalue().count("\n") == 1 and "HTTP 401" in warnings.getvalue()
    assert "other-fleet" not in rollouts(collector)


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400),
    (json.dumps({"fleet": "f", "version": "v", "state": "exploded", "started_at": 1, "updated_at": 2,
                 "waves": [], "agents": {}}).encode(), 422),
    (json.dumps({"fleet": "f", "version": "v", "state": "running", "started_at": 1, "updated_at": 2,
                 "waves": [], "agents": {"<script>": {}}}).encode(), 422),
    (b"x" * (6 << 20), 413),             # 6 MiB: more than the sockets buffer, so the refusal must drain it
])
def test_malformed_or_oversized_snapshots_are_refused_with_a_reason(collector, body, status):
    assert post(collector.url, body, rollout_token(SECRET, "f")) == status


def test_an_older_snapshot_arriving_late_changes_nothing(collector):
    base = {"fleet": "late", "version": "v9", "waves": [], "agents": {}, "started_at": 1.0}
    newer = {**base, "state": "running", "updated_at": 20.0}
    older = {**base, "state": "running", "updated_at": 10.0, "halt": "stale"}
    token = rollout_token(SECRET, "late")
    assert post(collector.url, json.dumps(newer).encode(), token) == 200
    assert post(collector.url, json.dumps(older).encode(), token) == 200
    assert rollouts(collector)["late"]["updated_at"] == 20.0


def post(url: str, body: bytes, token: str) -> int:
    request = urllib.request.Request(url + ROLLOUTS_PATH, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
