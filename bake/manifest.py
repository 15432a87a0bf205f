"""The image's manifest (/etc/agentfleet/image.json): versions, package lists and the file-hash baseline.

Computed on the host from the unpacked tree, so no tool needs to run inside the chroot for it.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

from agentd import vm_files

# Files the image manages: drift in these is reported by agentd.
MANAGED_PREFIXES = ("etc/", "usr/local/bin/", "opt/agentd/", "opt/node")
# Files under those prefixes that legitimately differ per VM or change at run time; the clone owns some of them
# (and records its own baseline in /etc/agentfleet/injected.json).
UNMANAGED_FILES = {"etc/machine-id", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "etc/ld.so.cache",
                   "etc/.pwd.lock", "etc/fstab", *(p.lstrip("/") for p in (vm_files.IMAGE_JSON, *vm_files.CLONE_OWNED))}
UNMANAGED_PREFIXES = ("etc/netplan/", "etc/ssh/ssh_host_", "etc/systemd/network/", "etc/udev/rules.d/70-persistent")
WALKED = ("etc", "opt", "usr/local/bin")  # the dirs that hold every managed prefix
SCHEMA_FILE = "opt/openclaw/config-schema.json"
NPM_LOCK_FILES = "opt/*/package-lock.json"   # each npm tree the image installs (OpenClaw's, aws-cdk's) keeps its lock


def managed(name: str) -> bool:
    return (name.startswith(MANAGED_PREFIXES) and name not in UNMANAGED_FILES
            and not name.startswith(UNMANAGED_PREFIXES))


def scan_tree(root: Path) -> dict:
    """Baseline of managed files (sha256, mode, owner by the image's own names), dpkg and npm versions."""
    dpkg_status = root / "var" / "lib" / "dpkg" / "status"
    npm = {}
    for npm_lock in sorted(root.glob(NPM_LOCK_FILES)):
        npm |= parse_package_lock(npm_lock.read_text())
    return {
        "baseline": scan_baseline(root),
        "openclaw_plugins": baked_plugins(root),
        "packages": {
            "dpkg": parse_dpkg_status(dpkg_status.read_text()) if dpkg_status.exists() else {},
            "npm": npm,
        },
    }


def scan_baseline(root: Path) -> dict[str, dict]:
    """The managed files under `root` (which needs only WALKED and etc/passwd, etc/group): in-VM path -> FileState."""
    users = _names(root / "etc" / "passwd")
    groups = _names(root / "etc" / "group")
    baseline: dict[str, dict] = {}
    for top in WALKED:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames.sort()
            # a symlink to a directory is a file for drift (agentd hashes its target), and os.walk lists it as a dir
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in sorted(filenames + links):
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if not managed(rel):
                    continue
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    sha = vm_files.symlink_sha256(os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    sha = _sha256(path)
                else:
                    continue
                owner = f"{users.get(st.st_uid, st.st_uid)}:{groups.get(st.st_gid, st.st_gid)}"
                baseline["/" + rel] = vm_files.FileState.of(sha, st.st_mode, owner).to_json()
    return baseline


def baked_plugins(root: Path) -> list[str]:
    """The in-VM dirs of the OpenClaw plugins baked into the tree: what the clone names in `plugins.load.paths`."""
    plugins = root / vm_files.OPENCLAW_PLUGINS_DIR.lstrip("/")
    if not plugins.is_dir():
        return []
    return sorted(f"{vm_files.OPENCLAW_PLUGINS_DIR}/{entry.name}" for entry in plugins.iterdir())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _names(path: Path) -> dict[int, str]:
    """uid/gid -> name from the image's own passwd/group (the host's would name them wrongly)."""
    names = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit():
                names.setdefault(int(parts[2]), parts[0])
    return names


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
               pins: dict[str, str], services: tuple[str, ...], base: dict[str, str],
               toolchains: dict[str, str]) -> dict:
    """`base`: the base stage's archive refresh token and when its tree was built (`bake list` shows its age)."""
    return {
        "name": name,
        "version": version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pins": pins,
        "services": list(services),
        "toolchains": toolchains,
        "inputs": inputs,
        "base_key": base_key,
        "base": base,
        "packages": scanned["packages"],
        "baseline": scanned["baseline"],
        "openclaw_plugins": scanned["openclaw_plugins"],
    }
