"""Benchmark: the exported ONNX graph (reference vs optimised formulation) on ONNX Runtime CPU against PyTorch eager.

    python -m bench.export_speed --models raft,raft-k --resolution 384x512 --iters 12     # -> outputs/bench/export_speed
    python -m bench.export_speed --record                                                # -> bench/results/export_speed

The same protocol and reports as every benchmark (runners measured interleaved in one run, `bench.report`), plus
ONNX Runtime's per-operator time of each graph (`op_breakdown.md`): the naive graph uses GridSample for the
correlation lookup (the reference formulation), the optimised one the toolkit's default gather lookup. Weights
are random (seeded): speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from export.onnx_export import ExportSpec, export_onnx
from export.runners import OrtRunner
from export.torch_runner import flow_model_runner
from flownas.errors import ToolkitError
from flownas.fileio import atomic_write_text, parse_resolution, scratch_of, staged_dir
from flownas.provenance import command_line

from .profile import breakdown_table, ort_op_breakdown
from .protocol import TimingConfig, compare, make_feeds
from .report import REPORT_FILES, write_reports

RECORD = Path(__file__).resolve().parent / "results" / "export_speed"
SCRATCH_OUT = Path("outputs") / "bench" / "export_speed"
VARIANTS = {"naive": "grid_sample", "optimised": "gather"}


def run_export_speed(models: Sequence[str], height: int, width: int, iters: int, config: TimingConfig,
                     out: str | Path, threads: int | None = None) -> dict[str, Path]:
    """Export each model twice, measure eager + both graphs interleaved, write the reports and the op breakdown."""
    import torch

    from flownas.weights import untrained_model

    threads = threads or torch.get_num_threads()
    feeds = make_feeds(height, width)
    out = Path(out)
    with staged_dir(out, owned=(*REPORT_FILES, "op_breakdown.md", "op_breakdown.json")) as stage:
        scratch = scratch_of(stage)
        runners: dict[str, Any] = {}
        breakdowns: dict[str, dict[str, dict[str, float]]] = {}
        for name in models:
            model = untrained_model(name)
            runners[f"{name}/eager"] = flow_model_runner(model, iters, threads=threads, name=name)
            breakdowns[name] = {}
            for variant, lookup in VARIANTS.items():
                path = scratch / f"{name}-{variant}.onnx"
                export_onnx(model, path, ExportSpec(height, width, iters, lookup=lookup))
                runners[f"{name}/ort-{variant}"] = _labelled(OrtRunner(path, threads=threads, name=name), variant)
                breakdowns[name][variant] = ort_op_breakdown(path, feeds, threads, profile_dir=scratch)
        results = compare(runners, feeds, config, meta={"resolution": f"{height}x{width}", "iters": iters})
        title = f"Exported ONNX (naive vs optimised) vs PyTorch eager at {height}x{width}, {iters} iterations"
        notes = ["Weights are untrained (random, seeded): speed does not depend on weight values.",
                 "ort-naive: GridSample correlation lookup (reference formulation); ort-optimised: gather lookup "
                 "(the toolkit's default export). Per-operator times are in op_breakdown.md."]
        write_reports(results, stage, title, baseline="torch-cpu", notes=notes, command=command_line(),
                      scratch=[scratch], staged=False)
        _write_breakdown(stage, breakdowns)
    return {name: out / name for name in (*REPORT_FILES, "op_breakdown.md")}


def _labelled(runner: OrtRunner, variant: str) -> OrtRunner:
    """The runner reported under backend `ort-<variant>`, so the two graphs sit side by side in the report."""
    runner.backend = f"ort-{variant}"
    return runner


def _write_breakdown(folder: Path, breakdowns: dict[str, dict[str, dict[str, float]]]) -> None:
    lines = ["# ONNX Runtime time per operator (ms per inference, first run excluded)", ""]
    for name, per_variant in breakdowns.items():
        lines += [f"## {name}", "", *breakdown_table(per_variant), ""]
    atomic_write_text(folder / "op_breakdown.md", "\n".join(lines))
    atomic_write_text(folder / "op_breakdown.json", json.dumps(breakdowns, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="raft,raft-k", help="comma-separated named models (default raft,raft-k)")
    parser.add_argument("--resolution", default="384x512", help="HxW (default 384x512)")
    parser.add_argument("--iters", type=int, default=12, help="update iterations (default 12)")
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per runner (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads for every runner (default: torch's)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", help=f"report folder (default {SCRATCH_OUT}, ignored by git)")
    where.add_argument("--record", action="store_true", help=f"write the committed reference {RECORD}")
    args = parser.parse_args(argv)
    try:
        height, width = parse_resolution(args.resolution)
        config = TimingConfig(warmup_runs=1, warmup_s=args.warmup_s, runs=args.runs).validate()
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        paths = run_export_speed(models, height, width, args.iters, config,
                                 RECORD if args.record else (args.out or SCRATCH_OUT), args.threads)
    except ToolkitError as exc:
        print(f"error: {exc}")
        return 2
    print(paths["report.md"].read_text())
    print(paths["op_breakdown.md"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
