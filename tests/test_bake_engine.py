"""The Node/OpenClaw engine check: npm ranges as OpenClaw declares them."""
import pytest

from bake.engine import check_engine, satisfies
from bake.errors import BakeError

OPENCLAW_2026_9_2 = ">=22.22.3 <23 || >=24.15.0 <25 || >=25.9.0"
OPENCLAW_2026_9_3 = ">=24.16.0 <25 || >=26.1.0"


@pytest.mark.parametrize("version, expected", [
    ("22.23.3", True), ("22.22.3", True), ("22.22.2", False), ("23.0.0", False),
    ("24.15.0", True), ("24.14.9", False), ("25.9.0", True), ("26.0.0", True),
])
def test_openclaw_2026_9_2_range(version, expected):
    assert satisfies(version, OPENCLAW_2026_9_2) is expected


@pytest.mark.parametrize("version, rng, expected", [
    ("22.5.0", "^22.1.0", True), ("23.0.0", "^22.1.0", False), ("22.1.9", "~22.1.2", True),
    ("22.2.0", "~22.1.2", False), ("22.9.9", "22.x", True), ("21.9.9", ">21", False), ("22.0.0", ">21", True),
    ("1.2.3", "*", True), ("22.0.0", "<=22", True),
])
def test_caret_tilde_and_partial_versions(version, rng, expected):
    assert satisfies(version, rng) is expected


def test_node_22_with_openclaw_that_needs_24_is_refused_with_both_pins_named():
    with pytest.raises(BakeError, match=r"OpenClaw 2026.9.3 requires node .*but artifacts.node.version pins 22.23.3"):
        check_engine("22.23.3", "2026.9.3", OPENCLAW_2026_9_3)


def test_matching_pins_pass():
    check_engine("22.23.3", "2026.9.2", OPENCLAW_2026_9_2)


def test_a_space_after_the_operator_is_allowed_as_npm_does():
    assert satisfies("22.23.3", ">= 18.0.0")   # aws-cdk's engines.node
    assert not satisfies("16.20.0", ">= 18.0.0")
    assert satisfies("22.23.3", ">= 18.0.0 < 23")


def test_an_npm_cli_that_needs_a_newer_node_is_refused_naming_its_pin():
    with pytest.raises(BakeError, match=r"artifacts.aws-cdk.version: aws-cdk 9.0.0 requires node '>= 24'"):
        check_engine("22.23.3", "9.0.0", ">= 24", "aws-cdk")
