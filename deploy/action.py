"""What a run does to one agent, decided before anything is written (deploy/decide.py)."""
from __future__ import annotations

import enum


class Action(str, enum.Enum):
    CLONE = "clone"        # no VM yet: new overlay (and data disk), inject, define, start
    START = "start"        # current image already in place; the domain is not running
    RESUME = "resume"      # a replace was swapped in but never proven healthy: boot it and wait again
    NOOP = "noop"          # already runs this image
    REPLACE = "replace"    # another image: new overlay beside the old, swap, wait for health, roll back if not
    UPDATE = "update"      # same image: inject what inventory and secrets give today into the current overlay, restart
    ROLLBACK = "rollback"  # back to the previous overlay (by hand or after a failed replace)
    DESTROY = "destroy"    # domain and root overlays removed; the data disk kept unless purged
    BACKUP = "backup"      # data disk and identity copied to a backup dir, the VM kept running (deploy/backup.py)
    RESTORE = "restore"    # an agent brought back from a backup with the same identity (deploy/restore.py)

    @property
    def builds_disks(self) -> bool:
        """A new root overlay (and, the first time, a data disk), swapped into place once injected."""
        return self in (Action.CLONE, Action.REPLACE)

    @property
    def injects(self) -> bool:
        """Goes through prepare and inject: into new disks, or (update) into the agent's own, the VM stopped."""
        return self.builds_disks or self is Action.UPDATE

    @property
    def boots(self) -> bool:
        return self in (Action.CLONE, Action.START, Action.RESUME, Action.REPLACE, Action.UPDATE)

    @property
    def awaits_health(self) -> bool:
        return self in (Action.REPLACE, Action.RESUME)
