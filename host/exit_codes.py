"""One exit-code table for every agentfleet CLI (bake, clone, collector; agentd keeps an identical copy because it
may import only itself, and a test holds the two equal). Automation tells the kinds of failure apart by these."""

OK = 0           # done
FAILED = 1       # the operation failed: a command, the appliance, libvirt, a check, a rejected report
USAGE = 2        # bad usage or input: arguments, spec, lock, inventory, secrets, config (argparse exits 2 as well)
ROLLED_BACK = 3  # clone --replace could not prove the new image healthy and restored the previous one
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell's convention
