"""The placement guard: a hypervisor knows which inventory host it is, and the clone refuses an agent placed on
another one, so no agent can end up with two VMs (same IP and MAC, two identities) on two hypervisors.

The identity is one line in `/etc/agentfleet/host` (written by `python -m deploy.fleet setup HOST`);
`AGENTFLEET_HOST_FILE` names another file (tests: one per simulated hypervisor). A hypervisor without the file is
one never set up by the fleet tool (a single-host lab running clone.py by hand): the guard warns and lets it pass,
except when the fleet tool drives it (`AGENTFLEET_PLACEMENT=required`): then it refuses."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable, Optional

from deploy.errors import CloneError
from deploy.inventory import Inventory
from host.identity import host_file

log = logging.getLogger(__name__)

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def this_host(path: Optional[Path] = None) -> Optional[str]:
    """The inventory name this hypervisor was set up as, or None when it never was."""
    path = path or host_file()
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CloneError(f"host identity {path}: unreadable ({e.strerror})") from None
    if not HOST_NAME.match(name):
        raise CloneError(f"host identity {path}: {name[:40]!r} is not a host name")
    return name


def check(inv: Inventory, agents: Iterable[str], path: Optional[Path] = None) -> None:
    """Raise one CloneError for the first agent the inventory places on another hypervisor than this one."""
    path = path or host_file()
    me = this_host(path)
    if me is None:
        if os.environ.get("AGENTFLEET_PLACEMENT") == "required":
            raise CloneError(f"this hypervisor has no identity ({path} is missing); run "
                             f"`python -m deploy.fleet setup HOST` for it first")
        log.warning("placement unchecked: %s is missing (`python -m deploy.fleet setup HOST` writes it)", path)
        return
    if me not in inv.hosts:
        raise CloneError(f"this hypervisor is {me!r} ({path}), a host the inventory does not have "
                         f"({', '.join(inv.hosts)}): is the inventory's address for it another machine's?")
    for name in agents:
        agent = inv.agent(name)
        if agent.host != me:
            raise CloneError(f"{name}: placed on {agent.host} in the inventory, and this hypervisor is {me} ({path}); "
                             f"refusing a second copy here (python -m deploy.fleet clone {name} runs it on "
                             f"{agent.host})")
