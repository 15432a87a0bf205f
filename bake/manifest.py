"""The image's manifest (/etc/agentfleet/image.json): versions, package lists and the file-hash baseline.

Computed on the host by streaming the finished tree's tar once, so no tool needs to run inside the chroot for it.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

# Files the image manages: drift in these is reported by agentd.
MANAGED_PREFIXES = ("etc/", "usr/local/bin/", "opt/agentd/", "opt/node")
# Files under those prefixes that legitimately differ per VM or change at run time; the clone owns some of them
# (and records its own baseline in /etc/agentfleet/injected.json).
UNMANAGED = ("etc/machine-id", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "etc/ld.so.cache",
             "etc/.pwd.lock", "etc/fstab", "etc/agentfleet/", "etc/netplan/", "etc/ssh/ssh_host_",
             "etc/systemd/network/", "etc/udev/rules.d/70-persistent")
SCHEMA_MEMBER = "opt/openclaw/config-schema.json"
NPM_LOCK_MEMBER = "opt/openclaw/package-lock.json"


def managed(name: str) -> bool:
    return name.startswith(MANAGED_PREFIXES) and not name.startswith(UNMANAGED)


class _HashingReader:
    """Hashes what tarfile copies through it, so one read both hashes a file and rewrites it."""

    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        block = self.f.read(n)
        self.h.update(block)
        return block


def scan_tree_tar(tar_path: Path, schema_out: Path, numeric_out: Path) -> dict:
    """One pass over the tree: baseline of managed files, dpkg and npm versions, OpenClaw's exported schema.

    It also rewrites the tar with owner names dropped (numbers only): libguestfs 1.48's tar_in has no
    --numeric-owner, and the appliance's /etc/passwd (the host's) maps names like messagebus to other uids.
    """
    baseline: dict[str, dict] = {}
    dpkg: dict[str, str] = {}
    npm: dict[str, str] = {}
    found_schema = False
    with tarfile.open(tar_path, "r|*") as tf, tarfile.open(numeric_out, "w", format=tarfile.PAX_FORMAT) as out:
        for m in tf:
            owner = f"{m.uname or m.uid}:{m.gname or m.gid}"
            m.uname = m.gname = ""
            m.pax_headers.pop("uname", None)
            m.pax_headers.pop("gname", None)
            name = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
            if name in ("var/lib/dpkg/status", NPM_LOCK_MEMBER, SCHEMA_MEMBER):
                data = tf.extractfile(m).read()
                if name == SCHEMA_MEMBER:
                    schema_out.write_bytes(data)
                    found_schema = True
                elif name == NPM_LOCK_MEMBER:
                    npm = parse_package_lock(data.decode())
                else:
                    dpkg = parse_dpkg_status(data.decode())
                reader = _HashingReader(io.BytesIO(data))
            elif m.isfile():
                reader = _HashingReader(tf.extractfile(m))
            else:
                reader = None
            out.addfile(m, reader)
            if not managed(name) or not (m.isfile() or m.issym()):
                continue
            sha = reader.h.hexdigest() if m.isfile() else hashlib.sha256(f"symlink:{m.linkname}".encode()).hexdigest()
            baseline["/" + name] = {"sha256": sha, "mode": f"{m.mode & 0o7777:04o}", "owner": owner}
    return {"baseline": baseline, "packages": {"dpkg": dpkg, "npm": npm}, "schema_found": found_schema}


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages (name -> version) from /var/lib/dpkg/status."""
    packages = {}
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            name = fields["Package"] + (f":{arch}" if arch not in ("", "all", "amd64") else "")
            packages[name] = fields.get("Version", "")
    return packages


def parse_package_lock(text: str) -> dict[str, str]:
    packages = json.loads(text).get("packages", {})
    return {k.rsplit("node_modules/", 1)[-1]: v.get("version", "") for k, v in packages.items()
            if k.startswith("node_modules/") and "/node_modules/" not in k}


def image_json(name: str, version: str, inputs: dict[str, str], base_key: str, scanned: dict,
               pins: dict[str, str]) -> dict:
    return {
        "name": name,
        "version": version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pins": pins,
        "inputs": inputs,
        "base_key": base_key,
        "packages": scanned["packages"],
        "baseline": scanned["baseline"],
    }
