#!/usr/bin/env python
"""FlowNAS toolkit command line: `python cli.py <command> --help` (also installed as `flownas`).

Every command parses its arguments and calls one documented library function (pipeline, export.workflow,
bench.session ...). A user-facing problem (a `ToolkitError`: bad file, key, value, missing library) is printed as
one line and exits with status 2; anything else is a bug and keeps its traceback (`--debug` shows full
tracebacks for user errors too).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, Sequence

from bench.commands import add_bench_parser, run_bench
from bench.inspect_cli import add_inspect_parser, run_inspect
from export.commands import add_export_parsers, run_export, run_verify
from flownas.train_cli import add_train_parsers, run_train
from latency_tables.commands import add_lut_parser, run_lut

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


def command(name: str) -> Callable:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return register


def _log(line: str) -> None:
    """Running commentary of a long command (demo, search, pipeline): stdout, off with --quiet."""
    from flownas.logs import say

    say(line)


def _result(line: str) -> None:
    """A result line (a file written, metrics): stdout even with --quiet."""
    from flownas.logs import result

    result(line)


def _warn(line: str) -> None:
    """Progress and warnings of a command whose stdout is its result table (evaluate): stderr."""
    from flownas.logs import progress

    progress(line)


# --------------------------------------------------------------------------------------------- commands
@command("infer")
def cmd_infer(args: argparse.Namespace) -> int:
    import pipeline

    precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
    pipeline.run_inference(args.images, weights=args.weights, arch=args.arch, out=args.out, viz=args.viz,
                           iters=args.iters, device=args.device, max_side=args.max_side, scale=args.scale,
                           corr=args.corr, precision=precision, video=args.video, gt=args.gt, log=_result)
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    import pipeline

    record = pipeline.run_evaluation(args.dataset, root=args.root, split=args.split, weights=args.weights,
                                     arch=args.arch, iters=args.iters, device=args.device,
                                     max_samples=args.max_samples, out=args.out, supernet=args.supernet,
                                     calibrate_bn=args.calibrate_bn, write_outputs=args.write_outputs, log=_warn)
    print(f"{args.dataset}: {record['pairs']} pairs, {args.iters} iterations")
    print(pd.DataFrame([record["summary"]]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"per-pair metrics: {record['per_pair_csv']}; summary and provenance: {record['summary_json']}")
    if record["outputs"]:
        print(f"flow pictures, EPE maps (0-{record['outputs']['max_epe_px']:g} px) and legend.png: "
              f"{record['outputs']['folder']}")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    import pipeline

    pipeline.run_demo(args.out, height=args.height, width=args.width, iters=args.iters, seed=args.seed,
                      weights=args.weights, device=args.device, log=_log)
    return 0


@command("extract")
def cmd_extract(args: argparse.Namespace) -> int:
    import pipeline

    record = pipeline.run_extract(args.supernet, args.arch, args.out, calibrate_bn=args.calibrate_bn,
                                  resolution=args.resolution, log=_log)
    calibration = (f", BN re-estimated on {record['bn_calibration_batches']} pairs"
                   if record["bn_calibration_batches"] else "")
    print(f"extracted {record['arch_id']} ({record['parameters']:,} parameters) in {record['extract_ms']:.0f} ms"
          f"{calibration}; {record['total_s']:.1f} s in all -> {record['out']}")
    return 0


@command("arch")
def cmd_arch(args: argparse.Namespace) -> int:
    return {"show": _arch_show, "sample": _arch_sample}[args.arch_command](args)


def _space(path: str | None):
    from flownas.arch import SearchSpace

    return SearchSpace.from_file(path) if path else SearchSpace.flownas()


def _arch_show(args: argparse.Namespace) -> int:
    from pipeline import describe_architecture

    record = describe_architecture(args.spec, _space(args.space), args.resolution, args.iters)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{args.spec}: {record['id']}")
    for key, values in (record["arch"] or {}).items():
        print(f"  {key:<13}{values}")
    params, macs = record["parameters"], record["macs"]
    height, width = record["resolution"]
    print(f"parameters: {params['total']:,} (fnet {params['fnet']:,}, cnet {params['cnet']:,}, "
          f"update {params['update_block']:,})")
    print(f"MACs at {height}x{width}, {args.iters} iterations: {macs['total'] / 1e9:.2f} G (fnet "
          f"{macs['fnet'] / 1e9:.2f}, cnet {macs['cnet'] / 1e9:.2f}, update {macs['update_block'] / 1e9:.2f}, "
          f"correlation {macs['correlation'] / 1e9:.2f})")
    return 0


def _arch_sample(args: argparse.Namespace) -> int:
    import numpy as np

    space = _space(args.space)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        arch = space.sample(rng)
        print(json.dumps(arch.to_dict()) if args.json else arch.id)
    return 0


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    from flownas.logs import progress_enabled
    from nas import SearchRequest, run_search

    request = SearchRequest(
        supernet=args.supernet, table=args.table, budget_ms=args.budget_ms, out=args.out, val=args.val, root=args.root,
        split=args.split, val_samples=args.val_samples, calibrate_bn=args.calibrate_bn, iters=args.iters,
        iters_choices=args.iters_choices, precision_tables=dict(args.precision_table or []),
        max_epe_delta=args.max_epe_delta, population=args.population, generations=args.generations, seed=args.seed,
        mode=args.mode, max_params=args.max_params, max_macs=args.max_macs, finalists=args.finalists,
        backend=args.backend, threads=args.threads, device=args.device, resume=args.resume, export=args.export,
        force_table=args.force, progress=not args.no_progress and progress_enabled())
    record = run_search(request, log=_log)
    best = record.best
    flag = " (prediction off by more than 10%)" if best["flagged"] else ""
    print(f"best: {best['arch_id']}, {best['iters']} iterations: EPE {best['epe']:.3f}, predicted "
          f"{best['predicted_ms']:.1f} ms, measured {best['measured_ms']:.1f} ms{flag}; {record.evaluations} "
          f"architectures evaluated in {record.wall_s / 60:.1f} min -> {record.files['best_json']}")
    return 0


@command("pipeline")
def cmd_pipeline(args: argparse.Namespace) -> int:
    from nas_pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig.load(args.config, {"out": args.out, "device": args.device, "backend": args.backend})
    record = run_pipeline(config, log=_log)
    best = record["stages"]["search"]["best"]
    print(f"chosen {best['arch_id']} ({best['iters']} iterations): EPE {best['epe']:.3f}, measured "
          f"{best['measured_ms']:.1f} ms (predicted {best['predicted_ms']:.1f}); report: {config.out}/report.md")
    return 0


# Commands whose parsers and runners live in their packages: registered here as they are.
COMMANDS.update(export=run_export, bench=run_bench, verify=run_verify, lut=run_lut, train=run_train)
COMMANDS["train-supernet"] = run_train
COMMANDS["inspect"] = run_inspect


# --------------------------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (argparse prints its whole usage block first); sub-commands
    inherit the class, since `add_subparsers` builds them with the parent's type."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum` (a usage error otherwise, before any work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}" if minimum else
                                             f"{value} must not be negative")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its error message
    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="checkpoint: RAFT (princeton-vl/torchvision), FlowNAS release or toolkit format")
    p.add_argument("--arch", help="with a FlowNAS supernet: architecture name (raft-s, raft-k, largest, smallest), "
                                  "id or JSON file")
    p.add_argument("--iters", type=positive_int, default=12, help="update iterations (default 12)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default cpu)")


def _infer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="estimate flow for an image pair, a folder of frames or a video")
    p.add_argument("images", nargs="+", help="IMG1 IMG2, one folder of frames or one video file "
                                             "(.mp4/.avi/.mov/.mkv/.m4v/.webm): every consecutive pair")
    p.add_argument("--out", default="flow.flo", help="output .flo/.png/.npy/.pfm (a folder for frame folders "
                                                     "and videos: one .flo per pair)")
    p.add_argument("--viz", help="colour-coded flow picture (.png; a folder for frame folders and videos)")
    p.add_argument("--video", metavar="OUT.mp4", help="also write a side-by-side video: frame | colour-coded flow "
                                                      "(mp4v; .mp4/.avi/.mov/.m4v)")
    p.add_argument("--gt", metavar="FLOW", help="ground-truth flow of the pair (.flo/.png/.npy/.pfm): print EPE and "
                                                "the 1/3/5 px accuracies")
    resize = p.add_mutually_exclusive_group()
    resize.add_argument("--max-side", type=positive_int, metavar="N",
                        help="downscale so the longer side is at most N px; the flow is scaled back to the input size")
    resize.add_argument("--scale", type=float, metavar="F",
                        help="resize the frames by F (0.5 halves each side) for the model; the flow is scaled "
                             "back to the input size")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run under float16 autocast (CUDA devices only)")
    precision.add_argument("--bf16", action="store_true",
                           help="run under bfloat16 autocast (CPU, or CUDA GPUs with bf16 support)")
    p.add_argument("--corr", choices=("all-pairs", "lean"), default="all-pairs",
                   help="correlation: all-pairs (default, RAFT's volume) or lean (on-demand lookup in chunks: "
                        "same flow within 1e-4 px, a fraction of the memory, for large frames)")
    _model_args(p)


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a model on a dataset")
    p.add_argument("--dataset", required=True,  # checked by build_dataset: the registry imports torch, --help must not
                   help="dataset name (flownas.data.datasets.list_datasets(): sintel-clean, sintel-final, kitti, "
                        "chairs, things-clean, things-final, middlebury, synthetic)")
    p.add_argument("--root", help="dataset root folder (not needed for synthetic)")
    p.add_argument("--split", help="dataset split (dataset default if omitted)")
    p.add_argument("--max-samples", type=positive_int, help="evaluate only the first N pairs")
    p.add_argument("--out", help="per-pair .csv (a .json summary sits beside it) or the .json summary "
                                 "(the .csv sits beside it); default outputs/eval_<dataset>.csv")
    p.add_argument("--supernet", metavar="CKPT", help="evaluate subnet --arch of this supernet, BatchNorm statistics "
                                                      "re-estimated first (as training validation and search do)")
    p.add_argument("--calibrate-bn", type=non_negative_int, default=8, metavar="N",
                   help="with --supernet: pairs of the dataset (seeded choice) for BN re-estimation (default 8)")
    p.add_argument("--write-outputs", metavar="DIR",
                   help="write per pair prediction | ground truth on one shared scale and an EPE error map "
                        "(PNGs), plus the colour-wheel legend.png, into DIR")
    _model_args(p)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the end-to-end demo on a synthetic pair with exact ground truth")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--height", type=positive_int, default=256, help="pair height (default 256)")
    p.add_argument("--width", type=positive_int, default=320, help="pair width (default 320)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic pair and the untrained weights")
    _model_args(p)


def _extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="cut a static subnet out of a FlowNAS supernet checkpoint")
    p.add_argument("--supernet", required=True, help="FlowNAS supernet checkpoint (release or toolkit format)")
    p.add_argument("--arch", required=True, help="name (raft-s, raft-k, largest, smallest), id or JSON file")
    p.add_argument("--out", required=True, help="output checkpoint (toolkit format, records the architecture)")
    p.add_argument("--calibrate-bn", type=non_negative_int, default=0, metavar="N",
                   help="re-estimate the context encoder's BN statistics on N synthetic pairs")
    p.add_argument("--resolution", default="256x320", help="pair size for BN calibration (HxW)")


def _arch_parsers(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser("arch", help="inspect and sample architectures of the search space")
    arch_sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True, help="show or sample")
    p = arch_sub.add_parser("show", help="configuration, id, parameters and MACs of an architecture")
    p.add_argument("spec", help="raft, raft-small, raft-s, raft-k, largest, smallest, an id or a JSON file")
    p.add_argument("--resolution", default="384x512", help="HxW for the MAC count (default 384x512)")
    p.add_argument("--iters", type=positive_int, default=12, help="update iterations for the MAC count")
    p.add_argument("--space", help="custom search space (JSON/YAML)")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p = arch_sub.add_parser("sample", help="uniformly sampled architectures, one id per line")
    p.add_argument("--n", type=positive_int, default=5, help="how many (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--space", help="custom search space (JSON/YAML)")
    p.add_argument("--json", action="store_true", help="published dict format instead of ids")


def iters_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated positive iteration counts, e.g. 4,8,12."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: iteration counts must be at least 1")
    return values


def precision_table(text: str) -> tuple[str, str]:
    """argparse type: `int8=DIR` -> ("int8", "DIR")."""
    precision, sep, folder = text.partition("=")
    if not sep or precision not in ("fp32", "fp16", "int8") or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PRECISION=DIR with PRECISION fp32, fp16 or int8")
    return precision, folder


def _search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="hardware-aware evolutionary search under a latency budget, "
                                      "finalists measured on the device")
    p.add_argument("--supernet", required=True, metavar="CKPT", help="supernet checkpoint (ours or the FlowNAS release)")
    p.add_argument("--table", required=True, metavar="DIR", help="latency table folder (lut build)")
    p.add_argument("--budget-ms", required=True, type=float, metavar="X", help="latency budget in ms on the table's device")
    p.add_argument("--val", default="synthetic", metavar="DATASET", help="fitness dataset (default synthetic)")
    p.add_argument("--root", help="fitness dataset root folder")
    p.add_argument("--split", help="fitness dataset split (dataset default if omitted)")
    p.add_argument("--val-samples", type=positive_int, default=8, metavar="N", help="fitness pairs (default 8)")
    p.add_argument("--calibrate-bn", type=non_negative_int, default=8, metavar="N",
                   help="pairs for BN re-estimation of each subnet (default 8)")
    p.add_argument("--iters", type=positive_int, default=12, help="update iterations when not searched (default 12)")
    p.add_argument("--iters-choices", type=iters_list, metavar="4,8,12",
                   help="search the iteration count too, among these values")
    p.add_argument("--precision-table", action="append", type=precision_table, metavar="PRECISION=DIR",
                   help="a table of another precision (lut build --precision int8), repeatable: precision becomes a "
                        "gene (bits); each candidate is predicted on its precision's table")
    p.add_argument("--max-epe-delta", type=float, default=0.5, metavar="PX",
                   help="reduced-precision finalists: flow change allowed against FP32 (default 0.5 px)")
    p.add_argument("--population", type=positive_int, default=50, help="population size (default 50)")
    p.add_argument("--generations", type=non_negative_int, default=20, help="generations (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mode", choices=("single", "pareto"), default="single",
                   help="single: lowest EPE under the budget; pareto: select on the EPE-latency front")
    p.add_argument("--max-params", type=positive_int, metavar="N", help="also limit parameters")
    p.add_argument("--max-macs", type=positive_int, metavar="N", help="also limit MACs")
    p.add_argument("--finalists", type=positive_int, default=5, metavar="K",
                   help="candidates exported and measured on the device (default 5)")
    p.add_argument("--backend", help="device backend of the finalists (default: the table's)")
    p.add_argument("--threads", type=positive_int, help="runtime threads (default: the table's)")
    p.add_argument("--device", default="cpu", help="torch device for the fitness evaluation")
    p.add_argument("--out", default="outputs/search", metavar="DIR", help="output folder (default outputs/search)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/search_state.json")
    p.add_argument("--export", action="store_true", help="also write best.onnx (verified; engine on trt) and a benchmark")
    p.add_argument("--force", action="store_true", help="use a table whose manifest does not match the backend")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pipeline_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="the whole workflow: latency table, teacher, supernet with FAD, search, "
                                        "device check, export, benchmark, report")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file with any pipeline keys (nas_pipeline.PipelineConfig)")
    p.add_argument("--out", help="output folder (default outputs/pipeline); a re-run skips finished stages")
    p.add_argument("--device", help="torch device for training and fitness (default cpu)")
    p.add_argument("--backend", help="deployment backend of the table and the finalists (default ort-cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="flownas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for user errors too")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--verbose", action="store_true", help="also print debug messages (stage timings, details)")
    level.add_argument("--quiet", action="store_true",
                       help="only results, warnings and errors: no progress lines, no progress bars")
    parser.add_argument("--log-file", metavar="FILE",
                        help="append every message (debug level, timestamped) to FILE as well")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="one of")
    _infer_parser(sub)
    _evaluate_parser(sub)
    _demo_parser(sub)
    _arch_parsers(sub)
    add_export_parsers(sub)
    add_bench_parser(sub)
    add_inspect_parser(sub)
    add_lut_parser(sub)
    _extract_parser(sub)
    add_train_parsers(sub)
    _search_parser(sub)
    _pipeline_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from flownas.errors import ToolkitError, one_line
    from flownas.logs import to_log_file

    args = build_parser().parse_args(argv)
    try:
        return _run(args, argv)
    except ToolkitError as exc:
        if args.debug:
            raise
        return _fail(f"error: {one_line(exc)}", EXIT_USER_ERROR)
    except OSError as exc:  # the environment (a full disk, a read-only folder), not a bug in the toolkit
        if args.debug or exc.filename is None:
            raise
        return _fail(f"error: {exc.filename}: {exc.strerror or exc}", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception:  # a bug: its traceback goes to the console and, for the record, to the log file
        import traceback

        to_log_file(traceback.format_exc().rstrip(), level=logging.ERROR)
        raise


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Logging set up, the command echoed (as trtexec does), the command run with its stdout in the log file."""
    import shlex
    import time

    from flownas.logs import LOGGER, results_to_log_file, setup_logging
    from flownas.provenance import command_line

    setup_logging(args.verbose, args.quiet, args.log_file)
    # Every log starts with what ran (reports and records carry it too, `provenance.command_line`); on the console
    # only with --verbose, so that a user error stays one line on stderr.
    LOGGER.debug(f"=== Command === {'flownas ' + shlex.join(argv) if argv is not None else command_line()}")
    started = time.perf_counter()
    with results_to_log_file():
        status = COMMANDS[args.command](args)
    LOGGER.debug(f"{args.command} finished in {time.perf_counter() - started:.2f} s (exit {status})")
    return status


def _fail(line: str, status: int) -> int:
    """The one line a user error prints (stderr, whatever --quiet says), also in the log file."""
    from flownas.logs import to_log_file

    print(line, file=sys.stderr, flush=True)
    to_log_file(line, level=logging.ERROR)
    return status


if __name__ == "__main__":
    sys.exit(main())
