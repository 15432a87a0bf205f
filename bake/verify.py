"""Offline verification of a candidate image before it may be published: right OS, right pins, no identity.

Runs on a throwaway overlay, so the candidate itself is never written. Returns problems; publishing refuses any.
"""
from __future__ import annotations

import json
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from agentd import vm_files
from bake import manifest
from bake.spec import PLUGIN
from host.appliance import Drive, appliance
from host.run import run

AGENTD_WANTS = "/etc/systemd/system/multi-user.target.wants/agentd.service"
UFW_WANTS = "/etc/systemd/system/multi-user.target.wants/ufw.service"
UFW_CONF = "/etc/ufw/ufw.conf"
UFW_DEFAULTS = "/etc/default/ufw"
PLUGINS_ENV = "/opt/openclaw/plugins.env"
PLUGINS_DIR = vm_files.OPENCLAW_PLUGINS_DIR
PLUGIN_STATE = "/opt/openclaw/plugin-state"
STATE_TEMPLATE = f"{PLUGIN_STATE}/state/openclaw.sqlite"
STATE_SEED = "/usr/local/libexec/agentfleet/openclaw-state-seed"
PER_INSTALL = (f"{PLUGIN_STATE}/openclaw.json", f"{PLUGIN_STATE}/config-journal-fingerprint.key")
SECRET_PATTERN = r"BEGIN [A-Z ]*PRIVATE KEY|sk-ant-[A-Za-z0-9]|xox[bp]-[0-9]"
SECRET_FILES = (*vm_files.CLONE_OWNED, "/home/agent/.openclaw/.env",
                "/home/agent/.openclaw/openclaw.json", "/root/.ssh/authorized_keys", "/home/agent/.ssh/authorized_keys")
# What `sshd -T` must say in the image (agent-base's 10-agentfleet.conf): keys only, no root, and local forwards only,
# which VS Code's Remote-SSH needs (docs/vscode.md); no agent forwarding into a VM whose agent runs as the login user.
SSHD_SETTINGS = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no", "permitrootlogin": "no",
                 "permitemptypasswords": "no", "x11forwarding": "no", "allowtcpforwarding": "local",
                 "allowstreamlocalforwarding": "local", "allowagentforwarding": "no", "disableforwarding": "no"}
# sshd -T needs a host key, which the golden image must not have: a throwaway one in the throwaway overlay's /tmp.
SSHD_T = ('k=$(mktemp -d) && ssh-keygen -q -t ed25519 -N "" -f "$k/key" && mkdir -p /run/sshd && '
          '/usr/sbin/sshd -T -f /etc/ssh/sshd_config -h "$k/key" -C user=agent,host=workstation,addr=10.0.0.1 2>&1; '
          'echo "(exit status $?)"; rm -rf "$k"')

# Every Python the spec promises (python3, python3.12) must make venvs with pip, speak TLS and have sqlite3.
PYTHON = re.compile(r"^python3(\.\d+)?$")
PYTHON_MODULES = "ssl, venv, sqlite3, ensurepip"
HISTORY_FILES = ("/root/.bash_history", "/home/agent/.bash_history", "/root/.python_history",
                 "/home/agent/.python_history", "/root/.lesshst", "/root/.viminfo")


@dataclass(frozen=True)
class Readback:
    """What verify reads back through a layered image's chain to compare with its manifest's `baseline`. `under`:
    the baseline of the image a stacked layer sits on (verified when that one was baked); `written`: the tree names
    the top layer wrote or removed (tree_diff). Given both, only the managed dirs the layer wrote into are read back
    (with /etc, whose passwd and group name the owners), and every other managed file must be recorded exactly as
    under it: the chain shows the guest those unchanged. Without `under`, every managed file is read back."""
    baseline: dict
    under: Optional[dict] = None
    written: frozenset = frozenset()

    def touches(self, top: str) -> bool:
        return top == "etc" or any(n in (".", top) or n.startswith(f"{top}/") or top.startswith(f"{n}/")
                                   for n in self.written)


