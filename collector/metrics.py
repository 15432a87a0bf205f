"""`/metrics` in the Prometheus text exposition format (0.0.4), rendered by hand: a few gauges per agent and the
collector's own counters. Labels are escaped as the format requires."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from .records import AgentState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Counters:
    """The collector's own counters since it started (Prometheus handles the reset on restart)."""
    received: int = 0                                   # every POST to the report endpoint
    stored: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def render_metrics(agents: Iterable[AgentState], counters: Counters, open_alerts: dict[str, int],
                   notifications_sent: int, notifications_failed: int, stale_after_s: float, now: float,
                   store_ok: bool = True) -> str:
    agents = list(agents)
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], Optional[float]]]):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is not None:
                out.append(f"{name}{_labels(labels)} {_value(value)}")

    def per_agent(name: str, help_text: str, value, kind: str = "gauge"):
        family(name, kind, help_text, (({"agent": a.agent}, value(a)) for a in agents))

    family("agentfleet_agent_info", "gauge", "Identity of each agent that has reported (value is always 1).",
           (({"agent": a.agent, "host": a.host, "role": a.role, "image_version": a.image_version}, 1) for a in agents))
    per_agent("agentfleet_agent_last_seen_timestamp_seconds", "Unix time the collector last received a report.",
              lambda a: a.last_seen)
    per_agent("agentfleet_agent_healthy", "1 when the latest report has no failing check.", lambda a: int(a.healthy))
    per_agent("agentfleet_agent_stale", "1 when no report arrived within the stale threshold.",
              lambda a: int(now - a.last_seen > stale_after_s))
    per_agent("agentfleet_agent_drift_entries", "Drift entries in the latest report.", lambda a: a.drift_count)
    per_agent("agentfleet_agent_last_seq", "Highest report sequence number received.", lambda a: a.last_seq)
    per_agent("agentfleet_agent_contiguous_seq", "Highest sequence number below which every report was received.",
              lambda a: a.contiguous_seq)
    per_agent("agentfleet_agent_missing_reports", "Reports not (yet) received below the highest sequence number.",
              lambda a: a.last_seq - a.contiguous_seq)
    per_agent("agentfleet_agent_canary_lag_seconds", "Last measured canary detection lag reported by the agent.",
              lambda a: a.canary_lag_s)
    per_agent("agentfleet_agent_spool_depth", "Reports waiting in the agent's spool.", lambda a: a.spool.depth)
    per_agent("agentfleet_agent_spool_oldest_age_seconds", "Age of the oldest unsent report in the agent's spool.",
              lambda a: a.spool.oldest_age_s)
    per_agent("agentfleet_agent_spool_dropped_reports", "Reports the agent's bounded spool dropped, ever.",
              lambda a: a.spool.dropped)
    family("agentfleet_collector_agents", "gauge", "Agents known to the collector.", [({}, len(agents))])
    family("agentfleet_collector_store_up", "gauge", "1 when the store's last writes and reads succeeded in time "
           "(as /healthz says).", [({}, int(store_ok))])
    family("agentfleet_collector_reports_received_total", "counter", "Report POSTs received.",
           [({}, counters.received)])
    family("agentfleet_collector_reports_stored_total", "counter", "Reports stored.", [({}, counters.stored)])
    family("agentfleet_collector_reports_duplicates_total", "counter",
           "Reports answered as duplicates of an (agent, seq) already stored.", [({}, counters.duplicates)])
    family("agentfleet_collector_reports_rejected_total", "counter", "Reports rejected, by reason.",
           (({"reason": reason}, n) for reason, n in sorted(counters.rejected.items())))
    family("agentfleet_collector_alerts_open", "gauge", "Open alert incidents, by kind.",
           (({"kind": kind}, n) for kind, n in sorted(open_alerts.items())))
    family("agentfleet_collector_notifications_sent_total", "counter", "Alert messages posted to the webhook.",
           [({}, notifications_sent)])
    family("agentfleet_collector_notifications_failed_total", "counter",
           "Alert messages the webhook did not accept after retries.", [({}, notifications_failed)])
    return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))
