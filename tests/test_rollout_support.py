"""Honest stand-ins for the fleet tool's side effects, for the rollout's tests (this module holds no test).

- `SimulatedHosts`: each hypervisor a directory with one state file per agent ({current, previous, pending, swaps,
  down}), the shape of clone.py's per-agent state; a thread plays the agents' VMs, posting real signed reports to a
  real collector with the image version the state file says they run. A version listed as broken for an agent
  reports a failing `agentd_unit` check, as an image whose agentd cannot start would; a sour one starts healthy and
  fails after SOUR_AFTER_S (after clone.py accepted it); `sick`/`silent` agents report unhealthy or nothing at all.
- `FakeClone`: ReplaceOnHost/RollbackOnHost with clone.py's semantics on those files (swap once, then wait for the
  collector to show the new version healthy, else roll back and exit 3; an agent already swapped is resumed, never
  swapped again), answering as a clone.py process would (exit code, --json stdout, stderr), parsed by the real
  `outcomes_from_clone`. Every call is appended to calls.jsonl.
- `python -m tests.test_rollout_support drive ...`: a rollout in its own process, so a test can SIGKILL it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

from agentd.protocol import REPORTS_PATH, agent_token
from deploy import inventory as inventory_mod
from deploy.rollout import (
    CollectorHealth,
    ReplaceOutcome,
    RolloutOptions,
    Size,
    TextReporter,
    outcomes_from_clone,
    run_rollout,
)
from deploy.rollout.journal import atomic_write

SECRET = b"test-collector-secret"  # tests/collector_server.py's
SOUR_AFTER_S = 0.5  # a "sour" (agent, version) reports healthy this long after its boot, then fails


def fleet_inventory():
    """The seed's fleet: 8 agents on 5 hosts (deploy/fleet.yaml)."""
    return inventory_mod.load(inventory_mod.DEFAULT_INVENTORY, [])


class HostFiles:
    """The simulated hypervisors' per-agent state files, shared by the VMs (SimulatedHosts) and FakeClone."""

    def __init__(self, root: Path, placement: dict[str, str]) -> None:
        self.root, self.placement = root, placement

    def state_path(self, agent: str) -> Path:
        return self.root / self.placement[agent] / f"{agent}.json"

    def read(self, agent: str) -> dict:
        return json.loads(self.state_path(agent).read_text())

    def write(self, agent: str, state: dict) -> None:
        atomic_write(self.state_path(agent), json.dumps(state).encode())


class SimulatedHosts(HostFiles):
    def __init__(self, root: Path, collector_url: str, placement: dict[str, str], version: str, *,
                 broken: Iterable[tuple[str, str]] = (), sours: Iterable[tuple[str, str]] = (),
                 sick: Iterable[str] = (), silent: Iterable[str] = (), period_s: float = 0.2) -> None:
        super().__init__(root, placement)
        self.url, self.period_s = collector_url, period_s
        self.broken, self.sours, self.sick, self.silent = set(broken), set(sours), set(sick), set(silent)
        self.booted: dict[tuple[str, str], float] = {}  # (agent, version) -> when it first reported it
        self.seq = {a: last_seq(collector_url, a) for a in placement}  # as agentd: continue above the collector's
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        for agent in placement:
            if not self.state_path(agent).exists():
                self.write(agent, {"current": version, "previous": None, "pending": None, "swaps": 0, "down": False})

    def report_once(self) -> None:
        for agent, host in self.placement.items():
            state = self.read(agent)
            if state["down"] or agent in self.silent:
                continue
            booted = self.booted.setdefault((agent, state["current"]), time.monotonic())
            soured = (agent, state["current"]) in self.sours and time.monotonic() - booted > SOUR_AFTER_S
            failing = agent in self.sick or (agent, state["current"]) in self.broken or soured
            self.seq[agent] += 1
            post_report(self.url, agent, self.seq[agent], state["current"], host, failing)

    def start(self) -> "SimulatedHosts":
        def loop() -> None:
            while not self._stop.is_set():
                self.report_once()
                self._stop.wait(self.period_s)
        self.report_once()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


