"""The report endpoint and the read API against a real collector process."""
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from agentd.protocol import MAX_REPORT_BYTES, REPORTS_PATH
from collector.bounded_body import DRAIN_FACTOR

from .collector_server import ROOT, report, running_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("collector")) as c:
        yield c


def raw_post(collector, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(collector.url + REPORTS_PATH, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_report_is_stored_once_and_a_resend_is_a_duplicate(collector):
    assert collector.post(report("stored-once", 1)) == (200, {"status": "stored"})
    assert collector.post(report("stored-once", 1)) == (200, {"status": "duplicate"})
    status, state = collector.get("/api/v1/agents/stored-once")
    assert status == 200
    assert (state["last_seq"], state["contiguous_seq"], state["healthy"]) == (1, 1, True)
    assert state["host"] == "hv1" and state["role"] == "developer" and state["image_version"] == "2024.1-abc"
    assert state["metrics"] == {"load1": 0.25, "mem_used_percent": 37.5}
    assert state["checks"][0]["name"] == "disk" and state["canary_lag_s"] == 0.12


def test_agent_state_carries_every_contract_field(collector):
    collector.post(report("contract", 1, drift=[{"path": "/etc/hosts", "kind": "modified"}],
                          checks=[{"name": "memory", "status": "fail", "detail": "98%"}]))
    status, state = collector.get("/api/v1/agents/contract")
    for key in ("agent", "host", "role", "image_version", "last_seen", "last_seq", "contiguous_seq", "healthy",
                "drift_count", "drift", "checks", "metrics", "canary_lag_s", "spool"):
        assert key in state, key
    assert state["healthy"] is False and state["drift_count"] == 1
    assert state["drift"] == [{"path": "/etc/hosts", "kind": "modified", "expected": None, "actual": None,
                               "class": "unexplained"}]  # an agentd that sends no class: nothing explains it
    assert state["spool"] == {"depth": 0, "dropped": 0, "oldest_age_s": 0.0}


def test_a_name_with_a_trailing_newline_is_not_a_second_agent(collector):
    assert collector.post(report("newline", 1))[0] == 200
    assert collector.post(report("newline\n", 2))[0] == 422
    assert collector.get("/api/v1/agents/newline%0A")[0] == 404
    assert collector.get("/agents/newline%0A")[0] == 404
    assert [a["agent"] for a in collector.get("/api/v1/agents")[1] if a["agent"].startswith("newline")] == ["newline"]


def test_unknown_agent_is_404(collector):
    assert collector.get("/api/v1/agents/nobody-here")[0] == 404
    assert collector.get("/api/v1/agents/NOT_A_NAME")[0] == 404


def test_contiguous_seq_stops_at_a_gap_and_advances_when_it_is_filled(collector):
    for seq in (1, 2, 4, 5):
        assert collector.post(report("gappy", seq))[0] == 200
    state = collector.get("/api/v1/agents/gappy")[1]
    assert (state["contiguous_seq"], state["last_seq"]) == (2, 5)
    assert collector.post(report("gappy", 3)) == (200, {"status": "stored"})
    state = collector.get("/api/v1/agents/gappy")[1]
    assert (state["contiguous_seq"], state["last_seq"]) == (5, 5)


def test_a_late_older_report_does_not_overwrite_the_latest_state(collector):
    collector.post(report("late", 2, image_version="new"))
    collector.post(report("late", 1, image_version="old"))
    state = collector.get("/api/v1/agents/late")[1]
    assert state["image_version"] == "new" and state["last_seq"] == 2 and state["contiguous_seq"] == 2


def test_missing_wrong_and_other_agents_tokens_are_401_and_store_nothing(collector):
    assert collector.post(report("intruder", 1), token="")[0] == 401
    assert collector.post(report("intruder", 1), token="0" * 64)[0] == 401
    assert collector.post(report("intruder", 1), token=collector.token("athena"))[0] == 401
    assert raw_post(collector, json.dumps(report("intruder", 1)).encode(), {"Authorization": "Basic abc"}) == 401
    assert raw_post(collector, json.dumps(report("intruder", 1)).encode(),
                    {"Authorization": "Bearer caf\u00e9".encode().decode("latin-1")}) == 401
    assert collector.get("/api/v1/agents/intruder")[0] == 404


def test_malformed_and_invalid_reports_are_4xx_and_store_nothing(collector):
    auth = {"Authorization": f"Bearer {collector.token('broken')}"}
    assert raw_post(collector, b"{not json", auth) == 400
    assert raw_post(collector, b"\xff\xfe", auth) == 400
    assert raw_post(collector, b'{"agent": "broken", "seq": 1, "sent_at": NaN, "image_version": "v"}', auth) == 400
    assert raw_post(collector, b"[" * 100000, auth) == 400
    assert collector.post(report("broken", 0))[0] == 422
    assert collector.post(report("broken", 1, sent_at="yesterday"))[0] == 422
    assert collector.post(report("broken", 1, checks=[{"name": "x", "status": "ok", "value": [1]}]))[0] == 422
    assert collector.post(report("broken", 2 ** 64))[0] == 422
    assert collector.get("/api/v1/agents/broken")[0] == 404


def test_oversized_report_is_413_whether_declared_or_streamed(collector):
    # more than the sockets buffer and within what the refusal drains: the client must read the 413, not a reset
    big = json.dumps(report("bulky", 1, metrics={f"m{i}": float(i) for i in range(80000)})).encode()
    assert 4 * MAX_REPORT_BYTES < len(big) < DRAIN_FACTOR * MAX_REPORT_BYTES
    auth = {"Authorization": f"Bearer {collector.token('bulky')}"}
    assert raw_post(collector, big, auth) == 413

    def chunks():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    request = urllib.request.Request(collector.url + REPORTS_PATH, data=chunks(), method="POST",
                                     headers={**auth, "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(request, timeout=10)
    assert rejected.value.code == 413
    assert collector.get("/api/v1/agents/bulky")[0] == 404


def test_agent_list_holds_every_reporting_agent(collector):
    collector.post(report("listed-a", 1))
    collector.post(report("listed-b", 1))
    status, agents = collector.get("/api/v1/agents")
    names = [a["agent"] for a in agents]
    assert status == 200 and {"listed-a", "listed-b"} <= set(names) and names == sorted(names)


def test_healthz_answers(collector):
    assert collector.get("/healthz")[0] == 200


def test_state_survives_a_restart(tmp_path):
    with running_collector(tmp_path) as first:
        first.post(report("durable", 1))
        first.post(report("durable", 3))
    with running_collector(tmp_path) as second:
        assert second.post(report("durable", 1)) == (200, {"status": "duplicate"})
        state = second.get("/api/v1/agents/durable")[1]
        assert (state["contiguous_seq"], state["last_seq"]) == (1, 3)


def serve(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", "serve", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_collector_refuses_a_secret_file_readable_by_others(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    result = serve("--db", f"sqlite:///{tmp_path}/c.db", "--secret-file", str(secret), cwd=tmp_path)
    assert result.returncode == 2
    assert "0644" in result.stderr and "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_collector_refuses_an_unknown_database_url_in_one_line(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    result = serve("--db", "mysql://x", "--secret-file", str(secret), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--db" in result.stderr


def test_sigterm_stops_the_collector_cleanly(tmp_path):
    import signal

    from .collector_server import start_collector

    collector = start_collector(tmp_path)
    collector.post(report("athena", 1))
    collector.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a well-behaved server does
    assert collector.process.wait(15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in collector.log() and "Traceback" not in collector.log()


def test_concurrent_reports_and_resends_are_each_stored_exactly_once(collector):
    import asyncio

    import httpx

    async def send_all():
        bodies = [report("crowd", seq) for seq in range(1, 101)] * 2  # every report sent twice, all at once
        async with httpx.AsyncClient(base_url=collector.url, limits=httpx.Limits(max_connections=64)) as client:
            answers = await asyncio.gather(*(client.post(REPORTS_PATH, json=body, headers={
                "Authorization": f"Bearer {collector.token('crowd')}"}) for body in bodies))
        return [(a.status_code, a.json()["status"]) for a in answers]

    answers = asyncio.run(send_all())
    assert answers.count((200, "stored")) == 100 and answers.count((200, "duplicate")) == 100
    state = collector.get("/api/v1/agents/crowd")[1]
    assert (state["contiguous_seq"], state["last_seq"], state["gap_since"]) == (100, 100, None)
