"""Static and host-side checks of the diskimage-builder elements in images/elements.

The full proof is a DIB build (minutes, done by the bake's slow tests); these catch in seconds what would
otherwise fail twenty minutes into one: a hook without `set -eu`, a missing README, a dependency on an
element that does not exist, a hook that reaches for the network, and the host-side hooks misbehaving on a
real tree.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

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
BASE_STAGE = ["ubuntu-minimal", "agent-base", "agent-user", "immutable", "firewall", "languages", "cpython",
              "devtools", "neovim"]
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


def test_the_gateway_seeds_its_state_first_and_no_unit_installs_plugins_at_boot():
    units = ELEMENTS / "openclaw" / "openclaw-units"
    gateway = (units / "openclaw-gateway.service").read_text()
    assert re.search(r"^ExecStartPre=/usr/local/libexec/agentfleet/openclaw-state-seed$", gateway, re.M)
    assert "openclaw-plugins" not in gateway
    assert not list(units.glob("*.service.d")) and sorted(p.name for p in units.glob("*.service")) == [
        "openclaw-gateway.service"]
    hook = (ELEMENTS / "openclaw" / "install.d" / "30-openclaw").read_text()
    assert "openclaw plugins install" in hook and "systemctl enable openclaw-gateway.service" in hook


def plugin_db(path: Path, records: dict, plugins: list) -> Path:
    """An OpenClaw state database holding an installed-plugin index (its real table, as 2026.9.2 makes it)."""
    import sqlite3
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE config_machine_state (state_key TEXT NOT NULL PRIMARY KEY, value_json TEXT NOT NULL, "
               "updated_at_ms INTEGER NOT NULL) STRICT")
    index = {"revision": 1, "index": {"version": 1, "installRecords": records, "plugins": plugins}}
    db.execute("INSERT INTO config_machine_state VALUES ('plugins.installedIndex', ?, 1)", (json.dumps(index),))
    db.execute("INSERT INTO config_machine_state VALUES ('config.lastTouchedAt', '1', 1)")
    db.commit()
    db.close()
    return path


def plugin_index(path: Path) -> dict:
    import sqlite3
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value_json FROM config_machine_state WHERE state_key = 'plugins.installedIndex'")
        return json.loads(row.fetchone()[0])["index"]
    finally:
        db.close()


BAKED_RECORD = {"source": "npm",
                "installPath": "/opt/openclaw/plugin-state/npm/projects/mm/node_modules/@openclaw/mattermost"}


class TreeGuest:
    """The few libguestfs calls the verify's firewall check makes, answered from a directory as the image's root."""
    def __init__(self, root: Path):
        self.root = root

    def is_file(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).is_file()

    def is_symlink(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).is_symlink()

    def cat(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()


def test_both_specs_bake_the_firewall_element_with_ufw():
    for spec in ("agent.yaml", "agent-small.yaml"):
        stage = yaml.safe_load((REPO / "images" / spec).read_text())["stages"]["base"]
        assert "firewall" in stage["elements"] and "ufw" in stage["packages"], spec


def test_verify_wants_ufw_installed_enabled_and_denying_incoming(tmp_path: Path):
    from bake.verify import UFW_CONF, UFW_DEFAULTS, UFW_WANTS, firewall_problems

    g = TreeGuest(tmp_path)
    assert firewall_problems(g) == ["ufw is not installed (/usr/sbin/ufw missing): the firewall element needs ufw "
                                    "in stages.base.packages"]
    for path, text in (("usr/sbin/ufw", "#!/usr/bin/python3\n"), (UFW_CONF, "ENABLED=no\nLOGLEVEL=low\n"),
                       (UFW_DEFAULTS, 'IPV6=yes\nDEFAULT_INPUT_POLICY="ACCEPT"\n')):
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    assert firewall_problems(g) == [f"ufw is not enabled ({UFW_CONF} lacks ENABLED=yes)",
                                    f'ufw does not deny incoming by default ({UFW_DEFAULTS} lacks '
                                    f'DEFAULT_INPUT_POLICY="DROP")',
                                    f"ufw.service is not enabled ({UFW_WANTS} missing)"]
    (tmp_path / UFW_CONF.lstrip("/")).write_text("ENABLED=yes\nLOGLEVEL=low\n")
    (tmp_path / UFW_DEFAULTS.lstrip("/")).write_text('IPV6=yes\nDEFAULT_INPUT_POLICY="DROP"\n')
    wants = tmp_path / UFW_WANTS.lstrip("/")
    wants.parent.mkdir(parents=True)
    wants.symlink_to("/lib/systemd/system/ufw.service")
    assert firewall_problems(g) == []


FAKE_OPENCLAW = """#!/bin/bash
# Stands in for the OpenClaw CLI: records how it was called; fails when told to.
echo "$* offline=$npm_config_offline cache=$npm_config_cache" >> "$HOME/calls"
test -d "$npm_config_cache/_cacache" && test -w "$npm_config_cache"
[ -z "${FAIL_ON:-}" ] || [ "$3" != "$FAIL_ON" ]
"""


@pytest.fixture
def seed_box(tmp_path: Path):
    """openclaw-state-seed against a throwaway HOME and a template database."""
    template = plugin_db(tmp_path / "template.sqlite", {"mattermost": BAKED_RECORD},
                         [{"pluginId": "a2a", "origin": "bundled"}, {"pluginId": "mattermost", "origin": "config"}])
    (tmp_path / "home" / ".openclaw").mkdir(parents=True)

    def seed() -> subprocess.CompletedProcess:
        return run_hook(ELEMENTS / "openclaw" / "openclaw-units" / "openclaw-state-seed", HOME=str(tmp_path / "home"),
                        AGENTFLEET_OPENCLAW_STATE_TEMPLATE=str(template))
    return tmp_path / "home" / ".openclaw", template, seed


def test_a_new_agent_gets_a_private_copy_of_the_template_and_keeps_its_own_database_after(seed_box):
    openclaw, template, seed = seed_box
    first = seed()
    assert first.returncode == 0, first.stderr
    db = openclaw / "state" / "openclaw.sqlite"
    assert db.read_bytes() == template.read_bytes()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in db.parent.iterdir()) == ["openclaw.sqlite"]
    db.write_bytes(b"the agent's own state since")
    again = seed()
    assert again.returncode == 0 and again.stdout == again.stderr == ""
    assert db.read_bytes() == b"the agent's own state since"


def test_an_agent_whose_plugins_an_older_image_installed_at_boot_adopts_the_baked_ones_once(seed_box):
    openclaw, template, seed = seed_box
    home_install = {"source": "npm", "installPath": f"{openclaw}/npm/projects/mm/node_modules/@openclaw/mattermost"}
    own = {"source": "npm", "installPath": f"{openclaw}/npm/projects/own/node_modules/own-plugin"}
    db = plugin_db(openclaw / "state" / "openclaw.sqlite", {"mattermost": home_install, "own": own},
                   [{"pluginId": "mattermost", "origin": "global"}, {"pluginId": "own", "origin": "global"}])
    (openclaw / "agentfleet-plugins").write_text("@openclaw/mattermost@2026.9.2")
    result = seed()
    assert result.returncode == 0, result.stderr
    assert "now name the baked ones (mattermost)" in result.stdout
    index = plugin_index(db)
    assert index["installRecords"] == {"mattermost": BAKED_RECORD, "own": own}      # the agent's own plugin kept
    assert [p["pluginId"] for p in index["plugins"]] == ["a2a", "mattermost", "own"]
    assert [p["origin"] for p in index["plugins"]][:2] == ["bundled", "config"]
    assert not (openclaw / "agentfleet-plugins").exists()
    import sqlite3
    assert sqlite3.connect(db).execute("SELECT value_json FROM config_machine_state WHERE state_key = "
                                       "'config.lastTouchedAt'").fetchone() == ("1",)     # the rest untouched
    before = db.read_bytes()
    again = seed()
    assert again.returncode == 0 and again.stdout == again.stderr == "" and db.read_bytes() == before


def test_an_image_without_a_template_leaves_the_state_to_openclaw(seed_box):
    openclaw, template, seed = seed_box
    template.unlink()
    result = seed()
    assert result.returncode == 0 and "no template" in result.stdout
    assert not (openclaw / "state").exists()


def make_install_state(root: Path, with_index: bool = True) -> Path:
    """What `openclaw plugins install` leaves in an OpenClaw state dir, in miniature (the tables it wrote)."""
    import sqlite3
    (root / "state").mkdir(parents=True)
    (root / "npm" / "projects" / "openclaw-mattermost-x" / "node_modules").mkdir(parents=True)
    (root / "openclaw.json").write_text("{}")
    (root / "config-journal-fingerprint.key").write_bytes(b"k" * 32)
    (root / "logs").mkdir()
    db = sqlite3.connect(root / "state" / "openclaw.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE config_machine_state (state_key TEXT PRIMARY KEY, value_json TEXT)")
    db.execute("CREATE TABLE diagnostic_events (id TEXT, value_json TEXT)")
    db.execute("CREATE TABLE config_health_entries (path TEXT, value_json TEXT)")
    db.execute("CREATE TABLE schema_meta (role TEXT, version TEXT)")
    if with_index:
        db.execute("INSERT INTO config_machine_state VALUES ('plugins.installedIndex', '{\"revision\": 1}')")
    db.execute("INSERT INTO config_machine_state VALUES ('config.lastTouchedAt', '1')")
    db.execute("INSERT INTO diagnostic_events VALUES ('config-audit', '/bake/openclaw.json')")
    db.execute("INSERT INTO config_health_entries VALUES ('/bake/openclaw.json', '{}')")
    db.execute("INSERT INTO schema_meta VALUES ('primary', '2026.9.2')")
    db.commit()
    db.close()
    return root


def test_the_state_template_keeps_the_installs_and_their_records_and_nothing_per_install(tmp_path: Path):
    import sqlite3
    state = make_install_state(tmp_path / "plugin-state")
    result = subprocess.run(["python3", str(ELEMENTS / "openclaw" / "openclaw-units" / "openclaw-plugin-template"),
                             str(state)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in state.iterdir()) == ["npm", "state"]
    assert sorted(p.name for p in (state / "state").iterdir()) == ["openclaw.sqlite"]
    db = sqlite3.connect(state / "state" / "openclaw.sqlite")
    assert db.execute("SELECT state_key FROM config_machine_state").fetchall() == [("plugins.installedIndex",)]
    assert db.execute("SELECT count(*) FROM diagnostic_events").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM config_health_entries").fetchone() == (0,)
    assert db.execute("SELECT version FROM schema_meta").fetchone() == ("2026.9.2",)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_state_without_install_records_makes_no_template(tmp_path: Path):
    state = make_install_state(tmp_path / "plugin-state", with_index=False)
    result = subprocess.run(["python3", str(ELEMENTS / "openclaw" / "openclaw-units" / "openclaw-plugin-template"),
                             str(state)], capture_output=True, text=True)
    assert result.returncode != 0 and "holds no plugins.installedIndex" in result.stderr


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


def agent_base_sshd_conf() -> str:
    """The sshd drop-in 20-agent-base writes, as written (its heredoc)."""
    hook = (ELEMENTS / "agent-base" / "post-install.d" / "20-agent-base").read_text()
    match = re.search(r"10-agentfleet\.conf <<'SSHD'\n(.*?)^SSHD$", hook, re.S | re.M)
    assert match, "20-agent-base no longer writes 10-agentfleet.conf from a heredoc"
    return match.group(1)


@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server's sshd")
def test_sshd_takes_keys_only_and_allows_the_local_forwards_vs_code_needs(tmp_path: Path):
    """The image's drop-in through a real sshd -T, beside a cloud-init drop-in that says otherwise (first match wins:
    10- is read before 50-). The bake's verify runs the same check with the image's own sshd."""
    from bake.verify import SSHD_SETTINGS, sshd_problems
    conf_d = tmp_path / "sshd_config.d"
    conf_d.mkdir()
    (conf_d / "10-agentfleet.conf").write_text(agent_base_sshd_conf())
    (conf_d / "50-cloud-init.conf").write_text("PasswordAuthentication yes\nAllowTcpForwarding yes\n")
    config = tmp_path / "sshd_config"
    config.write_text(f"Include {conf_d}/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n"
                      "PrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n")  # jammy's
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    said = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config), "-h", str(tmp_path / "key"),
                           "-C", "user=agent,host=workstation,addr=10.0.0.1"], capture_output=True, text=True)
    assert said.returncode == 0, said.stderr
    assert sshd_problems(said.stdout) == []
    assert SSHD_SETTINGS["allowtcpforwarding"] == "local" and SSHD_SETTINGS["permitrootlogin"] == "no"


def test_the_verify_names_each_sshd_setting_that_differs():
    from bake.verify import SSHD_SETTINGS, sshd_problems
    said = "\n".join(f"{k} {v}" for k, v in SSHD_SETTINGS.items() if k != "allowagentforwarding")
    assert sshd_problems(said.replace("allowtcpforwarding local", "allowtcpforwarding no")) == [
        "sshd -T says allowtcpforwarding no, expected local",
        "sshd -T says allowagentforwarding (absent), expected no"]


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
