"""Timed phases: every phase has a deadline; at it the phase's own children are killed and the phase fails with one
line naming it; a phase blocked with nothing to kill ends the process with that line."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from host import progress
from host.progress import PhaseTimedOut, Progress
from tests.conftest import REPO


def test_a_phase_past_its_deadline_kills_its_command_and_fails_naming_the_phase(tmp_path):
    p = Progress(tmp_path / "log", quiet=True)
    t0 = time.monotonic()
    with pytest.raises(PhaseTimedOut) as e:
        with p.phase("bootloader: grub-install", deadline_s=1):
            subprocess.run(["sleep", "600"])
    assert time.monotonic() - t0 < 10
    assert str(e.value).startswith("bootloader: grub-install: no end after 1 s")
    assert "bootloader: grub-install" not in p.phases
    assert "deadline of 1 s passed; stopping it (1 processes killed)" in (tmp_path / "log").read_text()


def test_a_phase_kills_only_the_children_it_started(tmp_path):
    older = subprocess.Popen(["sleep", "600"])
    try:
        with pytest.raises(PhaseTimedOut):
            with Progress(quiet=True).phase("inject", deadline_s=0.5):
                subprocess.run(["sleep", "600"])
        assert older.poll() is None, "a process started before the phase is not the phase's to kill"
    finally:
        older.kill()
        older.wait()


def test_a_phase_within_its_deadline_is_timed(tmp_path):
    p = Progress(quiet=True)
    with p.phase("publish", deadline_s=30):
        subprocess.run(["true"], check=True)
    assert 0 <= p.phases["publish"] < 30


def test_a_phase_blocked_with_nothing_to_kill_exits_the_process_with_one_line():
    script = textwrap.dedent("""
        import threading
        from host import progress
        progress.CANCEL_GRACE_S = 0.5
        with progress.Progress(quiet=True).phase("define domain (libvirt)", deadline_s=0.5):
            threading.Event().wait()  # like a libvirt RPC that never answers
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == progress.EXIT_PHASE_TIMED_OUT
    assert proc.stderr.strip().splitlines()[-1].startswith("define domain (libvirt): no end after 0.5 s (deadline")


def test_deadlines_scale_with_the_environment(monkeypatch):
    monkeypatch.setenv("AGENTFLEET_DEADLINE_SCALE", "0.01")
    with pytest.raises(PhaseTimedOut):
        with Progress(quiet=True).phase("app tree", deadline_s=100):
            subprocess.run(["sleep", "600"])
    monkeypatch.setenv("AGENTFLEET_DEADLINE_SCALE", "soon")
    with pytest.raises(progress.PhaseError, match="AGENTFLEET_DEADLINE_SCALE='soon' is not a number"):
        with Progress(quiet=True).phase("app tree", deadline_s=100):
            pass


def test_one_phase_deadline_can_be_set_in_the_environment(monkeypatch):
    defaults = {"inject": 1800, "boot": 600}
    monkeypatch.setenv("AGENTFLEET_DEADLINES", "inject=5, base=7200")
    assert (progress.deadline_for("inject", defaults), progress.deadline_for("boot", defaults)) == (5, 600)
    monkeypatch.setenv("AGENTFLEET_DEADLINES", "inject=soon")
    with pytest.raises(progress.PhaseError, match="'inject=soon' is not KEY=SECONDS"):
        progress.deadline_for("boot", defaults)
