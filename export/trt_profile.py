"""Per-layer times of a TensorRT engine through `trt.IProfiler`, as `trtexec --dumpProfile` reports them.

    with TrtRunner("raft.engine") as runner:
        times = layer_times(runner, feeds, runs=10)     # LayerTimes: layer name -> ms per inference, engine order

TensorRT (8.5 and later, so 10 and 11) calls the profiler attached to an execution context
(`IExecutionContext.profiler`) once per layer for every `execute_v2` / `execute_async_v3`, after the work has
completed: `report_layer_time(layer_name, ms)`. A CUDA graph launch bypasses the context, so nothing would be
reported; the runner's graph mode is switched off while profiling (profiled numbers then include the per-kernel
launch cost a graph would hide -- that is what trtexec --dumpProfile without --useCudaGraph measures too).
Layer names carry the ONNX node names the parser gave them (fused layers: `/fnet/conv1/Conv + /fnet/Relu`);
an engine built with profiling verbosity NONE reports layer indices instead.

TensorRT is imported lazily (`import_tensorrt`), so this module imports on machines without it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .trt_runtime import import_tensorrt


@dataclass
class LayerTimes:
    """Accumulated `report_layer_time` calls: total ms per layer over `runs` inferences, in first-report order."""

    total_ms: dict[str, float] = field(default_factory=dict)
    runs: int = 0

    def add(self, layer_name: str, ms: float) -> None:
        # dict keeps first-insertion order: the engine's execution order, as trtexec lists layers.
        self.total_ms[layer_name] = self.total_ms.get(layer_name, 0.0) + float(ms)

    def per_inference(self) -> dict[str, float]:
        """Layer -> mean ms per inference (engine order)."""
        if self.runs < 1:
            raise ValueError("no profiled runs were recorded")
        return {name: ms / self.runs for name, ms in self.total_ms.items()}


def make_profiler(times: LayerTimes) -> Any:
    """A `trt.IProfiler` that adds every reported layer time to `times` (the subclass needs tensorrt itself,
    hence built here rather than at import time)."""
    trt = import_tensorrt()

    class _Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)  # the pybind11 base must be initialised explicitly (TensorRT's docs)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            times.add(layer_name, ms)

    return _Profiler()


def layer_times(trt_runner: Any, feeds: Mapping[str, np.ndarray], runs: int = 5) -> LayerTimes:
    """Per-layer times of an active `export.trt_runtime.TrtRunner` over `runs` inferences after one warm-up
    inference (not profiled: the first enqueue does TensorRT's deferred set-up)."""
    if runs < 1:
        raise ValueError(f"runs={runs}: at least one profiled run is needed")
    times = LayerTimes()
    trt_runner.infer(dict(feeds))  # warm-up, before the profiler is attached
    graph_mode = trt_runner.cuda_graph
    trt_runner.cuda_graph = False  # a graph launch reports no layers
    profiler = make_profiler(times)  # kept referenced here: the context holds only a non-owning pointer
    trt_runner.context.profiler = profiler
    try:
        for _ in range(runs):
            trt_runner.infer(dict(feeds))  # infer syncs the stream: every layer has reported on return
            times.runs += 1
    finally:
        trt_runner.cuda_graph = graph_mode
    return times


_KIND_PREFIXES = (("Reformatting", "Reformat"), ("{ForeignNode", "ForeignNode"), ("PWN(", "Pointwise"))


def layer_kind(name: str) -> str:
    """A layer's kind from its name: the op of its first fused ONNX node (`/fnet/conv1/Conv + /fnet/Relu` ->
    `Conv`); TensorRT's own layers by their prefix (reformat copies, Myelin foreign nodes, fused pointwise
    `PWN(...)`); "layer" for names without either (an engine built with profiling verbosity NONE: indices)."""
    for prefix, kind in _KIND_PREFIXES:
        if name.startswith(prefix):
            return kind
    first = name.split(" + ")[0].strip().split("/")[-1]
    return re.sub(r"[\W\d_]+$", "", first) or "layer"
