"""Per-operator and per-layer profiles: where a model's milliseconds go, by operator type and by model part.

    result = profile_runner(runner, feeds, runs=5, work_dir=tmp)     # ONNX Runtime, PyTorch or TensorRT runner
    paths = write_profile(result, out_dir, title="raft on ort-cpu")  # profile.csv/.md/.json/.png
    coverage = profile_figure("raft", 384, 512, iters=12, runs=3)    # the benchmark note's figure

- ONNX Runtime (`ort-*`): the session's own profiler (`SessionOptions.enable_profiling`); every node's kernel time
  inside the profiled runs (the first, warm-up run excluded), averaged per inference.
- PyTorch (`torch-*`): `torch.profiler` (CPU, plus CUDA activity on GPU); self time per aten operator, and the
  model's parts timed by `record_function` ranges hooked around the encoders and the update block.
- TensorRT (`trt`): `trt.IProfiler.report_layer_time` per layer (`export.trt_profile`), as `trtexec --dumpProfile`
  (needs TensorRT and an NVIDIA GPU; written against the TensorRT 10/11 API, not run on a machine without them).

Model parts: **encoders** (feature and context encoders), **correlation** (volume, pyramid, lookups and
coordinate updates between the update steps), **update** (motion encoder, GRU, flow and mask heads, every
iteration), **upsampling** (after the last update), **other** (input preparation). ONNX nodes are placed by their
scope (`/fnet/...`, `/cnet/...`, `/update_block/...`) and, for unscoped nodes, by their position in the graph;
nodes ONNX Runtime renamed (fusions, NCHWc convs named after their output, layout reorders) by the node they
came from or serve. Rows also carry the precision-plan layer **group** (`export.precision_plan.node_group`:
stem, encoder_blocks, ..., gru, flow_head, mask_head; "-" outside them), so a profile shows what a plan can lower.
`coverage` = the profiled per-inference sum over the whole-model median measured without the profiler: the share of
the wall time the profile accounts for (kernel launch gaps and the profiler's own cost are the rest).
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flownas.fileio import atomic_write_text, save_figure

PARTS = ("encoders", "correlation", "update", "upsampling", "other")
NO_GROUP = "-"  # rows outside every precision-plan layer group (correlation, upsampling, input preparation)
_ENCODER_SCOPES = ("/fnet", "/cnet")
_UPDATE_SCOPE = "/update_block"
_NODE_TOKEN = re.compile(r"/[^\s+,()\[\]{}.]+(?:\.\d+[^\s+,()\[\]{}.]*)*")  # `/fnet/blocks.0/Conv` keeps its dots


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
        """ms per inference summed by `column` ("op_type", "part" or "group"), largest first."""
        totals: collections.Counter = collections.Counter()
        for row in self.rows:
            totals[row.get(column, NO_GROUP)] += row["ms"]
        return dict(totals.most_common())

    def by_part(self) -> dict[str, float]:
        return dict(self.part_totals) if self.part_totals is not None else self.by("part")

    def by_group(self) -> dict[str, float]:
        """ms by precision-plan layer group; {} when no row has one (PyTorch rows are aten operators)."""
        groups = self.by("group")
        return groups if set(groups) - {NO_GROUP} else {}

    def to_dict(self) -> dict[str, Any]:
        return {"runner": self.runner, "backend": self.backend, "tool": self.tool, "runs": self.runs,
                "total_ms": self.total_ms, "whole_median_ms": self.whole_median_ms, "coverage": self.coverage,
                "profiled_wall_ms": self.profiled_wall_ms,
                "by_part": self.by_part(), "by_op_type": self.by("op_type"), "by_group": self.by_group(),
                "rows": self.rows,
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


def _group_of(name: str) -> str:
    """The precision-plan layer group of a node (`export.precision_plan.node_group`: stem, encoder_blocks,
    encoder_head, motion_encoder, gru, flow_head, mask_head), so a profile says which group a plan should lower."""
    from export.precision_plan import node_group

    return node_group(name) or NO_GROUP


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
                name: str | None = None, place_reorders: bool = True) -> ProfileResult:
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
    graph = onnx.load(str(path), load_external_data=False)
    parts, producers = node_parts(graph), {out: n.name for n in graph.graph.node for out in n.output}
    # One more session load to place the layout reorders: skipped where only op types matter.
    reorders = _reorder_sources(path, folder) if provider == "cpu" and place_reorders else {}
    totals: dict[str, dict[str, Any]] = {}
    for event in kernels:
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        node = event["name"][: -len("_kernel_time")]
        source = _source_node(node, producers, reorders)
        row = totals.setdefault(node, {"name": node, "op_type": event["args"].get("op_name", "?"),
                                       "part": _part_of_event(source, parts), "group": _group_of(source),
                                       "ms": 0.0})
        row["ms"] += event["dur"] / 1e3 / len(windows)
    rows = sorted(totals.values(), key=lambda r: -r["ms"])
    return ProfileResult(name or Path(path).stem, f"ort-{provider}" if provider != "tensorrt" else "ort-trt",
                         "onnxruntime profiler", rows, len(windows),
                         profiled_wall_ms=sum(end - start for start, end in windows) / len(windows) / 1e3)


def _source_node(node: str, producers: Mapping[str, str], reorders: Mapping[str, str] | None = None) -> str:
    """The graph node an ONNX Runtime node stands for. Its NCHWc layout transformer names a fused Conv after
    the tensor it writes (`/cnet/Relu_output_0_nchwc`: the Conv + Relu ending in `/cnet/Relu`), so such a name
    maps to that tensor's producer (tensor name -> node name); layout reorders first to the node they serve
    (`reorders`, from `_reorder_sources`); other names are their own (fusions keep the original as a prefix)."""
    node = (reorders or {}).get(node, node)
    if node.endswith("_nchwc") and node[: -len("_nchwc")] in producers:
        return producers[node[: -len("_nchwc")]]
    return node


_REORDER = ("ReorderInput", "ReorderOutput")


def _reorder_sources(path: str | os.PathLike, folder: Path) -> dict[str, str]:
    """Each NCHWc layout reorder ONNX Runtime inserts (`ReorderInput_token_14`, unscoped) -> the node it
    serves: a ReorderInput's consumer, a ReorderOutput's producer, so its time goes to that node's part instead
    of "other". Read from the optimized graph of a CPU session with the runner's default optimization level
    (same transformer, same generated names); the file is deleted after."""
    import onnx
    import onnxruntime as ort

    optimized = folder / f"{Path(path).stem}-optimized.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(optimized)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = list(onnx.load(str(optimized), load_external_data=False).graph.node)
    finally:
        optimized.unlink(missing_ok=True)
    producer = {out: n for n in nodes for out in n.output}
    consumer: dict[str, Any] = {}
    for n in nodes:
        for name in n.input:
            consumer.setdefault(name, n)
    sources = {}
    for n in nodes:
        step, seen = n, 0
        while step is not None and step.name.startswith(_REORDER) and seen < 8:  # chains of reorders
            step = consumer.get(step.output[0]) if step.name.startswith("ReorderInput") else producer.get(step.input[0])
            seen += 1
        if n.name.startswith(_REORDER) and step is not None and not step.name.startswith(_REORDER):
            sources[n.name] = step.name
    return sources


def ort_op_breakdown(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], threads: int | None = None,
                     runs: int = 2, profile_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Milliseconds per inference by operator type, from ONNX Runtime's profiler (CPU provider)."""
    return profile_ort(path, feeds, threads=threads, runs=runs, work_dir=profile_dir,
                       place_reorders=False).by("op_type")


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
    """Per-layer times (ms per inference) of an EngineRunner through `trt.IProfiler` (trtexec --dumpProfile;
    `export.trt_profile.layer_times`): the warm-up run excluded, CUDA graphs bypassed while profiling. A layer
    takes the part of the first ONNX node named in it, from the engine's source graph when its record names one
    that is still there, else by scope."""
    from export.trt_profile import layer_kind, layer_times

    with runner:
        times = layer_times(runner._runner, feeds, runs).per_inference()  # _runner: the TrtRunner with the context
    parts = _source_parts(getattr(runner, "record", None) or {})
    rows = [{"name": name, "op_type": layer_kind(name), "part": _layer_part(name, parts),
             "group": _group_of(_layer_nodes(name)[0] if _layer_nodes(name) else name), "ms": ms}
            for name, ms in times.items()]
    rows.sort(key=lambda r: -r["ms"])
    result = ProfileResult(runner.name, "trt", "tensorrt IProfiler", rows, runs)
    if not parts:
        result.notes.append("the engine's ONNX graph was not found: unscoped layers (correlation, upsampling) "
                            "are reported as other")
    return result


