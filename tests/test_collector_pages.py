"""The fleet page and the agent page in a real headless Chromium (Debian's chromium + chromedriver via selenium)."""
import shutil
import tempfile
import time

import pytest

from .collector_server import report, running_collector

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are needed: run scripts/setup-host.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="agentfleet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("pages"), "--interval-s", "2", "--stale-after", "1000") as c:
        c.post(report("athena", 1, host="hv-alpha", role="developer", image_version="2024.06-1a2b",
                      metrics={"load1": 0.5, "disk_percent": 40.0}))
        c.post(report("athena", 2, host="hv-alpha", role="developer", image_version="2024.06-1a2b",
                      metrics={"load1": 1.5, "disk_percent": 41.0}))
        c.post(report("apollo", 1, host="hv-beta", role="reviewer",
                      checks=[{"name": "openclaw_gateway", "status": "fail", "detail": "readyz 503"},
                              {"name": "cpu", "status": "warn", "detail": "load 3.1"}],
                      drift=[{"path": "/etc/ssh/sshd_config", "kind": "modified", "expected": "aa", "actual": "bb"},
                             {"path": "/tmp/" + HOSTILE, "kind": "added"}]))
        yield c


def cells(browser, agent):
    return [td.text for td in browser.find_element("id", f"agent-{agent}").find_elements("tag name", "td")]


def test_fleet_page_lists_every_agent_with_host_role_image_health_and_drift(browser, fleet):
    browser.get(fleet.url + "/")
    athena, apollo = cells(browser, "athena"), cells(browser, "apollo")
    assert athena[:4] == ["athena", "hv-alpha", "developer", "2024.06-1a2b"]
    assert athena[4].endswith("s ago") and athena[5] == "ok" and athena[6] == "0"
    assert apollo[1:3] == ["hv-beta", "reviewer"]
    assert apollo[5] == "failing: openclaw_gateway" and apollo[6] == "2"
    assert "1 of 2 agents healthy" in browser.find_element("id", "summary").text
    browser.save_screenshot(str(fleet.log_path.parent / "fleet.png"))


def test_agent_page_shows_checks_drift_and_metric_history(browser, fleet):
    browser.get(fleet.url + "/")
    browser.find_element("link text", "apollo").click()
    assert browser.current_url.endswith("/agents/apollo")
    checks = browser.find_element("id", "checks").text
    assert "openclaw_gateway" in checks and "readyz 503" in checks and "warn" in checks
    drift = browser.find_element("id", "drift").text
    assert "/etc/ssh/sshd_config" in drift and "modified" in drift
    assert HOSTILE in drift, "agent-supplied text must be shown as text"
    assert browser.title != "pwned" and not browser.find_elements("css selector", "#drift img")
    browser.get(fleet.url + "/agents/athena")
    history = browser.find_element("id", "metrics")
    assert "load1" in history.text and "disk_percent" in history.text
    assert len(history.find_elements("tag name", "svg")) == 2
    browser.save_screenshot(str(fleet.log_path.parent / "agent.png"))


