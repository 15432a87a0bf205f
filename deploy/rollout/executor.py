"""Run a rollout: push, then wave after wave (gate before, one replace per host in parallel, gate after), halting
at the first failure; every step journaled so the same command continues after a kill.

`run_rollout(...)` is the entry point (deploy/rollout/cli.py's `run_verb` wraps it as the CLI verb);
`rollout_status(...)` backs `--status`."""
from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path
from typing import Optional

from deploy.inventory import Inventory
from deploy.rollout.errors import RolloutError
from deploy.rollout.gates import HealthyStreaks, degraded
from deploy.rollout.interfaces import (
    HealthSource,
    Outcome,
    ProgressFeed,
    Push,
    ReplaceOnHost,
    ReplaceOutcome,
    RollbackOnHost,
)
from deploy.rollout.journal import Journal, fleet_lock, lock_holder
from deploy.rollout.options import RolloutOptions
from deploy.rollout.planner import Plan, Wave, scope_of
from deploy.rollout.planner import plan as make_plan
from deploy.rollout.progress import ProgressEvent, Reporter, SilentReporter
from deploy.rollout.report import AgentRow, RolloutReport, rows_from_journal

_PHASE_OF = {Outcome.REPLACED: "replaced", Outcome.ROLLED_BACK: "rolled-back", Outcome.ERROR: "error"}


def run_rollout(inventory: Inventory, version: str, options: RolloutOptions, *, replace_on_host: ReplaceOnHost,
                rollback_on_host: RollbackOnHost, push: Push, health: HealthSource,
                out: Optional[Reporter] = None, feed: Optional[ProgressFeed] = None) -> RolloutReport:
    """Upgrade the scope to `version`. Returns the report (its exit_code: 0 done, 4 halted, 5 refused on a degraded
    fleet); raises RolloutError for a usage error or a refusal that changed nothing (exit 2). `feed` receives the
    journal at every step (the collector's fleet page); it is closed, flushing the last step, before returning."""
    scope_of(inventory, options)  # a bad scope is a usage error before anything is read or locked
    run = _Run(inventory, version, options, replace_on_host, rollback_on_host, push, health, out or SilentReporter())
    if options.dry_run:
        return run.dry_run()
    path = Journal.path_for(options.journal_dir, inventory)
    try:
        with fleet_lock(path):
            return run.execute(path, feed)
    finally:
        if feed is not None:
            feed.close()


def rollout_status(inventory: Inventory, journal_dir: Path) -> Optional[RolloutReport]:
    """The last rollout of this fleet as its journal has it (None: never one); `running` while its lock is held."""
    path = Journal.path_for(journal_dir, inventory)
    journal = Journal.read(path)
    if journal is None:
        return None
    data = journal.data
    state = data["state"]
    holder = lock_holder(path)
    if holder is not None:
        state = "running"
    elif state == "running":
        state = "interrupted"  # the journal says running but nobody holds the lock: killed; rerun to continue
    reason = (data.get("halt") or {}).get("reason", "")
    if state == "running":
        reason = f"pid {holder}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['started_at']))}"
    elif state == "interrupted":
        reason = "stopped before it finished; run the same command again to continue"
    return RolloutReport(state, data["version"], reason, rows_from_journal(data), tuple(data["waves"]),
                         data["updated_at"] - data["started_at"])


