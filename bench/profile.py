"""Per-operator and per-layer profiles: where a model's milliseconds go, by operator type and by model part.

    result = profile_runner(runner, feeds, runs=5, work_dir=tmp)     # ONNX Runtime, PyTorch or TensorRT runner
    paths = write_profile(result, out_dir, title="raft on ort-cpu")  # profile.csv, profile.md, profile.png

- ONNX Runtime (`ort-*`): the session's own profiler (`SessionOptions.enable_profiling`); every node's kernel time
  inside the profiled runs (the first, warm-up run excluded), averaged per inference.
- PyTorch (`torch-*`): `torch.profiler` (CPU, plus CUDA activity on GPU); self time per aten operator, and the
  model's parts timed by `record_function` ranges hooked around the encoders and the update block.
- TensorRT (`trt`): `trt.IProfiler.report_layer_time` per layer, as `trtexec --dumpProfile` (needs TensorRT and
  an NVIDIA GPU; written against the TensorRT 10/11 API, not run on a machine without them).

Model parts: **encoders** (feature and context encoders), **correlation** (volume, pyramid, lookups and
coordinate updates between the update steps), **update** (motion encoder, GRU, flow and mask heads, every
iteration), **upsampling** (after the last update), **other** (input preparation). ONNX nodes are placed by their
scope (`/fnet/...`, `/cnet/...`, `/update_block/...`) and, for unscoped nodes, by their position in the graph.
`coverage` = the profiled per-inference sum over the whole-model median measured without the profiler: the share of
the wall time the profile accounts for (kernel launch gaps and the profiler's own cost are the rest).
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flownas.fileio import atomic_write_text, save_figure

PARTS = ("encoders", "correlation", "update", "upsampling", "other")
_ENCODER_SCOPES = ("/fnet", "/cnet")
_UPDATE_SCOPE = "/update_block"


@dataclass
class ProfileResult:
    """Per-operator rows (name, op_type, part, ms per inference) of one runner, and how they were taken."""

    runner: str
    backend: str
    tool: str
    rows: list[dict[str, Any]]
    runs: int
    whole_median_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    part_totals: dict[str, float] | None = None  # parts timed directly (PyTorch ranges) instead of row sums
    profiled_wall_ms: float | None = None  # mean wall time of the profiled runs themselves (ONNX Runtime)

    @property
    def total_ms(self) -> float:
        return float(sum(r["ms"] for r in self.rows))

    @property
    def coverage(self) -> float | None:
        """Profiled sum / whole-model median (1.0: the profile accounts for all of the wall time)."""
        return self.total_ms / self.whole_median_ms if self.whole_median_ms else None

    def by(self, column: str) -> dict[str, float]:
        """ms per inference summed by `column` ("op_type" or "part"), largest first."""
        totals: collections.Counter = collections.Counter()
        for row in self.rows:
            totals[row[column]] += row["ms"]
        return dict(totals.most_common())

    def by_part(self) -> dict[str, float]:
        return dict(self.part_totals) if self.part_totals is not None else self.by("part")

    def to_dict(self) -> dict[str, Any]:
        return {"runner": self.runner, "backend": self.backend, "tool": self.tool, "runs": self.runs,
                "total_ms": self.total_ms, "whole_median_ms": self.whole_median_ms, "coverage": self.coverage,
                "profiled_wall_ms": self.profiled_wall_ms,
                "by_part": self.by_part(), "by_op_type": self.by("op_type"), "rows": self.rows,
                "notes": self.notes}


# --------------------------------------------------------------------------------------------- model parts
def node_parts(model: Any) -> dict[str, str]:
    """ONNX node name -> model part (PARTS), for a toolkit flow graph (scoped names, topological order)."""
    nodes = list(model.graph.node)
    updates = [i for i, n in enumerate(nodes) if n.name.startswith(_UPDATE_SCOPE)]
    encoders = [i for i, n in enumerate(nodes) if n.name.startswith(_ENCODER_SCOPES)]
    first_encoder, last_update = (encoders[0] if encoders else 0), (updates[-1] if updates else len(nodes))
    parts = {}
    for i, node in enumerate(nodes):
        parts[node.name] = _part_of(node.name, i, first_encoder, last_update)
    return parts


def _part_of(name: str, index: int, first_encoder: int, last_update: int) -> str:
    if name.startswith(_ENCODER_SCOPES):
        return "encoders"
    if name.startswith(_UPDATE_SCOPE):
        return "update"
    if index < first_encoder:
        return "other"
    return "upsampling" if index > last_update else "correlation"


def _part_of_event(node: str, parts: Mapping[str, str]) -> str:
    """An ONNX Runtime node's part: its own name, else the original node a fusion renamed
    (`/MatMul/MatmulTransposeFusion//...` -> `/MatMul`), else its scope."""
    pieces = node.split("/")
    for end in range(len(pieces), 1, -1):
        found = parts.get("/".join(pieces[:end]))
        if found:
            return found
    return part_by_scope(node)


def part_by_scope(name: str) -> str:
    """The part of a name with a scope only (fused or renamed nodes, PyTorch ranges, TensorRT layers)."""
    if any(scope.strip("/") in name for scope in _ENCODER_SCOPES):
        return "encoders"
    if _UPDATE_SCOPE.strip("/") in name:
        return "update"
    return "other"


# --------------------------------------------------------------------------------------------- ONNX Runtime
def ort_events(profile_json: Path) -> tuple[list[tuple[float, float]], list[dict[str, Any]]]:
    """(model_run windows, node kernel events) from ONNX Runtime's profiler JSON."""
    events = json.loads(Path(profile_json).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return windows, kernels


def profile_ort(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], *, provider: str = "cpu",
                threads: int | None = None, runs: int = 5, work_dir: str | os.PathLike | None = None,
                name: str | None = None) -> ProfileResult:
    """Per-node kernel times (ms per inference) of an ONNX file on ONNX Runtime, over `runs` runs after one
    warm-up run; the profiler's JSON is written into `work_dir` (default: beside the model) and deleted."""
    import onnx

    from export.runners import OrtRunner

    folder = Path(work_dir) if work_dir else Path(path).parent
    runner = OrtRunner(path, provider, threads=threads, name=name, profile_prefix=folder / f"{Path(path).stem}-prof")
    with runner:
        for _ in range(runs + 1):
            runner.infer(feeds)
        profile = Path(runner.session.end_profiling())
    try:
        windows, kernels = ort_events(profile)
    finally:
        profile.unlink(missing_ok=True)
    windows = windows[1:]  # the first run pre-packs weights and allocates: not a steady inference
    parts = node_parts(onnx.load(str(path), load_external_data=False))
    totals: dict[str, dict[str, Any]] = {}
    for event in kernels:
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        node = event["name"][: -len("_kernel_time")]
        row = totals.setdefault(node, {"name": node, "op_type": event["args"].get("op_name", "?"),
                                       "part": _part_of_event(node, parts), "ms": 0.0})
        row["ms"] += event["dur"] / 1e3 / len(windows)
    rows = sorted(totals.values(), key=lambda r: -r["ms"])
    return ProfileResult(name or Path(path).stem, f"ort-{provider}" if provider != "tensorrt" else "ort-trt",
                         "onnxruntime profiler", rows, len(windows),
                         profiled_wall_ms=sum(end - start for start, end in windows) / len(windows) / 1e3)