def _source_parts(record: Mapping[str, Any]) -> dict[str, str]:
    """node_parts of the ONNX graph an engine was built from (its sidecar's "onnx"), or {} when it is gone."""
    source = record.get("onnx")
    if not source or not Path(source).is_file():
        return {}
    import onnx

    return node_parts(onnx.load(str(source), load_external_data=False))


def _layer_nodes(name: str) -> list[str]:
    """The ONNX node names inside a TensorRT layer name (`/fnet/conv1/Conv + /fnet/Relu`, `PWN(/a/Mul, /a/Add)`,
    `{ForeignNode[/MatMul.../Softmax]}`), in order."""
    return _NODE_TOKEN.findall(name)


def _layer_part(name: str, parts: Mapping[str, str]) -> str:
    for node in _layer_nodes(name):
        if node in parts:
            return parts[node]
    return part_by_scope(name)


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
    by_group = result.by_group()
    if by_group:  # the groups a precision plan lowers (export.precision_plan); "-" stays FP32 in every plan
        lines += ["", "| layer group (precision plans) | ms | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | {100 * v / (result.total_ms or 1.0):.1f}% |" for k, v in by_group.items()]
    lines += ["", f"Slowest {min(limit, len(result.rows))} operators:", "", "| operator | type | part | ms |",
              "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['op_type']} | {r['part']} | {r['ms']:.3f} |" for r in result.rows[:limit]]
    return "\n".join(lines) + "\n"


