"""Which inventory host this hypervisor is: one line in `/etc/agentfleet/host`, written by `fleet setup` and read by
the clone's placement guard and the fleet's host-side steps. Standard library only: the host-side steps run before
the hypervisor has a venv. `AGENTFLEET_HOST_FILE` names another file (tests: one per simulated hypervisor)."""
from __future__ import annotations

import os
from pathlib import Path

HOST_FILE = Path("/etc/agentfleet/host")


def host_file() -> Path:
    return Path(os.environ.get("AGENTFLEET_HOST_FILE") or HOST_FILE)
