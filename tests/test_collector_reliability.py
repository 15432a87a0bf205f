"""What one agent or one slow party must never do to everyone else: break the fleet's reads with a deep report,
block the event loop through a locked database, or hold sockets open with a half-sent body."""
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from agentd.protocol import MAX_JSON_DEPTH, REPORTS_PATH

from .collector_server import SECRET, report, running_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    """One collector for the module: store calls time out after 1 s, report bodies after 1 s."""
    with running_collector(tmp_path_factory.mktemp("reliability"), "--store-timeout-s", "1",
                           "--body-timeout-s", "1") as c:
        yield c


READS = ("/api/v1/agents", "/api/v1/agents/{agent}", "/agents/{agent}", "/", "/metrics",
         "/api/v1/agents/{agent}/history")


def deep_report_body(agent: str, seq: int, depth: int) -> bytes:
    """A valid report with `depth` levels of nesting under a key the schema does not know (json.dumps itself would
    refuse to write it)."""
    body = json.dumps(report(agent, seq))
    return (body[:-1] + ', "future_field": ' + '{"x": ' * depth + "1" + "}" * depth + "}").encode()


def post_raw(collector, body: bytes, agent: str) -> int:
    request = urllib.request.Request(collector.url + REPORTS_PATH, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {collector.token(agent)}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_collector_refuses_a_report_nested_too_deep_and_every_read_still_answers(collector):
    """Around 950 levels the old collector's write path still parsed what its read path (a few frames deeper) could
    not: stored with a 200, then a 500 for every read of the fleet. Now anything deeper than the limit is a 4xx."""
    c = collector
    c.post(report("healthy", 1))
    for depth in [MAX_JSON_DEPTH + 1, *range(940, 965, 3)]:
        assert post_raw(c, deep_report_body(f"deep-{depth}", 1, depth), f"deep-{depth}") in (400, 422), depth
        for path in READS[:2]:
            assert c.get(path.format(agent=f"deep-{depth}"))[0] in (200, 404), (depth, path)
    assert post_raw(c, deep_report_body("deep", 1, MAX_JSON_DEPTH - 1), "deep") == 200
    for path in READS:
        assert c.get(path.format(agent="deep"))[0] == 200, path
    assert {"deep", "healthy"} <= {a["agent"] for a in c.get("/api/v1/agents")[1]}
    assert not any(a["agent"].startswith("deep-") for a in c.get("/api/v1/agents")[1])


def test_reads_never_parse_again_what_an_agent_sent(tmp_path):
    """A database written by the previous collector holds bodies as they were received, one of them 2000 levels
    deep: the upgrade at start converts the latest state once, and no read ever fails on it."""
    deep = deep_report_body("legacy", 2, 2000).decode()
    with sqlite3.connect(tmp_path / "collector.db") as db:  # the previous layout: raw bodies, no collector_meta
        for statement in LEGACY_SCHEMA:
            db.execute(statement)
        for seq in (1, 2):
            db.execute("INSERT INTO reports VALUES ('legacy', ?, 1.0, 1.0, ?)", (seq, deep))
        db.execute("INSERT INTO agents VALUES ('legacy', 'hv1', 'developer', 'v1', 1.0, 1.0, 1.0, 2, 2, NULL, 1, 0, "
                   "NULL, 0, 0, 0.0, ?)", (deep,))
    with running_collector(tmp_path) as c:
        for path in READS:
            assert c.get(path.format(agent="legacy"))[0] == 200, path
        assert c.get("/api/v1/agents/legacy")[1]["last_seq"] == 2
        assert c.post(report("legacy", 3))[0] == 200
        assert c.get("/api/v1/agents/legacy")[1]["checks"][0]["name"] == "disk"


LEGACY_SCHEMA = (  # the previous collector's tables, as it created them
    """CREATE TABLE reports (agent TEXT NOT NULL, seq BIGINT NOT NULL, sent_at DOUBLE PRECISION NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, PRIMARY KEY (agent, seq))""",
    """CREATE TABLE agents (agent TEXT PRIMARY KEY, host TEXT NOT NULL, role TEXT NOT NULL,
        image_version TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION NOT NULL, last_seq BIGINT NOT NULL, contiguous_seq BIGINT NOT NULL,
        gap_since DOUBLE PRECISION, healthy INTEGER NOT NULL, drift_count INTEGER NOT NULL,
        canary_lag_s DOUBLE PRECISION, spool_depth BIGINT NOT NULL, spool_dropped BIGINT NOT NULL,
        spool_oldest_age_s DOUBLE PRECISION NOT NULL, latest TEXT NOT NULL)""",
    """CREATE TABLE incidents (agent TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        opened_at DOUBLE PRECISION NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (agent, kind, key))""",
)


HOLD_WRITE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")   # the write lock, as another process's long transaction would hold it
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


def timed_get(collector, path):
    started = time.monotonic()
    status, _ = collector.get(path)
    return status, time.monotonic() - started


def test_a_write_locked_database_never_blocks_reads_and_healthz_and_reports_get_503(collector):
    c = collector
    assert c.post(report("locked", 1))[0] == 200
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, c.db_url[len("sqlite:///"):], "2.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        answers = {}
        writer = threading.Thread(target=lambda: answers.update(post=c.post(report("locked", 2))))
        writer.start()
        time.sleep(0.2)  # the report now waits for the lock on the store's writer thread
        for path in ("/healthz", "/metrics", "/api/v1/agents", "/api/v1/agents/locked", "/agents/locked", "/"):
            status, took = timed_get(c, path)
            assert took < 0.5, f"{path} took {took:.1f} s while the database was write-locked"
            assert status == 200 or path == "/healthz", path
        writer.join(5)
        assert answers["post"][0] == 503
        request = urllib.request.Request(c.url + "/healthz")
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(request, timeout=2)
        assert unhealthy.value.code == 503 and unhealthy.value.headers["Retry-After"] == "1"
        assert "write" in json.loads(unhealthy.value.read())["store"]
        assert "agentfleet_collector_store_up 0" in c.get("/metrics")[1]
    finally:
        holder.wait(10)
    assert c.post(report("locked", 2)) == (200, {"status": "stored"})
    deadline = time.monotonic() + 5
    while c.get("/healthz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.get("/healthz")[0] == 200
    assert c.get("/api/v1/agents/locked")[1]["contiguous_seq"] == 2


def half_sent_request(url: str, agent: str) -> socket.socket:
    host, port = url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    from agentd.protocol import agent_token
    sock.sendall((f"POST {REPORTS_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {agent_token(SECRET, agent)}\r\nContent-Length: 2000\r\n\r\n"
                  '{"agent": "').encode())
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_clients_are_timed_out_and_their_sockets_closed(collector):
    c = collector
    started = time.monotonic()
    sockets = [half_sent_request(c.url, "athena") for _ in range(30)]
    try:
        assert c.get("/healthz")[0] == 200
        answers = [read_until_closed(s) for s in sockets]  # recv times out (10 s) if the collector waits on
    finally:
        for s in sockets:
            s.close()
    assert time.monotonic() - started < 5
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:200]
    assert c.post(report("slow", 1))[0] == 200


def test_a_client_disconnecting_mid_body_leaves_no_traceback(collector):
    c = collector
    for _ in range(5):
        half_sent_request(c.url, "athena").close()
    time.sleep(0.3)
    assert c.post(report("disconnects", 1))[0] == 200
    assert "Traceback" not in c.log() and "Exception in ASGI" not in c.log()
