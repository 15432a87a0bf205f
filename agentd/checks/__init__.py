"""Health checks: one small plugin per file, each `check(ctx) -> Outcome`, registered in CHECKS by name.

The framework (run_checks) times each check and turns an exception into a "fail" result, so one broken check
never breaks the report (node_exporter's collector pattern).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional

from ..baseline import Baseline
from ..config import Config
from ..protocol import CheckResult


class Outcome(NamedTuple):
    status: str
    detail: str
    value: Optional[float] = None


@dataclass(frozen=True)
class CheckContext:
    config: Config
    root: str
    baseline: Baseline
    scratch: Dict[str, object] = field(default_factory=dict)  # per-check memory between runs (CPU's last sample)


Check = Callable[[CheckContext], Outcome]


def registry() -> Dict[str, Check]:
    from . import cpu, disk, image_version, load, mattermost, memory, openclaw, units, uptime
    return {
        "cpu": cpu.check,
        "memory": memory.check,
        "disk": disk.check,
        "load": load.check,
        "uptime": uptime.check,
        "openclaw_gateway": units.openclaw_unit,
        "agentd_unit": units.agentd_unit,
        "openclaw_ready": openclaw.ready,
        "openclaw_dashboard": openclaw.dashboard,
        "mattermost": mattermost.check,
        "image_version": image_version.check,
    }


# The checks that only mean something where a service is baked in (Config.services).
SERVICE_CHECKS = {"openclaw": ("openclaw_gateway", "openclaw_ready", "openclaw_dashboard")}


def for_services(services) -> Dict[str, Check]:
    """The registry minus the checks of services this image does not run."""
    absent = {name for service, names in SERVICE_CHECKS.items() if service not in services for name in names}
    return {name: check for name, check in registry().items() if name not in absent}


def run_checks(ctx: CheckContext, checks: Optional[Dict[str, Check]] = None) -> List[CheckResult]:
    results = []
    for name, check in (checks or for_services(ctx.config.services)).items():
        start = time.monotonic()
        try:
            outcome = check(ctx)
        except Exception as e:  # a check's bug or an unreadable /proc file: reported, not fatal
            outcome = Outcome("fail", f"check error: {type(e).__name__}: {e}")
        results.append(CheckResult(name=name, status=outcome.status, detail=outcome.detail, value=outcome.value,
                                   duration_ms=round((time.monotonic() - start) * 1000, 3)))
    return results


def read_text(ctx: CheckContext, path: str) -> str:
    from ..fsutil import rooted
    with open(rooted(ctx.root, path), encoding="utf-8") as f:
        return f.read()
