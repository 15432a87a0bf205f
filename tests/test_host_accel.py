"""The accelerator probe: KVM is trusted only when a guest boots under it to the end of kernel init.

A real qemu stands in for each failure: `-S` keeps it alive with a vCPU that never runs (what a hung nested KVM looks
like from outside: a live qemu, no console output), and an unknown option makes it exit at once (the crash)."""
from __future__ import annotations

import json
import os

import pytest

from host import accel

KERNEL = accel.probe_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="no /boot/vmlinuz-* (scripts/setup-host.sh installs one)")


@needs_kernel
def test_a_qemu_that_stays_alive_but_prints_nothing_is_not_a_working_accelerator():
    result = accel.probe_boot("tcg", KERNEL, deadline_s=2, extra_qemu_args=("-S",))
    assert not result.reached_marker
    assert "hung" in result.detail and "no console output" in result.detail
    assert 2 <= result.seconds < 10, "the deadline bounds the probe"


@needs_kernel
def test_a_qemu_that_exits_at_once_is_reported_with_its_error():
    result = accel.probe_boot("tcg", KERNEL, deadline_s=20, extra_qemu_args=("-no-such-option",))
    assert not result.reached_marker
    assert "exited" in result.detail and "no-such-option" in result.detail
    assert result.seconds < 10


@pytest.mark.slow
@needs_kernel
def test_a_guest_that_boots_reaches_the_marker_under_tcg():
    result = accel.probe_boot("tcg", KERNEL, deadline_s=120)
    assert result.reached_marker, result.detail
    assert "kernel" in result.detail


@pytest.mark.parametrize("forced", ["kvm", "tcg"])
def test_agentfleet_accel_overrides_the_probe(monkeypatch, forced):
    monkeypatch.setenv("AGENTFLEET_ACCEL", forced)
    verdict = accel.decide()
    assert verdict.accel == forced and "AGENTFLEET_ACCEL" in verdict.reason


@pytest.fixture
def verdict_cache(monkeypatch, tmp_path):
    """A private verdict cache, with no AGENTFLEET_ACCEL override; only where /dev/kvm is usable (else no probe)."""
    if KERNEL is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm or no kernel: the verdict is TCG before any cache is read")
    cache = tmp_path / "accel.json"
    monkeypatch.setenv("AGENTFLEET_ACCEL_CACHE", str(cache))
    monkeypatch.delenv("AGENTFLEET_ACCEL", raising=False)
    return cache


def test_a_cached_verdict_for_this_boot_is_reused_and_says_so(verdict_cache):
    cache = verdict_cache
    key = accel._cache_key(KERNEL)
    cache.write_text(json.dumps({"accel": "tcg", "reason": "KVM probe failed: guest hung", "key": key}))
    verdict = accel.decide(deadline_s=0.01)
    assert verdict.accel == "tcg" and "cached in" in verdict.reason and "guest hung" in verdict.reason


def test_a_verdict_cached_for_another_boot_is_not_trusted(verdict_cache):
    cache = verdict_cache
    cache.write_text(json.dumps({"accel": "kvm", "reason": "old", "key": "another-boot|qemu|kernel"}))
    verdict = accel.decide(deadline_s=0.5)  # too short for any guest: a fresh probe must fail, not reuse "kvm"
    assert verdict.accel == "tcg" and "probe failed" in verdict.reason
    assert json.loads(cache.read_text())["accel"] == "tcg", "the new verdict replaces the stale one"
