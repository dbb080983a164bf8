"""Command-line parts of `flownas inspect PATH` and `flownas bench compare A.json B.json`.

Kept apart from `cli.py` so the parsers live beside the code they call (bench.artifacts, bench.compare), and
light: nothing here imports torch (only inspecting a checkpoint does, inside bench.artifacts).
"""
from __future__ import annotations

import argparse
import json

__all__ = ["add_compare_parser", "add_inspect_parser", "run_compare", "run_inspect"]


def add_inspect_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `inspect` command: what an artifact is and how it was made."""
    p = sub.add_parser("inspect", help="what an artifact is and how it was made (checkpoint, ONNX, engine, latency "
                                       "table, bench report, training run, search result)",
                       description="Provenance, inputs/outputs, operators and TensorRT lint (ONNX), parameters "
                                   "and MACs (checkpoints) of any artifact the toolkit writes.")
    p.add_argument("path", help="file or folder: .pt/.pth, .onnx, .engine/.plan/.trt, table.json, results.json, "
                                "train.json (or their folders), a search result JSON")
    p.add_argument("--resolution", help="HxW for a checkpoint's MAC count (default: recorded, else 384x512)")
    p.add_argument("--iters", type=int, help="update iterations for a checkpoint's MAC count (default: recorded, "
                                             "else 12)")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    return p


def run_inspect(args: argparse.Namespace) -> int:
    """`flownas inspect PATH`: print the record as text, or as one JSON object with --json."""
    from flownas.errors import UserInputError
    from flownas.fileio import parse_resolution

    from .artifacts import format_inspection, inspect_artifact

    if args.iters is not None and args.iters < 1:
        raise UserInputError(f"--iters {args.iters}: the number of update iterations must be at least 1")
    resolution = parse_resolution(args.resolution) if args.resolution else None
    record = inspect_artifact(args.path, resolution=resolution, iters=args.iters)
    print(json.dumps(record, default=str) if args.json else format_inspection(record))
    return 0


def add_compare_parser(sub: argparse._SubParsersAction, name: str = "compare") -> argparse.ArgumentParser:
    """The `compare` action (under `bench`): two saved reports, row by row, with a significance test."""
    p = sub.add_parser(name, help="compare two saved bench reports (ratios of medians, Mann-Whitney U test)",
                       description="Ratio of medians per (model, backend) found in both reports, with a two-sided "
                                   "Mann-Whitney U test on the raw samples (p < 0.01: significant).")
    p.add_argument("reports", nargs=2, metavar="REPORT", help="results.json of `flownas bench` (or its folder): A B")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    return p


def run_compare(args: argparse.Namespace) -> int:
    """`flownas bench compare A B`: print the table, or one JSON object with --json."""
    from .compare import compare_reports, format_comparison

    result = compare_reports(*args.reports)
    print(json.dumps(result, default=str) if args.json else format_comparison(result))
    return 0
