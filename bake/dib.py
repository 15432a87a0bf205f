"""The two diskimage-builder runs as data: the base stage (OS + packages, cached) and the app stage on top of it."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from bake.spec import Spec
from host.run import Command


def dib_executable() -> str:
    venv_bin = Path(sys.executable).parent / "disk-image-create"
    return str(venv_bin) if venv_bin.exists() else "disk-image-create"


def write_package_element(spec: Spec, generated: Path) -> Path:
    """The spec is the one list of apt packages: it becomes a generated element's package-installs.yaml."""
    element = generated / "agentfleet-packages"
    shutil.rmtree(element, ignore_errors=True)
    element.mkdir(parents=True)
    (element / "element-deps").write_text("package-installs\n")
    (element / "package-installs.yaml").write_text(
        yaml.safe_dump({p: None for p in spec.stage("base").packages}, default_flow_style=False))
    (element / "README.rst").write_text("Generated from images/agent.yaml stages.base.packages by the bake.\n")
    return element


def _env(spec: Spec, staging: Path, generated: Path, cache: Path) -> tuple[tuple[str, str], ...]:
    env = {
        "ELEMENTS_PATH": f"{spec.elements_dir}:{generated}",
        "DIB_RELEASE": spec.base.release,
        "DIB_UBUNTU_KERNEL": spec.base.kernel,
        "DIB_DISTRIBUTION_MIRROR": spec.base.mirror,
        "DIB_DEBIAN_COMPONENTS": "main,universe",
        "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE": "1",
        "DIB_IMAGE_CACHE": str(cache),
        "DIB_CHECKSUM": "0",
        "AGENTFLEET_STAGING": str(staging),
        # DIB's python looks for its own libs through the venv's PATH
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
    }
    return tuple(sorted(env.items()))


def base_command(spec: Spec, staging: Path, generated: Path, cache: Path, output: Path) -> Command:
    """Stage 1: debootstrap + every apt package + the base elements. Slow; its tar is cached by base_key."""
    elements = ("ubuntu-minimal", "agentfleet-packages", *spec.stage("base").elements)
    return Command((dib_executable(), *_trace(), "-a", "amd64", "-t", "tar", "--no-tmpfs", "-o", str(output),
                    *elements), env=_env(spec, staging, generated, cache))


def app_command(spec: Spec, staging: Path, generated: Path, cache: Path, base_tar: Path, output: Path) -> Command:
    """Stage 2: unpack the cached base tree, add Node, OpenClaw, agentd, and strip identity. No apt, no network."""
    elements = ("agentfleet-base-tree", *spec.stage("app").elements)
    env = dict(_env(spec, staging, generated, cache))
    env["AGENTFLEET_BASE_TREE"] = str(base_tar)
    return Command((dib_executable(), *_trace(), "-n", "-a", "amd64", "-t", "tar", "--no-tmpfs",
                    "-o", str(output), *elements), env=tuple(sorted(env.items())))


def _trace() -> tuple[str, ...]:
    return ("-x",) if os.environ.get("DIB_DEBUG_TRACE") else ()
