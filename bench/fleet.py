#!/usr/bin/env python3
"""Fleet benchmark: `fleet push` of an image to three loopback sshd "hypervisors" against, in the same run, the raw
pipe (the same bytes through `ssh HOST 'cat > /dev/null'` to the same three hosts in parallel) and the usual way
(`scp` then `sha256sum` on the host, host after host); a push killed at 50 % then resumed; `fleet status` of 40
agents on 5 hosts; a bump of a layered image pushed to a host that holds the previous version (synthetic layers:
a base layer of random bytes, app layers of --bump-mb written on it, made with qemu-img, no bake).

Goals: push at most 1.2x the raw pipe; at least 2x faster than the usual way; the resumed push moves at most 55 %
of the bytes; status of 40 agents on 5 hosts under 2 s; a bump on the same base sends at most 15 % of the image.
Uses the newest published image in build/images (or --image), else random bytes of the baked image's size (ssh does
not compress, so the bytes' content does not matter); the layered images' base is that size too. Every SSH call
uses the tool's options (same cipher, same keys). Prints figures; not a test.

    .venv/bin/python bench/fleet.py [--image PATH.qcow2] [--size-mb 915] [--bump-mb 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bake import publish as bake_publish  # noqa: E402
from deploy.fleet.ssh import Ssh, SshConfig  # noqa: E402
from deploy.inventory import load  # noqa: E402
from tests.clone_support import JsonStub, publish  # noqa: E402
from tests.fleet_support import PYTHON, running_lab  # noqa: E402
from tests.layered_support import make_app_layer, make_base_layer  # noqa: E402

HOSTS = ("b1", "b2", "b3")
# What a verified push must do at least: the bytes into a file on the host, hashed, and on disk before publishing.
FLOOR = "tee {dir}/floor.part | openssl dgst -sha256 > /dev/null && sync -f {dir}/floor.part && rm {dir}/floor.part"
UPLINK_BPS = 117e6     # a workstation's 1 GbE link, shared by the three hosts' streams


def image_source(args, work: Path) -> Path:
    """A published image dir holding one version: the real image (linked) or random bytes of its size."""
    images = work / "ws-images"
    if args.image:
        src = Path(args.image)
    else:
        found = sorted((ROOT / "build" / "images").glob("agent-*.manifest.json"), key=lambda p: p.stat().st_mtime)
        src = found[-1].with_name(found[-1].name.replace(".manifest.json", ".qcow2")) if found else None
    if src is not None:
        images.mkdir(parents=True)
        for suffix in (".qcow2", ".manifest.json", ".openclaw-schema.json"):
            f = src.with_name(src.name.replace(".qcow2", suffix))
            if f.exists():
                os.symlink(f, images / f.name)
        print(f"image: {src} ({src.stat().st_size / 1e6:.0f} MB)")
        return images
    raw = work / "random.qcow2"
    with open(raw, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    publish(raw, images, "bench", schema={"type": "object"})
    raw.unlink()
    print(f"image: random bytes, {args.size_mb} MiB (no baked image in build/images)")
    return images


def qcow2_of(images: Path) -> Path:
    return next(p for p in images.glob("agent-*.qcow2"))


def clear_hosts(lab) -> None:
    for h in lab.hosts.values():
        for p in h.images.iterdir():
            p.unlink()


def fleet(lab, *args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "deploy.fleet", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **lab.env})
    elapsed = time.monotonic() - started
    if check and proc.returncode not in (0, 1):
        sys.exit(f"bench: fleet {args[0]} failed: {proc.stderr.strip()[-500:]}")
    return elapsed, proc


def raw_pipe(lab, ssh: Ssh, inv, path: Path, remote: str = "cat > /dev/null", limit_bps: float = 0) -> float:
    """The same bytes through `ssh HOST REMOTE`, three hosts in parallel, same options and masters; paced like the
    push's --limit-mbps when limit_bps is set."""
    def one(name: str) -> None:
        proc = ssh.popen(inv.hosts[name], ["sh", "-c", remote.format(dir=lab.hosts[name].images)])
        sent, started = 0, time.monotonic()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                proc.stdin.write(chunk)
                sent += len(chunk)
                if limit_bps and (ahead := sent / limit_bps - (time.monotonic() - started)) > 0:
                    time.sleep(ahead)
        proc.stdin.close()
        proc.wait()
    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(n,)) for n in HOSTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def usual_way(lab, ssh: Ssh, inv, path: Path) -> float:
    """scp then sha256sum on the host, host after host (what a person does by hand)."""
    started = time.monotonic()
    for name in HOSTS:
        host = inv.hosts[name]
        base = ssh.base_argv(host)
        opts = [a for a in base[1:-5]]                                   # the -o options, without -p/-l/address
        dest = f"{host.ssh.user}@{host.ssh.address}:{lab.hosts[name].images}/{path.name}"
        subprocess.run(["scp", "-q", *opts, "-P", str(host.ssh.port), str(path), dest], check=True)
        ssh.run(host, ["sha256sum", f"{lab.hosts[name].images}/{path.name}"], timeout=600)
    return time.monotonic() - started


