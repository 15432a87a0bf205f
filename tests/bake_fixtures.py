"""Helpers for bake tests: a copy of the real spec tree that a test may break."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def copy_images(tmp_path: Path) -> Path:
    """images/ copied to tmp_path; returns the copied spec's path."""
    shutil.copytree(REPO / "images", tmp_path / "images")
    return tmp_path / "images" / "agent.yaml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
