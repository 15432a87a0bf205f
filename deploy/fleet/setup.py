"""`fleet setup HOST...`: prepare hypervisors for agentfleet, all at once. Per host: optionally ship this
workstation's agentfleet code (`--code`, into the inventory's `agentfleet` dir), then run the host-side set-up with
the host's own python3 (the step's source travels on standard input, so a fresh host needs nothing of ours):
clone-side packages and a venv (unless --no-packages), the bridge check, the identity file, the images and state
dirs with the modes libvirt's QEMU user needs."""
from __future__ import annotations

import io
import json
import shlex
import sys
import tarfile
from pathlib import Path
from typing import Sequence

from deploy.fleet import hostside
from deploy.fleet.errors import FleetError
from deploy.fleet.ssh import Ssh, check_remote, each_host
from deploy.inventory import Host, Inventory

REPO = Path(__file__).resolve().parent.parent.parent
SHIPPED = (*hostside.CODE_DIRS, "pyproject.toml", "images")


def code_tarball(root: Path = REPO) -> bytes:
    """The code a host runs, without caches: the same files doctor's version hash covers, and the image spec."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in SHIPPED:
            if (root / name).exists():
                tar.add(root / name, arcname=name,
                        filter=lambda t: None if "__pycache__" in t.name or t.name.endswith(".pyc") else t)
    return buf.getvalue()


def ship_code(ssh: Ssh, host: Host, tarball: bytes) -> None:
    """Unpack beside the old tree, then swap: a host never runs half of one version and half of another."""
    af = shlex.quote(host.ssh.agentfleet_dir)
    script = (f"set -e; rm -rf {af}.new; mkdir -p {af}.new; tar -xzf - -C {af}.new; "
              f"if [ -d {af}/.venv ]; then mv {af}/.venv {af}.new/.venv; fi; "
              f"rm -rf {af}.old; if [ -d {af} ]; then mv {af} {af}.old; fi; mv {af}.new {af}; rm -rf {af}.old")
    check_remote(ssh.run(host, ["sh", "-c", script], stdin=tarball, timeout=300), host, "shipping the code")


def setup_host(ssh: Ssh, inv: Inventory, host: Host, args, tarball: bytes) -> dict:
    if tarball:
        ship_code(ssh, host, tarball)
    step = ["python3", "-", "setup", "--name", host.name, "--storage", str(host.storage_dir),
            "--images", str(host.host_images_dir), "--state-dir", str(host.state_dir),
            "--agentfleet", host.ssh.agentfleet_dir]
    if inv.network.mode == "bridge":
        step += ["--bridge", inv.network.bridge]
    if not args.no_packages:
        step.append("--packages")
    if args.rename:
        step.append("--rename")
    source = Path(hostside.__file__).read_bytes()
    done = check_remote(ssh.run(host, step, stdin=source, timeout=1800), host, "setup")
    return json.loads(done.stdout)


def main(args, inv: Inventory, ssh: Ssh, hosts: Sequence[Host]) -> int:
    for h in hosts:
        if h.ssh is None:
            raise FleetError(f"{h.name}: no ssh entry in the inventory")
    tarball = code_tarball() if args.code else b""
    outcomes = each_host(hosts, lambda h: setup_host(ssh, inv, h, args, tarball))
    if args.json:
        print(json.dumps([{"host": o.host, "ok": o.ok, **({"done": o.value["done"]} if o.ok else {"error": o.error})}
                          for o in outcomes.values()], indent=2))
    for o in outcomes.values():
        if o.ok and not args.json:
            print(f"{o.host}: ready for agentfleet" + (f" ({'; '.join(o.value['done'])})" if o.value["done"]
                                                       else " (nothing to change)"))
        elif not o.ok:
            print(f"fleet: {o.error}", file=sys.stderr)
    return 0 if all(o.ok for o in outcomes.values()) else 2