def last_seq(url: str, agent: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/agents/{agent}", timeout=5) as resp:
            return int(json.loads(resp.read())["last_seq"])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return 0
        raise


def post_report(url: str, agent: str, seq: int, version: str, host: str, failing: bool = False) -> None:
    report = {"agent": agent, "seq": seq, "sent_at": time.time(), "image_version": version, "host": host,
              "role": "Development", "checks": [
                  {"name": "agentd_unit", "status": "fail" if failing else "ok", "detail": "simulated"}],
              "metrics": {}, "drift": [], "spool": {"depth": 0, "oldest_age_s": 0.0, "dropped": 0}}
    request = urllib.request.Request(url + REPORTS_PATH, data=json.dumps(report).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {agent_token(SECRET, agent)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


class FakeClone:
    """clone.py --replace / --rollback on SimulatedHosts' files, answering as the process would."""

    def __init__(self, hosts_root: Path, placement: dict[str, str], collector_url: str, *, health_timeout_s=5.0,
                 unhealthy_grace_s=0.6, hold_s: float = 0.0, hold_agents: Iterable[str] = ()) -> None:
        self.sim = HostFiles(hosts_root, placement)
        self.url, self.health_timeout_s, self.grace_s = collector_url, health_timeout_s, unhealthy_grace_s
        self.hold_s, self.hold_agents = hold_s, set(hold_agents)
        self.calls_path = hosts_root / "calls.jsonl"

    def _log(self, kind: str, host: str, agents: list[str], version: Optional[str]) -> None:
        with open(self.calls_path, "a") as f:
            f.write(json.dumps({"kind": kind, "host": host, "agents": agents, "version": version,
                                "pid": os.getpid()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def replace(self, host: str, agents: list[str], version: str) -> dict[str, ReplaceOutcome]:
        self._log("replace", host, agents, version)
        results, rc, stderr = [], 0, ""
        waiting = []
        for agent in agents:
            st = self.sim.read(agent)
            if st["current"] == version and st["pending"] is None:
                results.append({"agent": agent, "action": "noop", "image_version": version,
                                "message": "already runs this image"})
                continue
            if st["current"] != version:  # the swap: old VM stopped, new overlay booted
                st.update(previous=st["current"], current=version, pending=version, swaps=st["swaps"] + 1, down=True)
                self.sim.write(agent, st)
                time.sleep(0.05)
                self.sim.write(agent, {**st, "down": False})
            elif st["down"]:  # swapped, never proven healthy (a run cut off): clone.py's "resume" starts the domain
                self.sim.write(agent, {**st, "down": False})
            waiting.append(agent)
        if self.hold_agents & set(waiting):
            time.sleep(self.hold_s)  # a slow boot: the window in which tests kill the rollout
        since = time.time()
        for agent in waiting:
            verdict = self._wait_healthy(agent, version, since)
            st = self.sim.read(agent)
            if verdict == "healthy":
                self.sim.write(agent, {**st, "pending": None})
                results.append({"agent": agent, "action": "replace", "image_version": version,
                                "message": f"healthy on {version}"})
            else:
                self.sim.write(agent, {**st, "current": st["previous"], "previous": st["current"], "pending": None})
                results.append({"agent": agent, "action": "rollback", "image_version": st["previous"],
                                "message": f"{agent}: rolled back to {st['previous']} ({verdict})"})
                rc, stderr = 3, f"clone: {agent}: rolled back to {st['previous']} ({verdict})\n"
        return outcomes_from_clone(agents, rc, json.dumps(results), stderr)

    def _wait_healthy(self, agent: str, version: str, since: float) -> str:
        end, first_bad = time.monotonic() + self.health_timeout_s, None
        while time.monotonic() < end:
            with urllib.request.urlopen(f"{self.url}/api/v1/agents/{agent}", timeout=5) as resp:
                seen = json.loads(resp.read())
            if seen["image_version"] == version and seen["last_seen"] >= since - 1:
                if seen["healthy"]:
                    return "healthy"
                first_bad = first_bad or time.monotonic()
                if time.monotonic() - first_bad >= self.grace_s:
                    return "failed report"
            time.sleep(0.05)
        return "health deadline"

    def rollback(self, host: str, agents: list[str]) -> dict[str, ReplaceOutcome]:
        self._log("rollback", host, agents, None)
        results = []
        for agent in agents:
            st = self.sim.read(agent)
            self.sim.write(agent, {**st, "current": st["previous"], "previous": st["current"], "pending": None})
            results.append({"agent": agent, "action": "rollback", "image_version": st["previous"],
                            "message": f"back on {st['previous']}"})
        return outcomes_from_clone(agents, 0, json.dumps(results), "")

    def calls(self) -> list[dict]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines() if line.strip()]


class EventLog:
    """A Reporter keeping every progress event, for assertions."""

    def __init__(self) -> None:
        self.events: list = []
        self.reports: list = []

    def event(self, event) -> None:
        self.events.append(event)

    def text(self, text: str) -> None:
        pass

    def report(self, report: dict) -> None:
        self.reports.append(report)

    def phases(self, agent: str) -> list[str]:
        return [e.phase for e in self.events if e.agent == agent]


def fast_options(journal_dir: Path, **overrides) -> RolloutOptions:
    """Timings scaled for simulated agents reporting every 0.2 s."""
    base = dict(min_healthy_s=0.5, wave_deadline_s=20.0, stale_after_s=3.0, poll_s=0.1, journal_dir=journal_dir)
    return RolloutOptions(**{**base, **overrides})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tests.test_rollout_support")
    p.add_argument("command", choices=["drive"])
    p.add_argument("--hosts-root", type=Path, required=True)
    p.add_argument("--collector", required=True)
    p.add_argument("--journal-dir", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--hold-s", type=float, default=0.0)
    p.add_argument("--hold-agents", default="")
    p.add_argument("--waves", default="25%")
    args = p.parse_args(argv)
    inv = fleet_inventory()
    placement = {a.name: a.host for a in inv.agents.values()}
    fake = FakeClone(args.hosts_root, placement, args.collector, hold_s=args.hold_s,
                     hold_agents=[a for a in args.hold_agents.split(",") if a])
    options = fast_options(args.journal_dir, waves=tuple(Size.parse(w, "--waves") for w in args.waves.split(",")))
    report = run_rollout(inv, args.version, options, replace_on_host=fake.replace, rollback_on_host=fake.rollback,
                         push=lambda version: None, health=CollectorHealth(args.collector),
                         out=TextReporter(sys.stdout))
    print(report.render(), flush=True)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
