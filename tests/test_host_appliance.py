"""host.appliance: the one libguestfs handle lifecycle of the bake, the clone and the tests."""
import subprocess

import pytest

from host.appliance import ApplianceFailed, Drive, appliance
from host.errors import HostError


def test_a_missing_drive_is_one_clear_host_error_before_any_launch(tmp_path):
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(ApplianceFailed, match=f"libguestfs cannot use {missing}: ") as failed:
        with appliance([Drive(missing)]):
            pytest.fail("the body must not run without its drive")
    assert isinstance(failed.value, HostError) and isinstance(failed.value, RuntimeError)


@pytest.mark.slow
def test_what_the_body_writes_is_on_disk_after_leaving_and_a_readonly_drive_is_never_written(tmp_path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    with appliance([Drive(disk)]) as g:
        g.mkfs("ext4", "/dev/sda")
        g.mount("/dev/sda", "/")
        g.write("/written", b"kept\n")  # left mounted: the context unmounts and shuts down cleanly
    before = disk.read_bytes()
    with appliance([Drive(disk, readonly=True)]) as g:
        g.mount_ro("/dev/sda", "/")
        assert g.cat("/written") == "kept\n"
    assert disk.read_bytes() == before