def ort_op_breakdown(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], threads: int | None = None,
                     runs: int = 2, profile_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Milliseconds per inference by operator type, from ONNX Runtime's profiler (CPU provider)."""
    return profile_ort(path, feeds, threads=threads, runs=runs, work_dir=profile_dir).by("op_type")


# --------------------------------------------------------------------------------------------- PyTorch
def profile_torch(runner: Any, feeds: Mapping[str, np.ndarray], runs: int = 5) -> ProfileResult:
    """Self time per aten operator (ms per inference) of a TorchRunner, parts from `record_function` ranges
    around the encoders (`fnet`, `cnet`) and every update-block call; the rest of the time is "correlation"
    (volume, lookups, coordinates) and upsampling together, reported as "correlation+upsampling"."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device == "cuda" else [])
    model = getattr(runner.module, "model", runner.module)
    handles = _range_hooks(model, record_function)
    try:
        with runner:
            runner.infer(feeds)  # warm-up outside the profile
            with profile(activities=activities) as prof:
                for _ in range(runs):
                    with record_function("flownas.whole"):
                        runner.infer(feeds)
                if runner.device == "cuda":
                    torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    averages = prof.key_averages()
    ranges = {e.key: e.cpu_time_total / 1e3 / runs for e in averages if e.key.startswith("flownas.")}
    rows = [{"name": e.key, "op_type": e.key, "part": "(operator)", "ms": e.self_cpu_time_total / 1e3 / runs}
            for e in averages if not e.key.startswith("flownas.") and e.self_cpu_time_total > 0]
    rows.sort(key=lambda r: -r["ms"])
    result = ProfileResult(runner.name, runner.backend, "torch.profiler", rows, runs)
    whole = ranges.get("flownas.whole", result.total_ms)
    encoders, update = ranges.get("flownas.encoders", 0.0), ranges.get("flownas.update", 0.0)
    result.part_totals = {"encoders": encoders, "update": update,
                          "correlation+upsampling": max(0.0, whole - encoders - update)}
    result.notes.append("model parts from record_function ranges around the encoders and the update block; "
                        "operator rows are aten self times")
    return result


def _range_hooks(model: Any, record_function: Any) -> list[Any]:
    """Forward hooks that open a `record_function` range before the encoders / update block and close it after."""
    handles = []
    for attr, label in (("fnet", "flownas.encoders"), ("cnet", "flownas.encoders"),
                        ("update_block", "flownas.update")):
        module = getattr(model, attr, None)
        if module is None:
            continue
        stack: list[Any] = []

        def enter(_m: Any, _i: Any, label: str = label, stack: list[Any] = stack) -> None:
            stack.append(record_function(label).__enter__())

        def leave(_m: Any, _i: Any, _o: Any, stack: list[Any] = stack) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


# --------------------------------------------------------------------------------------------- TensorRT
def profile_trt(runner: Any, feeds: Mapping[str, np.ndarray], runs: int = 5) -> ProfileResult:
    """Per-layer times (ms per inference) of an EngineRunner through `trt.IProfiler` (trtexec --dumpProfile).

    TensorRT reports each layer after every synchronous completion of an enqueue; the runner's warm-up run is
    excluded. Layer names carry the ONNX scopes, so parts come from `part_by_scope`. CUDA graphs are bypassed
    (a captured graph reports no layers)."""
    import tensorrt as trt

    class _LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.ms: collections.Counter = collections.Counter()
            self.order: dict[str, int] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.ms[layer_name] += ms
            self.order.setdefault(layer_name, len(self.order))

    with runner:
        runner.infer(feeds)
        inner = runner._runner  # export.trt_runtime.TrtRunner: its IExecutionContext
        profiler = _LayerTimes()
        inner.context.profiler = profiler
        graph, inner.cuda_graph = getattr(inner, "cuda_graph", False), False
        try:
            for _ in range(runs):
                runner.infer(feeds)  # infer synchronises the stream, so every layer has reported
        finally:
            inner.cuda_graph = graph
    rows = [{"name": name, "op_type": _trt_layer_kind(name), "part": part_by_scope(name), "ms": ms / runs}
            for name, ms in sorted(profiler.ms.items(), key=lambda kv: profiler.order[kv[0]])]
    rows.sort(key=lambda r: -r["ms"])
    return ProfileResult(runner.name, "trt", "tensorrt IProfiler", rows, runs)


def _trt_layer_kind(name: str) -> str:
    """A layer's kind from its name (TensorRT names fused layers after their ONNX nodes: `/fnet/conv1/Conv + ...`)."""
    first = name.split(" + ")[0].split("/")[-1]
    return first.rstrip("0123456789_") or "layer"


