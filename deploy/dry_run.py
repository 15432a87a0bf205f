"""`clone.py AGENT --dry-run`: the disks, the files injected (secret values masked) and the domain XML of what the
run would do, printed; nothing is written and no hypervisor is asked. For --update, what would change against the
last injection, read from the agent's disks read-only (the VM keeps running)."""
from __future__ import annotations

from dataclasses import replace

from deploy import docker_data
from deploy.action import Action
from deploy.console import console_log
from deploy.context import CloneRun
from deploy.decide import Work
from deploy.domain import domain_xml, spec_for
from deploy.inject import Mkdir, Op, WriteFile, read_injected
from deploy.payload import agent_ops
from deploy.result import Result, existing_host_keys, result_for
from deploy.update_diff import compare, render


def show(run: CloneRun, w: Work) -> Result:
    agent, image, out = w.agent, run.image, run.out
    keys = existing_host_keys(w.state_dir)
    ops = agent_ops(run.inv, agent, image, w.state, run.secrets[agent.name], keys)
    if w.action is Action.UPDATE:
        return _show_update(run, w, ops)
    out(f"== {agent.name} ({w.action.value}, image {image.version}, domain type {run.domain_type})")
    out(f"disk root: {w.root_disk} (qcow2 overlay, backing {image.path})")
    out(f"disk data: {w.data_disk} ({'exists, kept' if w.data_disk.exists() else f'new, {agent.disk_gb:g} GB'}, "
        f"mounted at /home/agent)")
    if w.docker_disk:
        new = f"new, {agent.docker_gb:g} GB"
        out(f"disk docker: {w.docker_disk} ({'exists, kept' if w.docker_disk.exists() else new}, mounted at "
            f"{docker_data.DOCKER_MOUNT})")
        ops += docker_data.mount_ops()
    for line in w.resize.lines() if w.resize else ():
        out(f"resize {line}")
    if not keys:
        out("ssh host keys: generated on first clone (ed25519, ecdsa, rsa)")
    for op in ops:
        if isinstance(op, Mkdir):
            out(f"mkdir {op.path} {op.mode:04o} {op.owner}")
            continue
        out(f"file  {op.path} {op.mode:04o} {op.owner} ({len(op.data())} bytes)")
        out("    <secret, masked>" if op.secret else "\n".join(
            "    " + ln for ln in op.data().decode(errors="replace").splitlines()))
    spec = spec_for(run.inv, agent, uuid=w.state.uuid, mac=w.state.mac, root_disk=w.root_disk, data_disk=w.data_disk,
                    console_log=console_log(w.state_dir), domain_type=run.domain_type, image_version=image.version,
                    docker_disk=w.docker_disk)
    out(domain_xml(spec))
    planned = result_for(run.inv, agent, w.state, run.domain_type, w.action, f"dry run: would {w.action.value}")
    return replace(planned, dry_run=True)


def _show_update(run: CloneRun, w: Work, ops: tuple[Op, ...]) -> Result:
    plain = [op.path for op in ops if isinstance(op, WriteFile) and not op.secret]   # secrets are never read
    baseline, guest = read_injected(w.root_disk, w.data_disk, plain)
    changes = compare(ops, baseline, guest)
    out = run.out
    out(f"== {w.agent.name} (update, image {run.image.version}, root {w.root_disk} kept; the VM would be stopped "
        f"while its disks are written, then started again)")
    for line in render(changes):
        out(line)
    resized = w.resize.lines() if w.resize else []
    for line in resized:
        out(f"resize {line}")
    changed = [c.path for c in changes if c.changes]
    what = f"{len(changed)} file(s)" + (f": {', '.join(changed)}" if changed else "")
    grows = [line for line in resized if "->" in line]
    if grows:
        what += f"; resize: {'; '.join(grows)}"
    planned = result_for(run.inv, w.agent, w.state, run.domain_type, w.action, f"dry run: would update {what}")
    return replace(planned, dry_run=True)
