"""One libguestfs handle lifecycle for the bake: add drives -> launch -> work -> shutdown (so write errors surface)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from bake.errors import BakeError
from host.accel import apply_guestfs_env


@contextmanager
def appliance(drives: Sequence[tuple[Path, str, bool]], memsize_mb: int = 1024) -> Iterator["guestfs.GuestFS"]:
    """drives: (path, format, readonly). The handle is shut down cleanly on success and closed in every case."""
    import guestfs

    apply_guestfs_env()  # KVM when it really works, else TCG (nested KVM crashes qemu here)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_memsize(memsize_mb)
        for path, fmt, readonly in drives:
            g.add_drive_opts(str(path), format=fmt, readonly=readonly)
        try:
            g.launch()
        except RuntimeError as e:
            raise BakeError(f"libguestfs appliance failed to start: {e} (try `libguestfs-test-tool`)") from None
        yield g
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
