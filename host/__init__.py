"""The host layer shared by the bake and the clone: what runs on the build machine or hypervisor itself."""
