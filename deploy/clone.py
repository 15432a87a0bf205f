#!/usr/bin/env python3
"""Turn the golden image into named agent VMs on this hypervisor: deploy/clone.py athena [apollo ...].

Exit codes (host/exit_codes.py, the same for every CLI): 0 done; 1 the operation failed (qemu-img, libguestfs,
libvirt, a phase past its deadline); 2 bad input (inventory, secret, refused action); 3 a --replace that rolled back
(the reason on stderr); 130 interrupted. Errors are one line on stderr. Every phase has a deadline
(AGENTFLEET_DEADLINE_SCALE, AGENTFLEET_DEADLINES). docs/clone.md has the details."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: deploy/clone.py athena
    _repo = Path(__file__).resolve().parent.parent
    _venv_python = _repo / ".venv" / "bin" / "python"
    if _venv_python.exists() and Path(sys.prefix).resolve() != (_repo / ".venv").resolve():
        # the venv has the host dependencies (and Debian's guestfs/libvirt via system site packages)
        os.execv(str(_venv_python), [str(_venv_python), __file__, *sys.argv[1:]])
    # the repo instead of the script's own dir: deploy/ has modules named like the standard library's (secrets.py),
    # and with deploy/ on sys.path `import secrets` in deploy/audit.py found deploy/secrets.py
    sys.path[0] = str(_repo)

from deploy import agent_lock, placement, plan  # noqa: E402
from deploy import inventory as inventory_mod  # noqa: E402
from deploy.action import Action  # noqa: E402
from deploy.context import Options  # noqa: E402
from deploy.destroy import destroy  # noqa: E402
from deploy.errors import CloneError, RolledBack  # noqa: E402
from deploy.recipe import clone  # noqa: E402
from deploy.rollback import rollback  # noqa: E402
from host import exit_codes  # noqa: E402
from host.errors import HostError  # noqa: E402
from host.progress import Progress  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deploy/clone.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("agents", nargs="*", metavar="AGENT", help="agent names from the inventory")
    p.add_argument("--inventory", type=Path,
                   help="inventory YAML (default $AGENTFLEET_INVENTORY or deploy/fleet.yaml); "
                   "- : one JSON line on standard input (the fleet tool's form)")
    p.add_argument("--overlay", type=Path, action="append", default=[],
                   help="YAML merged over the inventory (repeatable; default $AGENTFLEET_OVERLAY, colon-separated)")
    p.add_argument("--plan", action="store_true", help="print the capacity view per host and exit")
    p.add_argument("--image", help="image version or .qcow2 path (default: newest published)")
    p.add_argument("--dry-run", action="store_true",
                   help="print disks, files (secrets masked), domain XML; touch nothing")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--replace", action="store_true", help="upgrade to another image, roll back if not healthy")
    mode.add_argument("--rollback", action="store_true",
                      help="go back to the previous image; the data disk is kept as it is")
    p.add_argument("--restore-data", action="store_true",
                   help="with --rollback: also restore /home/agent to the snapshot taken before the current image "
                        "(discards what the agent wrote since; its age is shown first)")
    mode.add_argument("--destroy", action="store_true", help="remove the domain and root disks (data disk kept)")
    mode.add_argument("--update", action="store_true",
                      help="same image: inject what inventory and secrets give today (files, secrets, drift baseline) "
                           "into the current overlay and restart the VM (stopped while its disks are written)")
    mode.add_argument("--backup", type=Path, metavar="DIR",
                      help="copy each agent's data disk and identity (UUID, MAC, machine-id, host keys) into "
                           "DIR/<agent>-<time>/ (0700) while it runs; no secrets from the secrets source")
    mode.add_argument("--restore", type=Path, metavar="DIR",
                      help="bring AGENT back from a backup dir (or the newest of its backups in DIR) with the same "
                           "identity, onto the backup's image (or --image); refused if the agent exists here")
    p.add_argument("--purge-data", action="store_true", help="with --destroy: delete the data disk too")
    p.add_argument("--connect", metavar="URI", help="libvirt URI (default: the host's from the inventory)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--health-timeout", type=float, default=900, metavar="S",
                   help="--replace: seconds to wait for a healthy report of the new image (default 900)")
    p.add_argument("--unhealthy-grace", type=float, default=120, metavar="S",
                   help="--replace: seconds of unhealthy reports tolerated before rolling back (default 120)")
    p.add_argument("--stop-timeout", type=float, default=120, metavar="S",
                   help="seconds a guest gets to shut down before it is forced off (default 120)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or not args.json else logging.WARNING,
                        format="clone: %(message)s", stream=sys.stderr)
    try:
        inv = inventory_mod.load(args.inventory, args.overlay)
        if args.plan:
            rows = plan.capacity(inv, plan.facts_here(inv, placement.this_host()))
            print(json.dumps([r.to_json() for r in rows], indent=2) if args.json else plan.render(rows))
            return exit_codes.OK
        if not args.agents:
            raise CloneError("name at least one agent (or use --plan)")
        if args.purge_data and not args.destroy:
            raise CloneError("--purge-data only goes with --destroy")
        if args.restore_data and not args.rollback:
            raise CloneError("--restore-data only goes with --rollback")
        if args.backup and args.image:
            raise CloneError("--backup copies what each agent has; --image goes with a clone, --replace or --restore")
        if args.update and args.image:
            raise CloneError("--update keeps each agent's image; use --replace --image to change it")
        if not args.destroy:  # removing a stray copy is allowed anywhere
            placement.check(inv, args.agents)
        opts = Options(image=args.image, dry_run=args.dry_run, replace=args.replace, connect=args.connect,
                       health_timeout_s=args.health_timeout, unhealthy_grace_s=args.unhealthy_grace,
                       stop_timeout_s=args.stop_timeout, restore_data=args.restore_data, update=args.update)
        progress = Progress(quiet=args.json and not args.verbose, prefix="clone: ")
        out = print if not args.json else (lambda *_: None)
        with contextlib.nullcontext() if args.dry_run else agent_lock.holding(inv, args.agents, progress):
            results = _act(args, inv, opts, progress, out)
        _report(results, args.json)
        return exit_codes.OK
    except RolledBack as e:
        _report(e.results, args.json)
        print(f"clone: {e}", file=sys.stderr)
        return e.exit_code
    except CloneError as e:
        print(f"clone: {e}", file=sys.stderr)
        return e.exit_code
    except HostError as e:  # a host tool's failure (qemu-img, ssh-keygen, guestfs) or a phase past its deadline
        wrapped = CloneError(str(e), exit_codes.FAILED)
        print(f"clone: {wrapped}", file=sys.stderr)
        return wrapped.exit_code
    except KeyboardInterrupt:
        print("clone: interrupted; run the same command again to converge", file=sys.stderr)
        return exit_codes.INTERRUPTED


def _act(args: argparse.Namespace, inv, opts: Options, progress: Progress, out) -> list:
    if args.destroy:
        return destroy(inv, args.agents, opts, progress, purge_data=args.purge_data, out=out)
    if args.rollback:
        return rollback(inv, args.agents, opts, progress, out=out)
    if args.backup:
        from deploy.backup import backup
        return backup(inv, args.agents, args.backup, opts, progress, out=out)
    if args.restore:
        from deploy.restore import restore
        return restore(inv, args.agents, args.restore, opts, progress, out=out)
    return clone(inv, args.agents, opts, progress, out=out)


def _report(results, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
        return
    for r in results:
        print(f"{r.agent}: {r.action.value} {r.image_version} - {r.message}")
        if r.ssh and r.action not in (Action.DESTROY, Action.BACKUP) and not r.dry_run:
            print(f"  ssh -p {r.ssh['port']} {r.ssh['user']}@{r.ssh['host']}")
        for line in r.known_hosts:
            print(f"  known_hosts: {line}")
        if r.snapshots and r.action is not Action.BACKUP:
            print(f"  data snapshots: {', '.join(r.snapshots)}")
        if r.backup:
            print(f"  backup: {r.backup}")


if __name__ == "__main__":
    sys.exit(main())
