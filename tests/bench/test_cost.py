"""bench.cost.MemorySampler: the host RSS rise over a block, seen by sampling (also what was freed before the end)."""
from __future__ import annotations

import time

import numpy as np

from bench.cost import MemorySampler

MB = 1 << 20


def test_sampler_sees_memory_held_at_the_end() -> None:
    with MemorySampler() as sampler:
        block = np.ones(96 * MB, dtype=np.uint8)  # ones: every page touched, so it is resident
    assert sampler.peak_increase_mb >= 90
    assert sampler.record()["host_peak_increase_mb"] >= 90 and sampler.record()["device_peak_mb"] is None
    del block


def test_sampler_sees_a_peak_freed_before_the_end() -> None:
    with MemorySampler(interval_s=0.001) as sampler:
        block = np.ones(96 * MB, dtype=np.uint8)
        time.sleep(0.05)  # several sampling intervals while the block is resident
        del block
    assert sampler.peak_increase_mb >= 90


def test_sampler_reports_no_rise_for_no_allocation() -> None:
    with MemorySampler() as sampler:
        time.sleep(0.01)
    assert 0 <= sampler.peak_increase_mb < 8  # the sampler thread's own stack at most
