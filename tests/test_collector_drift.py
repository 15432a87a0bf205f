"""Drift people can act on, at a real collector over HTTP: only unexplained drift alerts (unless asked), an operator
accepts drift from the command line or the agent page, the answer to the agent's next report carries it, and the
fleet page flags an agent that drifts where its siblings on the same image did not."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from agentd.protocol import DriftEntry
from collector.acceptance import entry_value
from collector.siblings import drifts_alone

from .collector_server import ROOT, Webhook, report, running_collector

PASSWD = {"path": "/etc/passwd", "kind": "modified", "expected": "aa", "actual": "bb", "class": "unexplained"}
NGINX = {"path": "/etc/nginx/nginx.conf", "kind": "modified", "expected": "cc", "actual": "dd", "class": "conffile"}
HTOP = {"path": "pkg:htop", "kind": "package", "expected": None, "actual": "3.0.5", "class": "package"}
TOKEN = "operator-token-for-tests"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


def operator_token_file(tmp_path):
    path = tmp_path / "operator.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return str(path)


def post_form(url: str, fields: list[tuple[str, str]], origin: str = "") -> tuple[int, str, str]:
    """POST the agent page's form as a browser would; redirects are not followed (status, body, Location)."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              **({"Origin": origin} if origin else {})})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Location", "")


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def test_only_unexplained_drift_alerts_by_default(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, drift=[PASSWD, NGINX, HTOP]))
        [alert] = webhook.wait_for(1)
        assert "new drift (1)" in alert and "/etc/passwd" in alert
        assert "nginx" not in alert and "htop" not in alert
        assert [a["key"] for a in c.get("/api/v1/agents/athena")[1]["alerts"]] == ["modified /etc/passwd"]
        webhook.quiet_for(0.3)


def test_drift_alerts_can_cover_every_class(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--drift-alerts", "unexplained,conffile,package",
                           webhook_url=webhook.url) as c:
        c.post(report("athena", 1, drift=[PASSWD, NGINX, HTOP]))
        [alert] = webhook.wait_for(1)
        assert "new drift (3)" in alert and "[conffile]" in alert and "[package]" in alert


