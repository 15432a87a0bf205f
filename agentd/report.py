"""Assembling one report (pure, given its parts) and keeping it under the collector's size limit."""
from __future__ import annotations

import json
from typing import Dict, List, Optional

from .baseline import Baseline
from .protocol import MAX_REPORT_BYTES, CheckResult, DriftEntry, Report, SpoolState

MAX_DRIFT_ENTRIES = 500


def build_report(agent: str, seq: int, sent_at: float, baseline: Baseline, checks: List[CheckResult],
                 metrics: Dict[str, float], drift: List[DriftEntry], spool: SpoolState,
                 canary_lag_s: Optional[float]) -> dict:
    """The report as JSON-ready data. Drift beyond what fits is cut (a 413 would lose the whole report);
    `drift_total` in the metrics always carries the full count."""
    metrics = dict(metrics)
    metrics["drift_total"] = float(len(drift))
    for c in checks:
        if c.value is not None:
            metrics.setdefault(c.name, float(c.value))
    limit = min(len(drift), MAX_DRIFT_ENTRIES)
    while True:
        report = Report(agent=agent, seq=seq, sent_at=round(sent_at, 6), image_version=baseline.image_version,
                        host=baseline.identity.host, role=baseline.identity.role, checks=list(checks),
                        metrics=metrics, drift=drift[:limit], spool=spool, canary_lag_s=canary_lag_s).to_json()
        if limit == 0 or len(json.dumps(report, separators=(",", ":"))) <= MAX_REPORT_BYTES - 1024:
            break
        limit //= 2
    report["metrics"]["drift_truncated"] = float(limit < len(drift))
    return report
