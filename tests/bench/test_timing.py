"""Timing protocol (bench/timing.py, bench/protocol.py): statistics on known sequences, warm-up by count and
by time on a fake clock, round-robin order, configuration checks, noise warnings. No model is run here."""
from __future__ import annotations

import math

import pytest

from bench.protocol import BenchResult, TimingConfig, make_feeds, timing_warnings
from bench.runners import BenchError
from bench.timing import run_rounds, summarize, warm_up


class FakeClock:
    """A clock that only moves when told to: warm-up and duration logic without real waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_statistics_of_one_to_hundred_ms() -> None:
    values = list(range(1, 101))
    stats = summarize(values)
    mean = 50.5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 99)  # sample standard deviation, by hand
    assert stats.count == 100 and stats.min_ms == 1 and stats.max_ms == 100
    assert stats.mean_ms == pytest.approx(mean) and stats.median_ms == pytest.approx(50.5)
    # numpy's linear rule: position q/100 * (n-1) = 89.1 between the sorted values 90 and 91
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.std_ms == pytest.approx(std) and stats.cv == pytest.approx(std / mean)
    assert stats.throughput_per_s == pytest.approx(1000 / 50.5)
    assert stats.to_dict()["throughput_per_s"] == pytest.approx(1000 / 50.5)


def test_statistics_of_odd_and_constant_sequences() -> None:
    stats = summarize([3.0, 1.0, 2.0])
    assert (stats.median_ms, stats.min_ms, stats.max_ms, stats.mean_ms) == (2.0, 1.0, 3.0, 2.0)
    assert stats.cv == pytest.approx(1.0 / 2.0)  # sample std of 1,2,3 is 1
    constant = summarize([4.0] * 7)
    assert constant.cv == 0 and constant.p99_ms == 4.0 and not constant.unstable()
    single = summarize([5.0])
    assert single.std_ms == 0 and single.count == 1


def test_statistics_need_samples() -> None:
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([])


def test_warm_up_by_count() -> None:
    calls = []
    assert warm_up(lambda: calls.append(1), min_runs=5, min_seconds=0.0) == 5
    assert len(calls) == 5


def test_warm_up_by_time_keeps_going_until_the_time_has_passed() -> None:
    clock = FakeClock()
    calls = []

    def run() -> None:  # each call "takes" 0.25 s
        calls.append(1)
        clock.advance(0.25)

    assert warm_up(run, min_runs=1, min_seconds=1.0, clock=clock) == 4
    calls.clear()
    assert warm_up(run, min_runs=6, min_seconds=1.0, clock=clock) == 6  # the count dominates: 1.5 s
    assert warm_up(run, min_runs=0, min_seconds=0.0, clock=clock) == 0


def test_rounds_alternate_in_order() -> None:
    order: list[str] = []
    steps = {name: (lambda n=name: order.append(n) or {"latency_ms": 1.0}) for name in "ABC"}
    samples = run_rounds(steps, runs=3)
    assert "".join(order) == "ABCABCABC"
    assert {k: len(v) for k, v in samples.items()} == {"A": 3, "B": 3, "C": 3}


def test_rounds_run_at_least_the_duration() -> None:
    clock = FakeClock()

    def step() -> dict[str, float]:
        clock.advance(0.125)  # exact in binary: no rounding at the 1 s boundary
        return {"latency_ms": 100.0, "compute_ms": 90.0}

    samples = run_rounds({"A": step, "B": step}, runs=2, min_seconds=1.0, clock=clock)
    assert len(samples["A"]) == 4  # each round takes 0.25 s: 4 rounds to reach 1 s, more than the 2 asked
    assert samples["B"][0] == {"latency_ms": 100.0, "compute_ms": 90.0}
    with pytest.raises(ValueError, match="no steps"):
        run_rounds({})


@pytest.mark.parametrize("kwargs, message", [
    ({"runs": 0}, "at least 1"), ({"warmup_s": -1.0}, "negative"), ({"duration_s": -0.5}, "negative"),
    ({"warmup_runs": -1}, "negative"), ({"cv_warn": 0.0}, "positive"),
])
def test_timing_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        TimingConfig(**kwargs).validate()


def _result(samples: list[float], device: str = "cpu", compute: list[float] | None = None) -> BenchResult:
    phases = {"compute_ms": summarize(compute)} if compute else {}
    return BenchResult("m/b", {"backend": "b", "model": "m", "device": device}, summarize(samples), phases,
                       {"latency_ms": samples}, {}, TimingConfig().to_dict(), 1, "run")


def test_noise_warning_uses_five_percent_on_cpu_and_one_percent_of_gpu_compute() -> None:
    steady = [100.0, 102.0] * 10                      # CV about 1.0%
    noisy = [100.0, 115.0] * 10                       # CV about 7.3%
    assert timing_warnings(_result(steady)) == []
    (warning,) = timing_warnings(_result(noisy))
    assert "CV 7.2% > 5%" in warning and "too noisy to trust" in warning
    gpu = timing_warnings(_result(steady, "cuda", compute=[10.0, 10.3] * 10))  # compute CV about 1.5%
    assert len(gpu) == 1 and "GPU compute CV 1.5% > 1%" in gpu[0]
    assert timing_warnings(_result(noisy), cv_warn=0.5) == []


def test_few_runs_are_flagged() -> None:
    (warning,) = timing_warnings(_result([10.0, 10.0, 10.0]))
    assert "only 3 measured runs" in warning


def test_feeds_are_a_seeded_shifted_pair() -> None:
    feeds = make_feeds(16, 24, batch=2)
    assert feeds["image1"].shape == feeds["image2"].shape == (2, 3, 16, 24)
    assert feeds["image1"].dtype.name == "float32" and 0 <= feeds["image1"].min() and feeds["image1"].max() <= 255
    assert (feeds["image2"][..., 2:, :-3] == feeds["image1"][..., :-2, 3:]).all()
    assert (make_feeds(16, 24)["image1"] == make_feeds(16, 24)["image1"]).all()
