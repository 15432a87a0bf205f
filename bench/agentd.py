#!/usr/bin/env python3
"""agentd's figures (printed, not a timed test), against the real collector on loopback:

1. the cost of agentd's imports alone (python + pyyaml + requests + a running watchdog observer), as RSS;
2. agentd's RSS after "an hour" of reporting: simulated by many fast report cycles (each one a full report:
   every check, drift, spool write with fsync, POST), with file churn and canary touches along the way;
3. CPU time per report cycle;
4. drift latency: from a file write to the report that carries it being stored at the collector (p50/p99).

Usage: .venv/bin/python bench/agentd.py [--cycles N] [--writes N]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.agentd_fixtures import Collector, make_vm_tree, spawn_agentd  # noqa: E402

IMPORTS_ONLY = """
import os, tempfile, time, yaml, requests
from watchdog.observers import Observer
from watchdog.events import FileSystemEventHandler
d = tempfile.mkdtemp()
o = Observer(); o.schedule(FileSystemEventHandler(), d, recursive=True); o.start()
time.sleep(0.5)
print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])
o.stop(); o.join()
"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS")))


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seq_of(root: Path) -> int:
    """Reports made so far: the seq counter, or a spooled report beyond it."""
    try:
        counter = int((root / "var/lib/agentd/seq").read_text())
    except (FileNotFoundError, ValueError):
        counter = 0
    spooled = [int(p.name[:-5]) for p in (root / "var/lib/agentd/spool").glob("*.json") if p.name[:-5].isdigit()]
    return max([counter] + spooled)


def wait_for_seq(root: Path, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while seq_of(root) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"agentd made only {seq_of(root)} of {target} reports in {timeout}s")
        time.sleep(0.05)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bench_memory_and_cpu(work: Path, collector: Collector, cycles: int) -> dict:
    root = work / "athena"
    make_vm_tree(root, collector_url=collector.url, interval_s=0.01, canary_interval_s=0.5, spool_max=100000)
    proc = spawn_agentd(root=root)
    try:
        warm = min(100, cycles // 10)
        wait_for_seq(root, warm, 120)
        rss_warm, cpu_warm, seq_warm, t_warm = rss_kb(proc.pid), cpu_s(proc.pid), seq_of(root), time.monotonic()
        churn = root / "etc" / "churn.conf"
        while seq_of(root) < cycles:
            churn.write_text(f"{time.time()}\n")  # drift events along the way (an admin editing /etc)
            time.sleep(0.2)
        rss_end, cpu_end, seq_end = rss_kb(proc.pid), cpu_s(proc.pid), seq_of(root)
        elapsed = time.monotonic() - t_warm
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    return {"rss_warm_kb": rss_warm, "rss_end_kb": rss_end, "cycles": seq_end - seq_warm,
            "cpu_per_cycle_ms": 1000 * (cpu_end - cpu_warm) / max(1, seq_end - seq_warm),
            "cycles_per_s": (seq_end - seq_warm) / elapsed}


def bench_drift_latency(work: Path, collector: Collector, writes: int) -> list:
    root = work / "hermes"
    make_vm_tree(root, agent="hermes", collector_url=collector.url, interval_s=30, canary_interval_s=3600)
    proc = spawn_agentd(root=root)
    try:
        wait_for_seq(root, 1, 60)
        time.sleep(0.5)
        (root / "etc" / "bench").mkdir()
        written = {}
        for i in range(writes):
            path = root / "etc" / "bench" / f"f{i}"
            written[f"/etc/bench/f{i}"] = time.time()
            path.write_text(f"{i}\n")
            time.sleep(0.15)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    with sqlite3.connect(collector.db) as db:
        rows = db.execute("SELECT received_at, body FROM reports WHERE agent = 'hermes' ORDER BY seq").fetchall()
    latencies, made = [], []
    for vm_path, t_write in written.items():
        needle = f'"{vm_path}"'
        hit = next(((received, body) for received, body in rows if needle in body), None)
        latencies.append(float("inf") if hit is None else hit[0] - t_write)
        if hit is not None:
            made.append(json.loads(hit[1])["sent_at"] - t_write)
    return latencies, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000, help="report cycles for the memory run (default 2000)")
    parser.add_argument("--writes", type=int, default=200, help="file writes timed for drift latency (default 200)")
    args = parser.parse_args()
    imports_kb = int(subprocess.run([sys.executable, "-c", IMPORTS_ONLY], capture_output=True, text=True,
                                    check=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
        work = Path(tmp)
        collector = Collector(work)
        collector.start()
        try:
            mem = bench_memory_and_cpu(work, collector, args.cycles)
            lat, made = bench_drift_latency(work, collector, args.writes)
        finally:
            collector.stop()
    ratio = mem["rss_end_kb"] / imports_kb
    hours = mem["cycles"] * 30 / 3600
    print("agentd benchmark (python %s, load average %s)" % (sys.version.split()[0], os.getloadavg()[0]))
    print(f"  imports alone (yaml, requests, watchdog observer): RSS {imports_kb / 1024:.1f} MB")
    print(f"  agentd after {mem['cycles']} report cycles (= {hours:.1f} h at interval 30 s, simulated by "
          f"{mem['cycles_per_s']:.0f} cycles/s):")
    print(f"    RSS {mem['rss_warm_kb'] / 1024:.1f} MB after warm-up -> {mem['rss_end_kb'] / 1024:.1f} MB at the end; "
          f"{ratio:.2f}x the imports alone (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    print(f"    CPU per report cycle: {mem['cpu_per_cycle_ms']:.1f} ms (all checks, drift, spool fsync, POST)")
    finite = [x for x in lat if x != float("inf")]
    print(f"  drift latency, file write -> report stored at the collector ({len(lat)} writes, "
          f"{len(lat) - len(finite)} never arrived):")
    if finite:
        p99 = percentile(lat, 99)
        print(f"    p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
              f"(goal p99 < 1 s: {'met' if p99 < 1 else 'NOT met'})")
        print(f"    of which write -> report made (event, debounce, rehash): p50 {percentile(made, 50) * 1000:.0f} ms, "
              f"p99 {percentile(made, 99) * 1000:.0f} ms; the rest is spool fsync, POST and the collector's commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
