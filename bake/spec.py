"""The image spec (images/agent.yaml) as frozen dataclasses, validated at the edge with errors that name the entry."""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from bake.errors import BakeError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~-]*$")
NAME = re.compile(r"^[a-z][a-z0-9-]*$")
TOOL = re.compile(r"^[a-z][a-z0-9+._-]*$")
REFRESH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PLUGIN = re.compile(r"^@openclaw/[a-z0-9][a-z0-9._-]*$")  # official plugins only: the ones OpenClaw trusts
UPSTREAM = ("dart", "starship")  # optional artifacts from upstream sites, off unless url+sha256 are given
# CLIs from the npm registry the spec may pin under `artifacts`, each with the command it puts on PATH: each is a locked
# npm tree like OpenClaw's (images/<name>/package-lock.json), installed offline by its element of the same name.
NPM_TOOLS = {"aws-cdk": "cdk"}
# What an image can run for agentd to check (the manifest's `services`, docs/contracts.md): agentd always; OpenClaw's
# gateway when the spec bakes it in. The small test image carries agentd alone, so its health means the same thing.
AGENTD, OPENCLAW = "agentd", "openclaw"


@dataclass(frozen=True)
class Base:
    distro: str
    release: str
    mirror: str
    kernel: str
    # The archive refresh the base stage is built from (a date, or any token): part of the base stage's key, so
    # bumping it rebakes the base with the archive's current packages (security updates), and nothing else does.
    refresh: str = ""


@dataclass(frozen=True)
class Disk:
    size_gb: int
    filesystem: str


@dataclass(frozen=True)
class Stage:
    name: str
    elements: tuple[str, ...]
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Artifact:
    """A file from outside, pinned by version, URL and sha256; verified before any use."""
    name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class NpmTree:
    """A package from the npm registry whose whole dependency tree is locked in images/<name>/package-lock.json
    (`make lock`), fetched and integrity-checked on the host, and installed offline in the chroot by `npm ci`."""
    name: str                                   # the npm package: also its dir under images/ and its lock entry
    version: str
    extra: tuple[tuple[str, str], ...] = ()     # more top-level packages of the same tree (OpenClaw's plugins)

    @property
    def dependencies(self) -> dict[str, str]:
        """The tree's package.json `dependencies`."""
        return {self.name: self.version, **dict(self.extra)}


@dataclass(frozen=True)
class OpenClaw:
    version: str
    allow_scripts: tuple[str, ...] = ()
    # npm name -> version of the official plugins the gateway needs (the Mattermost channel is one); the
    # guest installs them offline at boot, because OpenClaw trusts only plugins it installed from npm itself
    plugins: tuple[tuple[str, str], ...] = ()

    @property
    def plugin_specs(self) -> tuple[str, ...]:
        return tuple(f"{name}@{version}" for name, version in self.plugins)


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    base: Base
    disk: Disk
    stages: tuple[Stage, ...]
    node: Optional[Artifact]          # Node and npm: pinned together, needed by OpenClaw
    npm: Optional[Artifact]
    openclaw: Optional[OpenClaw]      # None: an image without OpenClaw (the small test image)
    upstream: tuple[Artifact, ...] = ()
    cpython: Optional[Artifact] = None   # a CPython source release, built in the base stage (the cpython element)
    npm_tools: tuple[NpmTree, ...] = ()  # NPM_TOOLS the spec pins (aws-cdk)
    files: dict[str, str] = field(default_factory=dict)
    toolchains: dict[str, str] = field(default_factory=dict)   # command -> the version prefix it must report

    @property
    def images_dir(self) -> Path:
        return self.path.parent

    @property
    def elements_dir(self) -> Path:
        return self.images_dir / "elements"

    @property
    def openclaw_dir(self) -> Path:
        return self.tree_dir("openclaw")

    def tree_dir(self, name: str) -> Path:
        """Where an npm tree's package.json and package-lock.json are committed."""
        return self.images_dir / name

    @property
    def npm_trees(self) -> tuple[NpmTree, ...]:
        """Every locked npm tree the image installs: OpenClaw's (with its plugins), then the pinned npm CLIs."""
        oc = (NpmTree("openclaw", self.openclaw.version, self.openclaw.plugins),) if self.openclaw else ()
        return oc + self.npm_tools

    @property
    def tool_versions(self) -> dict[str, str]:
        """Command -> the version prefix it must report in the image: the spec's toolchains and the npm CLIs' pins
        (verify checks each; the manifest records them as `toolchains`)."""
        return {**self.toolchains, **{NPM_TOOLS[t.name]: t.version for t in self.npm_tools}}

    @property
    def lock_path(self) -> Path:
        return self.path.with_suffix(".lock.json")

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def services(self) -> tuple[str, ...]:
        return (AGENTD, OPENCLAW) if self.openclaw else (AGENTD,)

    @property
    def pins(self) -> dict[str, str]:
        """Name -> version of every pinned artifact the image carries (the manifest's `pins`)."""
        pins = {a.name: a.version for a in (self.node, self.npm, self.cpython) if a}
        if self.openclaw:
            pins |= {"openclaw": self.openclaw.version, **dict(self.openclaw.plugins)}
        return pins | {t.name: t.version for t in self.npm_tools}