def verify_image(qcow2: Path, pins: dict[str, str], scratch: Path, log: Optional[TextIO] = None,
                 toolchains: Optional[dict[str, str]] = None, baseline: Optional[dict] = None,
                 readback: Optional[Readback] = None) -> list[str]:
    """`pins` as the manifest records them (bake/spec.py's Spec.pins): Node, OpenClaw and its plugins are checked
    when pinned; an image without them (the small test image) must still boot agentd and be identity-free.
    `toolchains`: command -> the version prefix it must report (the spec's `toolchains`).
    `baseline`: the manifest's, for a layered image: its managed files as the guest sees them through the chain must
    be exactly those (a flat image's disk is made from the very tree its baseline was scanned from). `readback`: the
    same for a bake's new layer, reading back only what it wrote when it is stacked on a verified image."""
    if baseline is not None and readback is None:
        readback = Readback(baseline)
    plugins = tuple(f"{name}@{version}" for name, version in sorted(pins.items()) if PLUGIN.match(name))
    overlay = scratch / "verify-overlay.qcow2"
    overlay.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(qcow2.resolve()), str(overlay)], log=log)
    problems: list[str] = []
    try:
        with appliance([Drive(overlay)], memsize_mb=2048) as g:
            roots = g.inspect_os()
            if len(roots) != 1:
                return [f"inspection found {len(roots)} operating systems"]
            root = roots[0]
            distro = g.inspect_get_distro(root)
            release = f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root):02d}"
            if (distro, release) != ("ubuntu", "22.04"):
                problems.append(f"inspection says {distro} {release}, not ubuntu 22.04")
            g.mount(root, "/")
            if readback is not None:   # first: the other checks run the image's commands, which may write
                problems += readback_problems(g, scratch, readback)
            if "node" in pins:
                problems += _check_versions(g, pins["node"], pins.get("openclaw"))
            problems += _check_plugins(g, plugins)
            problems += check_toolchains(g, toolchains or {})
            if not g.is_symlink(AGENTD_WANTS):
                problems.append(f"agentd.service is not enabled ({AGENTD_WANTS} missing)")
            problems += _check_agentd_command(g)
            problems += firewall_problems(g)
            problems += identity_problems(g)
            problems += _check_sshd(g)
    finally:
        overlay.unlink(missing_ok=True)
    if log:
        log.write("verify: " + ("; ".join(problems) if problems else "all checks passed") + "\n")
    return problems


def scan_image(qcow2: Path, scratch: Path) -> dict[str, dict]:
    """The managed files of an image (a chain: its top layer) as its guest sees them, as bake/manifest.py records
    them: what a flat and a layered bake of the same inputs must agree on."""
    with appliance([Drive(qcow2, readonly=True)]) as g:
        g.mount_ro(g.inspect_os()[0], "/")
        return guest_baseline(g, scratch)


def readback_problems(g, scratch: Path, readback: Readback) -> list[str]:
    if readback.under is None:
        return baseline_problems(guest_baseline(g, scratch), readback.baseline)
    tops = [top for top in managed_tops(g) if readback.touches(top)]

    def read_back(path: str) -> bool:
        return any(path.startswith(f"/{top}/") or path == f"/{top}" for top in tops)
    problems = baseline_problems(guest_baseline(g, scratch, tops),
                                 {p: s for p, s in readback.baseline.items() if read_back(p)})
    now = {p: s for p, s in readback.baseline.items() if not read_back(p)}
    before = {p: s for p, s in readback.under.items() if not read_back(p)}
    differ = sorted(p for p in set(now) | set(before) if now.get(p) != before.get(p))
    if differ:
        problems.append(f"{len(differ)} managed file(s) the layer did not write differ from the image under it: "
                        + ", ".join(differ[:5]) + (" ..." if len(differ) > 5 else ""))
    return problems


def managed_tops(g) -> list[str]:
    """The guest's dirs that hold managed files: manifest.WALKED, with /opt narrowed to its managed entries."""
    tops = [top for top in manifest.WALKED if top != "opt"]
    return tops + [f"opt/{entry}" for entry in (sorted(g.ls("/opt")) if g.is_dir("/opt") else [])
                   if any(f"opt/{entry}/".startswith(p) or p.startswith(f"opt/{entry}/")
                          for p in manifest.MANAGED_PREFIXES)]


