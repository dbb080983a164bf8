"""`lut` command line: keys, measure, assemble, build, show, predict (and validate, from latency_tables.validate).

    lut keys --space FILE --resolution 384x512 --batch 1 --out DIR   # needs torch (exports the key graphs)
    lut measure DIR --backend ort-cpu [--threads N] [--runs N]       # runtime only: no torch is imported
    lut measure DIR --backend trt                                    # TensorRT + cuda-python: engines + timing
    lut measure DIR --backend torch-cpu --threads 2                  # the PyTorch modules (needs torch)
    lut assemble DIR [--backend B] [--out DIR]
    lut build --resolution 384x512 --out DIR [--backend B] [--space FILE]
    lut show DIR [--arch A --iters N --plot F]
    lut predict --table DIR --arch A [--iters N] [--backend B --device D --precision P --force]

Register with `add_lut_parser(sub)` and dispatch with `run_lut(args)`. Building the parser and running `lut measure`
import no torch: every torch-needing step is imported inside its handler.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any, Callable

from flownas.fileio import parse_resolution

from .key_runners import BACKENDS
from .measure import DEFAULT_CONFIG

DEFAULT_BACKEND = "ort-cpu"


def _space(path: str | None) -> Any:
    from flownas.arch import SearchSpace

    return SearchSpace.from_file(path) if path else SearchSpace.flownas()


def _timing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=list(BACKENDS),
                   help=f"runtime the keys are timed on (default {DEFAULT_BACKEND}): ONNX Runtime (ort-*), TensorRT "
                        "engines built per key (trt) or the PyTorch modules (torch-*)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads: ONNX Runtime's, or torch.set_num_threads (default: the runtime's own)")
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help=f"measured runs per graph, at least (default {DEFAULT_CONFIG.runs})")
    p.add_argument("--duration-s", type=float, default=None, metavar="S",
                   help=f"measured seconds per graph, at least (default {DEFAULT_CONFIG.duration_s})")
    p.add_argument("--warmup-s", type=float, default=None, metavar="S",
                   help=f"warm-up seconds per graph, at least (default {DEFAULT_CONFIG.warmup_s})")


def _config(args: argparse.Namespace) -> Any:
    changes = {f: getattr(args, a) for f, a in (("runs", "runs"), ("duration_s", "duration_s"),
                                                 ("warmup_s", "warmup_s")) if getattr(args, a) is not None}
    return replace(DEFAULT_CONFIG, **changes)


def _add_keys(sub: Any) -> None:
    p = sub.add_parser("keys", help="write the key graphs (ONNX + manifest) of a space at one resolution")
    p.add_argument("--space", default=None, metavar="FILE", help="search space JSON/YAML (default: FlowNAS)")
    p.add_argument("--resolution", required=True, type=parse_resolution, metavar="HxW", help="image size, e.g. 384x512")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size the keys run at (default 1)")
    _precision_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help="key folder to write (resumes if it exists)")


def _precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="fp32", metavar="P",
                   help="fp32 (default), fp16, int8 or a plan .json (export precision-sweep): each key graph is "
                        "lowered as the exported network would be; the table records it and the predictor "
                        "refuses it for another precision")


def _add_measure(sub: Any) -> None:
    p = sub.add_parser("measure", help="time the key graphs of a folder on one runtime (no torch needed)")
    p.add_argument("dir", metavar="DIR", help="key folder written by `lut keys`")
    _timing_args(p)


def _add_assemble(sub: Any) -> None:
    p = sub.add_parser("assemble", help="make table.csv + table.json from a folder's measurements")
    p.add_argument("dir", metavar="DIR", help="measured key folder")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=list(BACKENDS),
                   help=f"whose measurements to assemble (default {DEFAULT_BACKEND})")
    p.add_argument("--out", default=None, metavar="DIR", help="table folder (default: the key folder)")


def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="keys, measure and assemble on this machine (resumable)")
    p.add_argument("--resolution", required=True, type=parse_resolution, metavar="HxW", help="image size, e.g. 384x512")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the keys and the table")
    p.add_argument("--space", default=None, metavar="FILE", help="search space JSON/YAML (default: FlowNAS)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size the keys run at (default 1)")
    _precision_arg(p)
    _timing_args(p)


def _add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="summarise a table: key counts, slowest keys, an architecture's breakdown")
    p.add_argument("dir", metavar="DIR", help="table folder (table.json + table.csv)")
    p.add_argument("--arch", default=None, metavar="A", help="architecture (name, id, JSON or file) to break down")
    p.add_argument("--iters", type=int, default=12, metavar="N", help="update iterations for --arch (default 12)")
    p.add_argument("--plot", default=None, metavar="F", help="write a bar plot (PNG) of --arch's breakdown to F")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="predicted latency of an architecture, per component, then the total (ms)")
    p.add_argument("--table", required=True, metavar="DIR", help="table folder (table.json + table.csv)")
    p.add_argument("--arch", required=True, metavar="A", help="architecture: name, id, JSON string or file")
    p.add_argument("--iters", type=int, default=12, metavar="N", help="update iterations (default 12)")
    p.add_argument("--backend", default=None, metavar="B", help="refuse the table unless measured on this backend")
    p.add_argument("--device", default=None, metavar="D", help="refuse the table unless measured on this device")
    p.add_argument("--precision", default=None, metavar="P", help="refuse the table unless measured at this precision")
    p.add_argument("--resolution", default=None, type=parse_resolution, metavar="HxW",
                   help="refuse the table unless measured at this resolution")
    p.add_argument("--force", action="store_true", help="use a table whose manifest does not match the request")
    p.add_argument("--raw", action="store_true", help="leave the table's calibration out")


def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="measure random whole networks and report the predictor's accuracy")
    try:
        from .validate import add_validate_args
    except ImportError:  # the validation step is optional: the dispatcher says so when it is run
        p.add_argument("rest", nargs=argparse.REMAINDER, help="options of lut validate (not installed)")
        return
    add_validate_args(p)


def add_lut_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `lut` and its sub-commands to an argparse sub-parsers object; returns the `lut` parser."""
    p = sub.add_parser("lut", help="latency lookup tables: build, measure, show, predict, validate")
    lut = p.add_subparsers(dest="lut_command", required=True, metavar="ACTION",
                           help="keys, measure, assemble, build, show, predict or validate")
    for add in (_add_keys, _add_measure, _add_assemble, _add_build, _add_show, _add_predict, _add_validate):
        add(lut)
    return p


