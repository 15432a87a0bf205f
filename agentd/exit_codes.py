"""agentd's copy of host/exit_codes.py (agentd ships alone in the image and imports only itself); a test keeps the
two identical."""

OK = 0           # done
FAILED = 1       # the operation failed: a check failed (`agentd check`), the collector rejected a report
USAGE = 2        # bad usage or input: arguments, agentd.yaml, the token file
ROLLED_BACK = 3  # clone --replace could not prove the new image healthy and restored the previous one
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell's convention
