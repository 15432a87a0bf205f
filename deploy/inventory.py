"""The fleet inventory: YAML (deploy/fleet.yaml plus optional overlays merged over it) parsed at the edge into frozen
dataclasses, and validated as a whole so every problem names its entry."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlparse

import yaml

from agentd.protocol import AGENT_NAME, AGENT_NAME_RULE, valid_agent_name
from deploy import firewall
from deploy.errors import CloneError

DEFAULT_INVENTORY = Path(__file__).resolve().parent / "fleet.yaml"
# Key lines are checked with fullmatch, never match: "$" also matches before a trailing newline, so a newline
# inside an admin key would add a line of its own to authorized_keys. Agent names: agentd.protocol's one rule.
SSH_PUBLIC_KEY = re.compile(r"(ssh-|ecdsa-|sk-)\S+ \S+( [^\r\n]*)?")  # type, base64, optional comment: one line
NETWORK_MODES = ("bridge", "user")
SECRET_SOURCES = ("file", "env", "command", "stdin")  # stdin: the fleet tool sends them over SSH (docs/fleet.md)
MODEL_APIS = ("openai-completions", "openai-responses", "anthropic-messages")
# Mattermost's own rules: team and channel names are lowercase letters, digits, '-' and '_'; a username also takes
# '.'; a user id is 26 lowercase letters and digits
MM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MM_USER = re.compile(r"[a-z][a-z0-9._-]{0,63}|[a-z0-9]{26}|\*")
PROVIDER_ID = re.compile(r"[a-z][a-z0-9_-]{0,63}")
SSH_TARGET = re.compile(r"^(?P<user>[a-z_][a-z0-9_-]*)@(?P<address>[A-Za-z0-9.:-]+)$")
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|[0-9a-fA-F:]+")  # an NTP server: name or IP
DEFAULT_AGENTFLEET_DIR = "/opt/agentfleet"
# QEMU user networking's fixed addresses (net=10.0.2.0/24)
USER_NET = ipaddress.ip_network("10.0.2.0/24")
USER_GUEST_IP, USER_GATEWAY, USER_DNS = "10.0.2.15", "10.0.2.2", "10.0.2.3"


@dataclass(frozen=True)
class Network:
    mode: str
    subnet: ipaddress.IPv4Network
    gateway: str
    dns: tuple[str, ...]
    bridge: str = "br0"
    ssh_port_base: int = 2200          # user mode: agent i's SSH is forwarded from 127.0.0.1:<base+i>
    collector_forward: str = "10.0.2.100"  # user mode: guest address forwarded to the hypervisor's collector
    # NTP servers the agents keep their clocks with (AWS signing and TLS need a sane clock); default: the gateway
    # in bridge mode, none in user mode (tests send nothing off the machine)
    ntp: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """The model every agent's OpenClaw answers with: `provider/model` (OpenClaw's own provider, its key from the
    `.env`), or a provider of ours at `base_url` (a proxy, a local server, the tests' stand-in) speaking `api`, its
    key the secret named `api_key`."""
    provider: str = "anthropic"
    model: str = "claude-sonnet-4-6"
    base_url: str = ""
    api: str = "openai-completions"
    api_key: str = ""                  # a secret's key (secrets.shared), never a value


@dataclass(frozen=True)
class Services:
    mattermost_url: str
    collector_url: str                 # as the agents reach it (goes into agentd.yaml)
    collector_api_url: str             # as the hypervisor reaches it (polled by --replace)
    mattermost_team: str = ""          # the team the agents' channels are in
    model: ModelSpec = ModelSpec()


@dataclass(frozen=True)
class Chat:
    """How one agent takes part in Mattermost: the channels of the team it listens in (by name), whether a channel
    post must @mention it, and who may DM it (usernames or user ids; `*` anyone; none: strangers get a pairing
    code, as OpenClaw's default)."""
    channels: tuple[str, ...] = ("town-square",)
    require_mention: bool = True
    dm_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretsSpec:
    source: str                        # one of SECRET_SOURCES
    file: Optional[Path] = None
    env_prefix: str = "AGENTFLEET_SECRET_"
    command: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    per_agent: tuple[str, ...] = ()
    # our key -> the source's key, for a flat source such as the seed's Ansible Vault (`vault_openclaw_..._key`);
    # "{agent}" in a per-agent key's name is replaced by the agent's name. Empty: the {shared, agents} shape.
    key_map: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SshTarget:
    """How the fleet tool reaches a hypervisor, and where agentfleet lives there."""
    user: str
    address: str
    port: int = 22
    agentfleet_dir: str = DEFAULT_AGENTFLEET_DIR   # a path on the host, not resolved on the workstation
    python: str = ""                               # default: <agentfleet_dir>/.venv/bin/python

    @property
    def host_python(self) -> str:
        return self.python or f"{self.agentfleet_dir}/.venv/bin/python"


@dataclass(frozen=True)
class Reserve:
    """The share of a host's RAM and disk no clone may use (host/hypervisor overhead, qcow2 and log growth,
    snapshots): `reserve: {ram: 10%, disk: 15%}` fleet-wide or per host; `--plan` shows it and the clone refuses to
    break it (deploy/plan.py)."""
    ram_pct: float = 10.0
    disk_pct: float = 15.0


@dataclass(frozen=True)
class Host:
    name: str
    uri: str
    storage_dir: Path
    state_dir: Path
    ram_gb: float
    disk_gb: float
    ssh: Optional[SshTarget] = None    # None: reached only by running clone.py on it
    images_dir: Optional[Path] = None  # published images on the host (default <storage_dir>/golden)
    reserve: Reserve = Reserve()

    @property
    def host_images_dir(self) -> Path:
        return self.images_dir or self.storage_dir / "golden"


@dataclass(frozen=True)
class Agent:
    name: str
    host: str
    vcpu: int
    ram_gb: float
    disk_gb: float                     # the data disk (/home/agent)
    ip: str
    role: str
    ssh_port: Optional[int] = None     # user mode only
    root_gb: Optional[float] = None    # the root overlay's virtual size; None: the image's own (deploy/resize.py)
    docker_gb: float = 0               # Docker's persistent disk at /var/lib/docker; 0: none (deploy/docker_data.py)
    # incoming ports opened beyond the seed's 22/tcp and 18789/tcp (deploy/firewall.py)
    firewall_allow: tuple[firewall.Allow, ...] = ()
    forwards: tuple[tuple[int, int], ...] = ()   # user mode: (host port on 127.0.0.1, guest port), TCP
    mattermost: Chat = Chat()          # the fleet's `mattermost` defaults with the agent's own keys over them


@dataclass(frozen=True)
class Inventory:
    network: Network
    services: Services
    admin_keys: tuple[str, ...]
    secrets: SecretsSpec
    images_dir: Path
    hosts: Mapping[str, Host]
    agents: Mapping[str, Agent]
    sources: tuple[str, ...] = field(default=())

    def agent(self, name: str) -> Agent:
        if name not in self.agents:
            raise CloneError(f"unknown agent {name!r} (inventory has: {', '.join(self.agents)})")
        return self.agents[name]

    def host_of(self, agent: Agent) -> Host:
        return self.hosts[agent.host]

    def state_dir(self, agent: Agent) -> Path:
        return self.host_of(agent).state_dir / agent.name


def deep_merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key; anything else in the overlay replaces the base (lists too)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base.get(key), value) if key in base else value
        return out
    return over


def load(path: Optional[os.PathLike] = None, overlays: Sequence[os.PathLike] = ()) -> Inventory:
    """Read the inventory (default: $AGENTFLEET_INVENTORY or deploy/fleet.yaml) and overlays, validate, return it."""
    if path is not None and str(path) == "-":
        return _from_stdin()
    base = Path(path or os.environ.get("AGENTFLEET_INVENTORY") or DEFAULT_INVENTORY)
    if not overlays and os.environ.get("AGENTFLEET_OVERLAY"):
        overlays = [p for p in os.environ["AGENTFLEET_OVERLAY"].split(":") if p]
    data = _read_yaml(base)
    for over in overlays:
        data = deep_merge(data, _read_yaml(Path(over)))
    return parse(data, base_dir=base.resolve().parent, sources=(str(base), *map(str, overlays)))


def _from_stdin() -> Inventory:
    """The fleet tool's form: one JSON line on standard input, already merged, every path absolute (the rest of the
    stream is left for a `stdin` secrets source)."""
    try:
        data = json.loads(sys.stdin.readline())
    except ValueError as e:
        raise CloneError(f"inventory on standard input: not one JSON line ({e})") from None
    if not isinstance(data, dict):
        raise CloneError("inventory on standard input: must be a mapping")
    return parse(data, base_dir=Path("/"), sources=("<stdin>",))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
        check_unique_names(text, str(path))
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise CloneError(f"inventory {path}: not found") from None
    except yaml.YAMLError as e:
        raise CloneError(f"inventory {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CloneError(f"inventory {path}: must be a mapping")
    return data


def parse(data: Mapping[str, Any], base_dir: Path, sources: tuple[str, ...] = ()) -> Inventory:
    """Build the Inventory from merged YAML data; raise one CloneError listing every problem found."""
    problems: list[str] = []

    def need(mapping: Mapping, key: str, where: str, types=str, default: Any = ...) -> Any:
        if not isinstance(mapping, Mapping):
            problems.append(f"{where}: must be a mapping")
            return None if default is ... else default
        if key not in mapping or mapping[key] is None:
            if default is ...:
                problems.append(f"{where}.{key}: missing")
                return None
            return default
        value = mapping[key]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            problems.append(f"{where}.{key}: must be {_expected(types)}; {_read_as(value)}")
            return None if default is ... else default
        return value

    def path(value: Optional[str]) -> Path:
        p = Path(os.path.expanduser(value or "."))
        return p if p.is_absolute() else (base_dir / p).resolve()

    def strings(items: list, where: str) -> tuple[str, ...]:
        """Each item of a list as written, or a problem naming it: str() would turn an unquoted `012` into "10" and
        `yes` into "True" without a word."""
        bad = [f"{where}[{i}]: must be a string; {_read_as(item)} (quote it)"
               for i, item in enumerate(items) if not isinstance(item, str)]
        problems.extend(bad)
        return tuple(item for item in items if isinstance(item, str))

    def addresses(items: list, where: str) -> tuple[str, ...]:
        out = strings(items, where)
        for i, item in enumerate(out):
            try:
                ipaddress.ip_address(item)
            except ValueError:
                problems.append(f"{where}[{i}]: {item!r} is not an IP address")
        return out

    def firewall_allow(a: Any, where: str) -> tuple[firewall.Allow, ...]:
        out = []
        for i, item in enumerate(need(a, "firewall_allow", where, list, [])):
            try:
                out.append(firewall.parse_allow(item))
            except ValueError as e:
                problems.append(f"{where}.firewall_allow[{i}]: {e}")
        return tuple(out)

    def forwards(a: Any, where: str) -> tuple[tuple[int, int], ...]:
        given = need(a, "forwards", where, dict, {})
        if given and mode != "user":
            problems.append(f"{where}.forwards: only in network.mode user (QEMU's forwards); on the bridge the "
                            f"agent's own IP is reached directly: open the port with firewall_allow")
            return ()
        out = []
        for host_port, guest_port in given.items():
            ports = [_port(host_port), _port(guest_port)]
            if None in ports:
                problems.append(f"{where}.forwards: {host_port!r}: {guest_port!r} is not host port: guest port "
                                f"(TCP ports 1-65535, e.g. \"18080\": 8080)")
                continue
            out.append((ports[0], ports[1]))
        return tuple(out)

    def ntp_servers(net: dict, mode: str) -> tuple[str, ...]:
        given = need(net, "ntp", "network", list, None)
        if given is None:
            gateway = net.get("gateway")
            return (str(gateway),) if mode == "bridge" and gateway else ()
        out = strings(given, "network.ntp")
        for i, item in enumerate(out):
            if not HOST_NAME.fullmatch(item):
                problems.append(f"network.ntp[{i}]: {item!r} is not a host name or IP address")
        return out

    net = data.get("network") or {}
    mode = need(net, "mode", "network", str, "bridge")
    if mode not in NETWORK_MODES:
        problems.append(f"network.mode: {mode!r} is not one of {NETWORK_MODES}")
    subnet = None
    try:
        subnet = ipaddress.ip_network(str(need(net, "subnet", "network")), strict=True)
    except ValueError as e:
        problems.append(f"network.subnet: {e}")
    network = Network(mode=mode, subnet=subnet, gateway=str(need(net, "gateway", "network", str, "")),
                      dns=addresses(need(net, "dns", "network", list, []), "network.dns"),
                      bridge=need(net, "bridge", "network", str, "br0"),
                      ssh_port_base=need(net, "ssh_port_base", "network", int, 2200),
                      collector_forward=need(net, "collector_forward", "network", str, "10.0.2.100"),
                      ntp=ntp_servers(net, mode))
    if subnet is not None and network.gateway and mode == "bridge":
        if ipaddress.ip_address(network.gateway) not in subnet:
            problems.append(f"network.gateway: {network.gateway} is outside {subnet}")

    svc = data.get("services") or {}
    collector_url = need(svc, "collector_url", "services") or ""
    api_url = need(svc, "collector_api_url", "services", str, "")
    if not api_url:
        api_url = collector_url
        if mode == "user" and collector_url:
            api_url = f"http://127.0.0.1:{urlparse(collector_url).port or 80}"
    team = need(svc, "mattermost_team", "services", str, "")
    if team and not MM_NAME.fullmatch(team):
        problems.append(f"services.mattermost_team: {team!r} is not a Mattermost team name "
                        f"(lowercase a-z, 0-9, - and _)")
    services = Services(mattermost_url=need(svc, "mattermost_url", "services") or "", collector_url=collector_url,
                        collector_api_url=api_url, mattermost_team=team,
                        model=_model(svc.get("model") if isinstance(svc, Mapping) else None, problems))
    for key in ("mattermost_url", "collector_url"):
        url = urlparse(getattr(services, key))
        if getattr(services, key) and (url.scheme not in ("http", "https") or not url.hostname):
            problems.append(f"services.{key}: {getattr(services, key)!r} is not an http(s) URL")

    admin_keys = tuple(need(data.get("admins") or {}, "ssh_keys", "admins", list, []))
    for i, key in enumerate(admin_keys):
        if not isinstance(key, str) or not SSH_PUBLIC_KEY.fullmatch(key):
            problems.append(f"admins.ssh_keys[{i}]: not an SSH public key line")

    sec = data.get("secrets") or {}
    src = need(sec, "source", "secrets", dict, {})
    kinds = [k for k in SECRET_SOURCES if src.get(k) is not None]   # an overlay nulls the base's kind to switch
    if len(kinds) != 1:
        problems.append(f"secrets.source: needs exactly one of {SECRET_SOURCES}")
    kind = kinds[0] if kinds else "env"
    command = src.get("command") if kind == "command" else ()
    if kind == "command" and (not isinstance(command, list) or not command):
        problems.append("secrets.source.command: must be a non-empty argv list")
        command = ()
    command = strings(command or [], "secrets.source.command")
    secrets_file = need(src, "file", "secrets.source") if kind == "file" else None
    env_prefix = need(src, "env", "secrets.source", str, "") if kind == "env" else ""
    key_map = need(sec, "key_map", "secrets", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in key_map.items()):
        problems.append("secrets.key_map: must map our key names to the source's key names")
        key_map = {}
    secrets = SecretsSpec(source=kind, file=path(secrets_file) if secrets_file else None,
                          env_prefix=env_prefix or "AGENTFLEET_SECRET_", command=command,
                          shared=strings(need(sec, "shared", "secrets", list, []), "secrets.shared"),
                          per_agent=strings(need(sec, "per_agent", "secrets", list, []), "secrets.per_agent"),
                          key_map=tuple(key_map.items()))
    unmapped = [k for k in (*secrets.shared, *secrets.per_agent) if key_map and k not in key_map]
    if unmapped:
        problems.append(f"secrets.key_map: no source key for {', '.join(unmapped)}")
    if "collector_secret" not in secrets.shared:
        problems.append("secrets.shared: must name collector_secret (agentd's token is minted from it)")

    default_state = need(data, "state_dir", "inventory", str, "/var/lib/agentfleet")
    fleet_reserve = _reserve(data.get("reserve"), "reserve", Reserve(), problems)
    images_dir = need(data, "images_dir", "inventory", str, "../build/images")
    hosts: dict[str, Host] = {}
    for name, h in (need(data, "hosts", "inventory", dict, {}) or {}).items():
        where = f"hosts.{name}"
        images = need(h, "images_dir", where, str, None)
        hosts[name] = Host(name=name, uri=need(h, "uri", where) or "", storage_dir=path(need(h, "storage_dir", where)),
                           state_dir=path(need(h, "state_dir", where, str, default_state)),
                           ram_gb=need(h, "ram_gb", where, (int, float)) or 0,
                           disk_gb=need(h, "disk_gb", where, (int, float), 0),
                           ssh=_ssh_target(h.get("ssh") if isinstance(h, Mapping) else None, where, problems),
                           images_dir=path(images) if images else None,
                           reserve=_reserve(h.get("reserve") if isinstance(h, Mapping) else None, f"{where}.reserve",
                                            fleet_reserve, problems))
    _check_host_addresses(hosts, problems)

    chat_defaults = _chat(data.get("mattermost"), "mattermost", Chat(), problems)
    agents: dict[str, Agent] = {}
    seen_ips: dict[str, str] = {}
    seen_ports: dict[int, str] = {}   # host port -> the key that took it
    for index, (name, a) in enumerate((need(data, "agents", "inventory", dict, {}) or {}).items()):
        where = f"agents.{name}"
        if not valid_agent_name(name):
            problems.append(f"{where}: name must match {AGENT_NAME.pattern} ({AGENT_NAME_RULE})")
        agent = Agent(name=str(name), host=need(a, "host", where) or "", vcpu=need(a, "vcpu", where, int) or 1,
                      ram_gb=need(a, "ram_gb", where, (int, float)) or 0,
                      disk_gb=need(a, "disk_gb", where, (int, float)) or 0,
                      ip=str(need(a, "ip", where) or ""), role=str(need(a, "role", where, str, "")),
                      ssh_port=need(a, "ssh_port", where, int, None),
                      root_gb=need(a, "root_gb", where, (int, float), None),
                      docker_gb=need(a, "docker_gb", where, (int, float), 0),
                      firewall_allow=firewall_allow(a, where), forwards=forwards(a, where),
                      mattermost=_chat(a.get("mattermost") if isinstance(a, Mapping) else None,
                                       f"{where}.mattermost", chat_defaults, problems))
        if mode == "user" and agent.ssh_port is None:
            agent = Agent(**{**agent.__dict__, "ssh_port": network.ssh_port_base + index})
        if agent.host and agent.host not in hosts:
            problems.append(f"{where}.host: unknown host {agent.host!r}")
        try:
            ip = ipaddress.ip_address(agent.ip)
            if subnet is not None and ip not in subnet:
                problems.append(f"{where}.ip: {agent.ip} is outside the subnet {subnet}")
            elif subnet is not None and ip in (subnet.network_address, subnet.broadcast_address):
                problems.append(f"{where}.ip: {agent.ip} is the subnet's network or broadcast address")
        except ValueError:
            problems.append(f"{where}.ip: {agent.ip!r} is not an IP address")
        if agent.ip in seen_ips:
            problems.append(f"{where}.ip: {agent.ip} duplicates agents.{seen_ips[agent.ip]}")
        for host in hosts.values():
            if host.ssh and host.ssh.address == agent.ip:
                problems.append(f"{where}.ip: {agent.ip} is the address of hypervisor {host.name}")
        seen_ips.setdefault(agent.ip, agent.name)
        host_ports = [(f"forwards.{host_port}", host_port) for host_port, _ in agent.forwards]
        if agent.ssh_port is not None:
            host_ports.insert(0, ("ssh_port", agent.ssh_port))
        for key, port in host_ports:
            if port in seen_ports:       # one host port, one listener: SSH ports and forwards share 127.0.0.1
                problems.append(f"{where}.{key}: host port {port} is also {seen_ports[port]}")
            seen_ports.setdefault(port, f"agents.{agent.name}.{key}")
        if agent.vcpu < 1 or agent.ram_gb <= 0 or agent.disk_gb <= 0:
            problems.append(f"{where}: vcpu, ram_gb and disk_gb must be positive")
        if (agent.root_gb is not None and agent.root_gb <= 0) or agent.docker_gb < 0:
            problems.append(f"{where}: root_gb must be positive and docker_gb 0 (none) or positive")
        agents[agent.name] = agent

    listening = [a.name for a in agents.values() if a.mattermost.channels]
    if listening and services.mattermost_url and not services.mattermost_team:
        problems.append(f"services.mattermost_team: missing; {', '.join(listening)} listen in channels of a team")
    key = services.model.api_key
    if key and key not in secrets.shared:
        problems.append(f"services.model.api_key: {key!r} is not in secrets.shared (the key every agent's OpenClaw "
                        f"reads from its .env)")
    for host in hosts.values():
        placed = [a for a in agents.values() if a.host == host.name]
        ram = sum(a.ram_gb for a in placed)
        if ram > host.ram_gb:
            problems.append(f"hosts.{host.name}: agents {', '.join(a.name for a in placed)} need {ram:g} GB RAM, "
                            f"the host has {host.ram_gb:g} GB")
    if problems:
        raise CloneError("inventory " + " + ".join(sources or ("?",)) + ": " + "; ".join(problems))
    return Inventory(network=network, services=services, admin_keys=admin_keys, secrets=secrets,
                     images_dir=path(images_dir), hosts=hosts, agents=agents,
                     sources=sources)


def _port(value: Any) -> Optional[int]:
    """A TCP port written as an integer or a string of digits (YAML keys are often quoted); None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        return None
    return int(value) if 1 <= int(value) <= 65535 else None


def _model(raw: Any, problems: list[str]) -> ModelSpec:
    """`services.model: {provider, model}` or, for a provider of ours, `{provider, model, base_url, api, api_key}`."""
    if raw is None:
        return ModelSpec()
    where = "services.model"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping like {{provider: anthropic, model: claude-sonnet-4-6}}")
        return ModelSpec()
    keys = ("provider", "model", "base_url", "api", "api_key")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r} ({', '.join(keys)})")
    values = {}
    for key in keys:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value or value != value.strip() or "\n" in value:
            problems.append(f"{where}.{key}: must be a non-empty string on one line; {_read_as(value)}")
            continue
        values[key] = value
    spec = ModelSpec(**values)
    if not PROVIDER_ID.fullmatch(spec.provider):
        problems.append(f"{where}.provider: {spec.provider!r} is not a provider id (lowercase a-z, 0-9, - and _)")
    if any(c.isspace() for c in spec.model):
        problems.append(f"{where}.model: {spec.model!r} has white space")
    if spec.api not in MODEL_APIS:
        problems.append(f"{where}.api: {spec.api!r} is not one of {', '.join(MODEL_APIS)}")
    url = urlparse(spec.base_url)
    if spec.base_url and (url.scheme not in ("http", "https") or not url.hostname):
        problems.append(f"{where}.base_url: {spec.base_url!r} is not an http(s) URL")
    if spec.base_url and not spec.api_key:
        problems.append(f"{where}.api_key: missing; a provider at base_url needs the secret that holds its key")
    if spec.api_key and not spec.base_url:
        problems.append(f"{where}.api_key: only for a provider at base_url (OpenClaw's own providers read "
                        f"their key from the .env, e.g. ANTHROPIC_API_KEY)")
    return spec


def _chat(raw: Any, where: str, default: Chat, problems: list[str]) -> Chat:
    """`{channels: [...], require_mention: true, dm_from: [...]}`; keys left out keep `default` (the fleet's)."""
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping like "
                        f"{{channels: [town-square], require_mention: true, dm_from: []}}")
        return default
    unknown = sorted(set(raw) - {"channels", "require_mention", "dm_from"})
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r} (channels, require_mention, dm_from)")
    values: dict[str, Any] = {}
    for key, rule, what in (("channels", MM_NAME, "a Mattermost channel name (lowercase a-z, 0-9, - and _)"),
                            ("dm_from", MM_USER, "a Mattermost username, user id or *")):
        items = raw.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"{where}.{key}: must be a list; {_read_as(items)}")
            continue
        bad = [f"{where}.{key}[{i}]: {item!r} is not {what}" if isinstance(item, str) else
               f"{where}.{key}[{i}]: must be a string; {_read_as(item)} (quote it)"
               for i, item in enumerate(items) if not (isinstance(item, str) and rule.fullmatch(item))]
        problems.extend(bad)
        dupes = sorted({item for item in items if isinstance(item, str) and items.count(item) > 1})
        if dupes:
            problems.append(f"{where}.{key}: {dupes[0]!r} is listed twice")
        if not bad:
            values[key] = tuple(items)
    if "*" in values.get("dm_from", ()) and len(values["dm_from"]) > 1:
        problems.append(f"{where}.dm_from: '*' (anyone) must be alone")
    mention = raw.get("require_mention")
    if mention is not None:
        if isinstance(mention, bool):
            values["require_mention"] = mention
        else:
            problems.append(f"{where}.require_mention: must be true or false; {_read_as(mention)}")
    return Chat(**{**default.__dict__, **values})