def test_fleet_page_refreshes_itself_with_new_agents(browser, fleet):
    browser.get(fleet.url + "/")
    assert not browser.find_elements("id", "agent-hermes")
    fleet.post(report("hermes", 1, host="hv-gamma"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not browser.find_elements("id", "agent-hermes"):
        time.sleep(0.2)
    assert cells(browser, "hermes")[1] == "hv-gamma"


def test_unknown_agent_page_is_404_with_a_way_back(browser, fleet):
    status, _ = fleet.get("/agents/nobody")
    assert status == 404
    browser.get(fleet.url + "/agents/nobody")
    assert "Unknown agent" in browser.page_source and browser.find_element("link text", "← fleet")


def test_an_operator_accepts_drift_from_the_agent_page_in_a_browser(browser, tmp_path):
    token = tmp_path / "operator.token"
    token.write_text("page-operator-token\n")
    token.chmod(0o600)
    with running_collector(tmp_path, "--interval-s", "2", "--operator-token-file", str(token)) as c:
        c.post(report("athena", 1, drift=[
            {"path": "/etc/cron.d/" + HOSTILE, "kind": "added", "actual": "aa", "class": "unexplained"},
            {"path": "/etc/nginx/nginx.conf", "kind": "modified", "expected": "bb", "actual": "cc",
             "class": "conffile"},
            {"path": "pkg:htop", "kind": "package", "actual": "3.0.5", "class": "package"}]))
        browser.get(c.url + "/agents/athena")
        groups = [t.get_attribute("id") for t in browser.find_elements("css selector", "#drift table")]
        assert groups == ["drift-unexplained", "drift-conffile", "drift-package"]
        browser.find_element("id", "accept-drift-open").click()
        assert browser.current_url.endswith("/agents/athena/accept-drift")
        browser.find_element("css selector", "#drift-conffile input[type=checkbox]").click()
        browser.find_element("name", "by").send_keys("carol")
        browser.find_element("name", "token").send_keys("page-operator-token")
        browser.find_element("name", "reason").send_keys("tuned workers")
        browser.find_element("id", "accept-drift").click()
        assert browser.current_url.endswith("/agents/athena#drift-acceptances")
        accepted = browser.find_element("id", "drift-acceptances").text
        assert "carol" in accepted and "/etc/nginx/nginx.conf" in accepted and "pending" in accepted
        assert browser.title != "pwned"
        browser.save_screenshot(str(tmp_path / "accept.png"))


def test_the_fleet_page_shows_a_running_rollout_agents_by_host_and_versions_in_a_browser(browser, tmp_path):
    import json
    import urllib.request

    from agentd.protocol import ROLLOUTS_PATH, rollout_token

    from .collector_server import SECRET
    with running_collector(tmp_path, "--interval-s", "2", "--stale-after", "1000") as c:
        for agent, host, version in (("athena", "r420", "v1"), ("apollo", "r710", "v2"), ("hermes", "r710", "v1")):
            c.post(report(agent, 1, host=host, image_version=version))
        snapshot = {"fleet": "seed", "version": "v2", "state": "running", "started_at": time.time() - 60,
                    "updated_at": time.time(), "halt": "",
                    "waves": [{"index": 0, "canary": True, "agents": ["apollo"], "state": "passed"},
                              {"index": 1, "canary": False, "agents": ["hermes"], "state": "running"},
                              {"index": 2, "canary": False, "agents": ["athena"], "state": "pending"}],
                    "agents": {"apollo": {"host": "r710", "wave": 0, "phase": "passed", "from_version": "v1",
                                          "version": "v2", "replaced_at": time.time() - 30, "message": ""},
                               "hermes": {"host": "r710", "wave": 1, "phase": "replacing", "from_version": "v1",
                                          "version": None, "replaced_at": None, "message": ""},
                               "athena": {"host": "r420", "wave": 2, "phase": "pending", "from_version": "v1",
                                          "version": "v1", "replaced_at": None, "message": ""}}}
        request = urllib.request.Request(c.url + ROLLOUTS_PATH, data=json.dumps(snapshot).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {rollout_token(SECRET, 'seed')}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        browser.get(c.url + "/")
        section = browser.find_element("id", "rollout").text
        assert "Rollout of v2: running" in section and "wave 1 of 3: hermes" in section
        assert "1 of 3 waves passed" in section
        assert browser.find_element("id", "versions").text == "v1 × 2, v2 × 1"
        hosts = [h.text for h in browser.find_elements("css selector", "tr.host")]
        assert hosts == ["r420 · 1 agent · v1 × 1", "r710 · 2 agents · v1 × 1, v2 × 1"]
        assert browser.find_element("id", "agent-hermes").get_attribute("class") == "inwave"
        assert cells(browser, "hermes")[-1] == "wave 1: replacing"
        assert cells(browser, "apollo")[-1].startswith("wave 0: passed ")       # with the time it was replaced
        browser.save_screenshot(str(tmp_path / "rollout.png"))
