"""What the clone injects into one agent: the list of operations (paths as inside the VM), built from the inventory,
the image, the agent's state, its secrets and host keys. Pure apart from reading the host key files."""
from __future__ import annotations

import json
import time

import yaml

from agentd import vm_files
from agentd.protocol import agent_token
from bake.spec import OPENCLAW
from deploy import firewall, openclaw_config
from deploy.hostkeys import HostKey
from deploy.images import Image
from deploy.inject import HOME, Mkdir, Op, WriteFile
from deploy.inventory import USER_DNS, USER_GATEWAY, USER_GUEST_IP, Agent, Inventory
from deploy.secrets import AgentSecrets, Secret
from deploy.state import AgentState

AGENT_OWNER = "agent:agent"


def agentd_config(inv: Inventory, agent: Agent, image: Image) -> vm_files.Config:
    """agentd's own config object: what this agent, the inventory and the image decide (the image's manifest says
    which services it runs, so agentd checks OpenClaw only where it is baked in); every other setting is agentd's
    default (agentd/vm_files.py), never typed again here."""
    return vm_files.Config(agent=agent.name, collector_url=inv.services.collector_url,
                           mattermost_url=inv.services.mattermost_url,
                           openclaw_url=f"http://127.0.0.1:{openclaw_config.GATEWAY_PORT}",
                           services=image.manifest.services)


TIMESYNCD_DIR = "/etc/systemd/timesyncd.conf.d"


def timesyncd_conf(inv: Inventory) -> str:
    """systemd-timesyncd keeps the clock with the inventory's NTP servers and nothing else: no fallback to the
    distribution's pool (a VM should not reach out where the inventory did not say), none at all in user mode."""
    return ("# agentfleet: the inventory's network.ntp\n[Time]\n"
            f"NTP={' '.join(inv.network.ntp)}\nFallbackNTP=\n")


def netplan(inv: Inventory, agent: Agent, mac: str) -> dict:
    """Static addressing matched by MAC; in user mode QEMU's fixed 10.0.2.x addresses."""
    if inv.network.mode == "user":
        address, gateway, dns = f"{USER_GUEST_IP}/24", USER_GATEWAY, [USER_DNS]
    else:
        address, gateway, dns = f"{agent.ip}/{inv.network.subnet.prefixlen}", inv.network.gateway, list(inv.network.dns)
    return {"network": {"version": 2, "renderer": "networkd", "ethernets": {"lan": {
        "match": {"macaddress": mac}, "set-name": "eth0", "dhcp4": False, "addresses": [address],
        "routes": [{"to": "default", "via": gateway}], "nameservers": {"addresses": dns}}}}}


def identity(inv: Inventory, agent: Agent, image: Image, state: AgentState) -> vm_files.Identity:
    """cloned_at is the first clone's time from the state (so an --update that changes nothing here writes the same
    bytes); states written before it was recorded get the time of this injection."""
    return vm_files.Identity(agent=agent.name, host=agent.host, role=agent.role, ip=agent.ip,
                             image_version=image.version, cloned_at=state.cloned_at or int(time.time()))


def agent_ops(inv: Inventory, agent: Agent, image: Image, state: AgentState, secrets: AgentSecrets,
              host_keys: list[HostKey]) -> tuple[Op, ...]:
    ip = USER_GUEST_IP if inv.network.mode == "user" else agent.ip
    hosts = (f"127.0.0.1 localhost\n{ip} {agent.name}\n::1 localhost ip6-localhost ip6-loopback\n"
             f"ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")
    config = openclaw_config.build_config(inv, agent, image.manifest.openclaw_plugins)
    token = agent_token(secrets["collector_secret"].reveal().encode(), agent.name)
    ops: list[Op] = [
        WriteFile("/etc/hostname", f"{agent.name}\n".encode()),
        WriteFile("/etc/hosts", hosts.encode()),
        WriteFile("/etc/machine-id", f"{state.machine_id}\n".encode(), 0o444),
        WriteFile("/etc/netplan/01-agentfleet.yaml", yaml.safe_dump(netplan(inv, agent, state.mac)).encode(), 0o600),
        Mkdir(vm_files.ETC, 0o755),
        WriteFile(vm_files.IDENTITY_JSON, _json(identity(inv, agent, image, state).to_json())),
        WriteFile(vm_files.AGENTD_YAML, yaml.safe_dump(agentd_config(inv, agent, image).to_yaml_data(),
                                                       sort_keys=False).encode()),
        WriteFile(vm_files.AGENTD_TOKEN, Secret(token + "\n"), 0o600),
        Mkdir(TIMESYNCD_DIR, 0o755),
        WriteFile(f"{TIMESYNCD_DIR}/50-agentfleet.conf", timesyncd_conf(inv).encode()),
        # ufw's rules (the image has it on, incoming denied): the seed's ports and the agent's own; 0640 as ufw's
        Mkdir("/etc/ufw", 0o755),
        WriteFile(firewall.USER_RULES, firewall.user_rules(agent.firewall_allow).encode(), 0o640),
        WriteFile(firewall.USER6_RULES, firewall.user_rules(agent.firewall_allow, v6=True).encode(), 0o640),
    ]
    for key in host_keys:
        ops.append(WriteFile(f"/etc/ssh/{key.private.name}", Secret(key.private.read_text()), 0o600))
        ops.append(WriteFile(f"/etc/ssh/{key.public.name}", key.public.read_bytes(), 0o644))
    ops += [
        Mkdir(f"{HOME}/.ssh", 0o700, AGENT_OWNER),
        WriteFile(f"{HOME}/.ssh/authorized_keys", ("\n".join(inv.admin_keys) + "\n").encode(), 0o600, AGENT_OWNER),
    ]
    if OPENCLAW not in image.manifest.services:
        return tuple(ops)                 # no OpenClaw in the image: its config and API keys have no reader there
    ops += [
        Mkdir(f"{HOME}/.openclaw", 0o700, AGENT_OWNER),
        WriteFile(f"{HOME}/.openclaw/openclaw.json", _json(config), 0o600, AGENT_OWNER),
        WriteFile(f"{HOME}/.openclaw/.env", Secret(openclaw_config.build_env(secrets)), 0o600, AGENT_OWNER),
    ]
    return tuple(ops)


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
