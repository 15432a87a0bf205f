#!/usr/bin/env python3
"""The rollout's own cost (the orchestration), measured with simulated hypervisors against a real collector.

Each host's replace is the tests' clone.py stand-in (tests/test_rollout_support.py) holding for --boot-s seconds (a
simulated appliance launch and boot), then waiting for the collector to show the agent healthy on the new version;
the simulated VMs post real signed reports every --report-s. Two figures, as issue 13 defines them:

1. an 8-agent rollout of the seed fleet (canary, then waves of 25 %): its wall time against the sum of its waves'
   slowest replace plus --min-healthy per wave; goal: the overhead under 5 % of that sum;
2. a wave of four agents on three hosts against a wave of one agent, in the same run; goal: at most 1.3x.

This measures the orchestration only (gates, polling, journal fsyncs, threads); what real replaces cost (libguestfs,
boots under TCG) needs the fleet tool's SSH hosts and real VMs. Prints figures; not a test.

    .venv/bin/python bench/rollout.py [--boot-s 3] [--min-healthy 2] [--report-s 0.2] [--poll 0.25]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.rollout import CollectorHealth, RolloutOptions, Size, run_rollout  # noqa: E402
from tests.collector_server import start_collector  # noqa: E402
from tests.test_rollout_support import FakeClone, SimulatedHosts, fleet_inventory  # noqa: E402


class TimedClone(FakeClone):
    """The stand-in, with each host call's duration kept per (version, host)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[tuple[str, str, list[str], float]] = []

    def replace(self, host, agents, version):
        started = time.monotonic()
        try:
            return super().replace(host, agents, version)
        finally:
            self.durations.append((version, host, list(agents), time.monotonic() - started))


def one_rollout(work: Path, collector_url: str, version: str, old: str, options: RolloutOptions, args,
                agents: tuple[str, ...] = ()):
    inv = fleet_inventory()
    placement = {a.name: a.host for a in inv.agents.values()}
    sim = SimulatedHosts(work / f"hosts-{version}", collector_url, placement, old, period_s=args.report_s).start()
    try:
        time.sleep(2 * args.report_s)
        fake = TimedClone(work / f"hosts-{version}", placement, collector_url, hold_s=args.boot_s,
                          hold_agents=list(placement), health_timeout_s=args.boot_s + 30)
        started = time.monotonic()
        report = run_rollout(inv, version, options, replace_on_host=fake.replace, rollback_on_host=fake.rollback,
                             push=lambda v: None, health=CollectorHealth(collector_url))
        wall = time.monotonic() - started
    finally:
        sim.stop()
    assert report.exit_code == 0, report.render()
    return report, wall, fake.durations


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boot-s", type=float, default=3.0, help="simulated replace time per host call (default 3)")
    p.add_argument("--min-healthy", type=float, default=2.0, help="the rollout's --min-healthy (default 2)")
    p.add_argument("--report-s", type=float, default=0.2, help="simulated agents' report period (default 0.2)")
    p.add_argument("--poll", type=float, default=0.25, help="the rollout's --poll (default 0.25)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        work = Path(tmp)
        collector = start_collector(work / "collector")
        try:
            base = dict(min_healthy_s=args.min_healthy, stale_after_s=10, poll_s=args.poll, wave_deadline_s=600)

            # 1. the seed fleet, default plan
            opts = RolloutOptions(journal_dir=work / "j1", **base)
            report, wall, calls = one_rollout(work, collector.url, "v2fleet", "v1", opts, args)
            waves = report.waves
            slowest = [max(d for v, h, agents, d in calls if set(agents) & set(w["agents"])) for w in waves]
            budget = sum(slowest) + args.min_healthy * len(waves)
            overhead = wall - budget
            print(f"rollout of 8 agents on 5 hosts in {len(waves)} waves "
                  f"({' | '.join(','.join(w['agents']) for w in waves)})")
            print(f"  wall {wall:6.2f} s; sum of waves' slowest replace {sum(slowest):6.2f} s "
                  f"+ min-healthy {args.min_healthy:g} s x {len(waves)} = {budget:6.2f} s")
            print(f"  orchestration overhead {overhead:5.2f} s = {100 * overhead / sum(slowest):4.1f} % of the "
                  f"replaces (goal < 5 %), {overhead / len(waves):4.2f} s per wave (poll {args.poll:g} s)")

            # 2. one wave of four agents on three hosts against a wave of one agent, same collector, same settings
            four = ("apollo", "artemis", "hermes", "perseus")
            opts = RolloutOptions(journal_dir=work / "j2", canary=0, waves=(Size(percent=100),), agents=four, **base)
            r4, wall4, calls4 = one_rollout(work, collector.url, "v3four", "v2fleet", opts, args, four)
            opts = RolloutOptions(journal_dir=work / "j3", canary=0, agents=("ares",), **base)
            r1, wall1, calls1 = one_rollout(work, collector.url, "v4one", "v2fleet", opts, args, ("ares",))
            hosts4 = {h for v, h, agents, d in calls4}
            print(f"wave of 4 agents on {len(hosts4)} hosts ({', '.join(sorted(hosts4))}): {wall4:6.2f} s; "
                  f"wave of 1 agent: {wall1:6.2f} s; ratio {wall4 / wall1:4.2f}x (goal <= 1.3x)")
        finally:
            collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
