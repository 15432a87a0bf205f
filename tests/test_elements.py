"""Static and host-side checks of the diskimage-builder elements in images/elements.

The full proof is a DIB build (minutes, done by the bake's slow tests); these catch in seconds what would
otherwise fail twenty minutes into one: a hook without `set -eu`, a missing README, a dependency on an
element that does not exist, a hook that reaches for the network, and the host-side hooks misbehaving on a
real tree.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ELEMENTS = REPO / "images" / "elements"
OUR_ELEMENTS = sorted(p for p in ELEMENTS.iterdir() if p.is_dir())
HOOKS = sorted(
    hook
    for element in OUR_ELEMENTS
    for phase in element.iterdir()
    if phase.is_dir() and phase.name.endswith(".d")
    for hook in phase.iterdir()
    if hook.is_file()
)
# Scripts an element ships for its hooks to run (seen in the chroot under /tmp/in_target.d/<dir>/): held to the same
# rules as the hooks.
LIB_SCRIPTS = sorted(p for p in ELEMENTS.glob("*/*-lib/*") if p.is_file())

# The two DIB stages of the bake, as bake/ runs them (stage 1 also gets the generated agentfleet-packages).
BASE_STAGE = ["ubuntu-minimal", "agent-base", "agent-user", "immutable", "languages", "cpython", "devtools", "neovim"]
APP_STAGE = ["agentfleet-base-tree", "nodejs", "openclaw", "aws-cdk", "agentd", "identity-free"]

DEBUG_TRACE_LINE = '[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x'

# Commands that fetch from a network. The elements run in a chroot that must need no network the bake's
# fetch phase did not already prove (stage 2 is checked by building it in a network namespace).
NETWORK_COMMANDS = [
    re.compile(r"(^|[\s;&|(`])(curl|wget)\s"),
    re.compile(r"\bpip3?\s+install\b"),
    re.compile(r"\bpython3?\s+-m\s+pip\s+install\b"),
    re.compile(r"\bnpm\s+(install|i|add|update)\b"),
    re.compile(r"\bgit\s+(clone|fetch|pull)\b"),
    re.compile(r"\bgo\s+(get|install)\b"),
    re.compile(r"\bcargo\s+install\b"),
    re.compile(r"\bapt-get\s+(-\S+\s+)*(update|install|upgrade|dist-upgrade)\b"),
    re.compile(r"\badd-apt-repository\b"),
]


def dib_elements_dir() -> Path:
    import diskimage_builder

    return Path(diskimage_builder.__file__).parent / "elements"


def code_lines(path: Path) -> list[str]:
    """Lines of a hook without its comments (a comment may well say 'npm install')."""
    return [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]


def generated_packages_element(tmp_path: Path) -> Path:
    """The element bake/ generates from the spec's stages.base.packages (stand-in for resolution)."""
    element = tmp_path / "gen" / "agentfleet-packages"
    element.mkdir(parents=True)
    (element / "element-deps").write_text("package-installs\n")
    (element / "package-installs.yaml").write_text("sudo:\n")
    return element.parent


def test_there_are_elements_and_hooks_to_check():
    names = {p.name for p in OUR_ELEMENTS}
    assert set(BASE_STAGE[1:] + APP_STAGE + ["agentfleet-common"]) <= names
    assert len(HOOKS) >= 12


@pytest.mark.parametrize("hook", HOOKS + LIB_SCRIPTS, ids=lambda p: str(p.relative_to(ELEMENTS)))
def test_every_hook_is_an_executable_strict_bash_script(hook: Path):
    text = hook.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -eu" in lines, "hook must `set -eu`"
    assert "set -o pipefail" in lines, "hook must `set -o pipefail`"
    assert DEBUG_TRACE_LINE in lines, "hook must trace only when DIB_DEBUG_TRACE is set"
    assert hook.stat().st_mode & stat.S_IXUSR, "hook must be executable (dib-run-parts skips it otherwise)"
    subprocess.run(["bash", "-n", str(hook)], check=True)


@pytest.mark.parametrize("hook", HOOKS + LIB_SCRIPTS, ids=lambda p: str(p.relative_to(ELEMENTS)))
def test_no_hook_fetches_from_the_network(hook: Path):
    for number, line in enumerate(code_lines(hook), 1):
        for pattern in NETWORK_COMMANDS:
            assert not pattern.search(line), f"{hook.name}:{number} reaches for the network: {line.strip()}"
        if re.search(r"\bnpm\s+(ci|rebuild)\b", line):
            assert "--offline" in line, f"{hook.name}:{number} runs npm without --offline"