def _reserve(raw: Any, where: str, default: Reserve, problems: list[str]) -> Reserve:
    """`{ram: 10%, disk: 15%}` (or plain numbers, read as percent); keys left out keep `default` (the fleet's)."""
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping like {{ram: 10%, disk: 15%}}")
        return default
    unknown = sorted(set(raw) - {"ram", "disk"})
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r} (ram, disk)")
    values = {}
    for key in ("ram", "disk"):
        value = raw.get(key)
        if value is None:
            continue
        pct = percent(value)
        if pct is None:
            problems.append(f"{where}.{key}: {value!r} is not a percentage from 0% to 90%")
            continue
        values[f"{key}_pct"] = pct
    return Reserve(**{"ram_pct": default.ram_pct, "disk_pct": default.disk_pct, **values})


def percent(value: Any) -> Optional[float]:
    """`15%`, `15` or `15.5` -> 15.0; None for anything else or outside 0..90 (a host reserved whole is a typo)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        value = float(match[1]) if match else None
    if not isinstance(value, (int, float)) or not 0 <= value <= 90:
        return None
    return float(value)


def _expected(types) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}
    if types == (int, float):
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def _read_as(value: Any) -> str:
    """What YAML made of a value, in words an operator recognises: unquoted, `012` is the integer 10, `yes` True."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", type(None): "null",
             list: "a list", dict: "a mapping"}
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    return f"YAML reads it as {kind}" if isinstance(value, (list, dict)) else f"YAML reads {value!r} as {kind}"