# --------------------------------------------------------------------------------------------- dispatch, files
def profile_runner(runner: Any, feeds: Mapping[str, np.ndarray], runs: int = 5,
                   work_dir: str | os.PathLike | None = None, whole_median_ms: float | None = None) -> ProfileResult:
    """The profile of any runner of the toolkit, by its backend; `whole_median_ms` (the benchmark's median of the
    same runner, measured without profiling) gives the coverage."""
    backend = runner.backend
    if backend.startswith("ort-"):
        provider = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[backend]
        result = profile_ort(runner.path, feeds, provider=provider, threads=runner.threads, runs=runs,
                             work_dir=work_dir, name=runner.name)
    elif backend.startswith("torch-"):
        result = profile_torch(runner, feeds, runs)
    elif backend == "trt":
        result = profile_trt(runner, feeds, runs)
    else:
        raise ValueError(f"no profiler for backend {backend!r}")
    result.whole_median_ms = whole_median_ms
    return result


def profile_markdown(result: ProfileResult, title: str, command: str | None = None, limit: int = 15) -> str:
    """The profile as Markdown: coverage line, by part, by operator type, the slowest operators."""
    lines = [f"# Profile: {title}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines.append(f"{result.tool}, {result.runs} profiled runs after one warm-up; ms per inference.")
    if result.coverage is not None:
        lines.append(f"Sum of per-operator times {result.total_ms:.2f} ms = {100 * result.coverage:.1f}% of the "
                     f"whole-model median {result.whole_median_ms:.2f} ms measured without the profiler.")
    if result.profiled_wall_ms:
        lines.append(f"The profiled runs themselves took {result.profiled_wall_ms:.2f} ms each (wall); the "
                     f"operators account for {100 * result.total_ms / result.profiled_wall_ms:.1f}% of that.")
    lines += [""] + [f"Note: {n}" for n in result.notes]
    parts = result.by_part()
    lines += ["", "| model part | ms | share |", "|---|---|---|"]
    total = sum(parts.values()) or 1.0
    lines += [f"| {k} | {v:.3f} | {100 * v / total:.1f}% |" for k, v in parts.items()]
    by_type = result.by("op_type")
    lines += ["", "| operator type | ms | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {100 * v / (result.total_ms or 1.0):.1f}% |" for k, v in list(by_type.items())[:limit]]
    lines += ["", f"Slowest {min(limit, len(result.rows))} operators:", "", "| operator | type | part | ms |",
              "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['op_type']} | {r['part']} | {r['ms']:.3f} |" for r in result.rows[:limit]]
    return "\n".join(lines) + "\n"


def write_profile(result: ProfileResult, out_dir: str | os.PathLike, title: str, command: str | None = None,
                  stem: str = "profile") -> dict[str, Path]:
    """`<stem>.csv` (one row per operator: name, op_type, part, ms, share), `<stem>.md`, `<stem>.json` (with a
    provenance record) and `<stem>.png` (bar plots by part and by operator type), each written atomically."""
    from flownas.provenance import provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "op_type", "part", "ms", "share"])
    for row in result.rows:
        writer.writerow([row["name"], row["op_type"], row["part"], f"{row['ms']:.6f}",
                         f"{row['ms'] / (result.total_ms or 1.0):.6f}"])
    paths = {"csv": out / f"{stem}.csv", "markdown": out / f"{stem}.md", "json": out / f"{stem}.json",
             "plot": out / f"{stem}.png"}
    atomic_write_text(paths["csv"], buffer.getvalue())
    atomic_write_text(paths["markdown"], profile_markdown(result, title, command))
    record = provenance("profile", backend=result.backend, command=command)
    atomic_write_text(paths["json"], json.dumps({**result.to_dict(), "title": title, "provenance": record},
                                                indent=1, default=str))
    _plot(result, paths["plot"], title)
    return paths


def _plot(result: ProfileResult, path: Path, title: str, limit: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    parts = result.by_part()
    types = dict(list(result.by("op_type").items())[:limit])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.28 * max(len(types), len(parts)) + 1.8))
    left.barh(list(parts)[::-1], list(parts.values())[::-1], color="tab:blue")
    left.set_xlabel("ms per inference")
    left.set_title("by model part", fontsize=9)
    right.barh(list(types)[::-1], list(types.values())[::-1], color="tab:orange")
    right.set_xlabel("ms per inference")
    right.set_title(f"by operator type (top {len(types)})", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def breakdown_table(breakdowns: Mapping[str, Mapping[str, float]], limit: int = 14) -> list[str]:
    """Markdown rows: operator types as rows, one column per graph variant, plus the total."""
    names = list(breakdowns)
    ops = sorted({op for b in breakdowns.values() for op in b},
                 key=lambda op: -max(b.get(op, 0.0) for b in breakdowns.values()))
    lines = ["| operator | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op in ops[:limit]:
        lines.append(f"| {op} | " + " | ".join(f"{breakdowns[n].get(op, 0.0):.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"{sum(breakdowns[n].values()):.1f}" for n in names) + " |")
    return lines
