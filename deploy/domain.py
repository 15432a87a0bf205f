"""The libvirt domain XML of one agent: pure text from the inventory and the agent's state, so --dry-run can
print exactly what would be defined. No secret values: the domain only names disks and devices."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse
from xml.sax.saxutils import escape, quoteattr

from deploy.inventory import USER_GUEST_IP, Agent, Inventory

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vcpu: int
    memory_mib: int
    root_disk: Path
    data_disk: Path
    mac: str
    console_log: Path
    domain_type: str                    # "kvm" or "qemu" (TCG)
    network_mode: str                   # "bridge" or "user"
    bridge: str = "br0"
    user_netdev: Optional[str] = None   # the -netdev argument in user mode
    image_version: str = ""
    docker_disk: Optional[Path] = None  # Docker's persistent disk (vdc), when the agent has one


def user_netdev(inv: Inventory, agent: Agent) -> str:
    """QEMU user networking, restricted (no route out), with SSH, the agent's own `forwards` (host port on loopback
    to guest port, TCP) and the collector forwarded over loopback. The guest's firewall still decides: a forward to
    a port it does not allow connects on the host side and then gets nothing."""
    port = urlparse(inv.services.collector_url).port or 80
    api_port = urlparse(inv.services.collector_api_url).port or 80
    api_host = urlparse(inv.services.collector_api_url).hostname or "127.0.0.1"
    hostfwds = [(agent.ssh_port, 22), *agent.forwards]
    netdev = ("user,id=n0,net=10.0.2.0/24,restrict=on,"
              + "".join(f"hostfwd=tcp:127.0.0.1:{host}-{USER_GUEST_IP}:{guest}," for host, guest in hostfwds)
              + f"guestfwd=tcp:{inv.network.collector_forward}:{port}-cmd:nc {api_host} {api_port}")
    # Mattermost and the model API at the forward address (test stand-ins on the hypervisor) are forwarded the same
    # way, each to the same port on the hypervisor's loopback.
    forwarded = {port}
    for url in (inv.services.mattermost_url, inv.services.model.base_url):
        service = urlparse(url)
        if service.hostname == inv.network.collector_forward and (service.port or 80) not in forwarded:
            forwarded.add(service.port or 80)
            netdev += f",guestfwd=tcp:{service.hostname}:{service.port or 80}-cmd:nc 127.0.0.1 {service.port or 80}"
    return netdev


def spec_for(inv: Inventory, agent: Agent, *, uuid: str, mac: str, root_disk: Path, data_disk: Path,
             console_log: Path, domain_type: str, image_version: str = "",
             docker_disk: Optional[Path] = None) -> DomainSpec:
    return DomainSpec(name=agent.name, uuid=uuid, vcpu=agent.vcpu, memory_mib=int(agent.ram_gb * 1024),
                      root_disk=root_disk, data_disk=data_disk, mac=mac, console_log=console_log,
                      domain_type=domain_type, network_mode=inv.network.mode, bridge=inv.network.bridge,
                      user_netdev=user_netdev(inv, agent) if inv.network.mode == "user" else None,
                      image_version=image_version, docker_disk=docker_disk)


def domain_xml(s: DomainSpec) -> str:
    cpu = "<cpu mode='host-passthrough'/>" if s.domain_type == "kvm" else ""
    nic = ""
    qemu_args = ""
    if s.network_mode == "bridge":
        nic = (f"<interface type='bridge'><source bridge={quoteattr(s.bridge)}/><mac address='{s.mac}'/>"
               f"<model type='virtio'/></interface>")
    else:
        args = ["-netdev", s.user_netdev, "-device", f"virtio-net-pci,netdev=n0,mac={s.mac},bus=pci.0,addr=0x10"]
        qemu_args = "<qemu:commandline>" + "".join(f"<qemu:arg value={quoteattr(a)}/>" for a in args) + \
                    "</qemu:commandline>"
    docker = ""
    if s.docker_disk:
        docker = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/>"
                  f"<source file={quoteattr(str(s.docker_disk))}/><target dev='vdc' bus='virtio'/></disk>")
    return f"""<domain type='{s.domain_type}' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(s.name)}</name>
  <uuid>{s.uuid}</uuid>
  <title>agentfleet agent {escape(s.name)}</title>
  <description>image {escape(s.image_version)}</description>
  <memory unit='MiB'>{s.memory_mib}</memory>
  <vcpu>{s.vcpu}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(str(s.root_disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(str(s.data_disk))}/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    {docker}
    {nic}
    <serial type='pty'><log file={quoteattr(str(s.console_log))} append='on'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
    <video><model type='virtio'/></video>
    <memballoon model='virtio'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  {qemu_args}
</domain>
"""
