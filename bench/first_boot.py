#!/usr/bin/env python3
"""First-boot benchmark: clone one agent from each published image named, boot it, and time clone + boot to its
first healthy report at a real collector, with OpenClaw's Mattermost channel logging in to a stand-in.

Issue 15 moved the Mattermost plugin's install from the first boot into the bake; naming an image from before
and one from after measures both in the same run (one VM at a time, so they do not share the CPU). Per image it
also prints, from the guest's journal, when the plugin step and the gateway started and when the gateway
listened, and whether OpenClaw trusted the channel (its websocket asked for, no "trusted plugins" refusal).
The same machinery as the e2e (QEMU user networking with restrict=on, loopback collector and stand-in). Prints
figures; not a test. Each VM and its disks are destroyed after its measurement.

    .venv/bin/python bench/first_boot.py [--image VERSION ...] [--deadline 1800]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bake import publish as bake_publish  # noqa: E402
from deploy import inventory  # noqa: E402
from tests.clone_support import (  # noqa: E402
    MattermostStandIn,
    clone_cli,
    ensure_libvirtd,
    libvirt_workdir,
    world_traversable,
    write_overlay,
    write_secrets,
)
from tests.collector_server import SECRET, free_port, start_collector  # noqa: E402

JOURNAL = ("sudo journalctl -b --no-pager -o short-monotonic -u openclaw-plugins -u openclaw-gateway "
           "| grep -E 'Start|seed|install|listening|catalog|connected as|websocket|trusted plugins' | head -24")


def agent_state(collector, agent: str) -> dict:
    status, body = collector.get(f"/api/v1/agents/{agent}")
    return body if status == 200 else {}


def wait_for(predicate, deadline_s: float, interval: float = 3.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if (found := predicate()):
            return found
        time.sleep(interval)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", action="append", help="published version (repeatable; default: the newest)")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds to wait for the first healthy report")
    args = parser.parse_args()
    images_dir = ROOT / "build" / "images"
    versions = args.image or [bake_publish.newest(images_dir, "agent").version]
    agents = tuple(f"firstboot{i}" for i in range(len(versions)))

    ensure_libvirtd()
    world_traversable(images_dir)
    work = libvirt_workdir("firstboot-")
    mattermost = MattermostStandIn()
    for agent in agents:
        mattermost.add_user(agent, bot_token=f"mm-{agent}-bench", channels=["town-square"])
    collector = start_collector(work / "collector", "--interval-s", "5")
    key = work / "admin_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    secrets = write_secrets(work / "secrets.yaml", agents, canary="bench", collector_secret=SECRET.decode())
    ssh_base = free_port()
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=images_dir, secrets_file=secrets,
                            collector_port=int(collector.url.rsplit(":", 1)[1]), ssh_port_base=ssh_base,
                            agents=agents, admin_key=key.with_suffix(".pub").read_text().strip(), ram_gb=2)
    overlay.write_text(overlay.read_text().replace(
        "services:\n", f"services:\n  mattermost_url: http://10.0.2.100:{mattermost.port}\n"))

    inv = inventory.load(None, [overlay])

    def ssh(agent: str, command: str) -> str:
        out = subprocess.run(["ssh", "-i", str(key), "-p", str(inv.agent(agent).ssh_port),
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                              "agent@127.0.0.1", command], capture_output=True, text=True, timeout=180)
        return out.stdout.strip() if out.returncode == 0 else f"(ssh failed: {out.stderr.strip()[-200:]})"

    figures = []
    try:
        for agent, version in zip(agents, versions):
            print(f"== {agent} on image {version}", flush=True)
            t0, seen = time.monotonic(), len(mattermost.requests)
            out = clone_cli(agent, "--image", version, "--overlay", str(overlay))
            if out.returncode != 0:
                sys.exit(f"bench: clone of {agent} failed: {out.stderr.strip()[-500:]}")
            cloned = time.monotonic() - t0
            healthy = wait_for(lambda agent=agent, version=version: (
                (s := agent_state(collector, agent)).get("image_version") == version and s.get("healthy")),
                args.deadline)
            to_healthy = time.monotonic() - t0
            logged_in = bool(wait_for(lambda agent=agent: mattermost.logged_in(f"mm-{agent}-bench"), 300, 2))
            # a trusted channel asks for its websocket after logging in; one OpenClaw refuses exits before that
            websocket = bool(wait_for(lambda seen=seen: any(
                path == "/api/v4/websocket" for path, _ in mattermost.requests[seen:]), 120, 2))
            journal = ssh(agent, JOURNAL)
            trusted = websocket and "trusted plugins" not in journal
            print(f"   clone {cloned:.0f} s; first healthy report {to_healthy:.0f} s after the clone began"
                  f"{'' if healthy else ' (NOT HEALTHY: deadline passed)'}; Mattermost login "
                  f"{'yes' if logged_in else 'no'}; channel trusted {'yes' if trusted else 'no'}", flush=True)
            print("   guest journal (seconds since boot):\n" + "\n".join("     " + ln for ln in journal.splitlines()),
                  flush=True)
            figures.append((version, to_healthy if healthy else float("nan"), logged_in, trusted))
            clone_cli(agent, "--overlay", str(overlay), "--destroy", "--purge-data", timeout=300)
    finally:
        print("\n== clone + boot to first healthy report")
        for version, seconds, logged_in, trusted in figures:
            print(f"  {version}  {seconds:7.0f} s   mattermost login {logged_in}, trusted {trusted}")
        for agent in agents:
            clone_cli(agent, "--overlay", str(overlay), "--destroy", "--purge-data", timeout=300)
        collector.stop()
        mattermost.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
