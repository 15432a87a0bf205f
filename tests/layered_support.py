"""Layered images without a bake, for the push tests and bench: a base layer (a qcow2 of random bytes) and app
layers on it (qcow2 overlays backed by the base layer's bare name, holding a few written clusters), published by the
bake's own publish() with `base_layer`, as `bake --layered` publishes them."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_base_layer(path: Path, size_mb: int) -> Path:
    """A qcow2 holding `size_mb` MiB of random bytes (incompressible, as ssh sees a real base layer)."""
    raw = path.with_name(path.name + ".raw")
    with open(raw, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return path


def make_app_layer(base: Path, path: Path, pattern: int, size_mb: int = 1, backing: str = "") -> Path:
    """An overlay in base's dir, backed by `backing` (default: the base layer's bare name), with `size_mb` MiB of
    `pattern` bytes written at offset 0 (so it holds data of its own)."""
    assert path.parent == base.parent, "an app layer names its base layer by bare name, in the same dir"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing or base.name, str(path)],
                   check=True, cwd=path.parent)
    subprocess.run(["qemu-io", "-c", f"write -P {pattern:#x} 0 {size_mb}M", str(path)], check=True, cwd=path.parent,
                   capture_output=True)
    return path
