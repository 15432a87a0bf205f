"""Fixtures shared by every area. Keep area-specific fixtures in the area's own test modules."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The build dir the image tests bake into: build/ unless AGENTFLEET_BUILD_DIR names another (a branch's bake in its own
# dir leaves the shared base-tree cache, which keeps only the newest three trees, to the others).
BUILD = Path(os.environ.get("AGENTFLEET_BUILD_DIR") or REPO / "build")


@pytest.fixture(scope="session")
def baked_image():
    """The golden image of images/agent.yaml, baked by the real pipeline (a cache hit when already published).

    Returns bake.publish.Published: `.qcow2`, `.manifest_path`, `.manifest` (a typed Manifest), `.version`,
    `.schema_path` (OpenClaw's schema published beside it). Slow the first time (a full bake), instant afterwards.
    """
    from bake.pipeline import Layout, bake
    outcome = bake(REPO / "images" / "agent.yaml", Layout(BUILD))
    return outcome.image
