"""A benchmark session as a library call: `run_benchmark(BenchRequest(...)) -> BenchSession`.

    from bench.session import BenchRequest, run_benchmark
    session = run_benchmark(BenchRequest(backends="torch-cpu,ort-cpu", model="raft-k", resolution="384x512"))
    session = run_benchmark(BenchRequest(backends="ort-cpu", onnx="any.onnx", input_shapes="x:1x3x224x224"))

The source is an ONNX file (any graph: its inputs are generated from the declared shapes and dtypes, or given as
`.npy` files), a TensorRT engine, a checkpoint (`weights`, `arch` for a supernet) or an untrained named model
(`model`: speed does not depend on weight values). `ort-*` backends given a PyTorch model run it exported to ONNX
in a scratch folder under the report folder. Every argument is checked, and every backend's libraries found,
before any slow work starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.backends import Backend, parse_backends
from export.inputs import (TensorSpec, flow_input_specs, generate_inputs, is_flow_graph, onnx_io_specs,
                           parse_input_files, parse_shape_spec, resolve_shapes)
from export.runners import Runner, artifact_metadata, engine_record
from flownas.fileio import parse_resolution, scratch_of, staged_dir
from flownas.provenance import command_line, cpu_int8_note

from .protocol import BenchResult, TimingConfig, compare
from .report import REPORT_FILES, write_reports
from .runners import BenchError, make_runner

DEFAULT_RESOLUTION, DEFAULT_ITERS, DEFAULT_OUT = (384, 512), 12, "outputs/bench"
UNTRAINED_NOTE = "Weights are untrained (random, seeded): speed does not depend on weight values."
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PROFILE_DIR = "profile"
Log = Callable[[str], None]


@dataclass
class BenchRequest:
    """Everything one benchmark run needs; `validate()` checks it all before any work."""

    backends: str | Sequence[str]
    onnx: str | None = None
    engine: str | None = None
    weights: str | None = None
    arch: str | None = None
    model: str | None = None
    resolution: str | tuple[int, int] | None = None
    iters: int | None = None
    batch: int = 1
    input_shapes: str | None = None   # trtexec-style `name:1x3x384x512,...` for dynamic graphs
    inputs: str | None = None         # `name:file.npy,...` instead of generated data
    timing: TimingConfig = field(default_factory=TimingConfig)
    threads: int | None = None
    precision: str | None = None
    cuda_graph: bool = False
    baseline: str | None = None
    out: str | os.PathLike = DEFAULT_OUT
    seed: int = 0
    profile: bool = False             # per-operator profiles of every runner into OUT/profile/ (bench.profile)
    profile_runs: int = 5

    def precision_list(self) -> list[str | None]:
        """`precision` as a list ("fp32,int8" -> both, measured side by side); [None] when not given."""
        if not self.precision:
            return [None]
        return [p.strip() for p in str(self.precision).split(",") if p.strip()]

    def backend_specs(self) -> list[Backend]:
        text = self.backends if isinstance(self.backends, str) else ",".join(self.backends)
        return parse_backends(text)


@dataclass
class BenchSession:
    """What a run produced: the results per runner, the report files, the title and the notes."""

    results: dict[str, BenchResult]
    paths: dict[str, Path]
    title: str
    notes: list[str]
    baseline: str | None

    def to_dict(self) -> dict[str, Any]:
        """The record `bench --json` prints: title, baseline, notes, report files and every result (no samples
        of other runs, no outputs)."""
        return {"title": self.title, "baseline": self.baseline, "notes": self.notes,
                "files": {k: str(v) for k, v in self.paths.items()},
                "results": [r.to_dict() for r in self.results.values()]}


def run_benchmark(request: BenchRequest, log: Log = lambda _: None) -> BenchSession:
    """Check the request, build the runners, measure them interleaved, write the reports; the session record."""
    backends = request.backend_specs()
    _check(request, backends)
    plan = _plan(request, backends)
    # The exported files live in the report's staging folder (under --out) and go before it is swapped in.
    with staged_dir(Path(request.out), owned=REPORT_FILES + (PROFILE_DIR,)) as stage:
        scratch = scratch_of(stage)
        precisions = request.precision_list()
        runners = {f"{plan.name}/{b.name}" + (f"/{p}" if len(precisions) > 1 else ""):
                   _runner(b, request, plan, scratch, p) for b in backends for p in precisions}
        feeds = _feeds(request, plan, runners)
        log(f"measuring {len(runners)} runner(s) interleaved: {request.timing.warmup_runs} warm-up run(s) / "
            f"{request.timing.warmup_s:g} s each, then at least {request.timing.runs} round(s)")
        meta = {k: v for k, v in (("resolution", plan.resolution_text), ("iters", plan.iters)) if v is not None}
        meta.update(batch=request.batch, macs=_macs(request, plan))
        results = compare(runners, feeds, request.timing, meta=meta)
        if request.profile:
            _profiles(runners, feeds, results, request.profile_runs, stage / PROFILE_DIR, scratch, log)
            plan.notes.append(f"Per-operator profiles (by operator type and model part): {PROFILE_DIR}/.")
        files = [p for r in runners.values() for p in r.artifacts()]
        title = f"{plan.name}{plan.title_suffix}: {', '.join(b.name for b in backends)}"
        baseline = request.baseline and parse_backends(request.baseline)[0].name
        written = write_reports(results, stage, title, baseline=baseline, notes=plan.notes, command=command_line(),
                                files=files, scratch=[scratch], staged=False)
    paths = {key: Path(request.out) / path.name for key, path in written.items()}
    return BenchSession(results, paths, title, plan.notes, baseline)


def _macs(request: BenchRequest, plan: _Plan) -> int | None:
    """MACs per inference (whole batch): counted on the PyTorch model when there is one, else on the ONNX graph;
    None for an engine alone or where shapes are unknown (`bench.cost`)."""
    from .cost import graph_macs

    if plan.model is not None and plan.resolution:
        from flownas.complexity import count_macs

        try:
            return request.batch * int(count_macs(plan.model, *plan.resolution, plan.iters or DEFAULT_ITERS)["total"])
        except Exception:  # a model FlopCounterMode cannot trace (a custom op): no count rather than no benchmark
            return None
    if request.onnx:
        macs = graph_macs(request.onnx)
        input_batch = next(iter(onnx_io_specs(request.onnx)[0])).shape[0]
        return macs if isinstance(input_batch, int) else None
    return None


def _profiles(runners: dict[str, Runner], feeds: dict[str, np.ndarray], results: dict[str, BenchResult], runs: int,
              folder: Path, scratch: Path, log: Log) -> None:
    """One profile per runner (`bench.profile`), after the timed comparison so it cannot disturb it."""
    from .profile import profile_runner, write_profile

    for name, runner in runners.items():
        log(f"profiling {name}: {runs} runs")
        result = profile_runner(runner, feeds, runs, work_dir=scratch, whole_median_ms=results[name].stats.median_ms)
        stem = name.replace("/", "_")
        write_profile(result, folder, f"{name}", command=command_line(), stem=stem)
        if result.coverage is not None:
            log(f"  {stem}: per-operator sum {result.total_ms:.2f} ms = {100 * result.coverage:.0f}% of the "
                f"median {result.whole_median_ms:.2f} ms")


# --------------------------------------------------------------------------------------------- checks
def _check(request: BenchRequest, backends: list[Backend]) -> None:
    """Files exist, sources fit the backends, values are in range, libraries are present: before any work."""
    for flag in ("onnx", "engine", "weights"):
        path = getattr(request, flag)
        if path and not Path(path).is_file():
            raise BenchError(f"--{flag} {path}: file not found")
    sources = [f for f in ("onnx", "engine", "weights", "model") if getattr(request, f)]
    if not sources:
        raise BenchError("nothing to benchmark: give --onnx, --engine, --weights or --model")
    if request.weights and request.model:
        raise BenchError("give --weights or --model, not both")
    if request.arch and not request.weights:
        raise BenchError("--arch chooses a subnet of a supernet checkpoint: it needs --weights")
    if request.iters is not None and request.iters < 1:
        raise BenchError(f"--iters {request.iters}: the number of update iterations must be at least 1")
    if request.batch < 1:
        raise BenchError(f"--batch {request.batch}: must be at least 1")
    if request.profile and request.profile_runs < 1:
        raise BenchError(f"--profile-runs {request.profile_runs}: must be at least 1")
    if request.threads is not None and request.threads < 1:
        raise BenchError(f"--threads {request.threads}: must be at least 1")
    if request.cuda_graph and not any(b.name in ("torch-cuda", "trt") for b in backends):
        raise BenchError("--cuda-graph applies to backends torch-cuda and trt only")
    if request.baseline and parse_backends(request.baseline)[0].name not in {b.name for b in backends}:
        raise BenchError(f"--baseline {request.baseline} is not among the backends measured "
                         f"({', '.join(b.name for b in backends)})")
    _check_precision(request, backends)
    has_model = bool(request.weights or request.model)
    for backend in backends:
        if backend.runs == "model" and not has_model:
            raise BenchError(f"backend {backend.name} runs PyTorch eager: give --weights or --model")
        if backend.runs == "onnx" and not (request.onnx or has_model):
            raise BenchError(f"backend {backend.name} runs an ONNX file: give --onnx (or a model to export)")
        if backend.runs == "engine" and not request.engine:
            raise BenchError("backend trt runs a TensorRT engine: give --engine (build one with `export trt`)")
        backend.check()  # libraries and device present: fail now, not after an export
    request.timing.validate()


def _check_precision(request: BenchRequest, backends: list[Backend]) -> None:
    """A precision is applied, never just recorded: each backend must be able to run each precision asked."""
    precisions = [p for p in request.precision_list() if p is not None]
    if len(set(precisions)) != len(precisions):
        raise BenchError(f"--precision {request.precision}: a precision is given twice")
    exported = bool(request.weights or request.model) and not request.onnx
    for precision in precisions:
        if precision not in PRECISIONS:
            raise BenchError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        for backend in backends:
            if backend.name == "ort-trt" and precision in ("fp32", "fp16"):
                continue
            if backend.runs == "engine":
                continue  # the engine runner compares with the precision it was built for
            if backend.runs == "onnx" and exported and precision in ("int8", "fp16"):
                continue  # exported in that precision for this run (export.precision_export)
            if precision != "fp32" and not (backend.runs == "onnx" and request.onnx):
                raise BenchError(f"--precision {precision}: backend {backend.name} runs fp32 here (int8/fp16 need "
                                 "ort-* with a model to export, ort-trt or trt, or an ONNX file exported in that "
                                 "precision)")
    if len(precisions) > 1 and request.onnx:
        raise BenchError("several --precision values need a model to export (--weights or --model): an ONNX "
                         "file holds one precision")


# --------------------------------------------------------------------------------------------- plan
@dataclass
class _Plan:
    name: str
    model: Any
    resolution: tuple[int, int] | None
    iters: int | None
    notes: list[str]
    flow: bool = True

    @property
    def resolution_text(self) -> str | None:
        return f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None

    @property
    def title_suffix(self) -> str:
        parts = [p for p in (self.resolution_text and f"at {self.resolution_text}",
                             self.iters and f"{self.iters} iterations") if p]
        return " " + ", ".join(parts) if parts else ""


def _plan(request: BenchRequest, backends: list[Backend]) -> _Plan:
    """Name, resolution, iterations and the PyTorch model (loaded only when a backend needs it)."""
    meta = artifact_metadata(request.onnx or request.engine) if (request.onnx or request.engine) else {}
    notes: list[str] = []
    name = artifact_name(request.weights or request.onnx or request.engine) or str(request.model)
    flow = _is_flow_source(request)
    resolution, iters = _shape_and_iters(request, meta, flow)
    needs_model = any(b.runs == "model" for b in backends) or (
        not request.onnx and any(b.runs == "onnx" for b in backends))
    model = None
    if needs_model:
        model = _load_model(request, notes)
        _check_same_architecture(request, model, meta)
    if any(b.runs == "onnx" for b in backends) and not request.onnx:
        notes.append("ONNX Runtime ran the model exported for this run (default export, gather lookup).")
    int8 = "int8" in request.precision_list() or meta.get("precision") == "int8"
    if int8 and any(b.device == "cpu" for b in backends) and (note := cpu_int8_note()):
        notes.append(f"INT8 on the CPU: {note}.")
    return _Plan(name, model, resolution, iters, notes, flow)


# Checkpoint names that say nothing of the model: their folder names it (outputs/teacher/last.pt -> teacher).
GENERIC_STEMS = ("last", "best", "final", "model", "weights", "checkpoint", "supernet")


def artifact_name(path: str | None) -> str | None:
    """The name a report gives the model in `path`: its file stem, or its folder's name for a generic stem."""
    if not path:
        return None
    stem, parent = Path(path).stem, Path(path).resolve().parent.name
    return parent if stem in GENERIC_STEMS and parent else stem


