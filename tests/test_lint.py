"""ruff over the whole tree, with the rules in pyproject.toml ([tool.ruff]): a finding fails the fast tier, so the
style (120 columns, one import order) and pyflakes' defects never pile up again."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_in_the_tree():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in result.stderr, "ruff is a test dependency: pip install -e '.[test]'"
    assert result.returncode == 0, f"ruff check . (fix with `ruff check --fix`, or by hand):\n{result.stdout}"