def test_a_drift_alert_class_outside_the_contract_is_one_line(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    secret.chmod(0o600)
    result = cli("serve", "--db", f"sqlite:///{tmp_path}/c.db", "--secret-file", str(secret),
                 "--drift-alerts", "unexplained,trusted")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--drift-alerts" in result.stderr


def test_accept_drift_records_who_when_and_the_value_and_the_next_answer_carries_it(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        assert c.post(report("athena", 1, drift=[PASSWD, NGINX])) == (200, {"status": "stored"})
        webhook.wait_for(1)
        dry = cli("accept-drift", "athena", "--db", c.db_url, "--by", "alice", "--path", "/etc/passwd", "--dry-run")
        assert dry.returncode == 0 and "would accept 1 drift entry by alice" in dry.stdout
        assert c.get("/api/v1/agents/athena")[1]["drift_acceptances"] == []
        before = time.time()
        done = cli("accept-drift", "athena", "--db", c.db_url, "--by", "alice", "--path", "/etc/passwd",
                   "--reason", "user added by the seed's onboarding", "--json")
        assert done.returncode == 0, done.stderr
        [recorded] = json.loads(done.stdout)["accepted"]
        assert (recorded["path"], recorded["kind"], recorded["actual"], recorded["accepted_by"]) == (
            "/etc/passwd", "modified", "bb", "alice")
        assert recorded["accepted_at"] >= before and recorded["image_version"] == "2024.1-abc"

        def answer_carries_it():  # the running collector picks the CLI's acceptance up with its next sweep
            status, answer = c.post(report("athena", next(seqs), drift=[PASSWD, NGINX]))
            return answer.get("accepted")
        seqs = iter(range(2, 100))
        [accepted] = wait_until(answer_carries_it)
        assert accepted == {"path": "/etc/passwd", "kind": "modified", "expected": "aa", "actual": "bb",
                            "accepted_at": recorded["accepted_at"], "by": "alice"}
        [row] = c.get("/api/v1/agents/athena")[1]["drift_acceptances"]
        assert row["status"] == "pending" and row["reason"] == "user added by the seed's onboarding"

        changed_again = {**PASSWD, "actual": "ee"}  # a later value is not what alice accepted
        assert "accepted" not in c.post(report("athena", 50, drift=[changed_again, NGINX]))[1]
        assert c.post(report("athena", 51, drift=[NGINX]))[1] == {"status": "stored"}  # the agent adopted it
        assert c.get("/api/v1/agents/athena")[1]["drift_acceptances"][0]["status"] == "adopted"
        assert "drift resolved (1)" in webhook.wait_for(2)[1]
        webhook.quiet_for(0.2)


@pytest.mark.parametrize("args, message", [
    (("nobody", "--by", "alice"), "no report from it"),
    (("athena", "--by", "alice", "--path", "/etc/typo"), "no drift at '/etc/typo'"),
    (("athena", "--by", " "), "operator name"),
])
def test_accept_drift_mistakes_are_one_line_and_accept_nothing(tmp_path, args, message):
    with running_collector(tmp_path, "--interval-s", "60") as c:
        c.post(report("athena", 1, drift=[PASSWD]))
        result = cli("accept-drift", *args, "--db", c.db_url)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert c.get("/api/v1/agents/athena")[1]["drift_acceptances"] == []


def test_the_agent_page_groups_drift_by_class_and_without_a_token_shows_the_command(tmp_path):
    with running_collector(tmp_path, "--interval-s", "60") as c:
        c.post(report("athena", 1, drift=[HTOP, NGINX, PASSWD]))
        page = c.get("/agents/athena")[1]
        groups = re.findall(r'<table id="drift-(\w+)">', page)
        assert groups == ["unexplained", "conffile", "package"]
        assert "python -m collector accept-drift athena --by NAME" in page and "<form" not in page
        status, refused, _ = post_form(c.url + "/agents/athena/accept-drift", [("by", "mallory"), ("token", "x")])
        assert status == 403 and "--operator-token-file" in refused
        assert c.get("/agents/athena/accept-drift")[0] == 403


def test_the_agent_page_accepts_ticked_drift_with_the_operator_token_only(tmp_path):
    with running_collector(tmp_path, "--interval-s", "60", "--operator-token-file",
                           operator_token_file(tmp_path)) as c:
        c.post(report("athena", 1, drift=[PASSWD, NGINX]))
        assert 'id="accept-drift-open" href="/agents/athena/accept-drift"' in c.get("/agents/athena")[1]
        page = c.get("/agents/athena/accept-drift")[1]
        assert '<form id="drift" class="accept" method="post" action="/agents/athena/accept-drift">' in page
        assert 'http-equiv="refresh"' not in page, "a refresh would wipe what the operator typed"
        passwd = entry_value(DriftEntry("/etc/passwd", "modified", "aa", "bb"))
        assert f'value="{passwd.replace("&", "&amp;")}"' in page
        url = c.url + "/agents/athena/accept-drift"
        form = [("entry", passwd), ("by", "bob"), ("reason", "expected"), ("token", TOKEN)]

        assert post_form(url, [*form[:-1], ("token", "wrong")])[0] == 403
        assert post_form(url, form, origin="http://evil.example")[0] == 403  # even with the token
        stale = entry_value(DriftEntry("/etc/passwd", "modified", "aa", "old-value"))
        status, body, _ = post_form(url, [("entry", stale), *form[1:]])
        assert status == 400 and "no longer as shown" in body
        assert c.get("/api/v1/agents/athena")[1]["drift_acceptances"] == []

        status, _, location = post_form(url, form, origin=c.url)
        assert (status, location) == (303, "/agents/athena#drift-acceptances")
        [row] = c.get("/api/v1/agents/athena")[1]["drift_acceptances"]
        assert (row["path"], row["actual"], row["accepted_by"], row["reason"]) == ("/etc/passwd", "bb", "bob",
                                                                                  "expected")
        assert re.search(r'<table id="drift-acceptances">.*bob.*/etc/passwd.*pending', c.get("/agents/athena")[1])
        # the page's acceptance is in the running collector's book at once: no sweep needed
        assert c.post(report("athena", 2, drift=[PASSWD, NGINX]))[1]["accepted"][0]["by"] == "bob"


def test_the_fleet_page_flags_an_agent_that_drifts_alone_among_its_siblings(tmp_path):
    shared = {"path": "/etc/apt/sources.list", "kind": "modified", "expected": "a", "actual": "b"}
    lone = {"path": "/etc/cron.d/backdoor", "kind": "added", "actual": "c"}
    with running_collector(tmp_path, "--interval-s", "60") as c:
        c.post(report("athena", 1, image_version="v1", drift=[shared, lone, HTOP]))
        c.post(report("apollo", 1, image_version="v1", drift=[shared]))
        c.post(report("zeus", 1, image_version="v1", drift=[shared, {**HTOP, "path": "pkg:tree"}]))
        c.post(report("hermes", 1, image_version="v2", drift=[lone]))  # alone on its image: nobody to compare
        page = c.get("/")[1]

        def drift_cell(agent):
            return re.search(rf'<tr id="agent-{agent}">.*?<td class="num drift">(.*?)</td>', page).group(1)
        assert "drifts alone (1)" in drift_cell("athena") and "/etc/cron.d/backdoor" in drift_cell("athena")
        assert drift_cell("athena").startswith("3 ") and "(2 unexplained)" in drift_cell("athena")
        assert "alone" not in drift_cell("apollo") + drift_cell("zeus") + drift_cell("hermes")


def test_drifts_alone_ignores_explained_drift_and_needs_a_sibling():
    from agentd.protocol import Report
    from collector.records import AgentState, canonical_json

    def state(agent, image, drift):
        r = Report.from_json(report(agent, 1, image_version=image, drift=drift))
        return AgentState(agent, "", "", image, 0, 0, 0, 1, 1, None, True, len(r.drift), None, r.spool,
                          canonical_json(r))
    assert drifts_alone([state("a", "v1", [NGINX, HTOP]), state("b", "v1", [])]) == {}
    assert drifts_alone([state("a", "v1", [PASSWD]), state("b", "v1", [])]) == {"a": ("/etc/passwd",)}
    assert drifts_alone([state("a", "v1", [PASSWD])]) == {}