def load_spec(path: Path) -> Spec:
    """Parse and validate; raise BakeError naming the file and the entry at fault."""
    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BakeError(f"{path}: spec not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BakeError(f"{path}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    try:
        spec = _parse(path, data)
    except _EntryError as e:
        raise BakeError(f"{path}: {e.entry}: {e.message}") from None
    _check_elements(spec)
    return spec


class _EntryError(Exception):
    def __init__(self, entry: str, message: str):
        super().__init__(f"{entry}: {message}")
        self.entry, self.message = entry, message


def _parse(path: Path, data: Any) -> Spec:
    top = _mapping(data, "spec", {"name", "base", "disk", "stages", "artifacts", "files", "toolchains"})
    toolchains = top.get("toolchains") or {}
    if not isinstance(toolchains, dict) or not all(
            isinstance(k, str) and TOOL.match(k) and isinstance(v, (str, int, float)) and VERSION.match(str(v))
            for k, v in toolchains.items()):
        raise _EntryError("toolchains", "must map command names (go, rustc) to version prefixes (\"1.26\")")
    base = _mapping(top.get("base"), "base", {"distro", "release", "mirror", "kernel", "refresh"})
    refresh = base.get("refresh", "")
    if isinstance(refresh, datetime.date):        # YAML reads 2026-11-28 as a date
        refresh = refresh.isoformat()
    if not isinstance(refresh, str) or (refresh and not REFRESH.match(refresh)):
        raise _EntryError("base.refresh", "must be a date (2026-11-28) or a token of letters, digits, . _ -")
    if _str(base, "base.distro") != "ubuntu":
        raise _EntryError("base.distro", "only 'ubuntu' is supported")
    disk = _mapping(top.get("disk"), "disk", {"size_gb", "filesystem"})
    size = disk.get("size_gb")
    if not isinstance(size, int) or isinstance(size, bool) or not 4 <= size <= 2048:
        raise _EntryError("disk.size_gb", "must be an integer between 4 and 2048")
    if _str(disk, "disk.filesystem") != "ext4":
        raise _EntryError("disk.filesystem", "only ext4 is supported")
    stages_raw = _mapping(top.get("stages"), "stages", {"base", "app"})
    if set(stages_raw) != {"base", "app"}:
        raise _EntryError("stages", "needs exactly the stages 'base' and 'app'")
    stages = tuple(_stage(name, stages_raw[name]) for name in ("base", "app"))
    arts = _mapping(top.get("artifacts"), "artifacts", {"node", "npm", "openclaw", "cpython", *NPM_TOOLS, *UPSTREAM})
    node = _artifact("node", _mapping(arts["node"], "artifacts.node", {"version", "url", "sha256"})) \
        if "node" in arts else None
    npm = _artifact("npm", _mapping(arts["npm"], "artifacts.npm", {"version", "url", "sha256"})) \
        if "npm" in arts else None
    if (node is None) != (npm is None):
        raise _EntryError("artifacts.npm" if node else "artifacts.node", "node and npm are pinned together")
    openclaw = _openclaw(arts["openclaw"]) if "openclaw" in arts else None
    if openclaw and not node:
        raise _EntryError("artifacts.openclaw", "needs artifacts.node and artifacts.npm (OpenClaw runs on Node)")
    npm_tools = tuple(NpmTree(name, _match(_mapping(arts[name], f"artifacts.{name}", {"version"}), "version", VERSION,
                                           f"artifacts.{name}.version")) for name in NPM_TOOLS if name in arts)
    if npm_tools and not node:
        raise _EntryError(f"artifacts.{npm_tools[0].name}", "needs artifacts.node and artifacts.npm (it runs on Node)")
    # The CPython source tarball is pinned by sha256, so a plain-http mirror (the Ubuntu archive's pool) is fine.
    cpython = _artifact("cpython", _mapping(arts["cpython"], "artifacts.cpython", {"version", "url", "sha256"}),
                        http_ok=True) if "cpython" in arts else None
    # Each element that installs a pinned artifact, in the stage it must run in: both or neither.
    for stage, element, needs, present in (("app", "openclaw", "artifacts.openclaw", openclaw),
                                           ("app", "nodejs", "artifacts.node", node),
                                           ("base", "cpython", "artifacts.cpython", cpython),
                                           *(("app", name, f"artifacts.{name}", name in arts) for name in NPM_TOOLS)):
        listed = element in stages[0 if stage == "base" else 1].elements
        if listed != bool(present):
            raise _EntryError(needs if listed else f"stages.{stage}.elements",
                              f"missing: stages.{stage}.elements has '{element}'" if listed
                              else f"'{element}' missing, though {needs} is pinned")
    upstream = []
    for name in UPSTREAM:
        raw = arts.get(name) or {"enabled": False}
        entry = _mapping(raw, f"artifacts.{name}", {"enabled", "version", "url", "sha256"})
        if entry.get("enabled", True):
            upstream.append(_artifact(name, entry))
    files = top.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise _EntryError("files", "must map names to paths under images/")
    for key, rel in files.items():
        if not (path.parent / rel).exists():
            raise _EntryError(f"files.{key}", f"{rel} does not exist under {path.parent}")
    return Spec(
        path=path,
        name=_match(top, "name", NAME),
        base=Base(_str(base, "base.distro"), _str(base, "base.release"), _url(base, "base.mirror", http_ok=True),
                  _str(base, "base.kernel"), refresh),
        disk=Disk(size, "ext4"),
        stages=stages,
        node=node,
        npm=npm,
        openclaw=openclaw,
        upstream=tuple(upstream),
        cpython=cpython,
        npm_tools=npm_tools,
        files=dict(files),
        toolchains={k: str(v) for k, v in toolchains.items()},
    )


def _openclaw(raw: Any) -> OpenClaw:
    oc = _mapping(raw, "artifacts.openclaw", {"version", "allow_scripts", "plugins"})
    allow = oc.get("allow_scripts", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) and a for a in allow):
        raise _EntryError("artifacts.openclaw.allow_scripts", "must be a list of package names")
    plugins = oc.get("plugins", {}) or {}
    if not isinstance(plugins, dict) or not all(isinstance(n, str) and PLUGIN.match(n) for n in plugins):
        raise _EntryError("artifacts.openclaw.plugins", "must map npm package names (@openclaw/...) to versions")
    plugin_pins = tuple(sorted((name, _match(plugins, name, VERSION, f"artifacts.openclaw.plugins.{name}"))
                               for name in plugins))
    return OpenClaw(_match(oc, "version", VERSION, "artifacts.openclaw.version"), tuple(allow), plugin_pins)