@pytest.mark.parametrize("element", OUR_ELEMENTS, ids=lambda p: p.name)
def test_every_element_has_a_readme_with_its_name(element: Path):
    readme = element / "README.rst"
    assert readme.is_file()
    assert element.name in readme.read_text().splitlines()[:3]


@pytest.mark.parametrize("element", OUR_ELEMENTS, ids=lambda p: p.name)
def test_element_deps_name_existing_elements(element: Path):
    deps_file = element / "element-deps"
    if not deps_file.exists():
        return
    known = {p.name for p in OUR_ELEMENTS} | {p.name for p in dib_elements_dir().iterdir() if p.is_dir()}
    for dep in deps_file.read_text().split():
        assert dep in known, f"{element.name} depends on unknown element {dep}"


def test_hook_names_are_unique_per_phase_as_dib_requires():
    seen: dict[tuple[str, str], str] = {}
    for hook in HOOKS:
        key = (hook.parent.name, hook.name)
        assert key not in seen, f"{hook} collides with {seen[key]}"
        seen[key] = str(hook)


@pytest.mark.parametrize(
    "stage, skip_base",
    [(["agentfleet-packages", *BASE_STAGE], False), (APP_STAGE, True)],
    ids=["base", "app"],
)
def test_each_stage_resolves_with_dibs_own_dependency_logic(tmp_path: Path, stage, skip_base):
    from diskimage_builder.element_dependencies import get_elements

    paths = f"{ELEMENTS}:{generated_packages_element(tmp_path)}:{dib_elements_dir()}"
    elements = stage if skip_base else ["base", *stage]
    resolved = {name for name, _ in get_elements(elements, paths)}
    assert "agentfleet-common" in resolved
    if skip_base:
        # Stage 2 must not drag in apt (dpkg runs apt-get update) or debootstrap.
        assert not resolved & {"base", "dpkg", "debootstrap", "ubuntu-minimal"}


def test_the_stages_list_the_elements_the_committed_spec_runs():
    from bake.spec import load_spec
    spec = load_spec(REPO / "images" / "agent.yaml")
    assert list(spec.stage("base").elements) == BASE_STAGE[1:]
    assert list(spec.stage("app").elements) == APP_STAGE[1:]


def test_cpython_build_dependencies_are_build_only_and_never_shadow_the_system_python():
    """DIB removes build-only packages after install.d: the -dev packages never reach the image."""
    import yaml
    packages = yaml.safe_load((ELEMENTS / "cpython" / "package-installs.yaml").read_text())
    assert {"libssl-dev", "libsqlite3-dev", "libffi-dev", "zlib1g-dev"} <= set(packages)
    assert all(entry == {"build-only": True} for entry in packages.values()), packages
    hook = "\n".join(code_lines(ELEMENTS / "cpython" / "install.d" / "50-cpython"))
    assert "make altinstall" in hook and "make install" not in hook, "altinstall: no python3 over the system's"
    assert "--enable-optimizations" not in hook, "PGO costs many minutes of CI per base rebuild"
    assert '--prefix="$prefix"' in hook and "--with-ensurepip=install" in hook and "--disable-test-modules" in hook
    assert (ELEMENTS / "cpython" / "install.d" / "50-cpython").name < "99-package-uninstalls"


def test_the_base_tree_element_is_the_operating_system_of_stage_two():
    assert (ELEMENTS / "agentfleet-base-tree" / "element-provides").read_text().split() == ["operating-system"]


def test_gateway_unit_runs_as_agent_on_18789_only_when_configured():
    unit = (ELEMENTS / "openclaw" / "openclaw-units" / "openclaw-gateway.service").read_text()
    assert "User=agent" in unit
    assert "WorkingDirectory=/home/agent" in unit
    assert "ConditionPathExists=/home/agent/.openclaw/openclaw.json" in unit
    assert "Restart=on-failure" in unit
    assert re.search(r"^ExecStart=/usr/local/bin/openclaw gateway run --port 18789 ", unit, re.M)
    assert "WantedBy=multi-user.target" in unit