def killed_then_resumed(lab, path: Path) -> list[tuple[str, float, float]]:
    """Kill the push (tool and its ssh processes) when the first host holds half the image; resume; the share of
    the image each host then received."""
    size = path.stat().st_size
    proc = subprocess.Popen([PYTHON, "-m", "deploy.fleet", "push", "--json"], cwd=ROOT, env={**os.environ, **lab.env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = [h.images / f".{path.name}.part" for h in lab.hosts.values()]
    while proc.poll() is None and max((p.stat().st_size if p.exists() else 0) for p in parts) < size // 2:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    held = {h: (p.stat().st_size if p.exists() else 0) / size for h, p in zip(HOSTS, parts)}
    _, done = fleet(lab, "push", "--json")
    sent = {r["host"]: r["bytes_sent"] / size for r in json.loads(done.stdout)["hosts"]}
    return [(h, held[h], sent[h]) for h in HOSTS]


def bump_share(lab, work: Path, base_mb: int, bump_mb: int) -> tuple[int, int]:
    """Two layered versions on one base pushed to the first host, one after the other: the bytes the second push
    sent, and the whole image's (every layer and the schema), what a flat push of it would send."""
    build, images = work / "layered-build", work / "layered-images"
    build.mkdir()
    base = make_base_layer(build / "agent-base-bench.qcow2", base_mb)
    for version, pattern in (("bench-l1", 0x5A), ("bench-l2", 0x3C)):
        publish(make_app_layer(base, build / f"app-{version}.qcow2", pattern, bump_mb), images, version,
                schema={"type": "object"}, base_layer=base)
    shutil.rmtree(build)
    lab.overlay({}, images_dir=str(images))
    fleet(lab, "push", "bench-l1", f"--host={HOSTS[0]}")
    _, proc = fleet(lab, "push", "bench-l2", "--json", f"--host={HOSTS[0]}")
    sent = json.loads(proc.stdout)["hosts"][0]["bytes_sent"]
    bumped = bake_publish.find(images, "agent", "bench-l2")
    return sent, sum(f.size for _, f in bumped.chain) + bumped.schema_path.stat().st_size


class FleetCollector(JsonStub):
    def __init__(self, agents: list[str]):
        self.rows = [{"agent": a, "healthy": True, "image_version": "bench", "drift_count": 0,
                      "last_seen": time.time()} for a in agents]
        super().__init__()

    def answer(self, path: str):
        return (200, self.rows) if path.rstrip("/") == "/api/v1/agents" else (404, {})


def status_40(work: Path) -> tuple[float, float]:
    names = ("s1", "s2", "s3", "s4", "s5")
    with running_lab(work / "status", names, 200) as lab:
        agents = {}
        for i in range(40):
            host = names[i % 5]
            agents[f"agent{i:02d}"] = {"host": host, "ip": f"10.220.1.{100 + i}", "vcpu": 1, "ram_gb": 1,
                                       "disk_gb": 1, "role": "bench"}
            d = lab.hosts[host].state / f"agent{i:02d}"
            d.mkdir(parents=True)
            (d / "state.json").write_text(json.dumps({"current": {"image_version": "bench", "root_disk": "x"}}))
        collector = FleetCollector(list(agents))
        try:
            lab.overlay(agents, services={"collector_api_url": f"http://127.0.0.1:{collector.port}"})
            fleet(lab, "trust", *names)
            cold, proc = fleet(lab, "status", "--json")
            rows = json.loads(proc.stdout)["agents"]
            assert len(rows) == 40 and not json.loads(proc.stdout)["host_errors"], proc.stdout[-500:]
            warm, _ = fleet(lab, "status", "--json")
        finally:
            collector.close()
    return cold, warm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", help="a published .qcow2 (its manifest beside it)")
    p.add_argument("--size-mb", type=int, default=915, help="random image size without a baked image (MiB)")
    p.add_argument("--bump-mb", type=int, default=8, help="what the synthetic bump's app layer writes (MiB)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/var/tmp"))
    try:
        images = image_source(args, work)
        path = qcow2_of(images)
        size_mb = path.stat().st_size / 1e6
        total = 3 * size_mb
        print(f"three hosts, {size_mb:.0f} MB each ({total:.0f} MB in all), loopback sshd, {os.cpu_count()} cores",
              flush=True)
        with running_lab(work, HOSTS, 180) as lab:
            lab.overlay({}, images_dir=str(images))
            fleet(lab, "trust", *HOSTS)
            inv = load(Path(lab.env["AGENTFLEET_INVENTORY"]))
            ssh = Ssh(SshConfig(known_hosts=lab.fleet_dir / "known_hosts", control_dir=lab.control_dir,
                                identity=lab.client_key))
            for name in HOSTS:
                ssh.run(inv.hosts[name], ["true"])                         # masters up, like the push's
            pipe = raw_pipe(lab, ssh, inv, path)
            print(f"  raw pipe (ssh cat > /dev/null, parallel) {pipe:7.1f} s  {total / pipe:7.0f} MB/s", flush=True)
            push_s, proc = fleet(lab, "push", "--json")
            results = json.loads(proc.stdout)["hosts"]
            assert all(r["result"] == "pushed" for r in results), proc.stdout
            print(f"  fleet push (verified, published)         {push_s:7.1f} s  {total / push_s:7.0f} MB/s   "
                  f"{push_s / pipe:.2f}x the raw pipe (goal <= 1.2x)", flush=True)
            floor = raw_pipe(lab, ssh, inv, path, FLOOR)
            print(f"  floor (the pipe into a file, sha256, fsync) {floor:7.1f} s  {total / floor:7.0f} MB/s   "
                  f"push {push_s / floor:.2f}x the floor: the rest is the host's disk and hash on these 2 cores",
                  flush=True)
            again_s, _ = fleet(lab, "push", "--json")
            print(f"  push again (every host has it)           {again_s:7.1f} s", flush=True)
            clear_hosts(lab)
            usual = usual_way(lab, ssh, inv, path)
            print(f"  usual way (scp + sha256sum, serial)      {usual:7.1f} s  {total / usual:7.0f} MB/s   "
                  f"push {usual / push_s:.1f}x faster (goal >= 2x)", flush=True)
            clear_hosts(lab)
            lan_pipe = raw_pipe(lab, ssh, inv, path, limit_bps=UPLINK_BPS / 3)
            lan_push, _ = fleet(lab, "push", "--json", "--limit-mbps", f"{UPLINK_BPS / 3 / 1e6:.1f}")
            print(f"  at a 1 GbE uplink (3 x {UPLINK_BPS / 3e6:.0f} MB/s): raw pipe {lan_pipe:.1f} s, push "
                  f"{lan_push:.1f} s, {lan_push / lan_pipe:.2f}x (goal <= 1.2x)", flush=True)
            clear_hosts(lab)
            for host, held, sent in killed_then_resumed(lab, path):
                print(f"  killed at {held:4.0%} on {host}, the resume moved {sent:4.0%} of the image "
                      f"(goal <= 55 % after 50 %)", flush=True)
            clear_hosts(lab)
            sent, whole = bump_share(lab, work, int(size_mb / 1.048576), args.bump_mb)
            print(f"  layered bump to a host holding the previous version: {sent / 1e6:.1f} of {whole / 1e6:.0f} MB, "
                  f"{sent / whole:.1%} of the image (goal <= 15 %)", flush=True)
        cold, warm = status_40(work)
        print(f"  status, 40 agents on 5 hosts             {cold:7.2f} s cold (new SSH masters), {warm:.2f} s warm "
              f"(goal < 2 s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
