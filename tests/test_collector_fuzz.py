"""Fuzzing POST /api/v1/reports on a real server: whatever arrives, the answer is a 2xx or a 4xx, never a 5xx,
and what was accepted can be shown by the read API, the agent page and /metrics (for every agent, not only the one
that sent it), under a name that matches the protocol's in full."""
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.protocol import REPORTS_PATH, agent_token, valid_agent_name

from .collector_server import SECRET, report, running_collector

ACCEPTED = {200, 400, 401, 413, 422}
NASTY_TEXT = st.sampled_from(["", "\ud800", "a\x00b", "<script>alert(1)</script>", "é" * 300, "\n\"\\", "x" * 70])
TEXT = st.text(max_size=20) | NASTY_TEXT
NUMBERS = (st.integers(min_value=-2 ** 70, max_value=2 ** 70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, -1, 2 ** 63 - 1, 2 ** 63, 10 ** 400]))
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
AGENTS = st.sampled_from(["fuzz-a", "fuzz-b", "fuzz-c", "fuzz-a\n", "fuzz-b\r\n", "\nfuzz-c", "fuzz-a "])
# Nesting the old collector stored and then could not read back (its reads parsed again, a few frames deeper).
DEPTHS = st.integers(1, 20) | st.integers(940, 970) | st.sampled_from([5000])
VALID_REPORTS = st.builds(report, agent=st.sampled_from(["fuzz-a", "fuzz-b"]), seq=st.integers(1, 10 ** 9))
NAMES = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}\Z", fullmatch=True).flatmap(
    lambda name: st.sampled_from([name, name + "\n", "\n" + name, name + "\r\n", name + " ", name.upper()]))


def field_or_junk(valid):
    return st.one_of(valid, JSON)


CHECK = st.fixed_dictionaries({"name": field_or_junk(TEXT),
                                "status": field_or_junk(st.sampled_from(["ok", "warn", "fail"]))},
                              optional={"detail": field_or_junk(TEXT), "value": field_or_junk(NUMBERS | st.none()),
                                        "duration_ms": field_or_junk(NUMBERS), "extra": JSON})
DRIFT = st.fixed_dictionaries({"path": field_or_junk(TEXT), "kind": field_or_junk(st.sampled_from(
    ["modified", "missing", "added", "mode", "owner", "package"]))},
    optional={"expected": field_or_junk(TEXT | st.none()), "actual": field_or_junk(TEXT | st.none())})
REPORTS = st.fixed_dictionaries(
    {"agent": field_or_junk(AGENTS), "seq": field_or_junk(st.integers(1, 50)), "sent_at": field_or_junk(NUMBERS),
     "image_version": field_or_junk(TEXT)},
    optional={"host": field_or_junk(TEXT), "role": field_or_junk(TEXT),
              "checks": field_or_junk(st.lists(CHECK, max_size=3)), "drift": field_or_junk(st.lists(DRIFT, max_size=3)),
              "metrics": field_or_junk(st.dictionaries(TEXT, NUMBERS, max_size=4)),
              "spool": field_or_junk(st.fixed_dictionaries({}, optional={
                  "depth": field_or_junk(st.integers(0, 10)), "oldest_age_s": NUMBERS, "dropped": NUMBERS})),
              "canary_lag_s": field_or_junk(NUMBERS | st.none()), "schema": field_or_junk(st.just(1)),
              "unknown": JSON})
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("fuzz"), "--interval-s", "60") as collector:
        with httpx.Client(base_url=collector.url, timeout=10) as http:
            yield http
        assert collector.process.poll() is None, "collector died during fuzzing"


def post(client, body: bytes, agent) -> httpx.Response:
    """With the agent's token when its name can have one (a lone surrogate cannot be encoded: the collector must
    refuse that report on its name, so any token will do)."""
    try:
        token = agent_token(SECRET, agent) if isinstance(agent, str) else "x"
    except UnicodeEncodeError:
        token = "x"
    return client.post(REPORTS_PATH, content=body, headers={"Authorization": f"Bearer {token}",
                                                            "Content-Type": "application/json"})


@FUZZ
@given(data=REPORTS)
def test_structured_reports_get_2xx_or_4xx_and_accepted_ones_render(client, data):
    response = post(client, json.dumps(data).encode(), data.get("agent"))
    assert response.status_code in ACCEPTED, response.text
    if response.status_code == 200:
        assert valid_agent_name(data["agent"]), repr(data["agent"])
        assert_fleet_readable(client, data["agent"])


def nested_under_unknown_key(data: dict, depth: int) -> bytes:
    """`data` with `depth` levels of nesting under a key the schema does not know, written by hand (json.dumps
    refuses to go that deep)."""
    body = json.dumps(data)
    return (body[:-1] + (", " if len(data) else "") + '"future": ' + "[" * depth + "]" * depth + "}").encode()


def assert_fleet_readable(client, agent) -> None:
    for path in ("/api/v1/agents", f"/api/v1/agents/{agent}", f"/agents/{agent}", "/", "/metrics"):
        assert client.get(path).status_code == 200, path


@settings(FUZZ, max_examples=60)
@given(data=REPORTS | VALID_REPORTS, depth=DEPTHS)
def test_deep_nesting_inside_unknown_keys_is_refused_or_readable_by_everyone(client, data, depth):
    response = post(client, nested_under_unknown_key(data, depth), data.get("agent"))
    assert response.status_code in ACCEPTED, response.text
    if response.status_code == 200:
        assert depth < 8 and valid_agent_name(data["agent"])
        assert_fleet_readable(client, data["agent"])


@settings(FUZZ, max_examples=60)
@given(name=NAMES, seq=st.integers(1, 10 ** 9))
def test_agent_names_are_matched_in_full(client, name, seq):
    response = post(client, json.dumps(report(name, seq)).encode(), name)
    assert (response.status_code == 200) == valid_agent_name(name), (name, response.status_code)
    if response.status_code == 200:
        assert all(valid_agent_name(a["agent"]) for a in client.get("/api/v1/agents").json())


@FUZZ
@given(body=st.binary(max_size=2000) | JSON.map(lambda v: json.dumps(v).encode()), agent=AGENTS)
def test_arbitrary_bodies_get_4xx(client, body, agent):
    assert post(client, body, agent).status_code in ACCEPTED


@FUZZ
@given(auth=st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")) | st.binary(max_size=100))
def test_arbitrary_authorization_headers_get_401(client, auth):
    try:
        response = client.post(REPORTS_PATH, content=json.dumps(report("fuzz-a", 1)).encode(),
                                headers=[(b"Authorization", auth)])
    except (httpx.LocalProtocolError, UnicodeError):
        return  # not even sendable as an HTTP header
    assert response.status_code in {200, 400, 401}
