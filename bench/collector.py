#!/usr/bin/env python3
"""Collector throughput and latency under many simulated agents, against a bare FastAPI + SQLite baseline measured
in the same run with the same load generator (wrk, Debian's package).

Both servers run one uvicorn process on loopback with the same settings (access log off, SQLite in WAL mode with
synchronous=NORMAL). The baseline validates the same JSON with the same protocol module and inserts it into SQLite;
the collector also checks the HMAC token, deduplicates on (agent, seq), advances the contiguous seq, updates the
agent's latest state and evaluates alerts. wrk drives both with the same ~850-byte report from many agents, each
with its own increasing seq and valid token. Prints figures and the ratio; it is not a timed test.

    .venv/bin/python bench/collector.py [--duration 10] [--connections 32] [--agents 10000] [--rounds 2]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentd.protocol import REPORTS_PATH, Report, agent_token  # noqa: E402

SECRET = b"bench-collector-secret"


# -- the baseline: a bare FastAPI endpoint that validates the report and inserts it into SQLite --------------------
def baseline_app(db_path: str):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    db = sqlite3.connect(db_path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS reports (agent TEXT, seq INTEGER, body TEXT, PRIMARY KEY (agent, seq))")
    app = FastAPI()

    @app.post(REPORTS_PATH)
    async def post(request: Request):
        body = (await request.body()).decode()
        try:
            report = Report.from_json(json.loads(body))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        db.execute("INSERT INTO reports VALUES (?, ?, ?)", (report.agent, report.seq, body))
        db.commit()
        return JSONResponse({"status": "stored"})

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


def run_baseline_server(listen: str, db_path: str) -> None:
    import uvicorn

    host, port = listen.rsplit(":", 1)
    uvicorn.run(baseline_app(db_path), host=host, port=int(port), log_level="warning", access_log=False)


# -- load generation ---------------------------------------------------------------------------------------------
def report_template() -> str:
    """An ~850-byte report as a Lua string.format template with the agent and seq left open."""
    data = {"agent": "@AGENT@", "seq": 424242, "sent_at": 1718000000.25, "image_version": "2024.06.1-3f9c2a1b7d",
            "host": "hv-rack1-03", "role": "developer",
            "checks": [{"name": name, "status": "ok", "detail": detail, "value": value, "duration_ms": 0.4}
                       for name, detail, value in [("cpu", "12% busy (warn at 90)", 12.0),
                                                   ("memory", "41% used (warn at 90)", 41.0),
                                                   ("disk", "/ 37% used (warn at 80)", 37.0),
                                                   ("load", "0.42 per cpu (warn at 2.0)", 0.42),
                                                   ("gateway", "readyz 200", 4.0)]],
            "metrics": {"load1": 0.84, "mem_used_percent": 41.2, "disk_used_percent": 37.4, "uptime_s": 86400.0},
            "drift": [], "spool": {"depth": 0, "oldest_age_s": 0.0, "dropped": 0}, "canary_lag_s": 0.12}
    text = json.dumps(data).replace("%", "%%")
    return text.replace('"@AGENT@"', '"%s"').replace("424242", "%d")


def wrk_script(agents: int, threads: int) -> str:
    names = [f"bench-{i:05d}" for i in range(agents)]
    rows = ",\n".join(f'{{"{n}","{agent_token(SECRET, n)}"}}' for n in names)
    template = report_template()
    return f"""
local agents = {{
{rows}
}}
local template = [==[{template}]==]
local threads = {threads}
local created = 0
function setup(thread)
  thread:set("tid", created)
  created = created + 1
end
function init(args)
  mine, seqs, idx = {{}}, {{}}, 0
  for i = tid + 1, #agents, threads do table.insert(mine, i) end
end
function request()
  idx = idx % #mine + 1
  local i = mine[idx]
  seqs[i] = (seqs[i] or 0) + 1
  local body = string.format(template, agents[i][1], seqs[i])
  return wrk.format("POST", "{REPORTS_PATH}", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. agents[i][2]}}, body)
