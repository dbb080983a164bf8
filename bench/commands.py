"""`python cli.py bench ...`: latency of one model on several backends, measured interleaved, with reports.

    python cli.py bench --model raft-s --backend torch-cpu,ort-cpu --resolution 384x512 --iters 12
    python cli.py bench --onnx raft.onnx --backend ort-cpu,ort-cuda
    python cli.py bench --engine raft.engine --backend trt

The source is an ONNX file, an engine, a checkpoint (`--weights`, `--arch` for a supernet) or an untrained
architecture (`--model`): speed does not depend on weight values. `ort-*` backends given a PyTorch model
run it exported to a temporary ONNX file (the toolkit's default export).
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from flownas.fileio import parse_resolution

from .protocol import TimingConfig, compare, make_feeds
from .report import markdown, write_reports
from .runners import BACKENDS, BenchError, check_backend, engine_record, export_temp_onnx, make_runner

MODEL_CHOICES = ("raft", "raft-small", "raft-s", "raft-k", "largest", "smallest")
DEFAULT_RESOLUTION, DEFAULT_ITERS, DEFAULT_OUT = (384, 512), 12, "outputs/bench"
UNTRAINED_NOTE = "Weights are untrained (random, seeded): speed does not depend on weight values."


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `bench` sub-command and its options."""
    p = sub.add_parser("bench", help="latency on PyTorch / ONNX Runtime / TensorRT, trtexec-style, with reports",
                       description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--onnx", help="ONNX file (ort-* backends)")
    source.add_argument("--engine", help="TensorRT engine (backend trt)")
    source.add_argument("--weights", help="checkpoint (torch-* backends; exported to a temporary ONNX for ort-*)")
    p.add_argument("--arch", help="subnet of a FlowNAS supernet checkpoint (name, id or JSON file)")
    p.add_argument("--model", choices=MODEL_CHOICES,
                   help="untrained model of this architecture for torch-*/ort-* when no --weights are given")
    p.add_argument("--backend", required=True, help=f"comma-separated, from: {', '.join(BACKENDS)}")
    p.add_argument("--resolution", help="HxW (default: the ONNX file's export size, else 384x512)")
    p.add_argument("--iters", type=int, help="update iterations (default: the ONNX file's, else 12)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per runner (default 1)")
    p.add_argument("--warmup-runs", type=int, default=2, help="warm-up runs per runner (default 2)")
    p.add_argument("--runs", type=int, default=10, help="measured runs at least (default 10)")
    p.add_argument("--duration-s", type=float, default=0.0, help="measure for at least this long (default 0)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--precision", help="precision recorded with the results (default fp32; engines: their record)")
    p.add_argument("--cuda-graph", action="store_true", help="torch-cuda: capture the forward as a CUDA graph")
    p.add_argument("--baseline", help="backend the speed-ups are relative to (default: the first torch backend)")
    p.add_argument("--cv-warn", type=float, help="CV above which results are flagged (default 5%% CPU, 1%% GPU)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    return p


def parse_backends(text: str) -> list[str]:
    """'torch-cpu,ort-cpu' -> ['torch-cpu', 'ort-cpu'] (order kept, duplicates dropped, all checked)."""
    names = [b.strip().lower() for b in str(text).split(",") if b.strip()]
    if not names:
        raise BenchError(f"no backend given: choose from {', '.join(sorted(BACKENDS))}")
    return [check_backend(b) for b in dict.fromkeys(names)]


def run_bench(args: argparse.Namespace) -> int:
    """Check the arguments, build the runners, measure them interleaved, write and print the reports."""
    backends = parse_backends(args.backend)
    _check_sources(args, backends)
    meta = _artifact_metadata(args)
    (height, width), iters = _shape_and_iters(args, meta)
    model, name, notes = _source_model(args, backends, meta)
    config = TimingConfig(args.warmup_runs, args.warmup_s, args.runs, args.duration_s, args.cv_warn).validate()
    threads = args.threads or _default_threads(backends)
    if args.precision:
        notes.append(f"Precision {args.precision!r} as given by --precision (recorded, not applied).")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        onnx = args.onnx
        if onnx is None and model is not None and any(b.startswith("ort-") for b in backends):
            onnx = export_temp_onnx(model, (height, width), iters, tmp, name)  # once, for every ort backend
            notes.append("ONNX Runtime ran the model exported for this run (default export, gather lookup).")
        runners = {f"{name}/{b}": make_runner(b, onnx=onnx, engine=args.engine, model=model, iters=iters,
                                              threads=threads, precision=args.precision, model_name=name,
                                              cuda_graph=args.cuda_graph and b == "torch-cuda") for b in backends}
        results = compare(runners, make_feeds(height, width), config,
                          meta={"resolution": f"{height}x{width}", "iters": iters})
    title = f"{name} at {height}x{width}, {iters} iterations: {', '.join(backends)}"
    baseline = args.baseline and check_backend(args.baseline)
    paths = write_reports(results, args.out, title, baseline=baseline, notes=notes)
    print(markdown(results, title, baseline, notes))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _check_sources(args: argparse.Namespace, backends: list[str]) -> None:
    """Files exist and the sources fit the backends, before anything slow happens."""
    for flag in ("onnx", "engine", "weights"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise BenchError(f"--{flag} {path}: file not found")
    if args.weights and args.model:
        raise BenchError("give --weights or --model, not both")
    if args.arch and not args.weights:
        raise BenchError("--arch chooses a subnet of a supernet checkpoint: it needs --weights")
    if args.cuda_graph and "torch-cuda" not in backends:
        raise BenchError("--cuda-graph applies to backend torch-cuda only")
    if not (args.onnx or args.engine or args.weights or args.model):
        raise BenchError("nothing to benchmark: give --onnx, --engine, --weights or --model")
    if args.baseline and args.baseline not in backends:
        raise BenchError(f"--baseline {args.baseline} is not among the backends measured ({', '.join(backends)})")


def _artifact_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """The export record of the ONNX file (or of the ONNX an engine was built from), else {}."""
    if args.onnx:
        from export.metadata import read_metadata

        try:
            return read_metadata(args.onnx)
        except Exception as exc:  # protobuf raises its own decode errors for files that are not ONNX
            raise BenchError(f"{args.onnx}: not a readable ONNX file ({type(exc).__name__})") from None
    if args.engine:
        return dict(engine_record(Path(args.engine)).get("metadata", {}))
    return {}


def _shape_and_iters(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[tuple[int, int], int]:
    """Resolution and iterations: given ones must match what a static ONNX file / engine was made for."""
    source = args.onnx or args.engine
    made_iters = meta.get("export_iters")
    if args.iters is not None and made_iters is not None and args.iters != made_iters:
        raise BenchError(f"--iters {args.iters} differs from the {made_iters} iterations unrolled in {source}")
    made = (meta["export_height"], meta["export_width"]) if "export_height" in meta else None
    resolution = parse_resolution(args.resolution) if args.resolution else (made or DEFAULT_RESOLUTION)
    if made and resolution != made and not meta.get("export_dynamic", False):
        raise BenchError(f"--resolution {args.resolution} differs from {made[0]}x{made[1]}, the fixed input size "
                         f"of {source}")
    return resolution, args.iters or made_iters or DEFAULT_ITERS


def _source_model(args: argparse.Namespace, backends: list[str],
                  meta: dict[str, Any]) -> tuple[Any, str, list[str]]:
    """The PyTorch model (None when no backend needs it), the name used for every row, and report notes."""
    notes: list[str] = []
    wants_model = any(b.startswith("torch-") for b in backends) or (
        not args.onnx and any(b.startswith("ort-") for b in backends))
    name = (Path(args.weights).stem if args.weights else Path(args.onnx or args.engine or "").stem or args.model)
    if not wants_model or not (args.weights or args.model):
        return None, name, notes
    if args.weights:
        from flownas.weights import load_model

        model = load_model(args.weights, arch=args.arch)
    else:
        from flownas.weights import untrained_model

        model = untrained_model(args.model)
        notes.append(UNTRAINED_NOTE)
    if meta.get("arch_id"):  # --onnx/--engine with --model: the two must be the same architecture
        from export.onnx_export import model_identity

        if model_identity(model) != meta["arch_id"]:
            raise BenchError(f"--model {args.model} is {model_identity(model)}, but {args.onnx or args.engine} "
                             f"holds {meta['arch_id']}: the backends would run different models")
    return model, name, notes


def _default_threads(backends: list[str]) -> int | None:
    """torch's default thread count (the physical cores) for every CPU backend, so they compete on equal terms."""
    if not any(b in ("torch-cpu", "ort-cpu") for b in backends) or importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch.get_num_threads()
