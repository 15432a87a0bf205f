"""The rollout's progress, fed to the collector so its fleet page can show a running rollout: which wave, which agents
in it, when each was replaced, and how it ended (the collector also posts the end to Mattermost, through the webhook
it already owns).

Every journal save hands the feed a snapshot; a background thread posts only the newest one (`POST
/api/v1/rollouts`, signed with the rollout token HMAC(collector secret, "rollout:" + fleet id)), so a slow or absent
collector never slows a wave. A failed post is one warning line, never the rollout's failure: the journal on the
workstation is the record; the page is a view of it."""
from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from typing import Any, Optional, TextIO

from agentd.protocol import ROLLOUTS_PATH, rollout_token
from deploy.rollout.report import now_version

AGENT_FIELDS = ("host", "wave", "phase", "from_version", "replaced_at", "message")


def snapshot(fleet: str, data: dict[str, Any]) -> dict[str, Any]:
    """The part of the journal the page shows (docs/contracts.md "Rollouts"): no options, pids or paths."""
    return {
        "fleet": fleet,
        "version": data["version"],
        "state": data["state"],
        "started_at": data["started_at"],
        "updated_at": data["updated_at"],
        "halt": (data.get("halt") or {}).get("reason", ""),
        "waves": [{"index": w["index"], "canary": w.get("canary", False), "agents": list(w["agents"]),
                   "state": w["state"]} for w in data["waves"]],
        # `version`: what the agent runs now as far as the rollout knows (the final table's `now`)
        "agents": {name: {**{k: a.get(k) for k in AGENT_FIELDS}, "version": now_version(a, data["version"])}
                   for name, a in data["agents"].items()},
    }


class CollectorFeed:
    """Latest-only, best-effort poster of rollout snapshots."""

    def __init__(self, api_url: str, fleet: str, collector_secret: bytes, timeout_s: float = 5.0,
                 warn: TextIO = sys.stderr) -> None:
        self.url = api_url.rstrip("/") + ROLLOUTS_PATH
        self.fleet, self.timeout_s, self.warn = fleet, timeout_s, warn
        self._token = rollout_token(collector_secret, fleet)
        self._pending: Optional[bytes] = None
        self._cond = threading.Condition()
        self._closed = False
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="rollout-feed", daemon=True)
        self._thread.start()

    def update(self, journal_data: dict[str, Any]) -> None:
        body = json.dumps(snapshot(self.fleet, journal_data), sort_keys=True).encode()
        with self._cond:
            self._pending = body
            self._cond.notify()

    def close(self, flush_s: float = 10.0) -> None:
        """Send what is pending (the final state), waiting at most flush_s."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(flush_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                body, self._pending = self._pending, None
                if body is None:
                    return
            self._post(body)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            if not self._warned:                  # one line per rollout, not one per step
                self._warned = True
                reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
                print(f"rollout: warning: the collector's fleet page is not updated ({self.url}: {reason}); "
                      f"the rollout goes on", file=self.warn, flush=True)
