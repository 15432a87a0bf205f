"""OpenClaw's gateway as a process on this machine: the image's pinned tree and plugins, installed the way the
openclaw element installs them, from the bake's own verified caches (build/cache: the Node and npm tools, the npm
cache of the package-lock's tree, the plugins' cache), offline. Seconds to start where a TCG VM takes minutes, so
the Mattermost conversation is proven here first (tests/test_openclaw_conversation.py).

The install is kept in build/cache/openclaw-host/<key>/ (key: the lock, the plugins, Node), made once under a lock;
its plugin records name their paths there, which is why it is built in place and never moved.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tests.conftest import REPO

CACHE = REPO / "build" / "cache"
ELEMENT_UNITS = REPO / "images" / "elements" / "openclaw" / "openclaw-units"


@dataclass(frozen=True)
class OpenClawInstall:
    node: Path                  # the node binary
    openclaw: Path              # openclaw.mjs
    plugin_dirs: tuple[str, ...]   # each baked plugin's dir, as the clone names them in plugins.load.paths
    state_template: Path        # the stripped state database a new agent starts from (openclaw-state-seed)


def missing_caches() -> Optional[str]:
    """Why the bake's caches cannot serve an install (None when they can)."""
    from bake.hashing import file_sha256
    from bake.spec import load_spec
    spec = load_spec(REPO / "images" / "agent.yaml")
    lock = file_sha256(spec.openclaw_dir / "package-lock.json")[:16]
    needs = {CACHE / "tools" / f"node-{spec.node.version}" / ".complete": "the pinned Node (bake's fetch)",
             CACHE / "tools" / f"npm-{spec.npm.version}" / ".complete": "the pinned npm (bake's fetch)",
             CACHE / "npm" / f".verified-{lock}": "the npm cache of images/openclaw/package-lock.json",
             CACHE / "npm-plugins": "the plugins' npm cache"}
    absent = [f"{what} ({path})" for path, what in needs.items() if not path.exists()]
    return f"no full bake has filled build/cache: missing {'; '.join(absent)}" if absent else None


def install() -> OpenClawInstall:
    """The pinned OpenClaw and its plugins under build/cache/openclaw-host/<key>/, installed on first use."""
    from bake.hashing import file_sha256
    from bake.spec import load_spec
    spec = load_spec(REPO / "images" / "agent.yaml")
    key = hashlib.sha256(json.dumps([file_sha256(spec.openclaw_dir / "package-lock.json"),
                                     list(spec.openclaw.plugin_specs), spec.node.version, spec.npm.version,
                                     file_sha256(ELEMENT_UNITS / "openclaw-plugin-template")]).encode()).hexdigest()
    root = CACHE / "openclaw-host" / key[:16]
    node_bin = CACHE / "tools" / f"node-{spec.node.version}" / "package" / "bin"
    npm_cli = CACHE / "tools" / f"npm-{spec.npm.version}" / "package" / "bin" / "npm-cli.js"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".complete").exists():
            _build(root, spec, node_bin, npm_cli)
    plugins = tuple(sorted(glob.glob(str(root / "plugin-state" / "npm" / "projects" / "*" / "node_modules" / "*" /
                                         "openclaw.plugin.json")) +
                           glob.glob(str(root / "plugin-state" / "npm" / "projects" / "*" / "node_modules" / "@*" /
                                         "*" / "openclaw.plugin.json"))))
    return OpenClawInstall(node=node_bin / "node", openclaw=root / "app" / "node_modules" / "openclaw" / "openclaw.mjs",
                           plugin_dirs=tuple(str(Path(p).parent) for p in plugins),
                           state_template=root / "template" / "state" / "openclaw.sqlite")


def _build(root: Path, spec, node_bin: Path, npm_cli: Path) -> None:
    """What the openclaw element does in the chroot: `npm ci` offline from a copy of the verified cache (npm writes
    to its cache even offline; the shared one stays as the bake left it), then `openclaw plugins install` offline
    (which records them as official installs), then the template the state seed copies."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "app").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(spec.openclaw_dir / name, root / "app" / name)
    with tempfile.TemporaryDirectory(prefix="openclaw-host-") as tmp:
        tmp = Path(tmp)
        shutil.copytree(CACHE / "npm", tmp / "npm-cache", ignore=shutil.ignore_patterns("_logs"))
        shutil.copytree(CACHE / "npm-plugins", tmp / "plugin-cache",
                        ignore=shutil.ignore_patterns(".verified-*", "_logs"))
        env = {"HOME": str(tmp / "home"), "PATH": f"{node_bin}:/usr/bin:/bin", "npm_config_offline": "true",
               "npm_config_update_notifier": "false", "npm_config_audit": "false", "npm_config_fund": "false"}
        (tmp / "home").mkdir()
        subprocess.run([str(node_bin / "node"), str(npm_cli), "ci", "--offline", "--ignore-scripts",
                        "--cache", str(tmp / "npm-cache")], cwd=root / "app", env=env, check=True,
                       capture_output=True, timeout=600)
        openclaw = root / "app" / "node_modules" / "openclaw" / "openclaw.mjs"
        for plugin in spec.openclaw.plugin_specs:
            subprocess.run([str(node_bin / "node"), str(openclaw), "plugins", "install", plugin, "--pin", "--force"],
                           env={**env, "OPENCLAW_STATE_DIR": str(root / "plugin-state"),
                                "npm_config_cache": str(tmp / "plugin-cache")},
                           stdin=subprocess.DEVNULL, check=True, capture_output=True, timeout=600)
    shutil.copytree(root / "plugin-state", root / "template", symlinks=True)
    subprocess.run(["python3", str(ELEMENT_UNITS / "openclaw-plugin-template"), str(root / "template")], check=True)
    shutil.rmtree(root / "template" / "npm")
    (root / ".complete").touch()


class Gateway:
    """`openclaw gateway run` as the unit runs it, HOME a tmp dir with the config and .env the clone would write and
    the state database the seed would copy; on loopback only."""

    def __init__(self, oc: OpenClawInstall, home: Path, config: dict, env_text: str, port: int):
        self.home, self.port = home, port
        (home / ".openclaw" / "state").mkdir(parents=True, exist_ok=True)
        (home / ".openclaw").chmod(0o700)
        shutil.copy(oc.state_template, home / ".openclaw" / "state" / "openclaw.sqlite")
        (home / ".openclaw" / "openclaw.json").write_text(json.dumps(config, indent=2))
        env_file = home / ".openclaw" / ".env"
        env_file.write_text(env_text)
        env_file.chmod(0o600)
        self.output = home / "gateway.out"
        self.t0 = time.monotonic()
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                [str(oc.node), str(oc.openclaw), "gateway", "run", "--port", str(port), "--bind", "loopback",
                 "--auth", "token"],
                env={"HOME": str(home), "PATH": f"{oc.node.parent}:/usr/bin:/bin", "NODE_ENV": "production"},
                cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, 9)
                self.process.wait(10)
