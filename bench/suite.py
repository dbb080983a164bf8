"""The standard benchmark suite (`make bench`): RAFT large, raft-s and raft-k at 384x512, 12 iterations,
PyTorch eager against ONNX Runtime on the CPU, all six runners measured interleaved in one run.

    python -m bench.suite                  # the standard suite -> outputs/bench/suite/ (ignored by git)
    python -m bench.suite --record         # the same, into the committed reference bench/results/suite/
    python -m bench.suite --models raft-small --resolution 128x128 --iters 2 --runs 2 --warmup-s 0   # quick

`make bench` runs the first, `make bench-record` the second: the committed reference changes only when asked.
The report folder is written all at once (`flownas.fileio.staged_dir`): the ONNX files are exported into the
staging folder's `.scratch/` (removed before the swap; the report lists them with size and SHA-256), so a
killed run leaves nothing in /tmp and its leftovers beside the report folder go at the next run.
Weights are untrained (seeded): speed does not depend on weight values. On a 2-core CPU one RAFT
forward at 384x512 with 12 iterations takes about 2 s eager (raft-k about 4 s), so the defaults are one
warm-up run and ten measured rounds of six runners (~16 s a round): about four minutes in all, exports included.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from flownas.errors import ToolkitError
from flownas.fileio import clean_legacy_dirs, parse_resolution, scratch_of, staged_dir
from flownas.weights import untrained_model

from .protocol import TimingConfig, compare, make_feeds
from .report import REPORT_FILES, write_reports
from .runners import BenchError, export_temp_onnx, make_runner
from .session import UNTRAINED_NOTE

SUITE_MODELS = ("raft", "raft-s", "raft-k")
SUITE_BACKENDS = ("torch-cpu", "ort-cpu")
RESULTS = Path(__file__).resolve().parent / "results" / "suite"  # the committed reference: --record only
DEFAULT_OUT = Path("outputs") / "bench" / "suite"                   # ignored by git
LEGACY_TEMP_DIRS = r"bench-(suite-|onnx-)?[a-z0-9_]{8}"  # the old code's tempfile folders of exported ONNX files


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(SUITE_MODELS), help="comma-separated registered models (default raft,raft-s,raft-k)")
    parser.add_argument("--resolution", default="384x512", help="HxW (default 384x512)")
    parser.add_argument("--iters", type=int, default=12, help="update iterations (default 12)")
    parser.add_argument("--runs", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument("--warmup-runs", type=int, default=1, help="warm-up runs per runner (default 1)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per runner (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads for both backends (default: torch's default)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", default=str(DEFAULT_OUT), help=f"report folder (default {DEFAULT_OUT})")
    target.add_argument("--record", action="store_true",
                        help="write the committed reference bench/results/suite/ (standard settings only)")
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "-m", "bench.suite", *(sys.argv[1:] if argv is None else argv)])
    if args.record:
        standard = (args.models, args.resolution, args.iters) == (",".join(SUITE_MODELS), "384x512", 12)
        if not standard:
            raise BenchError(f"--record writes the reference of the standard suite ({','.join(SUITE_MODELS)} at "
                             f"384x512, 12 iterations); got --models {args.models} --resolution {args.resolution} "
                             f"--iters {args.iters}: use --out for other settings")
        args.out = str(RESULTS)
    return args


def run_suite(args: argparse.Namespace) -> dict[str, Path]:
    """Export each model, measure every model x backend interleaved, write the reports; their paths."""
    import torch

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    from flownas.registry import model_entry

    if not models:
        raise BenchError("no suite model given: --models takes registered names, e.g. raft,raft-k")
    for name in models:
        model_entry(name)  # an unknown name is a one-line error listing the registered ones
    height, width = parse_resolution(args.resolution)
    config = TimingConfig(args.warmup_runs, args.warmup_s, args.runs).validate()
    threads = args.threads or torch.get_num_threads()  # the same count for both backends: a fair comparison
    start = time.perf_counter()
    clean_legacy_dirs(tempfile.gettempdir(), LEGACY_TEMP_DIRS, r".+\.onnx")
    with staged_dir(args.out, owned=REPORT_FILES) as stage:  # the report folder changes whole, or not at all
        scratch = scratch_of(stage)
        runners = {}
        for name in models:
            model = untrained_model(name)
            onnx = export_temp_onnx(model, (height, width), args.iters, scratch, name)
            for backend in SUITE_BACKENDS:
                runners[f"{name}/{backend}"] = make_runner(backend, onnx=onnx, model=model, iters=args.iters,
                                                           threads=threads, model_name=name)
        print(f"exported {len(models)} model(s) in {time.perf_counter() - start:.0f} s; measuring "
              f"{len(runners)} runners interleaved ({config.warmup_runs} warm-up, {config.runs} rounds)", flush=True)
        results = compare(runners, make_feeds(height, width), config,
                          meta={"resolution": f"{height}x{width}", "iters": args.iters})
        title = (f"Benchmark suite: {', '.join(models)} at {height}x{width}, {args.iters} iterations, "
                 "PyTorch eager vs ONNX Runtime CPU")
        notes = [UNTRAINED_NOTE, "ONNX files from the default export (export_onnx, gather lookup); eager PyTorch "
                 "runs the model's own forward (grid_sample lookup): the max abs diff column shows they agree.",
                 f"Wall time of the suite: {time.perf_counter() - start:.0f} s."]
        staged = write_reports(results, stage, title, baseline="torch-cpu", notes=notes, command=args.command,
                               scratch=[scratch], staged=False)  # hashes the ONNX files while they exist
    paths = {key: Path(args.out) / path.name for key, path in staged.items()}
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run_suite(parse_args(argv))
    except ToolkitError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
