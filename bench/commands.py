"""`python cli.py bench ...`: latency of one model on several backends, measured interleaved, with reports.

    python cli.py bench --model raft-s --backend torch-cpu,ort-cpu --resolution 384x512 --iters 12
    python cli.py bench --onnx raft.onnx --backend ort-cpu,ort-cuda
    python cli.py bench --engine raft.engine --backend trt
    python cli.py bench compare before/results.json after/results.json

The source is an ONNX file, an engine, a checkpoint (`--weights`, `--arch` for a supernet) or an untrained
architecture (`--model`): speed does not depend on weight values. `ort-*` backends given a PyTorch model
run it exported to a temporary ONNX file (the toolkit's default export). `bench compare A B` compares two saved
reports (bench.compare).
"""
from __future__ import annotations

import argparse
import json


from export.backends import BACKENDS
from flownas.errors import UserInputError

from .inspect_cli import add_compare_parser, run_compare
from .protocol import TimingConfig
from .session import DEFAULT_OUT, PRECISIONS, UNTRAINED_NOTE, BenchRequest, run_benchmark

__all__ = ["UNTRAINED_NOTE", "add_bench_parser", "request_from_args", "run_bench"]


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `bench` sub-command and its options."""
    p = sub.add_parser("bench", help="latency on PyTorch / ONNX Runtime / TensorRT, trtexec-style, with reports",
                       description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--onnx", help="any ONNX file (ort-* backends); inputs generated from its declared shapes")
    source.add_argument("--engine", help="TensorRT engine (backend trt)")
    source.add_argument("--weights", help="checkpoint (torch-* backends; exported to ONNX for ort-*)")
    p.add_argument("--arch", help="subnet of a FlowNAS supernet checkpoint (name, id or JSON file)")
    p.add_argument("--model", help="untrained registered model (raft, raft-small, raft-s, raft-k, largest, smallest, "
                                   "tiny-flownas ...: flownas.registry.list_models()) when no --weights are given")
    # Required for a measurement (checked in request_from_args): argparse's required=True would demand it of
    # `bench compare` too.
    p.add_argument("--backend",
                   help=f"comma-separated, from: {', '.join(BACKENDS)} (aliases such as onnxrt, tensorrt work); "
                        "required to measure")
    p.add_argument("--resolution", help="HxW of a flow model (default: the ONNX file's export size, else 384x512)")
    p.add_argument("--iters", type=int, help="update iterations (default: the ONNX file's, else 12)")
    p.add_argument("--batch", type=int, default=1, help="batch size of a flow model (default 1)")
    p.add_argument("--input-shape", dest="input_shapes", metavar="NAME:DIMS[,...]",
                   help="shapes for dynamic inputs, trtexec syntax, e.g. x:1x3x224x224")
    p.add_argument("--inputs", metavar="NAME:FILE.npy[,...]", help="input arrays from .npy files instead of generated data")
    p.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per runner (default 1)")
    p.add_argument("--warmup-runs", type=int, default=2, help="warm-up runs per runner (default 2)")
    p.add_argument("--runs", type=int, default=10, help="measured runs at least (default 10)")
    p.add_argument("--duration-s", type=float, default=0.0, help="measure for at least this long (default 0)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    p.add_argument("--precision", metavar="P[,P...]",
                   help=f"precision(s) to run, from {', '.join(PRECISIONS)} (default: what the artifact holds, fp32 "
                        "for models); several (fp32,int8) are measured side by side in one run, a model exported in "
                        "each (int8: calibrated on synthetic pairs); refused where a backend cannot apply it")
    p.add_argument("--cuda-graph", action="store_true", help="torch-cuda / trt: replay the forward as a CUDA graph")
    p.add_argument("--baseline", help="backend the speed-ups are relative to (default: the first torch backend)")
    p.add_argument("--cv-warn", type=float, help="CV above which results are flagged (default 5%% CPU, 1%% GPU)")
    p.add_argument("--profile", action="store_true",
                   help="also profile every runner (ONNX Runtime profiler, torch.profiler, TensorRT IProfiler): "
                        "OUT/profile/<runner>.csv/.md/.json/.png by operator type and model part")
    p.add_argument("--profile-runs", type=int, default=5, help="profiled runs per runner (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print the session record (results, files, notes) as JSON on stdout; progress goes to stderr")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    actions = p.add_subparsers(dest="bench_command", metavar="ACTION",
                               help="optional: compare (two saved reports); without it, bench measures")
    add_compare_parser(actions)
    return p


def request_from_args(args: argparse.Namespace) -> BenchRequest:
    """The parsed options as a `BenchRequest` (the library call the command wraps)."""
    if not args.backend:
        raise UserInputError(f"bench: --backend is required (comma-separated, from: {', '.join(BACKENDS)})")
    timing = TimingConfig(args.warmup_runs, args.warmup_s, args.runs, args.duration_s, args.cv_warn)
    return BenchRequest(backends=args.backend, onnx=args.onnx, engine=args.engine, weights=args.weights,
                        arch=args.arch, model=args.model, resolution=args.resolution, iters=args.iters,
                        batch=args.batch, input_shapes=args.input_shapes, inputs=args.inputs, timing=timing,
                        threads=args.threads, precision=args.precision, cuda_graph=args.cuda_graph,
                        baseline=args.baseline, out=args.out, profile=args.profile,
                        profile_runs=args.profile_runs)


def run_bench(args: argparse.Namespace) -> int:
    """`flownas bench`: run the session, print the report, name the files (`bench compare`: compare two)."""
    if getattr(args, "bench_command", None) == "compare":
        return run_compare(args)
    from flownas.logs import progress

    as_json = getattr(args, "json", False)  # progress goes to stderr: with --json stdout holds the document only
    session = run_benchmark(request_from_args(args), log=progress)
    if as_json:
        print(json.dumps(session.to_dict(), indent=1, default=str))
        return 0
    print(session.paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in session.paths.values()))
    return 0


