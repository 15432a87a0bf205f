"""The images a test session will need, baked by a background process while the tests that need none run first.

From a fresh clone (CI) the small image's bake, its next version's and the full image's are about 18 minutes of work
(CPython's compile, DIB's package installs: mostly one core), and the fast tier and the slow tests on synthetic images
(about 20 minutes, mostly one core too) need none of them. conftest.py orders a session in tiers (fast; slow without a
baked image; on the small image; on the full one; the e2e) and, when a session holds both a tier that needs no image
and one that does, starts `python -m tests.prebake` to bake them in that order. A fixture that needs an image waits
here until the background process has said how that image's bake went, then calls the pipeline itself, which finds
the image published (a cache hit), or bakes it (when the background bake failed: its error is said first).

The pipeline's own lock (one bake per build dir) keeps the two processes from baking at once.
"""
from __future__ import annotations

import contextlib
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
START_GRACE_S = 60          # for the background process to write its pid
STOP_GRACE_S = 600          # an interrupted DIB step unmounts its chroot before it exits


@dataclass(frozen=True)
class Prebake:
    """The background process, detached from the test session's process tree (a phase deadline under test kills
    every descendant of the pytest process it did not start before it: a bake's must not be among them), and the dir
    in which it writes its pid and, per image, `ok` or `failed: <error>`."""
    status_dir: Path
    log: Path
    started: float

    def wait_for(self, image: str) -> None:
        """Until the background process has finished `image`, or ended without it. A failed background bake is said
        here; the caller then bakes the image itself (a transient failure heals, a real one shows its error again)."""
        status = self.status_dir / image
        while not status.exists() and self._running():
            time.sleep(POLL_S)
        said = status.read_text() if status.exists() else "did not finish (the background process ended)"
        if said != "ok":
            print(f"\nthe background bake of the {image} image {said} (log: {self.log}); baking it here",
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Interrupt a bake still running (the session ended early): SIGINT, so that DIB cleans up, then SIGKILL."""
        pid = self._pid()
        if pid is None or not self._running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while self._running() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def _pid(self) -> Optional[int]:
        pid_file = self.status_dir / "pid"
        return int(pid_file.read_text()) if pid_file.exists() else None

    def _running(self) -> bool:
        pid = self._pid()
        if pid is None:                    # not yet started, or never will
            return time.monotonic() - self.started < START_GRACE_S
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


_running: Optional[Prebake] = None


def start(images: list[str], log: Path) -> Prebake:
    """Bake `images` (names of _bakers(), in that order) in a background process, its output in `log`."""
    global _running
    log.parent.mkdir(parents=True, exist_ok=True)
    status_dir = Path(tempfile.mkdtemp(prefix="agentfleet-prebake-"))
    with open(log, "w") as out:           # setsid -f: the bake runs in a session of its own, its parent init
        subprocess.run(["setsid", "-f", sys.executable, "-m", "tests.prebake", str(status_dir), *images], cwd=REPO,
                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=True)
    _running = Prebake(status_dir, log, time.monotonic())
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
            "small-flat": lambda scratch: image_variants.small_flat_image(),
            "full": lambda scratch: image_variants.full_image()}


def main(argv: list[str]) -> int:
    status_dir, images = Path(argv[0]), argv[1:]
    (status_dir / "pid").write_text(str(os.getpid()))
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