def guest_baseline(g, scratch: Path, tops: Optional[list[str]] = None) -> dict[str, dict]:
    """manifest.scan_baseline over a copy of the guest's managed dirs (`tops`, default all: tar_out with numeric
    owners, unpacked in `scratch`): one way to scan, whether the files come from the bake's tree or from the disk."""
    root = scratch / "guest-baseline"
    shutil.rmtree(root, ignore_errors=True)
    tops = managed_tops(g) if tops is None else tops
    try:
        for top in tops:
            if g.is_symlink(f"/{top}"):
                (root / top).parent.mkdir(parents=True, exist_ok=True)
                (root / top).symlink_to(g.readlink(f"/{top}"))
            elif g.is_dir(f"/{top}"):
                (root / top).mkdir(parents=True)
                tar = scratch / "guest-baseline.tar"
                g.tar_out(f"/{top}", str(tar), numericowner=True)
                run(["tar", "-C", str(root / top), "--numeric-owner", "--same-owner", "-xpf", str(tar)])
                tar.unlink()
        return manifest.scan_baseline(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def baseline_problems(seen: dict[str, dict], recorded: dict[str, dict]) -> list[str]:
    """One problem naming the first few managed files that differ between the guest and the manifest."""
    differ = sorted(path for path in set(seen) | set(recorded) if seen.get(path) != recorded.get(path))
    if not differ:
        return []
    shown = ", ".join(f"{p} ({'missing' if p not in seen else 'extra' if p not in recorded else 'differs'})"
                      for p in differ[:5])
    return [f"{len(differ)} managed file(s) differ from the manifest's baseline: {shown}"
            f"{' ...' if len(differ) > 5 else ''}"]


def _check_versions(g, node_version: str, openclaw_version: Optional[str]) -> list[str]:
    problems = []
    try:
        node = g.command(["/usr/local/bin/node", "--version"]).strip()
    except RuntimeError as e:
        return [f"node does not run: {e}"]
    if node != f"v{node_version}":
        problems.append(f"node --version is {node}, pinned v{node_version}")
    if openclaw_version is None:
        return problems
    openclaw = _sh(g, "openclaw --version")
    if openclaw_version not in openclaw:
        problems.append(f"openclaw --version says {openclaw!r}, pinned {openclaw_version}")
    return problems


def _check_plugins(g, plugins: tuple[str, ...]) -> list[str]:
    """The pinned plugins are baked in: each installed at its pin under /opt/openclaw/plugins, the state template
    that makes OpenClaw trust them, and the gateway's seed step; the template carries nothing per install."""
    if not plugins:
        return []
    if not g.is_file(PLUGINS_ENV):
        return [f"{PLUGINS_ENV} missing: the image does not say which plugins it bakes ({' '.join(plugins)})"]
    listed = g.cat(PLUGINS_ENV).strip().partition("=")[2].strip("'\"").replace("\\", "").split()
    problems = []
    if sorted(listed) != sorted(plugins):
        problems.append(f"{PLUGINS_ENV} lists {' '.join(listed) or 'nothing'}, pinned {' '.join(plugins)}")
    baked = []
    for entry in sorted(g.ls(PLUGINS_DIR)) if g.is_dir(PLUGINS_DIR) else []:
        package = f"{_resolved(g, f'{PLUGINS_DIR}/{entry}')}/package.json"
        if not g.is_file(package):
            problems.append(f"{PLUGINS_DIR}/{entry} is not an installed plugin ({package} missing)")
            continue
        data = json.loads(g.cat(package))
        baked.append(f"{data.get('name')}@{data.get('version')}")
    if sorted(baked) != sorted(plugins):
        problems.append(f"{PLUGINS_DIR} holds {' '.join(baked) or 'nothing'}, pinned {' '.join(plugins)}")
    if not g.is_file(STATE_TEMPLATE):
        problems.append(f"{STATE_TEMPLATE} missing: OpenClaw would not trust the baked plugins")
    for leftover in PER_INSTALL:
        if g.exists(leftover):
            problems.append(f"{leftover} must not be in the golden image (per install)")
    if not g.is_file(STATE_SEED):
        problems.append(f"{STATE_SEED} missing: the gateway cannot seed an agent's OpenClaw state")
    return problems


def _check_agentd_command(g) -> list[str]:
    """`agentd` is on PATH for a person in the VM and its own command line works (`agentd --help` imports the
    package with the image's python3 and the archive's modules it needs)."""
    said = _sh(g, "agentd --help >/dev/null && echo ok")
    return [] if said == "ok" else [f"agentd --help in the image fails {said}"]


def firewall_problems(g) -> list[str]:
    """ufw (the firewall element) is installed, on at boot and denies incoming by default; the rules are the
    clone's (deploy/firewall.py), so an image without them is right."""
    if not g.is_file("/usr/sbin/ufw"):
        return ["ufw is not installed (/usr/sbin/ufw missing): the firewall element needs ufw in stages.base.packages"]
    problems = []
    conf = g.cat(UFW_CONF) if g.is_file(UFW_CONF) else ""
    if "ENABLED=yes" not in conf.splitlines():
        problems.append(f"ufw is not enabled ({UFW_CONF} lacks ENABLED=yes)")
    defaults = g.cat(UFW_DEFAULTS) if g.is_file(UFW_DEFAULTS) else ""
    if 'DEFAULT_INPUT_POLICY="DROP"' not in defaults.splitlines():
        problems.append(f'ufw does not deny incoming by default ({UFW_DEFAULTS} lacks DEFAULT_INPUT_POLICY="DROP")')
    if not g.is_symlink(UFW_WANTS):
        problems.append(f"ufw.service is not enabled ({UFW_WANTS} missing)")
    return problems


def check_toolchains(g, toolchains: dict[str, str]) -> list[str]:
    """Each command runs in the image and reports the pinned version: `go version` says go1.26.x, `rustc --version`
    rustc 1.91.x, `cdk --version` 2.1148.1 (the prefix must end at a dot or a word boundary: 1.2 is not 1.26); each
    Python also imports PYTHON_MODULES."""
    problems = []
    for tool, prefix in sorted(toolchains.items()):
        argv = "go version" if tool == "go" else f"{tool} --version"
        said = _sh(g, argv)
        if not re.search(rf"(^|[\s/])(go)?{re.escape(prefix)}([.\s+~-]|$)", said):
            problems.append(f"{argv} says {said.splitlines()[0][:120] if said else 'nothing'!r}, pinned {prefix}")
        elif PYTHON.match(tool):
            said = _sh(g, f"{tool} -c 'import {PYTHON_MODULES}; print(\"ok\")'")
            if said != "ok":  # the traceback's last line names the module
                why = [line for line in said.splitlines() if not line.startswith("(exit status")]
                problems.append(f"{tool} cannot import {PYTHON_MODULES}: {why[-1][:120] if why else said!r}")
    return problems


def _check_sshd(g) -> list[str]:
    """The effective sshd settings for the agent user logging in, as the image's own sshd reads its config."""
    if not g.is_file("/usr/sbin/sshd"):
        return ["/usr/sbin/sshd missing: the image has no SSH server"]
    said, _, status = g.command(["/bin/sh", "-c", SSHD_T]).rstrip().rpartition("\n")
    if status != "(exit status 0)":
        return [f"sshd -T in the image fails {status}: {' '.join(said.splitlines()[-2:])[:200]}"]
    return sshd_problems(said)


def sshd_problems(said: str) -> list[str]:
    """`sshd -T` output (one lowercase `key value` a line) against SSHD_SETTINGS: a problem per setting that differs."""
    effective = dict(line.split(" ", 1) for line in said.splitlines() if " " in line)
    return [f"sshd -T says {key} {effective.get(key, '(absent)')}, expected {value}"
            for key, value in SSHD_SETTINGS.items() if effective.get(key) != value]


def _resolved(g, path: str) -> str:
    """A symlink's target as a guest path: the appliance would follow an absolute one in its own root."""
    if not g.is_symlink(path):
        return path
    target = g.readlink(path)
    return target if target.startswith("/") else posixpath.normpath(posixpath.join(posixpath.dirname(path), target))

def _sh(g, command: str) -> str:
    """A command in the image, as a person's shell finds it (guestfsd's PATH lacks /usr/local/bin, and node CLIs
    are `#!/usr/bin/env node` scripts); its output with stderr, or its exit status."""
    return g.command(["/bin/sh", "-c", f"PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp PYTHONDONTWRITEBYTECODE=1 "
                                       f"{command} 2>&1 || echo \"(exit status $?)\""]).strip()


def identity_problems(g) -> list[str]:
    """What would make two clones share an identity, or leak something, if it were baked in."""
    problems = []
    if g.is_file("/etc/machine-id") and g.filesize("/etc/machine-id") != 0:
        problems.append("/etc/machine-id is not empty")
    if g.is_file("/var/lib/dbus/machine-id") and not g.is_symlink("/var/lib/dbus/machine-id"):
        problems.append("/var/lib/dbus/machine-id exists")
    keys = [f for f in g.glob_expand("/etc/ssh/ssh_host_*")]
    if keys:
        problems.append(f"SSH host keys present: {', '.join(keys)}")
    for path in SECRET_FILES + HISTORY_FILES:
        if g.exists(path):
            problems.append(f"{path} must not be in the golden image")
    lists = [p for p in g.glob_expand("/var/lib/apt/lists/*") if not p.endswith(("/lock", "/partial", "/auxfiles"))]
    if lists:
        problems.append(f"apt lists left: {len(lists)} files under /var/lib/apt/lists")
    debs = g.glob_expand("/var/cache/apt/archives/*.deb") + g.glob_expand("/var/cache/apt/*.bin")
    if debs:
        problems.append(f"apt caches left: {', '.join(debs[:3])}")
    logs = g.command(["find", "/var/log", "-type", "f", "-size", "+0"]).split()
    if logs:
        problems.append(f"logs left: {', '.join(logs[:5])}{' ...' if len(logs) > 5 else ''}")
    secrets = g.command(["sh", "-c", f"grep -rlIE '{SECRET_PATTERN}' /etc /root /home /opt/agentd 2>/dev/null || true"])
    if secrets.strip():
        problems.append(f"secret material found in: {', '.join(secrets.split()[:5])}")
    return problems
