"""libvirt-python: define, start, stop and remove an agent's domain. One connection per URI per run."""
from __future__ import annotations

import logging
import time
from typing import Optional
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from deploy.errors import CloneError
from host import exit_codes

log = logging.getLogger(__name__)


class Hypervisor:
    def __init__(self, uri: str):
        import libvirt  # Debian's python3-libvirt; late import keeps the fast tier free of it

        self._libvirt = libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)  # errors become exceptions only, no stderr noise
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise CloneError(f"libvirt {uri}: cannot connect ({e.get_error_message()}); is libvirtd running?",
                             exit_codes.FAILED) from None
        self.uri = uri

    def close(self) -> None:
        self.conn.close()

    def domain(self, name: str):
        try:
            return self.conn.lookupByName(name)
        except self._libvirt.libvirtError:
            return None

    def is_running(self, name: str) -> bool:
        dom = self.domain(name)
        return bool(dom and dom.isActive())

    def define_and_start(self, xml: str, name: str) -> None:
        """(Re)define from XML (the domain must be stopped), enable autostart, start."""
        try:
            dom = self.conn.defineXML(xml)
            dom.setAutostart(1)
            if not dom.isActive():
                dom.create()
        except self._libvirt.libvirtError as e:
            raise CloneError(f"{name}: libvirt refused the domain: {e.get_error_message()}",
                             exit_codes.FAILED) from None
        log.info("libvirt: %s defined and started", name)

    def stop(self, name: str, timeout_s: float) -> None:
        """ACPI shutdown, then a hard stop after timeout_s (a guest that ignores ACPI must not block a replace)."""
        dom = self.domain(name)
        if not dom or not dom.isActive():
            return
        try:
            dom.shutdown()
        except self._libvirt.libvirtError:
            pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not dom.isActive():
                log.info("libvirt: %s shut down cleanly", name)
                return
            time.sleep(0.5)
        log.warning("libvirt: %s ignored shutdown for %.0fs; forcing it off", name, timeout_s)
        try:
            dom.destroy()
        except self._libvirt.libvirtError as e:
            if dom.isActive():
                raise CloneError(f"{name}: could not stop the domain: {e.get_error_message()}",
                                 exit_codes.FAILED) from None

    def undefine(self, name: str) -> None:
        dom = self.domain(name)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except self._libvirt.libvirtError as e:
            raise CloneError(f"{name}: libvirt could not remove the domain: {e.get_error_message()}",
                             exit_codes.FAILED) from None

    def xml_of(self, name: str, inactive: bool = False) -> Optional[str]:
        """The domain's XML as it runs, or (inactive) its persistent definition."""
        dom = self.domain(name)
        return dom.XMLDesc(self._libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) if dom else None

    # --- a running domain's disk frozen for a consistent copy, then merged back (deploy/backup.py) ---

    def disk_source(self, name: str, target: str, inactive: bool = False) -> Optional[str]:
        """The file the domain's disk `target` (vdb) is on now (or in its persistent definition)."""
        dom = self.domain(name)
        if dom is None:
            return None
        flags = self._libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return disk_source_in(dom.XMLDesc(flags), target)

    def freeze_disk(self, name: str, target: str, overlay: str) -> None:
        """An external disk-only snapshot of `target` alone, atomic, with no snapshot metadata kept: from now on the
        guest writes into `overlay`, and the file under it holds still (a crash-consistent point in time)."""
        xml = (f"<domainsnapshot><name>agentfleet-backup</name><disks>"
               f"{''.join(self._snapshot_disk(d, target, overlay) for d in self._disk_targets(name))}"
               f"</disks></domainsnapshot>")
        lv = self._libvirt
        flags = (lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | lv.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                 | lv.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        try:
            self.domain(name).snapshotCreateXML(xml, flags)
        except (lv.libvirtError, AttributeError) as e:
            why = e.get_error_message() if isinstance(e, lv.libvirtError) else "the domain is gone"
            raise CloneError(f"{name}: libvirt could not snapshot {target} ({why})", exit_codes.FAILED) from None
        log.info("libvirt: %s: %s frozen, writes go to %s", name, target, overlay)

    def commit_active(self, name: str, target: str, timeout_s: float, poll_s: float = 0.5) -> None:
        """Merge the active overlay of `target` into the file under it and pivot the guest back onto that file
        (`virsh blockcommit --active --pivot`); the overlay is unused afterwards and the caller removes it."""
        lv = self._libvirt
        dom = self.domain(name)
        try:
            if not dom.blockJobInfo(target, 0):
                dom.blockCommit(target, None, None, 0, lv.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
            deadline = time.monotonic() + timeout_s
            while True:   # an active commit never ends by itself: it is ready once the overlay is merged
                info = dom.blockJobInfo(target, 0)
                if info and info.get("end", 0) > 0 and info.get("cur") == info.get("end"):
                    break
                if not info:
                    raise CloneError(f"{name}: the merge of {target}'s overlay stopped before it was ready",
                                     exit_codes.FAILED)
                if time.monotonic() > deadline:
                    raise CloneError(f"{name}: the merge of {target}'s overlay was not ready after {timeout_s:.0f} s",
                                     exit_codes.FAILED)
                time.sleep(poll_s)
            dom.blockJobAbort(target, lv.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            while dom.blockJobInfo(target, 0):   # the pivot completing
                if time.monotonic() > deadline:
                    raise CloneError(f"{name}: the pivot of {target} did not finish", exit_codes.FAILED)
                time.sleep(poll_s)
        except lv.libvirtError as e:
            raise CloneError(f"{name}: libvirt could not merge {target}'s overlay back ({e.get_error_message()})",
                             exit_codes.FAILED) from None
        log.info("libvirt: %s: %s merged back and pivoted", name, target)

    def define(self, xml: str, name: str) -> None:
        """(Re)define the persistent domain only; a running one keeps running."""
        try:
            self.conn.defineXML(xml)
        except self._libvirt.libvirtError as e:
            raise CloneError(f"{name}: libvirt refused the domain: {e.get_error_message()}",
                             exit_codes.FAILED) from None

    def _disk_targets(self, name: str) -> list[str]:
        root = ElementTree.fromstring(self.domain(name).XMLDesc(0))
        return [t.get("dev") for t in root.findall("./devices/disk[@device='disk']/target")]

    @staticmethod
    def _snapshot_disk(dev: str, target: str, overlay: str) -> str:
        if dev != target:
            return f"<disk name={quoteattr(dev)} snapshot='no'/>"
        return (f"<disk name={quoteattr(dev)} snapshot='external'><driver type='qcow2'/>"
                f"<source file={quoteattr(overlay)}/></disk>")


def disk_source_in(xml: str, target: str) -> Optional[str]:
    """The source file of the disk whose target is `target` in a domain XML (None when there is no such disk)."""
    for disk in ElementTree.fromstring(xml).findall("./devices/disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            source = disk.find("source")
            return source.get("file") if source is not None else None
    return None
