"""The fleet tool: one workstation drives every hypervisor of the inventory over SSH (docs/fleet.md)."""