def _log(line: str) -> None:
    from flownas.logs import progress

    progress(line)


def _run_keys(args: argparse.Namespace) -> int:
    from .build import build_keys

    folder = build_keys(_space(args.space), *args.resolution, args.out, batch=args.batch, precision=args.precision)
    print(f"key graphs written to {folder}")
    return 0


def _run_measure(args: argparse.Namespace) -> int:
    from .measure import measure_keys

    done = lambda graph, stats: _log(f"{graph}: {stats['median_ms']:.4f} ms (cv {stats['cv']:.3f})")  # noqa: E731
    path = measure_keys(args.dir, args.backend, _config(args), args.threads, progress=done)
    print(f"measurements in {path}")
    return 0


def _run_assemble(args: argparse.Namespace) -> int:
    from .table import assemble

    print(f"table written to {assemble(args.dir, args.backend, args.out)}")
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from .build import build_table

    out = build_table(_space(args.space), *args.resolution, args.out, args.backend, _config(args), args.threads,
                      log=_log, batch=args.batch, precision=args.precision)
    print(f"table written to {out}")
    return 0


def _print_breakdown(record: dict[str, Any]) -> None:
    print(f"{record['arch']} at {record['iters']} iterations:")
    for name, ms in record["breakdown_ms"].items():
        print(f"  {name:<16} {ms:10.3f} ms")
    print(f"total: {record['total_ms']:.3f} ms")


def _run_show(args: argparse.Namespace) -> int:
    from .build import plot_breakdown, show_table

    record = show_table(args.dir, arch=args.arch, iters=args.iters)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(f"{record['table']}: {record['backend']} on {record['device']}, {record['precision']}, "
              f"{record['resolution']}, batch {record['batch']}, threads {record['threads']}")
        print(f"{record['keys']} keys; by kind {record['by_kind']}; by encoder {record['by_encoder']}")
        print("slowest keys:")
        for row in record["slowest"]:
            print(f"  {row['latency_ms']:10.4f} ms  {row['id']}")
        if "arch" in record:
            _print_breakdown(record["arch"])
    if args.plot:
        if args.arch is None:
            print("lut show: --plot needs --arch (the architecture whose breakdown is plotted)")
            return 2
        print(f"plot written to {plot_breakdown(args.dir, args.arch, args.iters, args.plot)}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from .predictor import LatencyTable
    from .build import breakdown_record, table_arch

    table = LatencyTable.load(args.table, backend=args.backend, device=args.device, precision=args.precision,
                              resolution=args.resolution, force=args.force)
    arch = table_arch(table, args.arch)
    if args.raw:
        parts = table.breakdown(arch, args.iters, calibrated=False)
        record = {"arch": arch.id, "iters": args.iters, "breakdown_ms": parts, "total_ms": sum(parts.values())}
    else:
        record = breakdown_record(table, arch, args.iters)
    _print_breakdown(record)
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    try:
        from .validate import run_validate
    except ImportError as exc:
        print(f"lut validate: latency_tables.validate is not available ({exc})")
        return 2
    return run_validate(args)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "keys": _run_keys, "measure": _run_measure, "assemble": _run_assemble, "build": _run_build, "show": _run_show,
    "predict": _run_predict, "validate": _run_validate}


def run_lut(args: argparse.Namespace) -> int:
    """Run the `lut` sub-command `args.lut_command`; returns the exit code."""
    return HANDLERS[args.lut_command](args)
