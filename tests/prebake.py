"""The images a test session will need, baked by a background process while the tests that need none run first.

From a fresh clone (CI) the small image's bake, its next version's and the full image's are about 18 minutes of work
(CPython's compile, DIB's package installs: mostly one core), and the fast tier and the slow tests on synthetic images
(about 20 minutes, mostly one core too) need none of them. conftest.py orders a session in tiers (fast; slow without a
baked image; on the small image; on the full one; the e2e) and, when a session holds both a tier that needs no image
and one that does, starts `python -m tests.prebake` to bake them in that order. A fixture that needs an image waits
here until the background process has said how that image's bake went, then calls the pipeline itself, which finds
the image published (a cache hit) - or fails at once with the background bake's error instead of baking it again.

The pipeline's own lock (one bake per build dir) keeps the two processes from baking at once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
POLL_S = 2
STOP_GRACE_S = 600          # an interrupted DIB step unmounts its chroot before it exits


class PrebakeFailed(Exception):
    """The background bake of an image failed: its error, and the log with the whole story."""


@dataclass(frozen=True)
class Prebake:
    """The background process and the dir in which it says, per image, `ok` or `failed: <error>`."""
    process: subprocess.Popen
    status_dir: Path
    log: Path

    def wait_for(self, image: str) -> None:
        """Until the background process has finished `image` (or died: then the caller's own bake says why)."""
        status = self.status_dir / image
        while not status.exists():
            if self.process.poll() is not None:
                return
            time.sleep(POLL_S)
        said = status.read_text()
        if said.startswith("failed"):
            raise PrebakeFailed(f"the background bake of the {image} image {said} (log: {self.log})")

    def stop(self) -> None:
        """Interrupt a bake still running (the session ended early): SIGINT, so that DIB cleans up, then SIGKILL."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_running: Optional[Prebake] = None


def start(images: list[str], log: Path) -> Prebake:
    """Bake `images` (names of BAKERS, in that order) in a background process, its output in `log`."""
    global _running
    log.parent.mkdir(parents=True, exist_ok=True)
    status_dir = Path(tempfile.mkdtemp(prefix="agentfleet-prebake-"))
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tests.prebake", str(status_dir), *images], cwd=REPO,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    _running = Prebake(process, status_dir, log)
    return _running


def wait_for(image: str) -> None:
    """What a fixture calls before it bakes `image` itself: nothing to wait for unless a background bake runs."""
    if _running is not None:
        _running.wait_for(image)


def stop() -> None:
    if _running is not None:
        _running.stop()


def _bakers() -> dict[str, Callable[[Path], object]]:
    from tests import image_variants
    return {"small": lambda scratch: image_variants.small_image(),
            "small-next": image_variants.small_next_image,
            "full": lambda scratch: image_variants.full_image()}


def main(argv: list[str]) -> int:
    status_dir, images = Path(argv[0]), argv[1:]
    bakers = _bakers()
    failed = 0
    for image in images:
        t0 = time.monotonic()
        print(f"prebake: {image} ...", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix=f"agentfleet-prebake-{image}-") as scratch:
                bakers[image](Path(scratch))
            said = "ok"
        except Exception as e:   # noqa: BLE001 - any failure is the image's, said to the fixture that needs it
            traceback.print_exc()
            said, failed = f"failed: {e}", failed + 1
        print(f"prebake: {image} {said} in {time.monotonic() - t0:.0f} s", flush=True)
        (status_dir / image).write_text(said)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