def _is_flow_source(request: BenchRequest) -> bool:
    if request.onnx:
        return is_flow_graph(onnx_io_specs(request.onnx)[0])
    if request.engine:
        specs = [TensorSpec(io["name"], tuple(io["shape"]), np.dtype(io["dtype"]))
                 for io in engine_record(Path(request.engine)).get("inputs", [])]
        return not specs or is_flow_graph(specs)
    return True


def _shape_and_iters(request: BenchRequest, meta: dict[str, Any],
                     flow: bool) -> tuple[tuple[int, int] | None, int | None]:
    """Resolution and iterations: given ones must match what a static ONNX file / engine was made for."""
    source = request.onnx or request.engine
    made_iters = meta.get("export_iters")
    if request.iters is not None and made_iters is not None and request.iters != made_iters:
        raise BenchError(f"--iters {request.iters} differs from the {made_iters} iterations unrolled in {source}")
    if not flow:
        if request.resolution or request.iters:
            raise BenchError(f"{source} is not a flow model: --resolution/--iters do not apply (use --input-shape)")
        return None, None
    made = (meta["export_height"], meta["export_width"]) if "export_height" in meta else None
    given = request.resolution
    resolution = (parse_resolution(given) if isinstance(given, str) else tuple(given) if given else None)
    resolution = resolution or made or DEFAULT_RESOLUTION
    if made and resolution != made and not meta.get("export_dynamic", False):
        raise BenchError(f"--resolution {given} differs from {made[0]}x{made[1]}, the fixed input size of {source}")
    return resolution, request.iters or made_iters or (None if source and not made_iters else DEFAULT_ITERS)


