"""The host layer's one error family: bake and deploy catch HostError at their edges and wrap it in their own."""


class HostError(Exception):
    """A host tool (an external command, the libguestfs appliance) failed; the message says which and why."""