def _stage(name: str, raw: Any) -> Stage:
    entry = _mapping(raw, f"stages.{name}", {"elements", "packages"})
    elements = entry.get("elements")
    if (not isinstance(elements, list) or not elements
            or not all(isinstance(e, str) and NAME.match(e) for e in elements)):
        raise _EntryError(f"stages.{name}.elements", "must be a non-empty list of element names")
    packages = entry.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, str) and re.match(r"^[a-z0-9][a-z0-9+.-]+$", p)
                                                 for p in packages):
        raise _EntryError(f"stages.{name}.packages", "must be a list of Debian package names")
    if name == "app" and packages:
        raise _EntryError("stages.app.packages", "the app stage installs no apt packages (put them in stages.base)")
    return Stage(name, tuple(elements), tuple(packages))


def _artifact(name: str, entry: dict, http_ok: bool = False) -> Artifact:
    where = f"artifacts.{name}"
    sha = entry.get("sha256")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise _EntryError(f"{where}.sha256", "must be 64 lowercase hex digits")
    return Artifact(name, _match(entry, "version", VERSION, f"{where}.version"),
                    _url(entry, f"{where}.url", http_ok=http_ok), sha)


def _mapping(value: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise _EntryError(where, "missing or not a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _EntryError(f"{where}.{unknown[0]}" if where != "spec" else unknown[0],
                          f"unknown key (expected one of: {', '.join(sorted(allowed))})")
    return value


def _str(entry: dict, where: str) -> str:
    key = where.rsplit(".", 1)[-1]
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise _EntryError(where, "missing or not a string")
    return value


def _match(entry: dict, key: str, pattern: re.Pattern, where: Optional[str] = None) -> str:
    value = entry.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not pattern.match(value):
        raise _EntryError(where or key, f"missing or malformed ({value!r})")
    return value


def _url(entry: dict, where: str, http_ok: bool = False) -> str:
    value = _str(entry, where)
    if not (value.startswith("https://") or (http_ok and value.startswith("http://"))):
        raise _EntryError(where, f"must be an {'http(s)' if http_ok else 'https'} URL")
    return value


def dib_elements_dir() -> Path:
    import diskimage_builder
    return Path(diskimage_builder.__file__).parent / "elements"


def _check_elements(spec: Spec) -> None:
    known = {p.name for p in spec.elements_dir.iterdir() if p.is_dir()} if spec.elements_dir.is_dir() else set()
    try:
        known |= {p.name for p in dib_elements_dir().iterdir() if p.is_dir()}
    except ImportError:
        pass  # without DIB we can only check our own elements
    for stage in spec.stages:
        for i, element in enumerate(stage.elements):
            if element not in known:
                raise BakeError(f"{spec.path}: stages.{stage.name}.elements[{i}]: unknown element '{element}' "
                                f"(not in {spec.elements_dir} nor diskimage-builder)")
