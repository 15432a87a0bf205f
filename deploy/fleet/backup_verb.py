"""`fleet backup AGENT... --to DIR` and `fleet restore AGENT --from DIR`: clone.py's --backup and --restore run on
the agent's hypervisor, the backup travelling between it and this workstation over the host's SSH connection.

Backup, per host (hosts in parallel): `clone.py --backup` into `<storage_dir>/.agentfleet-backups/` there (0700),
then each backup streams here as tar (hostside backup-send) into `DIR/.partial-<name>`, is verified against its
manifest's sha256s here, renamed to `DIR/<name>`, and the host's copy is removed. Restore: the backup is verified
here, streamed to the agent's host (hostside backup-receive: renamed in when whole), `clone.py --restore` runs there
with the inventory and the agent's secrets on stdin like a clone, and the host's copy is removed in every case.
The placement guard holds: the restore goes to the host the inventory names for the agent."""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Sequence

from deploy.backup_manifest import DIR_MODE, backup_dir, verify
from deploy.errors import CloneError
from deploy.fleet.errors import FleetError
from deploy.fleet.hostside import BACKUPS_DIR, HostStepError, extract_backup, send_backup
from deploy.fleet.remote_clone import call_clone
from deploy.fleet.ssh import SSH_FAILED, Ssh, check_remote, each_host, explain, kill_group, remote_python
from deploy.inventory import Host, Inventory
from deploy.secrets import load_secrets


def _hostside(host: Host, step: str, name: str) -> list[str]:
    return remote_python(host, ["-m", "deploy.fleet.hostside", step, "--storage", str(host.storage_dir),
                                "--name", name], site=False)


def _host_backups(host: Host) -> str:
    return str(host.storage_dir / BACKUPS_DIR)


def _wait(ssh: Ssh, proc, host: Host, what: str, timeout: float) -> bytes:
    """The streaming call's end (its stdin already closed by the caller): its stdout's rest, or one line for ssh's
    failure, the step's, or the timeout (the call is killed then)."""
    timer = threading.Timer(timeout, kill_group, [proc])
    timer.daemon = True
    timer.start()
    try:
        rest = proc.stdout.read()           # the steps' answers are one line; stderr a few: no pipe fills up
        err = proc.stderr.read().decode(errors="replace")
        proc.wait()
    finally:
        timer.cancel()
    if not timer.is_alive() and proc.returncode == -9:
        raise FleetError(f"{host.name}: {what}: no end within {timeout:.0f} s")
    if proc.returncode == SSH_FAILED:
        raise FleetError(explain(host, err, ssh.config.known_hosts))
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise FleetError(f"{host.name}: {what} failed: {tail[0]}")
    return rest or b""


def pull(ssh: Ssh, host: Host, agent: str, name: str, dest: Path, timeout: float) -> Path:
    """One backup from the host into `dest/name`, verified here; nothing is left of a failed pull."""
    partial, final = dest / f".partial-{name}", dest / name
    shutil.rmtree(partial, ignore_errors=True)
    proc = ssh.popen(host, _hostside(host, "backup-send", name))
    proc.stdin.close()
    try:
        try:
            extract_backup(proc.stdout, partial, name)
        except Exception as e:          # a cut or refused stream (tarfile.ReadError, HostStepError, OSError)
            if isinstance(e, HostStepError) or proc.poll() is None:
                kill_group(proc)
            proc.wait()
            err = proc.stderr.read().decode(errors="replace")
            if proc.returncode == SSH_FAILED:
                raise FleetError(explain(host, err, ssh.config.known_hosts)) from None
            tail = (err.strip().splitlines() or [str(e)])[-1]
            raise FleetError(f"{host.name}: pulling backup {name} failed: {tail}") from None
        _wait(ssh, proc, host, f"pulling backup {name}", timeout)
        try:
            verify(partial, agent)
        except CloneError as e:
            raise FleetError(f"{host.name}: pulled backup {name} does not verify here: {e}") from None
        os.rename(partial, final)
    except BaseException:
        kill_group(proc)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def push_backup(ssh: Ssh, host: Host, source: Path, timeout: float) -> str:
    """A local backup dir onto the host, renamed in there when whole; returns its path on the host."""
    proc = ssh.popen(host, _hostside(host, "backup-receive", source.name))
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            send_backup(source, proc.stdin)
        except BaseException as e:    # the host stopped reading: its own error says why
            errors.append(e)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    writer.join(timeout)      # the whole stream first: communicate() would close stdin under the writer
    if writer.is_alive():
        kill_group(proc)
    out = _wait(ssh, proc, host, f"sending backup {source.name}", timeout)
    if errors:
        raise FleetError(f"{host.name}: sending backup {source.name} failed: {errors[0]}")
    try:
        return json.loads(out.decode().strip().splitlines()[-1])["path"]
    except (ValueError, KeyError, IndexError):
        raise FleetError(f"{host.name}: backup-receive answered no path ({out[:80]!r})") from None


