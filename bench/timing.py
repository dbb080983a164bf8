"""The timing protocol: warm-up by time and count, then a measured count or duration; robust statistics.

CPU work is timed with `time.perf_counter`. GPU runners time with CUDA events and synchronise (see the
runners); this module only turns samples into statistics and schedules the runs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter); tests pass a fake one

# trtexec warns when the coefficient of variation of GPU compute time exceeds 1%; CPU timings on a shared
# 2-core machine are noisier, so we flag above 5% there.
CV_WARN_GPU, CV_WARN_CPU = 0.01, 0.05


@dataclass(frozen=True)
class TimingStats:
    """Statistics of one timed quantity, all in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float  # coefficient of variation: std / mean

    @property
    def throughput_per_s(self) -> float:
        return 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "throughput_per_s": self.throughput_per_s}

    def unstable(self, threshold: float = CV_WARN_CPU) -> bool:
        return self.cv > threshold


def summarize(samples_ms: list[float] | np.ndarray) -> TimingStats:
    """Statistics of a sequence of timings (ms). Percentiles use linear interpolation (numpy default).

    trtexec reports the nearest-rank sample instead; the two differ by less than one gap between neighbouring
    sorted samples. The standard deviation (and so the CV) is the sample one (ddof=1).
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timing samples to summarise")
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    p90, p95, p99 = (float(np.percentile(values, q)) for q in (90, 95, 99))
    return TimingStats(int(values.size), float(values.min()), mean, float(statistics.median(values)), p90, p95, p99,
                       float(values.max()), std, std / mean if mean > 0 else 0.0)


def warm_up(fn: Callable[[], object], min_runs: int = 2, min_seconds: float = 0.0,
            clock: Clock = time.perf_counter) -> int:
    """Run `fn` until both `min_runs` calls and `min_seconds` have passed; returns the number of calls.

    Both conditions, as trtexec's `--warmUp` (time) and Polygraphy's `--warm-up` (count): a count alone is
    too short for a fast model to reach steady clocks and caches, a time alone may run a slow model zero times.
    """
    start, runs = clock(), 0
    while runs < min_runs or clock() - start < min_seconds:
        fn()
        runs += 1
    return runs


def run_rounds(steps: Mapping[str, Callable[[], Mapping[str, float]]], runs: int = 5, min_seconds: float = 0.0,
               clock: Clock = time.perf_counter) -> dict[str, list[dict[str, float]]]:
    """Call the steps in alternation (A B C A B C ...) for at least `runs` rounds and `min_seconds`.

    Each step performs one measured run and returns its samples (e.g. `{"latency_ms": 12.3}`); the samples of
    every round are returned per step, in order. Alternating makes slow drift (thermal, other processes) hit
    every step alike, so ratios between them come from one run.
    """
    if not steps:
        raise ValueError("nothing to time: no steps given")
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    start, done = clock(), 0
    while done < runs or clock() - start < min_seconds:
        for name, step in steps.items():
            samples[name].append(dict(step()))
        done += 1
    return samples