def _ssh_target(raw: Any, where: str, problems: list[str]) -> Optional[SshTarget]:
    """`ssh: root@10.220.1.7` or `ssh: {to: root@10.220.1.7, port: 22, agentfleet: /opt/agentfleet, python: ...}`."""
    if raw is None:
        return None
    spec = {"to": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, Mapping) or not isinstance(spec.get("to"), str):
        problems.append(f"{where}.ssh: must be user@address or a mapping with 'to: user@address'")
        return None
    unknown = set(spec) - {"to", "port", "agentfleet", "python"}
    if unknown:
        problems.append(f"{where}.ssh: unknown key {sorted(unknown)[0]!r} (to, port, agentfleet, python)")
    match = SSH_TARGET.match(spec["to"])
    if not match:
        problems.append(f"{where}.ssh.to: {spec['to']!r} is not user@address")
        return None
    port = spec.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"{where}.ssh.port: {port!r} is not a TCP port")
        port = 22
    agentfleet, python = spec.get("agentfleet", DEFAULT_AGENTFLEET_DIR), spec.get("python", "")
    for key, value in (("agentfleet", agentfleet), ("python", python)):
        if not isinstance(value, str) or (value and not value.startswith("/")):
            problems.append(f"{where}.ssh.{key}: must be an absolute path on the host")
    return SshTarget(user=match["user"], address=match["address"], port=port, agentfleet_dir=str(agentfleet),
                     python=str(python))


def _check_host_addresses(hosts: Mapping[str, Host], problems: list[str]) -> None:
    """Two inventory hosts reached at one address and port would be one machine holding two identities."""
    seen: dict[tuple[str, int], str] = {}
    for host in hosts.values():
        if host.ssh is None:
            continue
        key = (host.ssh.address, host.ssh.port)
        if key in seen:
            problems.append(f"hosts.{host.name}.ssh: {host.ssh.address}:{host.ssh.port} is also hosts.{seen[key]}")
        seen.setdefault(key, host.name)


def check_unique_names(raw_yaml: str, where: str) -> None:
    """YAML silently keeps the last of two equal keys; refuse duplicate agent or host names instead."""
    class _Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise CloneError(f"inventory {where}: duplicate name {dupes[0]!r} (line {node.start_mark.line + 1})")
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    _Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    yaml.load(raw_yaml, Loader=_Strict)