def write_profile(result: ProfileResult, out_dir: str | os.PathLike, title: str, command: str | None = None,
                  stem: str = "profile") -> dict[str, Path]:
    """`<stem>.csv` (one row per operator: name, op_type, part, group, ms, share), `<stem>.md`, `<stem>.json` (with a
    provenance record) and `<stem>.png` (bar plots by part and by operator type), each written atomically."""
    from flownas.provenance import provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "op_type", "part", "group", "ms", "share"])
    for row in result.rows:
        writer.writerow([row["name"], row["op_type"], row["part"], row.get("group", NO_GROUP), f"{row['ms']:.6f}",
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


def profile_figure(model: str = "raft", height: int = 384, width: int = 512, iters: int = 12, runs: int = 3,
                   threads: int | None = None, timed_runs: int = 10, out_dir: str | os.PathLike | None = None,
                   work_dir: str | os.PathLike | None = None) -> float:
    """The coverage figure of the benchmark note: export registry `model` (untrained weights -- latency ignores
    their values) at height x width with `iters` iterations, measure its whole-model median on ONNX Runtime CPU
    (`timed_runs` runs, no profiler), then profile `runs` runs in a fresh session; return sum of per-operator
    times / that median. With `out_dir`, the profile files (`write_profile`) are written there too."""
    import tempfile

    from bench.protocol import TimingConfig, benchmark, make_feeds
    from export.onnx_export import ExportSpec, export_onnx
    from export.runners import OrtRunner
    from flownas.weights import untrained_model

    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        path = Path(scratch) / f"{model}-{height}x{width}-{iters}.onnx"
        export_onnx(untrained_model(model), path, ExportSpec(height, width, iters=iters))
        feeds = make_feeds(height, width)
        runner = OrtRunner(path, "cpu", threads=threads, name=model)
        whole = benchmark(runner, feeds, TimingConfig(warmup_runs=1, warmup_s=0.0, runs=timed_runs)).stats.median_ms
        result = profile_runner(runner, feeds, runs=runs, work_dir=scratch, whole_median_ms=whole)
    if out_dir is not None:
        write_profile(result, out_dir, f"{model} {height}x{width}, {iters} iterations, ort-cpu",
                      command=f"bench.profile.profile_figure({model!r}, {height}, {width}, {iters}, runs={runs}, "
                              f"threads={threads})")
    return result.total_ms / whole


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
