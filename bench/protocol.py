"""The benchmarking protocol: warm-up by count and time, measured runs interleaved across runners, statistics.

Follows trtexec: warm up for a time (`--warmUp`) and a count, then measure for at least a number of runs
(`--iterations`) and a duration (`--duration`); report min/mean/median/p90/p95/p99/max and throughput;
warn when the coefficient of variation is too high (trtexec: GPU compute CV > 1%). Runners with a device
clock are timed with CUDA events (phases H2D / compute / D2H kept apart), the others on the host clock.
`compare` times several runners in alternation, so their ratios come from one run under the same conditions.
"""
from __future__ import annotations

import contextlib
import functools
import datetime as dt
import os
import platform
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from export.runners import Feeds, Runner
from flownas.provenance import cpu_isa, cpu_model, library_version

from .cost import MemorySampler
from .runners import BenchError
from .timing import CV_WARN_CPU, CV_WARN_GPU, Clock, TimingStats, run_rounds, summarize, warm_up

LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "numpy", "cuda-python", "pycuda")
FEW_RUNS = 10  # below this, p95/p99 are interpolated between the one or two slowest runs


@dataclass(frozen=True)
class TimingConfig:
    """Warm-up until `warmup_runs` AND `warmup_s` are reached; measure at least `runs` AND `duration_s`.

    `cv_warn`: the CV above which a result is flagged; None picks 5% for host-timed CPU runs and trtexec's
    1% for GPU compute time.
    """

    warmup_runs: int = 2
    warmup_s: float = 1.0
    runs: int = 10
    duration_s: float = 0.0
    cv_warn: float | None = None

    def validate(self) -> "TimingConfig":
        if self.runs < 1:
            raise BenchError(f"measured runs must be at least 1, got {self.runs}")
        if self.warmup_runs < 0 or self.warmup_s < 0 or self.duration_s < 0:
            raise BenchError("warm-up runs, warm-up seconds and duration must not be negative")
        if self.cv_warn is not None and self.cv_warn <= 0:
            raise BenchError(f"the CV warning threshold must be positive, got {self.cv_warn}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    """One runner's measurements: headline latency, phases, raw samples, description, environment, warnings."""

    name: str
    runner: dict[str, Any]
    stats: TimingStats                    # latency_ms: end to end, numpy in and out (trtexec's "Latency")
    phases: dict[str, TimingStats]        # h2d_ms / compute_ms / d2h_ms / host_ms for device-timed runners
    samples: dict[str, list[float]]       # every measured value, in run order, per quantity (ms)
    environment: dict[str, Any]
    config: dict[str, Any]
    warmup_runs: int
    run_id: str                           # results sharing a run_id were measured interleaved, in one run
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)  # last outputs; not serialised
    memory: dict[str, Any] = field(default_factory=dict)  # bench.cost.MemorySampler.record() of its activation

    @property
    def model(self) -> str:
        return str(self.runner.get("model", "model"))

    @property
    def backend(self) -> str:
        return str(self.runner.get("backend", "?"))

    @property
    def precision(self) -> str:
        return str(self.runner.get("precision", "fp32"))

    def to_dict(self, environment: bool = True) -> dict[str, Any]:
        out = {"name": self.name, "model": self.model, "backend": self.backend, "precision": self.precision,
               "runner": self.runner, "stats": self.stats.to_dict(),
               "phases": {k: v.to_dict() for k, v in self.phases.items()}, "samples_ms": self.samples,
               "config": self.config, "warmup_runs": self.warmup_runs, "run_id": self.run_id, "meta": self.meta,
               "warnings": self.warnings, "memory": self.memory}
        if environment:
            out["environment"] = self.environment
        return out