class _Run:
    def __init__(self, inv, version, options, replace_on_host, rollback_on_host, push, health, out) -> None:
        self.inv, self.version, self.opt = inv, version, options
        self.replace_on_host, self.rollback_on_host, self.push, self.health = (
            replace_on_host, rollback_on_host, push, health)
        self.out = out
        self.t0 = time.monotonic()
        self.journal: Journal

    # ------------------------------------------------------------------------------------------------- planning
    def _current_versions(self) -> dict[str, Optional[str]]:
        fleet = self.health.snapshot()
        return {name: seen.image_version for name, seen in fleet.agents.items()}

    def dry_run(self) -> RolloutReport:
        try:
            current, note = self._current_versions(), ""
        except RolloutError as e:
            current, note = {}, f"versions unknown ({e}): every agent planned"
        p = make_plan(self.inv, self.version, current, self.opt)
        self.out.text(p.render())
        data = _fresh_journal_data(self.inv, p, self.opt)
        return RolloutReport("dry-run", self.version, note, rows_from_journal(data), tuple(data["waves"]))

    def _open_journal(self, path: Path) -> Journal:
        old = Journal.read(path)
        if old is not None and not self.opt.restart:
            state, old_version = old.data["state"], old.data["version"]
            if state == "running" and old_version == self.version:
                self.out.event(self._event("resume", detail=f"continuing the rollout journaled in {path}"))
                old.set(pid=os.getpid())
                return old
            if state == "running":
                raise RolloutError(f"an unfinished rollout of {old_version} is journaled in {path}; "
                                   f"finish it (run it again) or pass --restart to plan {self.version} anew")
            halt = old.data.get("halt") or {}
            if state == "halted" and old_version == self.version and halt.get("wave") is not None:
                reason = halt.get("reason", "")
                raise RolloutError(f"the rollout of {self.version} halted ({reason}); "
                                   f"fix the cause, then pass --restart to plan it anew")
        p = make_plan(self.inv, self.version, self._current_versions(), self.opt)
        self.out.text(p.render())
        return Journal.create(path, **_fresh_journal_data(self.inv, p, self.opt))

    # ------------------------------------------------------------------------------------------------ executing
    def execute(self, path: Path, feed: Optional[ProgressFeed] = None) -> RolloutReport:
        self.journal = j = self._open_journal(path)
        if feed is not None:
            j.on_save = feed.update
            feed.update(j.data)
        p = Plan.from_json(j.data["plan"])
        if p.waves:
            self.out.event(self._event("push", detail=f"image {self.version} to the hosts"))
            try:
                self.push(self.version)
            except Exception as e:  # noqa: BLE001 - the fleet tool's own error; one line, nothing touched
                return self._end("halted", f"push of {self.version} failed: {e}", None)
        for wave in p.waves:
            ws = j.data["waves"][wave.index]
            if ws["state"] == "passed":
                continue
            if ws["state"] == "failed":  # killed after the failure was journaled, before the end
                if self.opt.revert_wave:
                    self._revert(wave)
                return self._end("halted", f"wave {wave.index}: {ws.get('reason', '')}", wave.index)
            refused = self._gate_before(p, wave, resumed=ws["state"] == "running")
            if refused:
                return self._end("refused", f"wave {wave.index} not started: {refused}", wave.index)
            j.set_wave(wave.index, state="running", started_at=ws.get("started_at") or time.time())
            failure = self._run_wave(wave)
            if failure is None:
                j.set_wave(wave.index, state="passed", finished_at=time.time())
                self.out.event(self._event("wave-passed", wave.index, detail=", ".join(wave.agents)))
                continue
            j.set_wave(wave.index, state="failed", finished_at=time.time(), reason=failure)
            self.out.event(self._event("halted", wave.index, detail=failure))
            if self.opt.revert_wave:
                self._revert(wave)
            return self._end("halted", f"wave {wave.index}: {failure}", wave.index)
        return self._end("done", "", None)

    def _gate_before(self, p: Plan, wave: Wave, resumed: bool) -> str:
        """'' when the scope is fit for the next wave, else why not. A resumed wave's own agents are left out:
        they may be down in the middle of their replace."""
        self.out.event(self._event("gate", wave.index, detail="fleet health before the wave"))
        try:
            fleet = self.health.snapshot()
        except RolloutError as e:
            return f"cannot read the fleet's health: {e}"
        return "; ".join(degraded(fleet, [a for a in p.scope if not (resumed and a in wave.agents)],
                                  self.opt.stale_after_s))

    def _run_wave(self, wave: Wave) -> Optional[str]:
        """Replace the wave's agents (hosts in parallel) and watch them pass min_healthy; the first failure ends the
        wave (after the replaces still running have returned: none is left behind). Returns why it failed."""
        j = self.journal
        phase = {a: j.agent(a)["phase"] for a in wave.agents}
        already = [a for a in wave.agents if phase[a] in ("rolled-back", "error")]
        if already:  # the wave failed, then the rollout was killed before it journaled the halt
            a = already[0]
            return f"{a}@{wave.host_of(a)} {phase[a]}: {j.agent(a).get('message', '')}"
        passed = {a for a in wave.agents if phase[a] == "passed"}
        ready = {a for a in wave.agents if phase[a] == "replaced"}
        # "replacing" = cut off by a kill: asked again; clone.py's per-agent state makes that a no-op or a resume
        calls = {h: [a for a in agents if phase[a] in ("pending", "replacing")] for h, agents in wave.hosts}
        calls = {h: agents for h, agents in calls.items() if agents}
        for agents in calls.values():
            for a in agents:
                j.data["agents"][a].update(phase="replacing", version=None, message="", updated_at=time.time())
        j.save()
        failure: Optional[str] = None
        streaks = HealthyStreaks(self.version, self.opt.min_healthy_s, self.opt.stale_after_s,
                                 failing_between=self.health.failing_between)
        announced: set[str] = set()
        deadline = time.monotonic() + self.opt.wave_deadline_s
        pool = cf.ThreadPoolExecutor(max_workers=max(1, len(calls)), thread_name_prefix="rollout-host")
        try:
            futures = {}
            for host, agents in calls.items():
                for a in agents:
                    self.out.event(self._event("replacing", wave.index, a, host))
                futures[pool.submit(_replace, self.replace_on_host, host, agents, self.version)] = host
            while True:
                for f in [f for f in futures if f.done()]:
                    failure = self._record(wave, futures.pop(f), f.result(), ready) or failure
                if failure:
                    break
                waiting = [a for a in wave.agents if a in ready and a not in passed]
                if waiting:
                    self._observe(wave, streaks, waiting, passed, announced)
                if len(passed) == len(wave.agents):
                    return None
                if time.monotonic() >= deadline:
                    late = [f"{a}: {streaks.why_not.get(a, 'replace still running')}"
                            for a in wave.agents if a not in passed]
                    failure = f"wave deadline {self.opt.wave_deadline_s:.0f}s passed ({'; '.join(late)})"
                    break
                due = streaks.due_in(a for a in wave.agents if a not in passed)
                pause = self.opt.poll_s if due is None else min(self.opt.poll_s, due + 0.01)
                if futures:
                    cf.wait(list(futures), timeout=pause, return_when=cf.FIRST_COMPLETED)
                else:
                    time.sleep(pause)
            for f in cf.as_completed(list(futures)):  # never leave a replace running behind a halt
                self._record(wave, futures.pop(f), f.result(), ready)
            return failure
        finally:
            pool.shutdown(wait=True)

    def _record(self, wave: Wave, host: str, outcomes: dict[str, ReplaceOutcome], ready: set[str]) -> Optional[str]:
        failure = None
        for agent, o in outcomes.items():
            if o.ok and o.version not in (None, self.version):
                o = ReplaceOutcome(agent, Outcome.ERROR, o.version, f"clone.py put it on {o.version}, "
                                                                     f"not {self.version}")
            self.journal.set_agent(agent, phase=_PHASE_OF[o.outcome], version=o.version, message=o.message,
                                   replaced_at=time.time() if o.ok else None)
            self.out.event(self._event(_PHASE_OF[o.outcome], wave.index, agent, host, o.message))
            if o.ok:
                ready.add(agent)
            elif failure is None:
                failure = f"{agent}@{host} {o.outcome.value}: {o.message}"
        return failure

    def _observe(self, wave: Wave, streaks: HealthyStreaks, waiting: list[str], passed: set[str],
                 announced: set[str]) -> None:
        try:
            newly = streaks.observe(self.health.snapshot(), waiting)
        except RolloutError as e:  # a collector hiccup is not a failure; the deadline is
            for a in waiting:
                streaks.why_not[a] = str(e)
            return
        for a in waiting:
            if streaks.started(a) and a not in announced:
                announced.add(a)
                self.out.event(self._event("healthy", wave.index, a, wave.host_of(a),
                                           f"on {self.version}, watching for {self.opt.min_healthy_s:g}s"))
        for a in sorted(newly):
            passed.add(a)
            self.journal.set_agent(a, phase="passed", message=f"healthy on {self.version} for "
                                                              f"{self.opt.min_healthy_s:g}s")
            self.out.event(self._event("passed", wave.index, a, wave.host_of(a)))

    def _revert(self, wave: Wave) -> None:
        """--revert-wave: the wave's agents still on the new version go back to their previous image. Each is
        journaled `reverting` before the call and never asked again after a kill: clone.py --rollback swaps current
        and previous, so a repeated call would undo the revert."""
        back = {h: [a for a in agents if self.journal.agent(a)["phase"] in ("replaced", "passed")]
                for h, agents in wave.hosts}
        back = {h: agents for h, agents in back.items() if agents}
        if not back:
            return
        for agents in back.values():
            for a in agents:
                self.journal.data["agents"][a].update(phase="reverting", version=None, updated_at=time.time(),
                                                      message="revert cut off: see `fleet status` before acting")
        self.journal.save()
        with cf.ThreadPoolExecutor(max_workers=len(back), thread_name_prefix="rollout-revert") as pool:
            futures = {}
            for host, agents in back.items():
                for a in agents:
                    self.out.event(self._event("reverting", wave.index, a, host))
                futures[pool.submit(_rollback, self.rollback_on_host, host, agents)] = (host, agents)
            for f in cf.as_completed(futures):
                host, agents = futures[f]
                for a, o in f.result().items():
                    if o.outcome is Outcome.ROLLED_BACK:
                        self.journal.set_agent(a, phase="reverted", message="reverted by --revert-wave",
                                               version=o.version or self.journal.agent(a)["from_version"])
                    else:
                        self.journal.set_agent(a, phase="error", version=None, message=f"revert failed: {o.message}")
                    self.out.event(self._event(self.journal.agent(a)["phase"], wave.index, a, host, o.message))

    # ------------------------------------------------------------------------------------------------ reporting
    def _end(self, state: str, reason: str, wave: Optional[int]) -> RolloutReport:
        j = self.journal
        j.set(state=state, halt={"reason": reason, "wave": wave} if reason else None, finished_at=time.time())
        report = RolloutReport(state, self.version, reason, rows_from_journal(j.data), tuple(j.data["waves"]),
                               time.monotonic() - self.t0)
        return report

    def _event(self, phase: str, wave: Optional[int] = None, agent: Optional[str] = None,
               host: Optional[str] = None, detail: str = "") -> ProgressEvent:
        return ProgressEvent(round(time.monotonic() - self.t0, 3), phase, wave, agent, host, detail)


