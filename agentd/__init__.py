"""agentd: the health and drift reporter on every agent VM, and (in agentd.collector) its central collector."""