def remove_host_copy(ssh: Ssh, host: Host, name: str) -> None:
    done = ssh.run(host, _hostside(host, "backup-remove", name), timeout=120)
    check_remote(done, host, "backup-remove")


def backup_main(args, inv: Inventory, ssh: Ssh) -> int:
    names = list(dict.fromkeys(args.agents))
    by_host: dict[str, list[str]] = {}
    for agent in (inv.agent(n) for n in names):
        by_host.setdefault(agent.host, []).append(agent.name)
    hosts = [inv.hosts[h] for h in by_host]
    dest = Path(args.to)
    if not args.dry_run:
        dest.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def one_host(host: Host) -> list[dict]:
        clone_args = ["deploy/clone.py", "--inventory", "-", "--backup", _host_backups(host), *by_host[host.name],
                      "--dry-run" if args.dry_run else "--json"]
        done = call_clone(ssh, inv, host, by_host[host.name], clone_args, None, args.timeout)
        check_remote(done, host, "clone.py --backup")
        if args.dry_run:
            return [{"host": host.name, "dry_run": done.stdout.decode(errors="replace")}]
        rows = []
        for r in json.loads(done.stdout or b"[]"):
            name = Path(r["backup"]).name
            try:
                local = pull(ssh, host, r["agent"], name, dest, args.timeout)
            finally:
                remove_host_copy(ssh, host, name)
            rows.append({**r, "host": host.name, "backup": str(local)})
            print(f"fleet: {host.name}: {r['agent']}: backup {name} pulled into {dest}", file=sys.stderr)
        return rows

    outcomes = each_host(hosts, one_host)
    return _report([o.value or [] for o in outcomes.values()], [o.error for o in outcomes.values() if o.error],
                   args)


def restore_main(args, inv: Inventory, ssh: Ssh) -> int:
    if len(set(args.agents)) != 1:
        raise FleetError("restore brings back one agent: name exactly one (the one the backup is of)")
    agent = inv.agent(args.agents[0])
    host = inv.hosts[agent.host]
    try:
        source = backup_dir(Path(args.source), agent.name)
        manifest = verify(source, agent.name)        # a damaged copy never leaves this workstation
    except CloneError as e:
        raise FleetError(str(e)) from None
    if args.dry_run:
        size = sum(f.size for f in manifest.files)
        print(f"=== host {host.name}: {agent.name}\nwould send {source} ({size / 2**20:.0f} MiB, verified here) to "
              f"{_host_backups(host)}/{source.name}, then clone.py --restore there (image "
              f"{args.image or manifest.image_version}), then remove the host's copy")
        return 0
    secrets = load_secrets(inv.secrets, [agent.name])
    host_path = push_backup(ssh, host, source, args.timeout)
    try:
        clone_args = ["deploy/clone.py", "--inventory", "-", "--restore", host_path, agent.name, "--json"]
        if args.image:
            clone_args += ["--image", args.image]
        for option in ("stop_timeout", "health_timeout", "unhealthy_grace"):
            if getattr(args, option, None) is not None:
                clone_args += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        done = call_clone(ssh, inv, host, [agent.name], clone_args, secrets, args.timeout)
        check_remote(done, host, "clone.py --restore")
        rows = [{**r, "host": host.name, "backup": str(source)} for r in json.loads(done.stdout or b"[]")]
    finally:
        remove_host_copy(ssh, host, source.name)
    return _report([rows], [], args)


def _report(per_host: Sequence[list[dict]], errors: list[str], args) -> int:
    rows = [r for rs in per_host for r in rs]
    if args.json:
        print(json.dumps({"results": rows, "errors": errors}, indent=2))
    else:
        for r in rows:
            if "dry_run" in r:
                print(f"=== host {r['host']}\n{r['dry_run'].rstrip()}")
            else:
                print(f"{r['agent']} on {r['host']}: {r['action']} {r['image_version']} - {r['message']}")
                print(f"  backup: {r['backup']}")
    for e in errors:
        print(f"fleet: {e}", file=sys.stderr)
    return 2 if errors else 0
