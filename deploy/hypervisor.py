"""libvirt-python: define, start, stop and remove an agent's domain. One connection per URI per run."""
from __future__ import annotations

import logging
import time
from typing import Optional

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

    def xml_of(self, name: str) -> Optional[str]:
        dom = self.domain(name)
        return dom.XMLDesc(0) if dom else None