end
"""


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, script: Path, threads: int, connections: int, duration: float) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                          "--timeout", "10s",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    done = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rate, "p50_ms": pct["50"], "p99_ms": pct["99"], "requests": done,
            "non2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


# -- servers -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], url: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start: {' '.join(argv)}\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(kind: str, work: Path, script: Path, args: argparse.Namespace, round_no: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = work / f"{kind}-{round_no}.db"
    if kind == "baseline":
        argv = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", f"127.0.0.1:{port}",
                "--db", str(db)]
    else:
        secret = work / "secret"
        argv = [sys.executable, "-m", "collector", "serve", "--listen", f"127.0.0.1:{port}",
                "--db", f"sqlite:///{db}", "--secret-file", str(secret), "--log-level", "warning"]
    process = start(argv, url, work / f"{kind}.log")
    try:
        result = run_wrk(url, script, args.threads, args.connections, args.duration)
        if kind == "collector":  # delivery check: what the collector says it holds contiguously
            with urllib.request.urlopen(url + "/api/v1/agents", timeout=60) as response:
                agents = json.load(response)
            result["contiguous_total"] = sum(a["contiguous_seq"] for a in agents)
            result["agents_seen"] = len(agents)
    finally:
        stop(process)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default %(default)s)")
    parser.add_argument("--agents", type=int, default=10000, help="simulated agents (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (default %(default)s)")
    parser.add_argument("--baseline-server", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server, args.db)
        return 0
    if not shutil.which("wrk"):
        print("bench/collector.py: wrk not found (apt-get install wrk, or scripts/setup-host.sh)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    try:
        (work / "secret").write_bytes(SECRET)
        (work / "secret").chmod(0o600)
        script = work / "reports.lua"
        script.write_text(wrk_script(args.agents, args.threads))
        size = len(report_template().replace("%%", "%").replace("%s", "bench-00000").replace("%d", "1"))
        print(f"collector bench: {args.agents} agents, {size}-byte reports, wrk {args.threads} threads x "
              f"{args.connections} connections, {args.duration:g} s per run, {args.rounds} alternating rounds, "
              f"{os.cpu_count()} CPUs shared by load generator and server")
        results: dict[str, list[dict]] = {"baseline": [], "collector": []}
        for round_no in range(args.rounds):
            for kind in ("baseline", "collector"):
                r = measure(kind, work, script, args, round_no)
                results[kind].append(r)
                extra = (f", contiguous total {r['contiguous_total']} over {r['agents_seen']} agents"
                         if kind == "collector" else "")
                print(f"  round {round_no + 1} {kind:9s}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                      f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} requests, {r['non2xx']} non-2xx"
                      f"{', socket errors ' + r['socket_errors'] if r['socket_errors'] else ''}{extra})")
        best = {kind: max(runs, key=lambda r: r["rps"]) for kind, runs in results.items()}
        ratio = best["collector"]["rps"] / best["baseline"]["rps"]
        print(f"baseline (bare FastAPI + SQLite insert): {best['baseline']['rps']:.0f} req/s, "
              f"p50 {best['baseline']['p50_ms']:.2f} ms, p99 {best['baseline']['p99_ms']:.2f} ms")
        print(f"collector (auth + dedup + contiguous seq + latest state + alerts): {best['collector']['rps']:.0f} "
              f"reports/s, p50 {best['collector']['p50_ms']:.2f} ms, p99 {best['collector']['p99_ms']:.2f} ms")
        median_ratio = (statistics.median(r['rps'] for r in results['collector'])
                        / statistics.median(r['rps'] for r in results['baseline']))
        print(f"ratio collector/baseline: {ratio:.2f} (goal >= 0.60); median of rounds {median_ratio:.2f}")
        print(f"fleet headroom: {best['collector']['rps'] * 30:.0f} agents at one report per 30 s")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
