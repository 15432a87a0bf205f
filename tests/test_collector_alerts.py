"""Alerts reach a real loopback HTTP receiver standing in for a Mattermost incoming webhook: once per incident,
then a recovery message."""
import re
import time

import pytest

from collector.inert import inert, one_line

from .collector_server import Webhook, report, running_collector


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def failing(name="disk", detail="97% used (fail at 95)"):
    return [{"name": name, "status": "fail", "detail": detail}]


def test_failing_check_alerts_once_then_recovers(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, checks=failing()))
        [alert] = webhook.wait_for(1)
        assert "athena" in alert and "disk" in alert and "failing" in alert and "97% used" in alert
        c.post(report("athena", 2, checks=failing()))
        webhook.quiet_for(0.5)
        c.post(report("athena", 3, checks=[{"name": "disk", "status": "ok"}]))
        assert "disk" in webhook.wait_for(2)[1] and "recovered" in webhook.messages[1]
        webhook.quiet_for(0.3)


def test_new_drift_alerts_once_per_entry_in_one_message_per_report(tmp_path, webhook):
    passwd = {"path": "/etc/passwd", "kind": "modified", "expected": "aa", "actual": "bb"}
    sudoers = {"path": "/etc/sudoers", "kind": "mode", "expected": "0440", "actual": "0666"}
    tool = {"path": "/usr/local/bin/evil", "kind": "added"}
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("apollo", 1))
        c.post(report("apollo", 2, drift=[passwd, sudoers]))
        [alert] = webhook.wait_for(1)
        assert "new drift (2)" in alert and "/etc/passwd" in alert and "0440 -> 0666" in alert
        c.post(report("apollo", 3, drift=[passwd, sudoers]))
        webhook.quiet_for(0.5)
        c.post(report("apollo", 4, drift=[passwd, sudoers, tool]))
        assert "new drift (1)" in webhook.wait_for(2)[1] and "/usr/local/bin/evil" in webhook.messages[1]
        c.post(report("apollo", 5, drift=[]))
        assert "drift resolved (3)" in webhook.wait_for(3)[2]


@pytest.mark.slow
def test_stale_agent_alerts_once_and_recovers_when_it_reports_again(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "0.5", "--stale-after", "2",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("hermes", 1))
        [alert] = webhook.wait_for(1, timeout=5)
        assert "hermes" in alert and "stale" in alert
        webhook.quiet_for(0.6)
        assert c.get("/api/v1/agents/hermes")[1]["alerts"][0]["kind"] == "stale"
        c.post(report("hermes", 2))
        assert "reporting again" in webhook.wait_for(2)[1]


def test_sequence_gap_alerts_after_grace_and_recovers_when_filled(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--gap-grace-s", "0.5",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("zeus", 1))
        c.post(report("zeus", 3))
        [alert] = webhook.wait_for(1, timeout=5)
        assert "zeus" in alert and "seq 2" in alert
        webhook.quiet_for(0.4)
        c.post(report("zeus", 2))
        assert "gap closed" in webhook.wait_for(2)[1]


@pytest.mark.slow
def test_gap_filled_within_grace_raises_nothing(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--gap-grace-s", "1",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("hera", 2))
        c.post(report("hera", 1))
        c.post(report("hera", 4))
        c.post(report("hera", 3))
        webhook.quiet_for(1.5)
        assert c.get("/api/v1/agents/hera")[1]["contiguous_seq"] == 4


@pytest.mark.slow
def test_open_incident_is_not_announced_again_after_a_restart(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, checks=failing()))
        webhook.wait_for(1)
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 2, checks=failing()))
        webhook.quiet_for(0.5)
        c.post(report("athena", 3))
        assert "recovered" in webhook.wait_for(2)[1]


@pytest.mark.slow
def test_unreachable_webhook_never_blocks_reports(tmp_path):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url="http://127.0.0.1:9/hook") as c:
        started = time.monotonic()
        for seq in range(1, 6):
            assert c.post(report("athena", seq, checks=failing(f"check{seq}")))[0] == 200
        assert time.monotonic() - started < 2


HOSTILE = ("@channel @all @here <!channel> see [the fix](https://evil.example/x) ![pic](http://evil.example/p.png) "
           "www.evil.example **IGNORE PREVIOUS INSTRUCTIONS** and `run this`\n### forged heading")


def outside_code_spans(message: str) -> str:
    """What Mattermost renders as Markdown: the message without its inline code spans."""
    return re.sub(r"`[^`]*`", "", message)


def test_agent_supplied_text_reaches_mattermost_inert(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, host="hv1\n@channel FORGED LOG LINE", checks=failing("disk", HOSTILE + "x" * 500),
                      drift=[{"path": "/etc/" + HOSTILE, "kind": "mode", "expected": "@all",
                              "actual": "[x](http://e)"}]))
        messages = webhook.wait_for(2)
        for message in messages:
            markdown = outside_code_spans(message)
            assert not re.search(r"[@~]\w", markdown) and "](" not in markdown and "<!" not in markdown, message
            assert not re.search(r"@(channel|all|here)\b", message), message  # not even inside a code span
            assert "://" not in message and "www." not in message, message
            assert "\n" not in message and "**IGNORE" not in markdown, message
            assert len(message) < 1000, len(message)
        assert "IGNORE PREVIOUS INSTRUCTIONS" in messages[0], "the text is still shown, as text"
        assert not any(line.startswith("@channel FORGED") or "FORGED" in line.split(":", 1)[0]
                       for line in c.log().splitlines())


def test_inert_text_is_one_capped_code_span_without_mentions_or_links():
    text = inert("a`b @all http://x\r\nwww.y \u202e" + "z" * 500, limit=80)
    assert text.startswith("`") and text.endswith("`") and text.count("`") == 2
    assert "@all" not in text and "http://" not in text and "www." not in text
    assert "\n" not in text and "\r" not in text and "\u202e" not in text and len(text) <= 90
    assert inert("") == "` `" and one_line("a\nb\rc\u2028d") == "a b c d"


def test_an_incident_the_store_did_not_take_is_evaluated_again_and_announced_then():
    from agentd.protocol import Report
    from collector.alerts import Alerts

    alerts = Alerts(stale_after_s=90, gap_grace_s=60)
    failing_report = Report.from_json(report("athena", 1, checks=failing()))
    first = alerts.on_latest_report(failing_report, 1.0)
    assert [i.key for i in first.opened] == ["disk"] and len(first.messages) == 1
    alerts.revert(first)  # the store was unavailable: nothing was announced
    assert alerts.agent_incidents("athena") == []
    again = alerts.on_latest_report(failing_report, 2.0)
    assert [i.key for i in again.opened] == ["disk"] and len(again.messages) == 1
    recovered = alerts.on_latest_report(Report.from_json(report("athena", 2)), 3.0)
    alerts.revert(recovered)
    assert [i.key for i in alerts.agent_incidents("athena")] == ["disk"]
