"""python -m deploy.fleet: drive every hypervisor of the inventory from this workstation over SSH.

  trust HOST...            pin a host's SSH keys (first contact; --replace after a reinstall)
  setup HOST...            prepare a hypervisor: identity file, dirs, bridge check, clone-side packages
  doctor                   is every host ready? (exit 0 ready, 1 not)
  status                   every agent: host, domain, image on disk, collector health, drift, differences
  push [VERSION]           send a published image to every host lacking it (resumable, verified, manifest last)
  clone|replace|rollback|destroy AGENT...   deploy/clone.py on each agent's host, hosts in parallel
  backup AGENT... --to DIR     back agents up while they run; the backups are pulled here over SSH and verified
  restore AGENT --from DIR     send a backup to the agent's host and restore it there (same identity)
  gc [--keep N]            remove images beyond the newest N that no agent on the host uses or names (--dry-run)

Exit codes: 0 done/ready; 1 not ready or not converged (doctor, status); 2 an error (one line per host or agent on
stderr; the other hosts' work completes); 3 a replace that rolled back. docs/fleet.md has the details."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from bake.gc import keep_count
from deploy import inventory as inventory_mod
from deploy.errors import CloneError
from deploy.fleet import doctor as doctor_mod
from deploy.fleet import status as status_mod
from deploy.fleet.errors import FleetError
from deploy.fleet.ssh import Ssh, SshConfig, fingerprints, trust
from deploy.images import find_image
from deploy.inventory import Host, Inventory

log = logging.getLogger("fleet")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--inventory", type=Path,
                        help="inventory YAML (default $AGENTFLEET_INVENTORY or deploy/fleet.yaml)")
    common.add_argument("--overlay", type=Path, action="append", default=[], help="YAML merged over it (repeatable)")
    common.add_argument("--host", action="append", default=[], metavar="HOST", help="only these hosts (repeatable)")
    common.add_argument("--identity", type=Path, help="SSH private key (default $AGENTFLEET_SSH_IDENTITY or yours)")
    common.add_argument("--accept-new", action="store_true", help="pin the key of a host never contacted before")
    common.add_argument("--json", action="store_true", help="print results as JSON")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(prog="python -m deploy.fleet", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("trust", parents=[common], help="pin hosts' SSH keys")
    s.add_argument("hosts", nargs="+", metavar="HOST")
    s.add_argument("--replace", action="store_true", help="replace keys pinned before (after a reinstall)")
    s = sub.add_parser("doctor", parents=[common], help="is every host ready?")
    s.add_argument("--min-free-gb", type=float, default=20, help="free space the storage dir needs (default 20)")
    s = sub.add_parser("status", parents=[common], help="every agent's state across the fleet")
    s.add_argument("--collector", metavar="URL", help="collector API URL (default services.collector_api_url)")
    _add_late_commands(sub, common)
    return p


def _add_late_commands(sub, common) -> None:
    """push, clone/replace/rollback/destroy and setup (their modules import lazily)."""
    s = sub.add_parser("push", parents=[common], help="send a published image to every host lacking it")
    s.add_argument("version", nargs="?", help="image version (default: the newest published here)")
    s.add_argument("--limit-mbps", type=float, default=0, help="cap each host's stream (MB/s; default none)")
    for name, what in (("clone", "clone (or start) agents"),
                       ("replace", "upgrade agents to --image, roll back if unhealthy"),
                       ("update", "re-inject today's config and secrets into running agents (a short stop)"),
                       ("rollback", "go back to the previous image"), ("destroy", "remove agents' VMs")):
        s = sub.add_parser(name, parents=[common], help=what)
        s.add_argument("agents", nargs="+", metavar="AGENT")
        s.add_argument("--image", help="image version on the hosts (default: their newest)")
        s.add_argument("--dry-run", action="store_true", help="print what each host would do; touch nothing")
        s.add_argument("--timeout", type=float, default=3600, help="hard limit per host call (s, default 3600)")
        s.add_argument("--stop-timeout", type=float, metavar="S", help="clone.py's (a guest's shutdown grace)")
        if name == "replace":
            s.add_argument("--health-timeout", type=float, metavar="S", help="clone.py's (wait for a healthy report)")
            s.add_argument("--unhealthy-grace", type=float, metavar="S", help="clone.py's (unhealthy reports allowed)")
        if name == "destroy":
            s.add_argument("--purge-data", action="store_true", help="delete the data disks too")
        if name == "rollback":
            s.add_argument("--restore-data", action="store_true",
                           help="also put /home/agent back as it was before the upgrade (shows the snapshot's age)")
    s = sub.add_parser("backup", parents=[common], help="back agents up while they run, into DIR here")
    s.add_argument("agents", nargs="+", metavar="AGENT")
    s.add_argument("--to", required=True, type=Path, metavar="DIR",
                   help="where the backups go on this workstation (DIR/<agent>-<time>/, 0700)")
    s.add_argument("--dry-run", action="store_true", help="print what each host would copy; touch nothing")
    s.add_argument("--timeout", type=float, default=3600, help="hard limit per host call (s, default 3600)")
    s = sub.add_parser("restore", parents=[common], help="bring an agent back from a backup here, same identity")
    s.add_argument("agents", nargs=1, metavar="AGENT")
    s.add_argument("--from", dest="source", required=True, type=Path, metavar="DIR",
                   help="a backup dir, or a dir of backups (the agent's newest is taken)")
    s.add_argument("--image", help="image version on the host (default: the one the backup names)")
    s.add_argument("--dry-run", action="store_true", help="verify the backup and print the plan; touch nothing")
    s.add_argument("--timeout", type=float, default=3600, help="hard limit per host call (s, default 3600)")
    s.add_argument("--health-timeout", type=float, metavar="S", help="clone.py's (wait for a healthy report)")
    s.add_argument("--unhealthy-grace", type=float, metavar="S", help="clone.py's (unhealthy reports allowed)")
    from deploy import rollout
    s = sub.add_parser("rollout", parents=[common], help="upgrade every agent: canary, then waves gated on health")
    rollout.add_arguments(s, with_json=False)
    s.add_argument("--collector", metavar="URL", help="collector API URL (default services.collector_api_url)")
    s = sub.add_parser("gc", parents=[common], help="remove old images no agent on a host uses, on every host",
                       description="On every host at once: remove published images beyond the newest --keep that "
                       "no agent disk's backing chain there uses and no agent's state there names (current, "
                       "previous, pending), then base layers no kept image needs and stale leftovers (docs/fleet.md).")
    s.add_argument("--keep", type=keep_count, default=3, metavar="N",
                   help="published images kept on each host besides those in use (default 3)")
    s.add_argument("--dry-run", action="store_true", help="print what each host would remove; remove nothing")
    s = sub.add_parser("setup", parents=[common], help="prepare hypervisors for agentfleet")
    s.add_argument("hosts", nargs="+", metavar="HOST")
    s.add_argument("--no-packages", action="store_true", help="no apt-get install of the clone's packages, no venv")
    s.add_argument("--code", action="store_true", help="ship this workstation's agentfleet code to the host first")
    s.add_argument("--rename", action="store_true", help="change a host's identity file written before")


def select_hosts(inv: Inventory, wanted: list[str]) -> list[Host]:
    unknown = [h for h in wanted if h not in inv.hosts]
    if unknown:
        raise FleetError(f"{unknown[0]}: not a host of the inventory ({', '.join(inv.hosts)})")
    return [inv.hosts[h] for h in (wanted or inv.hosts)]


def newest_version(inv: Inventory) -> Optional[str]:
    try:
        return find_image(inv.images_dir).version
    except CloneError:
        return None


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="fleet: %(message)s",
                        stream=sys.stderr)
    try:
        inv = inventory_mod.load(args.inventory, args.overlay)
        ssh = Ssh(SshConfig.default(args.identity, args.accept_new))
        return COMMANDS[args.command](args, inv, ssh)
    except (FleetError, CloneError) as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fleet: interrupted; run the same command again to converge", file=sys.stderr)
        return 130


def cmd_trust(args, inv: Inventory, ssh: Ssh) -> int:
    failed = 0
    for host in select_hosts(inv, args.hosts):
        try:
            lines = trust(ssh.config, host, args.replace)
        except FleetError as e:
            print(f"fleet: {e}", file=sys.stderr)
            failed += 1
            continue
        ssh.close(host)   # a master opened under the old key must not outlive it
        for fp in fingerprints(lines):
            print(f"{host.name}: pinned {fp}")
    return 2 if failed else 0


def cmd_doctor(args, inv: Inventory, ssh: Ssh) -> int:
    reports = doctor_mod.doctor(ssh, select_hosts(inv, args.host), args.min_free_gb, newest_version(inv))
    print(json.dumps([r.to_json() for r in reports], indent=2) if args.json else doctor_mod.render(reports))
    return 0 if all(r.ready for r in reports) else 1


def cmd_status(args, inv: Inventory, ssh: Ssh) -> int:
    st = status_mod.status(ssh, inv, select_hosts(inv, args.host), args.collector or inv.services.collector_api_url)
    print(json.dumps(st.to_json(), indent=2) if args.json else status_mod.render(st))
    return 0 if st.converged else 1


def cmd_push(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import push
    return push.main(args, inv, ssh, select_hosts(inv, args.host))


def cmd_remote_clone(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import remote_clone
    return remote_clone.main(args, inv, ssh)


def cmd_backup(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import backup_verb
    return backup_verb.backup_main(args, inv, ssh)


def cmd_restore(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import backup_verb
    return backup_verb.restore_main(args, inv, ssh)


def cmd_rollout(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import rollout_verb
    return rollout_verb.main(args, inv, ssh)


def cmd_gc(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import gc_verb
    return gc_verb.main(args, inv, ssh, select_hosts(inv, args.host))


def cmd_setup(args, inv: Inventory, ssh: Ssh) -> int:
    from deploy.fleet import setup
    return setup.main(args, inv, ssh, select_hosts(inv, args.hosts))


COMMANDS = {"trust": cmd_trust, "doctor": cmd_doctor, "status": cmd_status, "push": cmd_push,
            "clone": cmd_remote_clone, "replace": cmd_remote_clone, "update": cmd_remote_clone,
            "rollback": cmd_remote_clone, "destroy": cmd_remote_clone, "rollout": cmd_rollout, "setup": cmd_setup,
            "backup": cmd_backup, "restore": cmd_restore, "gc": cmd_gc}
