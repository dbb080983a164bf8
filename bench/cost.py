"""Memory and compute beside latency: peak memory of a runner, and MACs per inference of a model or ONNX graph.

Peak host memory: the runners of a benchmark share one process, so each runner's figure is the rise of the
process's resident memory (RSS, sampled every 2 ms by a background thread from /proc/self/statm, or the peak RSS
from getrusage where /proc is missing) over its own activation and warm-up runs, above the RSS before them: what
loading the model and running it costs, weights, arena and activations included. Device memory (torch-cuda):
`torch.cuda.max_memory_allocated` over the same span; other GPU runtimes manage their own pools, which the
toolkit does not read (reported as not measured).

MACs: for a PyTorch flow model `flownas.complexity.count_macs` (FlopCounterMode on the meta device); for an ONNX
file, the Conv, MatMul and Gemm nodes with shapes from ONNX shape inference (elementwise work is
left out, as MAC counts usually do).
"""
from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

MB = 1024 * 1024
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int:
    """Resident memory of this process now (Linux), else its peak so far (getrusage)."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class MemorySampler:
    """`with MemorySampler() as m: ...` then `m.peak_increase_mb`: the RSS rise over the block (sampled)."""

    def __init__(self, interval_s: float = 0.002, device: str = "cpu") -> None:
        self.interval_s, self.device = interval_s, device
        self.start = self.peak = 0
        self.device_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MemorySampler":
        self.start = self.peak = rss_bytes()
        if self.device == "cuda" and "torch" in sys.modules:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if self.device == "cuda" and "torch" in sys.modules:
            import torch

            self.device_peak_mb = torch.cuda.max_memory_allocated() / MB

    @property
    def peak_increase_mb(self) -> float:
        return max(0, self.peak - self.start) / MB

    def record(self) -> dict[str, Any]:
        return {"host_peak_increase_mb": round(self.peak_increase_mb, 1), "host_rss_before_mb":
                round(self.start / MB, 1), "device_peak_mb": None if self.device_peak_mb is None else
                round(self.device_peak_mb, 1)}


def graph_macs(path: str | os.PathLike) -> int | None:
    """Multiply-accumulates of one run of an ONNX graph: Conv/MatMul/Gemm with inferred shapes;
    None when a shape stays unknown (a dynamic graph)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        ins = [shapes.get(name) for name in node.input[:2]]
        out = shapes.get(node.output[0])
        if out is None or any(s is None for s in ins) or None in out or any(None in s for s in ins):
            return None
        if node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(ins[1][1:]))  # weight [out, in/group, k...]
        else:
            a = ins[0]
            total += int(np.prod(out)) * int(a[-1] if node.op_type == "MatMul" else _gemm_k(node, a))
    return total


def _gemm_k(node: Any, a: list[int]) -> int:
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    return a[0] if trans_a else a[-1]
