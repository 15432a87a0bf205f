"""Server-rendered HTML: the fleet table and one page per agent. Plain HTML, a meta refresh, no JavaScript build.
Everything an agent sent is escaped: a drift path or a check detail is data, never markup."""
from __future__ import annotations

import collections
import itertools
import time
from html import escape
from typing import Iterable, Mapping, Optional, Sequence

from agentd.protocol import CONFFILE, PACKAGE, UNEXPLAINED, DriftEntry

from .acceptance import entry_value, status
from .gaps import GapExplanation
from .records import AgentState, AuditRecord, DriftAcceptance, GapAcknowledgement, HistoryPoint, Incident
from .rollouts import Rollout, RolloutAgent

# drift classes on the agent page, in this order, with what each means for the one reading it
DRIFT_GROUPS = (
    (UNEXPLAINED, "Unexplained", "nothing we know of explains these (only these alert, by default)"),
    (CONFFILE, "Changed conffiles", "configuration files of a package, edited here (dpkg keeps such edits)"),
    (PACKAGE, "Package manager", "put there by a package installed or upgraded after the bake (dpkg's md5sums)"),
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176f2c;font-weight:600} .warn{color:#9a6700;font-weight:600} .fail,.stale{color:#b42318;font-weight:600}
.muted{color:#777} svg{vertical-align:middle} code{font-size:.95em}
.alone{color:#b42318;font-weight:600} form.accept label{margin-right:1em}
tr.host th{background:#e9eef5;font-weight:600} tr.inwave td{background:#fff7e0}
a.button{border:1px solid #888;border-radius:3px;padding:.2em .6em;background:#f4f4f4;color:#222;text-decoration:none}
"""


def fleet_page(agents: list[AgentState], stale_after_s: float, refresh_s: int, open_alerts: dict[str, int],
               now: Optional[float] = None, alone: Optional[Mapping[str, Sequence[str]]] = None,
               rollout: Optional[Rollout] = None) -> str:
    """Agents grouped by host, how many run which image, and the newest rollout (its current wave's agents marked,
    when each was replaced). `alone`: agent -> unexplained drift paths none of its siblings on the same image has
    (siblings.py)."""
    now = time.time() if now is None else now
    alone = alone or {}
    in_rollout = {a.name: a for a in rollout.agents} if rollout else {}
    wave = rollout.current_wave if rollout else None
    rows = []
    for host, members in itertools.groupby(sorted(agents, key=lambda a: (a.host, a.agent)), key=lambda a: a.host):
        members = list(members)
        rows.append(f'<tr class="host" id="host-{escape(host)}"><th colspan="{10 if rollout else 9}">'
                    f"{escape(host) or '(no host)'} &middot; {len(members)} agent{'' if len(members) == 1 else 's'}"
                    f" &middot; {_versions(members)}</th></tr>")
        for a in members:
            marked = wave is not None and a.agent in wave.agents
            mark = ' class="inwave"' if marked else ""
            rows.append(
                f'<tr id="agent-{a.agent}"{mark}>'
                f'<td><a href="/agents/{a.agent}">{a.agent}</a></td>'
                f"<td>{escape(a.host)}</td><td>{escape(a.role)}</td><td><code>{escape(a.image_version)}</code></td>"
                f'<td title="{_clock(a.last_seen)}">{_ago(now - a.last_seen)}</td>'
                f'<td class="health">{_health(a, now, stale_after_s)}</td>'
                f'<td class="num drift">{_drift_cell(a, alone.get(a.agent, ()))}</td>'
                f'<td class="num">{a.contiguous_seq} / {a.last_seq}</td>'
                f'<td class="num">{a.spool.depth}{_dropped(a)}</td>'
                + (f'<td class="rollout">{_rollout_cell(in_rollout.get(a.agent), marked)}</td>' if rollout else "")
                + "</tr>")
    table = ("<table id=\"fleet\"><thead><tr><th>agent</th><th>host</th><th>role</th><th>image</th><th>last seen</th>"
             "<th>health</th><th>drift</th><th>seq (contiguous / last)</th><th>spool</th>"
             + ("<th>rollout</th>" if rollout else "") + "</tr></thead><tbody>"
             + "".join(rows) + "</tbody></table>") if agents else '<p class="muted">No agent has reported yet.</p>'
    alerts = ", ".join(f"{n} {kind}" for kind, n in sorted(open_alerts.items()) if n) or "none"
    healthy = sum(1 for a in agents if a.healthy and now - a.last_seen <= stale_after_s)
    return _page("agentfleet", refresh_s,
                 f"<h1>agentfleet</h1><p><span id=\"summary\">{healthy} of {len(agents)} agents healthy</span>"
                 f" &middot; <span id=\"versions\">{_versions(agents)}</span>"
                 f" &middot; open alerts: {alerts} &middot; <span class=\"muted\">updated {_clock(now)}, "
                 f"refreshes every {refresh_s} s &middot; <a href=\"/metrics\">metrics</a></span></p>"
                 f"{_rollout(rollout) if rollout else ''}{table}")


def _versions(agents: Sequence[AgentState]) -> str:
    """How many agents run which image, the most common first (then by name, so the order never flickers)."""
    counts = collections.Counter(a.image_version for a in agents)
    ranked = sorted(counts.items(), key=lambda vn: (-vn[1], vn[0]))
    return ", ".join(f"<code>{escape(v)}</code> &times; {n}" for v, n in ranked) or "no image"


def _rollout(r: Rollout) -> str:
    wave = r.current_wave
    where = (f"wave {wave.index}{' (canary)' if wave.canary else ''} of {len(r.waves)}: "
             + ", ".join(escape(a) for a in wave.agents) if wave else f"{len(r.waves)} wave(s)")
    done = sum(1 for w in r.waves if w.state == "passed")
    halt = f' &middot; <span class="fail">{escape(r.halt)}</span>' if r.halt else ""
    return (f'<section id="rollout"><h2>Rollout of <code>{escape(r.version)}</code>: '
            f'<span class="{"ok" if r.state == "done" else "warn" if r.state == "running" else "fail"}">'
            f"{escape(r.state)}</span></h2><p>{where} &middot; {done} of {len(r.waves)} waves passed &middot; "
            f"started {_clock(r.started_at)}, updated {_clock(r.updated_at)}{halt}</p></section>")


def _rollout_cell(a: Optional[RolloutAgent], in_current_wave: bool) -> str:
    if a is None:
        return '<span class="muted">not in scope</span>'
    replaced = f" {_clock(a.replaced_at)}" if a.replaced_at else ""
    wave = "skipped" if a.wave is None else f"wave {a.wave}"
    phase = f"<strong>{escape(a.phase)}</strong>" if in_current_wave else escape(a.phase)
    return f"{wave}: {phase}{replaced}"


def agent_page(a: AgentState, history: list[HistoryPoint], incidents: list[Incident], gap: Optional[GapExplanation],
               acknowledgements: list[GapAcknowledgement], stale_after_s: float, refresh_s: int,
               now: Optional[float] = None, audit: Sequence[AuditRecord] = (), accepted: Sequence[DriftAcceptance] = (),
               can_accept: bool = False) -> str:
    """`can_accept`: the collector has an operator token, so the drift comes with a button to accept it."""
    now = time.time() if now is None else now
    facts = [
        ("host", escape(a.host)), ("role", escape(a.role)), ("image", f"<code>{escape(a.image_version)}</code>"),
        ("health", _health(a, now, stale_after_s)),
        ("last seen", f"{_ago(now - a.last_seen)} ({_clock(a.last_seen)})"),
        ("sequence", f"last {a.last_seq}, contiguous {a.contiguous_seq}"
                     + (f' <span class="fail">gap since {_clock(a.gap_since)}</span>' if a.gap_since else "")),
        ("spool", f'{a.spool.depth} waiting, oldest {a.spool.oldest_age_s:.0f} s, {a.spool.dropped} dropped'),
        ("canary lag", "n/a" if a.canary_lag_s is None else f"{a.canary_lag_s:.3f} s"),
    ]
    checks, drift = a.checks, a.drift
    body = [f'<p><a href="/">&larr; fleet</a></p><h1>{a.agent}</h1>',
            _table(["", ""], [[k, v] for k, v in facts], "facts", header=False),
            f"<h2>Alerts ({len(incidents)})</h2>",
            _table(["kind", "what", "since"], [[i.kind, escape(i.detail), _clock(i.opened_at)] for i in incidents],
                   "alerts") if incidents else '<p class="muted">None open.</p>',
            _gap(gap, acknowledgements),
            f"<h2>Checks ({len(checks)})</h2>",
            _table(["check", "status", "detail", "value", "ms"], [
                [escape(c.name), f'<span class="{_css(c.status)}">{escape(c.status)}</span>',
                 escape(c.detail), _num(c.value), _num(c.duration_ms)] for c in checks], "checks"),
            f"<h2>Drift ({len(drift)})</h2>",
            _drift(a, can_accept),
            _acceptances(a, accepted),
            f"<h2>Metric history (last {len(history)} reports)</h2>",
            _history(history), _audit(audit)]
    return _page(f"{a.agent} - agentfleet", refresh_s, "".join(body))


def _drift(a: AgentState, can_accept: bool) -> str:
    """The drift grouped by class (unexplained first), and the way to accept it: a button to the form when the
    collector has an operator token, else the command."""
    if not a.drift:
        return '<p class="muted" id="drift">No drift from the baseline.</p>'
    how = (f'<p><a class="button" id="accept-drift-open" href="/agents/{a.agent}/accept-drift">Accept drift&hellip;'
           "</a></p>" if can_accept else
           '<p class="muted">To accept drift into the agent\'s baseline: <code>python -m collector accept-drift '
           f"{a.agent} --by NAME [--path PATH ...] --db ...</code> (or start the collector with "
           "<code>--operator-token-file</code> to accept it here).</p>")
    return f'<div id="drift">{_drift_groups(a.drift, tick=False)}{how}</div>'


def _drift_groups(drift: Sequence[DriftEntry], tick: bool) -> str:
    parts = []
    for drift_class, title, meaning in DRIFT_GROUPS:
        entries = [d for d in drift if d.class_ == drift_class]
        if not entries:
            continue
        parts.append(f'<h3>{title} ({len(entries)})</h3><p class="muted">{meaning}</p>' + _table(
            [*(["accept"] if tick else []), "path", "kind", "expected", "actual"], [
                [*([f'<input type="checkbox" name="entry" value="{escape(entry_value(d))}">'] if tick else []),
                 f"<code>{escape(d.path)}</code>", escape(d.kind), escape(str(d.expected)), escape(str(d.actual))]
                for d in entries], f"drift-{drift_class}"))
    return "".join(parts)


def accept_page(a: AgentState) -> str:
    """The form that accepts ticked drift. No meta refresh here: a refresh would wipe what the operator typed; an
    entry that changed meanwhile is refused on submit (acceptance.chosen_by_form)."""
    if not a.drift:
        form = '<p class="muted" id="drift">No drift from the baseline: nothing to accept.</p>'
    else:
        form = (f'<form id="drift" class="accept" method="post" action="/agents/{a.agent}/accept-drift">'
                f"{_drift_groups(a.drift, tick=True)}"
                '<p><label>your name <input name="by" required maxlength="64"></label>'
                '<label>operator token <input name="token" type="password" required autocomplete="off"></label>'
                '<label>reason <input name="reason" maxlength="300" size="40"></label>'
                '<button type="submit" id="accept-drift">Accept the ticked drift</button></p>'
                "<p class=\"muted\">Accepted entries become part of the agent's baseline with its next report; a "
                "value changed after that is drift again.</p></form>")
    return _page(f"accept drift of {a.agent} - agentfleet", None,
                 f'<p><a href="/agents/{a.agent}">&larr; {a.agent}</a></p><h1>Accept drift of {a.agent}</h1>'
                 f"<p>As of its report seq {a.last_seq}, {_clock(a.sent_at)}.</p>{form}")


def _acceptances(a: AgentState, accepted: Sequence[DriftAcceptance]) -> str:
    if not accepted:
        return ""
    rows = [[_clock(k.accepted_at), escape(k.accepted_by), escape(k.kind), f"<code>{escape(k.path)}</code>",
             escape(str(k.actual)), escape(k.reason), status(k, a)] for k in reversed(accepted)]
    return ("<h2>Accepted drift</h2>"
            + _table(["accepted", "by", "kind", "path", "value", "reason", "status"], rows, "drift-acceptances"))


def accept_refused_page(name: str, why: str) -> str:
    return _page("drift not accepted - agentfleet", None,
                 f'<p><a href="/agents/{escape(name)}">&larr; {escape(name)}</a></p><h1>Drift not accepted</h1>'
                 f'<p class="fail" id="refused">{escape(why)}</p>')


def unknown_agent_page(name: str, refresh_s: int) -> str:
    return _page("unknown agent - agentfleet", refresh_s, '<p><a href="/">&larr; fleet</a></p><h1>Unknown agent</h1>'
                 f"<p>No report from <code>{escape(name)}</code> has been stored.</p>")


def _gap(gap: Optional[GapExplanation], acknowledgements: list[GapAcknowledgement]) -> str:
    """Why the sequence has a gap (gaps.py), and the gaps an operator acknowledged."""
    parts = []
    if gap is not None:
        parts.append(f'<h2>Sequence gap</h2><p id="gap"><span class="fail">seq {gap.from_seq}..{gap.to_seq}: '
                     f'{gap.missing} missing</span> since {_clock(gap.since)} ({escape(gap.reason)}): '
                     f"{escape(gap.explanation)}</p>")
    if acknowledgements:
        parts.append("<h2>Acknowledged gaps</h2>" + _table(["seq", "missing", "acknowledged", "reason"], [
            [f"{k.from_seq}..{k.to_seq}", str(k.missing), _clock(k.acknowledged_at), escape(k.reason)]
            for k in acknowledgements], "gap-acknowledgements"))
    return "".join(parts)


def _audit(audit: Sequence[AuditRecord]) -> str:
    """Config changes operators made (clone.py --update), newest first: what changed by name, never a value."""
    if not audit:
        return '<h2>Config changes</h2><p class="muted" id="audit">None recorded.</p>'
    return f"<h2>Config changes (last {len(audit)})</h2>" + _table(["when", "who", "what changed"], [
        [_clock(r.at), escape(r.who), "<br>".join(escape(c) for c in r.changes) or '<span class="muted">nothing</span>']
        for r in audit], "audit")


def _history(history: list[HistoryPoint]) -> str:
    names = sorted({name for point in history for name in point.metrics})
    if not names:
        return '<p class="muted">No metrics reported.</p>'
    rows = []
    for name in names:
        values = [p.metrics.get(name) for p in history]
        known = [v for v in values if v is not None]
        rows.append([escape(name), _sparkline(values), _num(known[-1]), _num(min(known)), _num(max(known))])
    return _table(["metric", f"history (seq {history[0].seq}..{history[-1].seq})", "last", "min", "max"], rows,
                  "metrics")


def _sparkline(values: list[Optional[float]], width: int = 240, height: int = 32) -> str:
    known = [v for v in values if v is not None]
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
                      for i, v in enumerate(values) if v is not None)
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="#2b6cb0" stroke-width="1.5" points="{points}"/></svg>')


def _table(headers: list[str], rows: Iterable[list[str]], table_id: str, header: bool = True) -> str:
    head = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}">{head}<tbody>{body}</tbody></table>'


def _page(title: str, refresh_s: Optional[int], body: str) -> str:
    """`refresh_s` None: a page that must not reload by itself (a form)."""
    refresh = "" if refresh_s is None else f'<meta http-equiv="refresh" content="{refresh_s}">'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"{refresh}<title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _health(a: AgentState, now: float, stale_after_s: float) -> str:
    if now - a.last_seen > stale_after_s:
        return '<span class="stale">stale</span>'
    if a.healthy:
        return '<span class="ok">ok</span>'
    failing = [escape(name) for name in a.failing]
    return f'<span class="fail">failing: {", ".join(failing)}</span>'


def _drift_cell(a: AgentState, lone_paths: Sequence[str]) -> str:
    """The count; how much of it is unexplained when some is explained; "drifts alone" when its siblings do not."""
    if not a.drift_count:
        return "0"
    unexplained = sum(1 for d in a.drift if d.class_ == UNEXPLAINED)
    cell = str(a.drift_count)
    if unexplained < len(a.drift):
        cell += f' <span class="muted">({unexplained} unexplained)</span>'
    if lone_paths:
        title = escape(", ".join(lone_paths[:20]) + (" ..." if len(lone_paths) > 20 else ""))
        cell += f' <span class="alone" title="{title}">drifts alone ({len(lone_paths)})</span>'
    return cell


def _dropped(a: AgentState) -> str:
    return f' <span class="fail">({a.spool.dropped} dropped)</span>' if a.spool.dropped else ""


def _css(status: object) -> str:
    return status if status in ("ok", "warn", "fail") else ""


def _num(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