def make_feeds(height: int, width: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded image pair, float32 `[B,3,H,W]` in [0,255]; the second frame is the first shifted by (2,-3) px."""
    from export.inputs import image_pair

    return image_pair((batch, 3, height, width), seed)


def environment() -> dict[str, Any]:
    """CPU model, cores, load, OS, Python, library versions, GPU (when any) and the UTC date."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {**_machine(), "logical_cpus": os.cpu_count(), "usable_cpus": len(affinity) if affinity else None,
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    """What does not change within a process (read once: a latency table times hundreds of graphs in one run)."""
    return {"cpu": cpu_model(), "cpu_isa": cpu_isa(), "os": platform.platform(),
            "python": platform.python_version(), "host": platform.node(),
            "versions": {lib: v for lib in LIBRARIES if (v := library_version(lib))},
            "gpu": _gpu_name()}


def _gpu_name() -> str | None:
    """Through torch only if something already imported it (importing torch is slow and absent on targets)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from export.trt_runtime import gpu_info  # cuda-python or pycuda; None when neither or no GPU

    info = gpu_info()
    return info["name"] if info else None


def benchmark(runner: Runner, feeds: Feeds, config: TimingConfig = TimingConfig(), *, name: str | None = None,
              meta: Mapping[str, Any] | None = None, clock: Clock = time.perf_counter) -> BenchResult:
    """Warm up and measure one runner (activated here and released after, if it was not active)."""
    name = name or f"{runner.model_name}/{runner.backend}"
    return compare({name: runner}, feeds, config, meta=meta, clock=clock)[name]


def compare(runners: Mapping[str, Runner], feeds: Feeds, config: TimingConfig = TimingConfig(), *,
            meta: Mapping[str, Any] | None = None, clock: Clock = time.perf_counter) -> dict[str, BenchResult]:
    """Measure several runners interleaved (A B C A B C ...) on the same feeds; one result per name.

    Each runner is warmed up first (count and time), then rounds run until `config.runs` rounds and
    `config.duration_s` seconds are done. Runners not already active are activated here and released after.
    """
    config.validate()
    if not runners:
        raise BenchError("nothing to benchmark: no runners given")
    env, run_id = environment(), uuid.uuid4().hex[:12]
    outputs: dict[str, dict[str, np.ndarray]] = {}
    memory: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        steps = {name: _measure_step(name, runner, feeds, clock, outputs) for name, runner in runners.items()}
        warmed = {}
        for name, runner in runners.items():  # one at a time, so each runner's memory rise is its own
            with MemorySampler(device=runner.device) as sampler:
                if not runner.active:
                    stack.enter_context(runner)
                warmed[name] = warm_up(steps[name], config.warmup_runs, config.warmup_s, clock)
            memory[name] = sampler.record()
        rounds = run_rounds(steps, config.runs, config.duration_s, clock)
        for name, runner in runners.items():
            if name not in outputs:  # device-timed runs leave their outputs on the device: fetch them once
                outputs[name] = runner.infer(feeds)
        descriptions = {name: runner.describe() for name, runner in runners.items()}  # while active: GPU names
    if hasattr(os, "getloadavg"):  # sampled again at the end: a load that rose during the run taints it too
        env["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    results = {name: _result(name, descriptions[name], rounds[name], warmed[name], env, config, run_id, meta,
                             outputs.get(name)) for name in runners}
    for name, result in results.items():
        result.memory = memory[name]
    return results


def _measure_step(name: str, runner: Runner, feeds: Feeds, clock: Clock,
                  outputs: dict[str, dict[str, np.ndarray]]) -> Callable[[], dict[str, float]]:
    """One measured run: device phases plus host wall time for GPU runners, host time around `infer` otherwise."""
    if runner.has_device_clock:
        def step() -> dict[str, float]:
            t0 = clock()
            sample = dict(runner.timed_run(feeds))
            sample["host_ms"] = (clock() - t0) * 1e3  # end to end on the host: Python, staging, synchronisation
            return sample
    else:
        def step() -> dict[str, float]:
            t0 = clock()
            out = runner.infer(feeds)
            elapsed = (clock() - t0) * 1e3
            outputs[name] = out  # kept outside the timed span: the last run's outputs, to compare backends
            return {"latency_ms": elapsed}
    return step


def _result(name: str, description: dict[str, Any], rounds: list[dict[str, float]], warmed: int,
            env: dict[str, Any], config: TimingConfig, run_id: str, meta: Mapping[str, Any] | None,
            outputs: dict[str, np.ndarray] | None) -> BenchResult:
    samples = {key: [r[key] for r in rounds] for key in rounds[0]}
    stats = summarize(samples["latency_ms"])
    phases = {key: summarize(values) for key, values in samples.items() if key != "latency_ms"}
    result = BenchResult(name, description, stats, phases, samples, env, config.to_dict(), warmed, run_id,
                         dict(meta or {}), outputs=outputs)
    result.warnings = timing_warnings(result, config.cv_warn)
    return result


def timing_warnings(result: BenchResult, cv_warn: float | None = None) -> list[str]:
    """Why a result may not be trusted: CV over the threshold (on GPU compute time where measured), few runs."""
    on_gpu = result.runner.get("device", "cpu") != "cpu"
    key, label = ("compute_ms", "GPU compute") if "compute_ms" in result.phases else ("latency_ms", "latency")
    stats = result.phases.get(key, result.stats)
    threshold = cv_warn if cv_warn is not None else (CV_WARN_GPU if on_gpu else CV_WARN_CPU)
    notes = []
    if stats.cv > threshold:
        notes.append(f"{result.name}: {label} CV {stats.cv:.1%} > {threshold:.0%}: timings are too noisy to trust "
                     "(close other programs, fix clocks, or measure longer with --duration-s)")
    if stats.count < FEW_RUNS:
        notes.append(f"{result.name}: only {stats.count} measured runs: p95/p99 rest on the slowest one or two")
    return notes
