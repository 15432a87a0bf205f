# agentfleet: golden images, clones, agentd and the collector.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup bake lock test test-fast test-slow e2e lint bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup:  ## install apt packages and the venv (idempotent)
	scripts/setup-host.sh

bake: setup  ## bake the golden image from images/agent.yaml (cache hit if unchanged)
	$(PY) -m bake.cli bake images/agent.yaml $(BAKE_ARGS)

lock: setup  ## re-resolve images/agent.lock.json from the registries
	$(PY) -m bake.cli lock images/agent.yaml

test: setup  ## what CI runs: every tier (fast, slow, e2e; the bakes in the background; 62 min in CI at the last landing), slowest tests listed
	$(PYTEST) --durations=15 tests

test-fast: setup  ## unit and service tests only (about a minute)
	$(PYTEST) -m "not slow and not e2e" tests

test-slow: setup  ## tests that bake, inject and boot (minutes)
	$(PYTEST) -m "slow and not e2e" tests

lint: setup  ## ruff over the tree (the fast tier runs it too: tests/test_lint.py)
	$(PY) -m ruff check .

e2e: setup  ## end to end on real VMs (about 20 min here once baked): clone two agents, report, the conversation, drift, replace
	$(PYTEST) -m e2e tests

bench: setup  ## print benchmark figures (not a test)
	$(PY) bench/bake.py; $(PY) bench/clone.py; $(PY) bench/collector.py; $(PY) bench/agentd.py

clean:  ## remove work trees (keeps published images and download caches)
	rm -rf build/work
