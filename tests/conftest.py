"""Fixtures shared by every area, and the session's order. Keep area-specific fixtures in the area's own modules."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests import prebake
from tests.image_variants import BUILD, full_image, small_flat_image, small_image, small_next_image

REPO = Path(__file__).resolve().parent.parent
FAST, SLOW_NO_IMAGE, SLOW_SMALL_IMAGE, SLOW_FULL_IMAGE, E2E = range(5)
# The fixtures that hand a test a baked image: the name tests/prebake.py bakes each under, and the tier of its tests.
IMAGE_FIXTURES = {"small_baked_image": ("small", SLOW_SMALL_IMAGE),
                  "small_next_baked_image": ("small-next", SLOW_SMALL_IMAGE),
                  "small_flat_baked_image": ("small-flat", SLOW_SMALL_IMAGE),
                  "baked_image": ("full", SLOW_FULL_IMAGE)}


def tier(item: pytest.Item) -> int:
    """Fast tests first, then the slow ones that need no baked image, then those on the small image, then those on
    the full one, then the e2e: the images are baked in that order in the background (tests/prebake.py) while the
    tiers before them run."""
    if item.get_closest_marker("e2e"):
        return E2E
    if not item.get_closest_marker("slow"):
        return FAST
    return max((tier for fixture, (_, tier) in IMAGE_FIXTURES.items() if fixture in item.fixturenames),
               default=SLOW_NO_IMAGE)


@pytest.hookimpl(trylast=True)      # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=tier)                # stable: each tier keeps the files' and the tests' own order


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Start the background bakes when this session runs tests that need an image and others before them."""
    if session.config.option.collectonly:
        return
    items = session.items
    images = [image for fixture, (image, _) in IMAGE_FIXTURES.items() if any(fixture in i.fixturenames for i in items)]
    overlap = any(tier(i) <= SLOW_NO_IMAGE for i in items)
    if images and overlap and os.environ.get("AGENTFLEET_PREBAKE", "1") != "0":
        log = BUILD / "logs" / "prebake.log"
        prebake.start(images, log)
        print(f"\nbaking in the background while the tests that need no image run: {', '.join(images)} "
              f"(log: {log}; AGENTFLEET_PREBAKE=0 bakes in the foreground instead)", file=sys.stderr, flush=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    prebake.stop()


@pytest.fixture(scope="session")
def baked_image():
    """The golden image of images/agent.yaml, baked by the real pipeline (a cache hit when already published).

    Returns bake.publish.Published: `.qcow2`, `.manifest_path`, `.manifest` (a typed Manifest), `.version`,
    `.schema_path` (OpenClaw's schema published beside it). Slow the first time (a full bake), instant afterwards.
    """
    prebake.wait_for("full")
    return full_image()


@pytest.fixture(scope="session")
def small_baked_image():
    """The small test image (images/agent-small.yaml) in build/small-images."""
    prebake.wait_for("small")
    return small_image()


@pytest.fixture(scope="session")
def small_next_baked_image(tmp_path_factory):
    """The small image's next version (tests/image_variants.SMALL_BUMP), for a rollout to move to."""
    prebake.wait_for("small-next")
    return small_next_image(tmp_path_factory.mktemp("small-next"))


@pytest.fixture(scope="session")
def small_flat_baked_image():
    """The small image's inputs baked flat (`bake --flat`) into build/flat-small-images: what its chain must show
    the guest (tests/test_bake_layers.py)."""
    prebake.wait_for("small-flat")
    return small_flat_image()
