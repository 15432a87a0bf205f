"""agentd runs on the image's python3 (3.10) with only Ubuntu jammy's python3-yaml/-requests/-watchdog/-systemd."""
import ast
import configparser
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AGENTD = REPO / "agentd"
ALLOWED_THIRD_PARTY = {"yaml", "requests", "watchdog", "systemd"}
AGENTD_FILES = sorted(AGENTD.rglob("*.py"))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


@pytest.mark.parametrize("path", AGENTD_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_agentd_module_is_python_310_syntax_with_only_image_packages(path):
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    for name in _imports(tree):
        top = name.split(".")[0]
        assert top == "agentd" or top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, name
        assert top != "collector", "the image ships agentd without its collector"


def test_systemd_unit_is_notify_with_a_watchdog_and_runs_the_image_python():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(AGENTD / "systemd" / "agentd.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["ExecStart"] == "/usr/bin/python3 -m agentd"
    assert "\nEnvironment=PYTHONPATH=/opt/agentd\n" in (AGENTD / "systemd" / "agentd.service").read_text()
    assert service["Restart"] == "on-failure"
    assert "network-online.target" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