def _load_model(request: BenchRequest, notes: list[str]) -> Any:
    if request.weights:
        from flownas.loading import load_flow_model

        return load_flow_model(request.weights, arch=request.arch)
    from flownas.weights import untrained_model

    notes.append(UNTRAINED_NOTE)
    return untrained_model(request.model)


def _check_same_architecture(request: BenchRequest, model: Any, meta: dict[str, Any]) -> None:
    if meta.get("arch_id"):  # --onnx/--engine with --model: the two must be the same architecture
        from export.onnx_export import model_identity

        if model_identity(model) != meta["arch_id"]:
            raise BenchError(f"--model {request.model or request.weights} is {model_identity(model)}, but "
                             f"{request.onnx or request.engine} holds {meta['arch_id']}: the backends would run "
                             "different models")


# --------------------------------------------------------------------------------------------- runners and data
def _runner(backend: Backend, request: BenchRequest, plan: _Plan, scratch: Path, precision: str | None) -> Runner:
    threads = request.threads or _default_threads(backend)
    return make_runner(backend.name, onnx=request.onnx, engine=request.engine, model=plan.model,
                       iters=plan.iters or DEFAULT_ITERS, threads=threads, precision=precision,
                       resolution=plan.resolution, model_name=plan.name, scratch=scratch, batch=request.batch,
                       cuda_graph=request.cuda_graph and backend.name in ("torch-cuda", "trt"))


def _feeds(request: BenchRequest, plan: _Plan, runners: dict[str, Runner]) -> dict[str, np.ndarray]:
    """Inputs every runner takes: from the first runner's declared specs, shapes and files as given."""
    specs = next(iter(runners.values())).input_specs()
    if plan.flow and plan.resolution:
        specs = flow_input_specs(*plan.resolution, request.batch)
    arrays = parse_input_files(request.inputs) if request.inputs else None
    overrides = parse_shape_spec(request.input_shapes) if request.input_shapes else None
    shapes = resolve_shapes(specs, overrides, arrays)
    return generate_inputs(specs, shapes, arrays=arrays, seed=request.seed)


def _default_threads(backend: Backend) -> int | None:
    """torch's default thread count (the physical cores) for every CPU backend, so they compete on equal terms."""
    if backend.device != "cpu":
        return None
    try:
        import torch
    except ImportError:  # a deployment target with ONNX Runtime only
        return None
    return torch.get_num_threads()
