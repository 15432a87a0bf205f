"""End to end on real VMs: bake, clone two agents, boot, report, drift, replace, destroy. (A replace whose agentd
cannot start, rolled back by itself, is proven on the small image by tests/test_fleet_rollout_vm.py: the same
clone.py path, at a fraction of this file's boot time.)

The README's demo is this test's output (`make e2e`; `-s` shows the step log as it goes). Test VMs sit on QEMU user
networking with restrict=on: they reach the host's collector and Mattermost stand-in through explicit forwards and
nothing else.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.clone_support import (
    MattermostStandIn,
    clone_cli,
    ensure_libvirtd,
    libvirt_workdir,
    world_traversable,
    write_overlay,
    write_secrets,
)
from tests.collector_server import SECRET, free_port, start_collector
from tests.conftest import REPO
from tests.image_variants import derive_image
from tests.model_standin import ModelStandIn

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(5400)]

AGENTS = ("athena", "apollo")
BOOT_DEADLINE = 1500      # boot to the first healthy report, under TCG on 2 shared cores (measured 10-15 min)
DRIFT_DEADLINE = 60
GATEWAY_JOURNAL = "sudo journalctl -b --no-pager -o cat -u openclaw-gateway"
# The agents' model: a stand-in on this machine forwarded into the VMs, answering every question with REPLY.
REPLY = "On it: issue #42 created for the login bug."
REPLY_DEADLINE = 900       # an @mention to the reply in its channel: one agent turn of OpenClaw under TCG
REPLACE_TIMEOUT = 1800     # the clone process: a health deadline of 1500 s plus a rollback
# The next version to replace athena with: the baked image under another version, with one file of its own (the
# way the slow tier's tests make one: tests/image_variants.py). A real one-pin rebake costs a full image's app stage
# (3-10 min); the pipeline's rebake is proven by the slow tier (the rollout VM tests rebake the small image, and
# tests/test_bake_image.py the cache), and what this step proves is the replace: data and host key kept, the new
# root booted to a healthy report.
NEXT_VERSION_MARK = "/var/lib/e2e-next-version"   # outside agentd's watched paths: no drift


def mark_next_version(g) -> None:
    g.write(NEXT_VERSION_MARK, b"the image athena is replaced with\n")


class Steps:
    """Named, timed steps; a failure says which step and shows the VMs' serial console tails."""

    def __init__(self, state_dir: Path):
        self.state_dir, self.times = state_dir, []
        self.diagnose = lambda: ""  # set once the VMs exist: what the collector and the guests say

    @contextlib.contextmanager
    def step(self, name: str):
        t0 = time.monotonic()
        print(f"\n== {name}", flush=True)
        try:
            yield
        except BaseException as e:
            raise AssertionError(f"e2e step '{name}' failed: {e}\n{self._safe_diagnose()}\n{self.consoles()}") from e
        self.times.append((name, time.monotonic() - t0))
        print(f"   done in {self.times[-1][1]:.0f} s", flush=True)

    def _safe_diagnose(self) -> str:
        try:
            return self.diagnose()
        except Exception as e:  # a diagnosis must never hide the failure it explains
            return f"(diagnosis failed: {e})"

    def consoles(self) -> str:
        tails = []
        for agent in AGENTS:
            log = self.state_dir / agent / "console.log"
            text = log.read_text(errors="replace") if log.exists() else "(no console log)"
            tails.append(f"--- {agent} serial console (tail) ---\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(tails)

    def summary(self) -> str:
        return "\n".join(f"{seconds:7.0f} s  {name}" for name, seconds in self.times)


class ReportWatch:
    """Polls the collector during a replace: when did the old version last report, the new one first?"""

    def __init__(self, collector, agent: str):
        self.collector, self.agent = collector, agent
        self.seen: dict[str, tuple[float, float]] = {}  # version -> (first, last) time a new seq arrived
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last_seq = None
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                s = agent_state(self.collector, self.agent)
                if s.get("last_seq") != last_seq:
                    last_seq, now = s.get("last_seq"), time.monotonic()
                    first, _ = self.seen.get(s["image_version"], (now, now))
                    self.seen[s["image_version"]] = (first, now)

    def downtime(self, old: str, new: str) -> float:
        self._stop.set()
        self._thread.join()
        return self.seen[new][0] - self.seen[old][1]


def agent_state(collector, agent: str) -> dict:
    status, body = collector.get(f"/api/v1/agents/{agent}")
    return body if status == 200 else {}


def wait_for(what: str, predicate, deadline_s: float, interval: float = 3.0):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


def test_fleet_end_to_end(baked_image, tmp_path):
    ensure_libvirtd()
    work = libvirt_workdir("e2e-")
    world_traversable(baked_image.qcow2.parent)
    steps = Steps(work / "state")
    mattermost = MattermostStandIn(channels=("town-square", "dev", "random"))
    for agent in AGENTS:   # the bots' membership: the channels the inventory names (deploy/fleet.yaml), not #random
        mattermost.add_user(agent, bot_token=f"mm-{agent}-e2e", channels=["town-square", "dev"])
    mattermost.add_user("alice", channels=["town-square", "dev", "random"])
    model = ModelStandIn(REPLY)
    collector = start_collector(work / "collector", "--interval-s", "5")
    key = work / "admin_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-admin", "-f", str(key)], check=True)
    secrets = write_secrets(work / "secrets.yaml", AGENTS, canary="e2e", collector_secret=SECRET.decode())
    ssh_base = free_port()
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=baked_image.qcow2.parent,
                            secrets_file=secrets, collector_port=int(collector.url.rsplit(":", 1)[1]),
                            ssh_port_base=ssh_base, agents=AGENTS,
                            admin_key=key.with_suffix(".pub").read_text().strip(), ram_gb=2)
    text = overlay.read_text().replace("services:\n", (
        f"services:\n  mattermost_url: http://10.0.2.100:{mattermost.port}\n"
        f"  model: {{provider: lab, model: {model.model}, base_url: 'http://10.0.2.100:{model.port}/v1', "
        f"api: openai-completions, api_key: openai_api_key}}\n"))
    overlay.write_text(text)

    known_hosts = work / "known_hosts"

    def clone(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return clone_cli(*args, "--overlay", str(overlay), timeout=timeout)

    def ssh(agent: str, command: str) -> str:
        """As the admin, checking the host key against the one the clone printed (so also after a replace)."""
        port = ssh_base + AGENTS.index(agent)
        out = subprocess.run(["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=yes",
                              "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=10",
                              "-o", "BatchMode=yes", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"ssh {agent} {command!r}: {out.stderr.strip()}"
        return out.stdout.strip()

    def host_key(agent: str) -> str:
        port = ssh_base + AGENTS.index(agent)
        out = subprocess.run(["ssh-keyscan", "-T", "60", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.strip(), f"no host key from {agent}: {out.stderr.strip()[-200:]}"   # "" == "" proves nothing
        return out.stdout.split()[-1]

    def healthy_on(agent: str, version: str):
        def check():
            s = agent_state(collector, agent)
            return s if s.get("image_version") == version and s.get("healthy") else None
        return check

    def diagnose() -> str:
        lines = []
        for agent in AGENTS:
            s = agent_state(collector, agent)
            failing = [f"{c['name']}: {c.get('detail', '')}"[:160] for c in s.get("checks", [])
                       if c.get("status") not in ("ok", "pass")]
            lines.append(f"--- {agent} at the collector: version {s.get('image_version')}, healthy "
                         f"{s.get('healthy')}, seq {s.get('last_seq')}, not ok: {failing}")
            with contextlib.suppress(Exception):
                lines.append(ssh(agent, "systemctl is-active agentd openclaw-gateway | paste -sd ' '; "
                                        "sudo journalctl -b --no-pager -n 20 -u agentd -u openclaw-gateway "
                                        "| cut -c1-200"))
        return "\n".join(lines)
    steps.diagnose = diagnose

    v1 = baked_image.version
    figures: dict[str, float] = {}
    try:
        with steps.step(f"1. image {v1} (baked by the pipeline, or the cached one)"):
            assert baked_image.qcow2.exists()
        with steps.step("1b. another version of the image to replace with (derived: one file of its own)"):
            v2_image = derive_image(baked_image, world_traversable(work / "next-images"), "-next", mark_next_version)
            v2 = v2_image.version
            assert v2 != v1
        with steps.step("2-3. clone athena and apollo, boot, first healthy report of each"):
            t0 = time.monotonic()
            out = clone(*AGENTS, "--image", v1, "--json")
            assert out.returncode == 0, out.stderr
            cloned = json.loads(out.stdout)
            known_hosts.write_text("".join(line + "\n" for r in cloned for line in r["known_hosts"]))
            for agent in AGENTS:
                s = wait_for(f"{agent} healthy on {v1}", healthy_on(agent, v1), BOOT_DEADLINE)
                assert (s["agent"], s["role"]) == (agent, "test")
                figures[f"clone + boot to first healthy report, {agent}"] = time.monotonic() - t0
            for agent in AGENTS:
                assert ssh(agent, "hostname") == agent
                assert len(ssh(agent, "cat /etc/machine-id")) == 32
                assert ssh(agent, "findmnt -n -o TARGET /home/agent") == "/home/agent"
                # the serial getty and the first healthy report are independent: the prompt may come later
                console = work / "state" / agent / "console.log"
                wait_for(f"{agent}'s login prompt on its serial console",
                         lambda console=console: "login:" in console.read_text(errors="replace"), 600)
                assert ssh(agent, "stat -c '%a %U' ~/.openclaw/.env") == "600 agent"
                assert ssh(agent, "systemctl show -p User --value openclaw-gateway") == "agent"
                assert ssh(agent, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18789/") == "200"
                identity = json.loads(ssh(agent, "cat /etc/agentfleet/identity.json"))
                assert identity["agent"] == agent and identity["image_version"] == v1
                # the Mattermost channel (an official plugin, baked into the image) logged in with the bot token
                # that reached the gateway only through ~/.openclaw/.env, and went on to its websocket: OpenClaw
                # trusted it (an untrusted plugin logs in too, then exits refused its ingress queue)
                wait_for(f"{agent}'s Mattermost channel to log in",
                         lambda agent=agent: mattermost.logged_in(f"mm-{agent}-e2e"), 120)
                wait_for(f"{agent}'s Mattermost channel to open its websocket",
                         lambda agent=agent: mattermost.connected(agent), 120)
                assert "only available for trusted plugins" not in ssh(agent, GATEWAY_JOURNAL)
                # OpenClaw's own log on the data disk, where the config puts it (the journal keeps its console too)
                assert int(ssh(agent, "grep -c mattermost ~/.openclaw/logs/openclaw.log")) > 0
                assert ssh(agent, "findmnt -n -o TARGET --target ~/.openclaw/logs") == "/home/agent"
        with steps.step("3b. '@athena ...' in #dev: the model's reply in #dev; none in #random (her bot is not in it)"):
            mattermost.say("alice", "random", "@athena are you in here?")
            t0 = time.monotonic()
            mattermost.say("alice", "dev", "@athena create an issue for the login bug")
            wait_for("athena's reply in #dev", lambda: [p for p in mattermost.posts_by("athena", "dev")
                                                        if p["message"] == REPLY], REPLY_DEADLINE, interval=1)
            figures["an @mention to athena's reply in the channel (TCG)"] = time.monotonic() - t0
            assert mattermost.posts_by("athena", "random") == [] and mattermost.posts_by("apollo") == []
            asked = [r for r in model.requests if any("create an issue for the login bug" in t
                                                      for t in ModelStandIn.texts_of(r))]
            assert asked and all(r["auth"] == "Bearer sk-openai-test" for r in model.requests)
            assert not any("are you in here" in t for r in model.requests for t in ModelStandIn.texts_of(r))
        with steps.step("4. change a managed file in athena: drift at the collector and on the page"):
            seq0 = agent_state(collector, "athena")["last_seq"]
            ssh("athena", "echo e2e-drift | sudo tee -a /etc/issue >/dev/null")
            wait_for("drift of /etc/issue", lambda: any(
                d["path"] == "/etc/issue" and d["kind"] == "modified"
                for d in agent_state(collector, "athena").get("drift", [])), DRIFT_DEADLINE, interval=0.5)
            assert agent_state(collector, "athena")["last_seq"] > seq0
            status, page = collector.get("/agents/athena")
            assert status == 200 and "/etc/issue" in str(page)
        with steps.step(f"5. athena: write to /home/agent, --replace with {v2}"):
            ssh("athena", "echo precious > ~/e2e-keep.txt")
            key_before = host_key("athena")
            watch = ReportWatch(collector, "athena")
            out = clone("athena", "--image", str(v2_image.qcow2), "--replace", "--unhealthy-grace", "600",
                        "--health-timeout", str(BOOT_DEADLINE), timeout=REPLACE_TIMEOUT)
            assert out.returncode == 0, out.stderr
            wait_for(f"athena healthy on {v2}", healthy_on("athena", v2), 60)
            figures["replace downtime (last report of the old VM to the first of the new)"] = watch.downtime(v1, v2)
            assert ssh("athena", "cat ~/e2e-keep.txt") == "precious"
            assert host_key("athena") == key_before
            assert ssh("athena", f"cat {NEXT_VERSION_MARK}") == "the image athena is replaced with"
        with steps.step("6. destroy both; the data disks remain"):
            out = clone(*AGENTS, "--destroy")
            assert out.returncode == 0, out.stderr
            for agent in AGENTS:
                assert (work / "storage" / f"{agent}-data.qcow2").exists()
                assert not list((work / "storage").glob(f"{agent}-root-*.qcow2"))
    finally:
        figure_lines = "\n".join(f"{v:7.0f} s  {k}" for k, v in figures.items())
        print("\n== e2e step times\n" + steps.summary() + "\n== figures\n" + figure_lines, flush=True)
        (REPO / "build").mkdir(exist_ok=True)
        (REPO / "build" / "e2e-times.txt").write_text(steps.summary() + "\n" + figure_lines + "\n")
        with contextlib.suppress(Exception):
            clone(*AGENTS, "--destroy", "--purge-data", timeout=300)
        collector.stop()
        mattermost.close()
        model.close()
        shutil.rmtree(work, ignore_errors=True)