def test_gateway_starts_after_the_plugins_are_installed():
    units = ELEMENTS / "openclaw" / "openclaw-units"
    gateway = (units / "openclaw-gateway.service").read_text()
    plugins = (units / "openclaw-plugins.service").read_text()
    assert re.search(r"^After=.*openclaw-plugins.service", gateway, re.M)
    assert re.search(r"^Wants=.*openclaw-plugins.service", gateway, re.M)
    assert "User=agent" in plugins and "Type=oneshot" in plugins
    assert "ConditionPathExists=/home/agent/.openclaw/openclaw.json" in plugins


FAKE_OPENCLAW = """#!/bin/bash
# Stands in for the OpenClaw CLI: records how it was called; fails when told to.
echo "$* offline=$npm_config_offline cache=$npm_config_cache" >> "$HOME/calls"
test -d "$npm_config_cache/_cacache" && test -w "$npm_config_cache"
[ -z "${FAIL_ON:-}" ] || [ "$3" != "$FAIL_ON" ]
"""


@pytest.fixture
def plugin_box(tmp_path: Path):
    """The boot-time plugin installer with a fake `openclaw` on PATH and a fake baked cache."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "openclaw"
    fake.write_text(FAKE_OPENCLAW)
    fake.chmod(0o755)
    (tmp_path / "cache" / "_cacache").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "plugins.env").write_text(
        "AGENTFLEET_OPENCLAW_PLUGINS='@openclaw/mattermost@2026.9.2 @openclaw/x@1.0.0'\n")

    def install(**env: str) -> subprocess.CompletedProcess:
        return run_hook(ELEMENTS / "openclaw" / "openclaw-units" / "openclaw-plugins",
                        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", HOME=str(tmp_path / "home"),
                        TMPDIR=str(tmp_path), AGENTFLEET_OPENCLAW_PLUGINS_ENV=str(tmp_path / "plugins.env"),
                        AGENTFLEET_OPENCLAW_PLUGIN_CACHE=str(tmp_path / "cache"), **env)
    return tmp_path, install


def test_boot_plugin_install_is_offline_pinned_once_and_cleans_up(plugin_box):
    box, install = plugin_box
    first = install()
    assert first.returncode == 0, first.stderr
    calls = (box / "home" / "calls").read_text().splitlines()
    assert [c.split(" offline=")[0] for c in calls] == [
        "plugins install @openclaw/mattermost@2026.9.2 --pin --force",
        "plugins install @openclaw/x@1.0.0 --pin --force"]
    assert all("offline=true" in c and f"cache={box}/openclaw-plugins." in c for c in calls)
    assert (box / "home" / ".openclaw" / "agentfleet-plugins").read_text() == \
        "@openclaw/mattermost@2026.9.2 @openclaw/x@1.0.0"
    assert not list(box.glob("openclaw-plugins.*")), "the writable cache copy is removed"
    again = install()
    assert again.returncode == 0 and "already installed" in again.stdout
    assert len((box / "home" / "calls").read_text().splitlines()) == 2


def test_a_failed_plugin_install_fails_the_unit_and_is_retried_next_boot(plugin_box):
    box, install = plugin_box
    failed = install(FAIL_ON="@openclaw/x@1.0.0")
    assert failed.returncode != 0
    assert not (box / "home" / ".openclaw" / "agentfleet-plugins").exists()
    assert install().returncode == 0
    assert (box / "home" / ".openclaw" / "agentfleet-plugins").exists()


# --- host-side hooks run for real against temporary trees ---

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sudo"), reason="needs root and sudo")


def run_hook(hook: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ["PATH"], **env}
    return subprocess.run([str(hook)], env=full_env, capture_output=True, text=True)


def test_staging_is_copied_where_chroot_hooks_find_it(tmp_path: Path):
    staging = tmp_path / "staging"
    (staging / "nvim").mkdir(parents=True)
    (staging / "image.env").write_text("AGENTFLEET_NODE_VERSION=22.23.3\n")
    (staging / "nvim" / "init.vim").write_text("lua require('agentfleet')\n")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    result = run_hook(
        ELEMENTS / "agentfleet-common" / "extra-data.d" / "10-agentfleet-staging",
        AGENTFLEET_STAGING=str(staging), TMP_HOOKS_PATH=str(hooks),
    )
    assert result.returncode == 0, result.stderr
    assert (hooks / "agentfleet" / "image.env").read_text() == "AGENTFLEET_NODE_VERSION=22.23.3\n"
    assert (hooks / "agentfleet" / "nvim" / "init.vim").is_file()


def test_staging_must_be_an_absolute_existing_dir(tmp_path: Path):
    hook = ELEMENTS / "agentfleet-common" / "extra-data.d" / "10-agentfleet-staging"
    missing = run_hook(hook, TMP_HOOKS_PATH=str(tmp_path))
    relative = run_hook(hook, AGENTFLEET_STAGING=".", TMP_HOOKS_PATH=str(tmp_path))
    assert missing.returncode != 0 and "AGENTFLEET_STAGING" in missing.stderr
    assert relative.returncode != 0 and "absolute" in relative.stderr


@needs_root
def test_base_tree_unpacks_with_numeric_owners_capabilities_and_hard_links(tmp_path: Path):
    src = tmp_path / "src"
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "etc").mkdir()
    (src / "usr" / "sbin").mkdir()
    tool = src / "usr" / "bin" / "pinger"
    tool.write_bytes(b"\x7fELF not really")
    tool.chmod(0o4755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(tool)], check=True)
    os.link(tool, src / "usr" / "bin" / "pinger-link")
    owned = src / "etc" / "owned-by-4242"
    owned.write_text("x")
    os.chown(owned, 4242, 4243)
    base_tar = tmp_path / "base.tar"
    # As DIB writes its -t tar output: xattrs included, ./proc and ./sys left out.
    subprocess.run(["tar", "-C", str(src), "-cf", str(base_tar), "--xattrs", "--xattrs-include=*", "."], check=True)

    root = tmp_path / "root"
    root.mkdir()
    result = run_hook(
        ELEMENTS / "agentfleet-base-tree" / "root.d" / "10-unpack-base-tree",
        AGENTFLEET_BASE_TREE=str(base_tar), TARGET_ROOT=str(root),
    )
    assert result.returncode == 0, result.stderr
    unpacked = root / "usr" / "bin" / "pinger"
    assert stat.S_IMODE(unpacked.stat().st_mode) == 0o4755
    assert "cap_net_raw" in subprocess.run(["getcap", str(unpacked)], capture_output=True, text=True).stdout
    assert unpacked.stat().st_ino == (root / "usr" / "bin" / "pinger-link").stat().st_ino
    owned = (root / "etc" / "owned-by-4242").stat()
    assert (owned.st_uid, owned.st_gid) == (4242, 4243)
    for mount_point in ("proc", "sys", "dev", "run", "tmp"):
        assert (root / mount_point).is_dir(), f"/{mount_point} must exist for DIB's mounts"
    assert (root / "usr" / "sbin" / "policy-rc.d").is_file()

    cleanup = run_hook(ELEMENTS / "agentfleet-base-tree" / "cleanup.d" / "90-unblock-daemons", TARGET_ROOT=str(root))
    assert cleanup.returncode == 0, cleanup.stderr
    assert not (root / "usr" / "sbin" / "policy-rc.d").exists()


def test_base_tree_refuses_a_missing_tar(tmp_path: Path):
    result = run_hook(
        ELEMENTS / "agentfleet-base-tree" / "root.d" / "10-unpack-base-tree",
        AGENTFLEET_BASE_TREE=str(tmp_path / "nope.tar"), TARGET_ROOT=str(tmp_path),
    )
    assert result.returncode != 0
    assert "AGENTFLEET_BASE_TREE" in result.stderr


def build_used_tree(root: Path) -> None:
    """A tree with what a build leaves behind: identity, histories, logs, apt lists and caches."""
    files = {
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "PRIVATE",
        "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA",
        "etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n",
        "root/.bash_history": "ls\n",
        "root/.npm/_cacache/index": "x",
        "root/.cache/pip/x": "x",
        "home/agent/.bash_history": "sudo ls\n",
        "home/agent/.bashrc": "# keep me\n",
        "var/log/dpkg.log": "installed\n",
        "var/log/apt/history.log": "Start-Date\n",
        "var/log/journal/abc/system.journal": "j",
        "var/lib/apt/lists/archive.ubuntu.com_ubuntu_dists_jammy_InRelease": "x",
        "var/lib/apt/lists/lock": "",
        "var/cache/apt/pkgcache.bin": "x",
        "var/cache/apt/archives/vim_1.deb": "x",
        "var/tmp/agentfleet-npm-cache.abc/x": "x",
        "tmp/build-leftover": "x",
        "opt/openclaw/config-schema.json": "{}",
        "usr/local/bin/install-packages": "#!/bin/bash\n# DIB's helper\n",
        "usr/local/bin/pkg-map": "#!/usr/bin/env python3\n",
        "usr/local/bin/node": "ELF",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "var/cache/apt/archives/partial").mkdir()


@needs_root
def test_identity_free_leaves_no_identity_histories_logs_or_caches(tmp_path: Path):
    root = tmp_path / "root"
    build_used_tree(root)
    result = run_hook(ELEMENTS / "identity-free" / "cleanup.d" / "95-identity-free", TARGET_ROOT=str(root))
    assert result.returncode == 0, result.stderr

    machine_id = root / "etc/machine-id"
    assert machine_id.exists() and machine_id.read_text() == ""
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (root / "etc/ssh/sshd_config").exists()
    assert not (root / "root/.bash_history").exists() and not (root / "home/agent/.bash_history").exists()
    assert not (root / "root/.npm").exists() and not (root / "root/.cache").exists()
    assert (root / "home/agent/.bashrc").read_text() == "# keep me\n"
    assert [p for p in (root / "var/log").rglob("*") if not p.is_dir()] == []
    assert (root / "var/log/apt").is_dir() and (root / "var/log/journal").is_dir()
    assert sorted(p.name for p in (root / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert not list((root / "var/cache/apt").rglob("*.bin")) and not list((root / "var/cache/apt").rglob("*.deb"))
    assert list((root / "tmp").iterdir()) == [] and list((root / "var/tmp").iterdir()) == []
    assert (root / "opt/openclaw/config-schema.json").exists()
    assert sorted(p.name for p in (root / "usr/local/bin").iterdir()) == ["node"], "only DIB's helpers go"


def test_identity_free_refuses_to_clean_the_host_root():
    result = run_hook(ELEMENTS / "identity-free" / "cleanup.d" / "95-identity-free", TARGET_ROOT="/")
    assert result.returncode != 0
    assert "refusing" in result.stderr


@needs_root
def test_npm_tree_install_puts_a_locked_tree_in_place_offline_and_root_owned(tmp_path: Path):
    """The helper every npm element uses, for real: aws-cdk's locked tree from a cache the host filled, installed
    with no network at all (a fresh network namespace), by the pinned Node and npm."""
    from bake import fetch
    from bake.pipeline import Layout
    from bake.spec import load_spec

    spec = load_spec(REPO / "images" / "agent.yaml")
    tree = next(t for t in spec.npm_trees if t.name == "aws-cdk")
    layout = Layout(REPO / "build")
    node, npm_cli = fetch.host_npm(spec, layout.downloads, layout.tools)
    staging = tmp_path / "staging"
    fetch.fill_npm_cache(spec, tree, [node, npm_cli], staging / "npm-cache", tmp_path / "scratch")
    (staging / "npm-trees" / "aws-cdk").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(spec.tree_dir("aws-cdk") / name, staging / "npm-trees" / "aws-cdk" / name)
    (staging / "image.env").write_text(f"AGENTFLEET_NODE_VERSION={spec.node.version}\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "npm").write_text(f'#!/bin/sh\nexec "{node}" "{npm_cli}" "$@"\n')   # as the chroot's npm
    (tmp_path / "bin" / "npm").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:{Path(node).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
           "AGENTFLEET_STAGING_IN_TARGET": str(staging), "AGENTFLEET_NPM_TREE_PREFIX": str(tmp_path / "opt")}
    result = subprocess.run(["unshare", "-n", str(ELEMENTS / "nodejs" / "nodejs-lib" / "npm-tree-install"), "aws-cdk"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    app = tmp_path / "opt" / "aws-cdk"
    installed = app / "node_modules" / "aws-cdk"
    assert f'"version": "{tree.version}"' in (installed / "package.json").read_text()
    assert all(p.stat().st_uid == 0 and not p.stat().st_mode & 0o022 for p in (app, installed, installed / "bin"))
    said = subprocess.run(["unshare", "-n", str(installed / "bin" / "cdk"), "--version"],
                          env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert said.stdout.startswith(f"{tree.version} "), said
