"""agentd: the health and drift reporter on every agent VM.

Its central collector is the top-level `collector` package, a different program on a different machine."""
