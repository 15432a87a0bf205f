"""agentd: the health and drift reporter on every agent VM (its central collector is the top-level `collector` package)."""
