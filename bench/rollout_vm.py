#!/usr/bin/env python3
"""The rollout with real replaces: the small test image's VMs behind three loopback sshd "hypervisors" (the tests'
small fleet, tests/small_fleet.py), the fleet tool driving clone.py on each. Two figures, as issue 13 defines them,
in one run:

1. one agent replaced alone (a rollout of one wave of one agent) against a wave of four agents on three hosts
   (the next version to all four at once); goal: the wave of four at most 1.3x the one;
2. each rollout's wall time against its waves' slowest replace plus --min-healthy (the orchestration's own cost:
   gates, polling, journal, the push of an image the hosts already hold); goal: under 5 %.

Under TCG on 2 cores four booting VMs share the cores that one VM has alone, so figure 1 measures this machine's CPU
as much as the rollout: it is printed with the replaces' own times beside it. Prints figures; not a test. About 25
minutes here (two app-stage rebakes of the small image, four boots, five replaces).

    .venv/bin/python bench/rollout_vm.py [--min-healthy 10]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.image_variants import bake_variant, small_image  # noqa: E402
from tests.small_fleet import small_fleet  # noqa: E402

HOSTS = ("rb1", "rb2", "rb3")
AGENTS = {"rba": "rb1", "rbb": "rb1", "rbc": "rb2", "rbd": "rb3"}


def timed_rollout(fleet, journal: Path, version: str, min_healthy: float, *scope: str) -> dict:
    flags = ("--min-healthy", str(min_healthy), "--stale-after", "120", "--poll", "1", "--wave-deadline", "1800",
             "--canary", "0")
    started = time.monotonic()
    proc = fleet.rollout(journal, version, *scope, rollout_flags=flags)
    wall = time.monotonic() - started
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not events or events[-1].get("state") != "done":
        sys.exit(f"bench: rollout of {version} did not finish (exit {proc.returncode}): {proc.stderr[-800:]}")
    began = {e["agent"]: e["elapsed_s"] for e in events if e.get("phase") == "replacing"}
    replaces = {e["agent"]: e["elapsed_s"] - began[e["agent"]] for e in events if e.get("phase") == "replaced"}
    data = json.loads(next(journal.glob("*.json")).read_text())
    waves = [w["finished_at"] - w["started_at"] for w in data["waves"]]
    return {"wall": wall, "replaces": replaces, "waves": waves, "min_healthy": min_healthy}


def overhead(run: dict) -> tuple[float, float]:
    budget = max(run["replaces"].values()) + run["min_healthy"] * len(run["waves"])
    return run["wall"] - budget, budget


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--min-healthy", type=float, default=10.0, help="seconds a replaced agent must stay healthy")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollout-vm-bench-"))
    v2 = bake_variant(work, "bench-v2", ("name: agent\n", "name: agent\n# rollout bench: v2\n"),
                      spec="agent-small.yaml", images_dir="small-images")
    v3 = bake_variant(work, "bench-v3", ("name: agent\n", "name: agent\n# rollout bench: v3\n"),
                      spec="agent-small.yaml", images_dir="small-images")
    with small_fleet(small_image(), "rollout-bench-", HOSTS, AGENTS, 110, 240) as fleet:
        for image in (v2, v3):
            fleet.add_image(image)
            pushed = fleet.fleet("push", image.version, "--json")          # pushes are not what is measured
            if pushed.returncode != 0:
                sys.exit(f"bench: push of {image.version} failed: {pushed.stderr[-500:]}")
        one = timed_rollout(fleet, work / "j-one", v2.version, args.min_healthy, "--agents", "rba")
        four = timed_rollout(fleet, work / "j-four", v3.version, args.min_healthy, "--waves", "100%")
    print(f"small image, {len(AGENTS)} agents on {len(HOSTS)} loopback hosts, TCG, "
          f"min-healthy {args.min_healthy:.0f} s")
    print(f"  clone + boot of the four to healthy       {fleet.boot_s:7.0f} s")
    print(f"  one agent alone: wave {one['waves'][0]:.0f} s (its replace {one['replaces']['rba']:.0f} s)")
    slowest = max(four["replaces"].values())
    print(f"  four agents, three hosts, one wave: {four['waves'][0]:.0f} s (replaces "
          + ", ".join(f"{a} {s:.0f} s" for a, s in sorted(four["replaces"].items()))
          + f"): {four['waves'][0] / one['waves'][0]:.2f}x the one (goal <= 1.3x)")
    for name, run in (("one agent", one), ("four agents", four)):
        extra, budget = overhead(run)
        print(f"  rollout of {name}: wall {run['wall']:.0f} s against slowest replace + min-healthy {budget:.0f} s: "
              f"orchestration {extra:+.1f} s = {100 * extra / budget:+.1f} % (goal < 5 %)")
    print(f"  (slowest replace of the four {slowest:.0f} s against the one's {one['replaces']['rba']:.0f} s: "
          f"{slowest / one['replaces']['rba']:.2f}x: the boots share 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
