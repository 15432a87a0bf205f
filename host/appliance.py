"""One libguestfs handle lifecycle for the bake, the clone and the tests, as libguestfs's own tools do it:
add drives -> launch -> (the caller's work) -> umount_all -> shutdown (so write errors surface) -> close."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from host.accel import apply_guestfs_env
from host.errors import HostError
from host.run import concurrently

if TYPE_CHECKING:
    import guestfs

log = logging.getLogger(__name__)


class ApplianceFailed(HostError, RuntimeError):
    """The appliance did not start. A RuntimeError too, like every other libguestfs failure a caller catches."""


@dataclass(frozen=True)
class Drive:
    """A disk image given to the appliance; the n-th drive is /dev/sd<a+n> inside it."""
    path: Path
    format: str = "qcow2"
    readonly: bool = False


@contextmanager
def appliance(drives: Sequence[Drive], memsize_mb: Optional[int] = None,
              meanwhile: Optional[Callable[[], None]] = None) -> Iterator[guestfs.GuestFS]:
    """A launched handle on `drives`: unmounted and shut down cleanly on success, closed in every case.

    `meanwhile` runs in another thread during the launch (seconds of a booting appliance, most of a minute under
    TCG); the launch waits for it, and its failure is raised as its own (after the appliance's, if both fail).
    The launch itself stays in the caller's thread, which owns the appliance's processes to the end."""
    import guestfs  # Debian's python3-guestfs; imported late so the fast tier needs no libguestfs

    apply_guestfs_env()  # KVM when it really works, else TCG (nested KVM crashes or hangs qemu)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        if memsize_mb:
            g.set_memsize(memsize_mb)
        for drive in drives:
            try:
                g.add_drive_opts(str(drive.path), format=drive.format, readonly=drive.readonly)
            except RuntimeError as e:
                raise ApplianceFailed(f"libguestfs cannot use {drive.path}: {str(e).splitlines()[0][:300]}") from None
        started = time.monotonic()

        def launch() -> None:
            try:
                g.launch()
            except RuntimeError as e:
                raise ApplianceFailed(f"libguestfs appliance failed to start: {str(e).splitlines()[0][:300]} "
                                      f"(try `libguestfs-test-tool`)") from None
            log.info("guestfs: appliance up with %d drives in %.1fs", len(drives), time.monotonic() - started)

        concurrently(lambda step: step(), [launch, *([meanwhile] if meanwhile else [])])
        yield g
        started = time.monotonic()
        g.umount_all()
        g.shutdown()
        log.info("guestfs: appliance shut down (disks flushed) in %.1fs", time.monotonic() - started)
    finally:
        g.close()