def _fresh_journal_data(inv: Inventory, p: Plan, options: RolloutOptions) -> dict:
    agents = {}
    for name in p.scope:
        wave = next((w.index for w in p.waves if name in w.agents), None)
        agents[name] = {"host": inv.agents[name].host, "wave": wave, "from_version": p.from_versions.get(name),
                        "phase": "skipped" if name in p.skipped else "pending", "version": None, "message":
                        f"already on {p.version}" if name in p.skipped else "", "updated_at": time.time()}
    return {"version": p.version, "inventory": list(inv.sources), "options": options.to_json(), "plan": p.to_json(),
            "waves": [{"index": w.index, "canary": w.canary, "agents": list(w.agents),
                       "hosts": {h: list(a) for h, a in w.hosts}, "state": "pending"}
                      for w in p.waves], "agents": agents}


def _replace(replace_on_host: ReplaceOnHost, host: str, agents: list[str], version: str) -> dict[str, ReplaceOutcome]:
    """One host's call; a transport failure (the fleet tool's exception) becomes an error outcome per agent, so one
    unreachable host never hides what the other hosts did."""
    try:
        got = dict(replace_on_host(host, list(agents), version))
    except Exception as e:  # noqa: BLE001 - any failure of the foreign call is this host's error, reported
        got = {a: ReplaceOutcome(a, Outcome.ERROR, None, f"{host}: {e}") for a in agents}
    return {a: got.get(a) or ReplaceOutcome(a, Outcome.ERROR, None, f"{host}: no outcome returned") for a in agents}


def _rollback(rollback_on_host: RollbackOnHost, host: str, agents: list[str]) -> dict[str, ReplaceOutcome]:
    try:
        got = dict(rollback_on_host(host, list(agents)))
    except Exception as e:  # noqa: BLE001 - as in _replace
        got = {a: ReplaceOutcome(a, Outcome.ERROR, None, f"{host}: {e}") for a in agents}
    return {a: got.get(a) or ReplaceOutcome(a, Outcome.ERROR, None, f"{host}: no outcome returned") for a in agents}


__all__ = ["run_rollout", "rollout_status", "AgentRow", "RolloutReport"]
