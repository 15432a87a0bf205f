"""Health checks: pure parsers on literals, thresholds from config, isolation of a failing check, the CLI table."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentd.baseline import load_baseline
from agentd.checks import CheckContext, Outcome, run_checks
from agentd.checks.cpu import busy_percent, parse_cpu_times
from agentd.checks.disk import used_percent
from agentd.checks.load import count_cpus, parse_load1
from agentd.checks.memory import parse_meminfo
from agentd.checks.openclaw import judge_readyz
from agentd.config import load_config
from tests.agentd_fixtures import PROC, make_vm_tree, run_agentd


def test_cpu_busy_percent_counts_idle_and_iowait_as_not_busy():
    before = parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\n")
    after = parse_cpu_times("cpu  150 0 150 750 150 0 0 0 0 0\n")
    assert before == (200, 1000) and busy_percent(before, after) == 50.0


def test_memory_uses_memavailable_not_memfree():
    assert parse_meminfo(PROC["proc/meminfo"]) == 50.0


def test_load_per_cpu_reads_cpu_count_from_the_same_proc():
    assert parse_load1(PROC["proc/loadavg"]) == 0.5 and count_cpus(PROC["proc/stat"]) == 2


def test_disk_percent_counts_reserved_blocks_like_df():
    assert used_percent(blocks=100, bfree=20, bavail=10) == pytest.approx(80 / 90 * 100)


def test_readyz_judgement():
    assert judge_readyz(200, {"ready": True, "failing": [], "uptimeMs": 5000}) == Outcome("ok", "ready", 5.0)
    assert judge_readyz(200, {"ready": True, "eventLoop": {"degraded": True}}).status == "warn"
    not_ready = judge_readyz(503, {"ready": False, "failing": ["channels"]})
    assert not_ready.status == "fail" and "channels" in not_ready.detail


def _context(tmp_path, **config):
    path = make_vm_tree(tmp_path, **config)
    cfg = load_config(str(path))
    return CheckContext(cfg, str(tmp_path), load_baseline(cfg, str(tmp_path)))


def test_thresholds_from_config_decide_warn_and_fail(tmp_path):
    ctx = _context(tmp_path, thresholds={"memory_percent": {"warn": 40, "fail": 60},
                                         "load_per_cpu": {"warn": 0.1, "fail": 0.2}})
    results = {r.name: r for r in run_checks(ctx)}
    assert results["memory"].status == "warn" and results["memory"].value == 50.0
    assert results["load"].status == "fail"
    assert results["uptime"].value == 3600.0


def test_a_crashing_check_is_a_fail_result_and_the_others_still_run(tmp_path):
    ctx = _context(tmp_path)
    (tmp_path / "proc/meminfo").write_text("garbage")
    results = {r.name: r for r in run_checks(ctx)}
    assert results["memory"].status == "fail" and "check error" in results["memory"].detail
    assert results["load"].status == "ok"


def test_unit_states_are_unknown_outside_systemd(tmp_path):
    results = {r.name: r for r in run_checks(_context(tmp_path))}
    assert results["openclaw_gateway"].status == "warn" and "unknown" in results["openclaw_gateway"].detail
    assert results["agentd_unit"].status == "warn"


class _OpenClaw(BaseHTTPRequestHandler):
    ready = True

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/readyz":
            body, code = {"ready": self.ready, "failing": [] if self.ready else ["gateway"], "uptimeMs": 1200}, \
                200 if self.ready else 503
        elif self.path == "/api/v4/system/ping":
            body, code = {"status": "OK"}, 200
        else:
            body, code = {"page": "dashboard"}, 200
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def openclaw():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenClaw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_gateway_dashboard_and_mattermost_checks_read_real_http_answers(tmp_path, openclaw):
    ctx = _context(tmp_path, openclaw_url=openclaw, mattermost_url=openclaw)
    results = {r.name: r for r in run_checks(ctx)}
    assert results["openclaw_ready"].status == "ok" and results["openclaw_ready"].value == 1.2
    assert results["openclaw_dashboard"].status == "ok"
    assert results["mattermost"].status == "ok"
    _OpenClaw.ready = False
    try:
        assert {r.name: r for r in run_checks(ctx)}["openclaw_ready"].status == "fail"
    finally:
        _OpenClaw.ready = True


def test_check_command_prints_the_table_and_exits_zero_when_nothing_fails(tmp_path, openclaw):
    make_vm_tree(tmp_path, openclaw_url=openclaw, mattermost_url=openclaw)
    result = run_agentd("check", root=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert any(line.startswith("memory") and " OK " in line for line in lines)


def test_check_command_exits_non_zero_on_a_failing_check(tmp_path, openclaw):
    make_vm_tree(tmp_path, openclaw_url=openclaw, mattermost_url=openclaw,
                 thresholds={"memory_percent": {"warn": 10, "fail": 20}})
    result = run_agentd("check", root=tmp_path)
    assert result.returncode == 1
    assert any(line.startswith("memory") and "FAIL" in line for line in result.stdout.splitlines())
