"""`python cli.py export ...` and `verify`: argument handling around the export package."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from flownas.fileio import atomic_path, atomic_write_text, parse_resolution

from .metadata import read_metadata
from .onnx_export import DEFAULT_OPSET, ExportSpec, export_onnx
from .verify import (DEFAULT_TOLERANCE_EPE, VerificationError, artifact_kind, engine_flow_fn, onnx_flow_fn,
                     torch_flow_fn, verification_pairs, verify)


def add_export_parsers(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="ONNX / TensorRT export, verified against PyTorch")
    export_sub = export.add_subparsers(dest="export_command", metavar="TARGET", required=True)
    p = export_sub.add_parser("onnx", help="export a checkpoint or a subnet to ONNX and verify it on ONNX Runtime")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="checkpoint (RAFT, FlowNAS subnet or supernet with --arch)")
    source.add_argument("--supernet", help="FlowNAS supernet checkpoint (needs --arch)")
    p.add_argument("--arch", help="architecture to extract from a supernet (name, id or JSON file)")
    p.add_argument("--resolution", default="384x512", help="HxW, multiples of 8 (default 384x512)")
    p.add_argument("--iters", type=int, default=12, help="update iterations unrolled in the graph (default 12)")
    p.add_argument("--out", required=True, help="output .onnx (a .json record is written beside it)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (multiples of 8)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 16-19 for TensorRT (default 17)")
    p.add_argument("--no-tensorrt", action="store_true", help="allow opset >= 20 (not for TensorRT)")
    _verify_args(p)

    p = export_sub.add_parser("lint", help="check an ONNX file against TensorRT's parser and known pitfalls")
    p.add_argument("onnx", help="ONNX file")
    p.add_argument("--json", action="store_true")

    p = export_sub.add_parser("trt", help="build a TensorRT engine from an ONNX file and verify it")
    p.add_argument("onnx", help="ONNX file made by `export onnx`")
    p.add_argument("--out", required=True, help="engine file (.engine/.plan); a .json sidecar is written beside it")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--min", dest="min_shapes", help="trtexec-style shapes, e.g. image1:1x3x256x320,image2:1x3x256x320")
    p.add_argument("--opt", dest="opt_shapes")
    p.add_argument("--max", dest="max_shapes")
    p.add_argument("--workspace-mb", type=int, default=4096)
    p.add_argument("--timing-cache", help="timing cache file (read and updated)")
    _verify_args(p)

    p = sub.add_parser("verify", help="compare the flow of two artifacts (checkpoint, ONNX file, engine)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--arch", help="architecture for a supernet checkpoint")
    p.add_argument("--iters", type=int, help="iterations for checkpoints (default: the ONNX/engine record's, else 12)")
    p.add_argument("--resolution", help="HxW of the test pairs (default: the artifact's export resolution)")
    _verify_args(p)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_EPE, help="max EPE in px (default 1e-3)")
    p.add_argument("--real-pair", help="folder with frame10.png/frame11.png (default: ../shared Middlebury pair)")


def run_export(args: argparse.Namespace) -> int:
    return {"onnx": _export_onnx, "lint": _export_lint, "trt": _export_trt}[args.export_command](args)


def _load_source(args: argparse.Namespace) -> Any:
    from flownas.models import FlowNASSupernet
    from flownas.weights import load_model

    if args.supernet and not args.arch:
        raise ValueError("--supernet needs --arch (the subnet to export)")
    model = load_model(args.supernet or args.weights, arch=args.arch)
    if isinstance(model, FlowNASSupernet):
        raise ValueError(f"{args.weights}: a supernet cannot be exported as a whole; choose a subnet with --arch")
    return model


def _export_onnx(args: argparse.Namespace) -> int:
    model = _load_source(args)
    height, width = parse_resolution(args.resolution)
    spec = ExportSpec(height, width, args.iters, args.opset, dynamic=args.dynamic, for_tensorrt=not args.no_tensorrt)
    spec.validate()
    out = Path(args.out)
    with atomic_path(out) as tmp:  # the file appears only once it has been verified
        record = export_onnx(model, tmp, spec, {"source": str(args.supernet or args.weights)})
        sizes = [(height, width)] + ([(height + 64, width + 128)] if args.dynamic else [])
        checks = {}
        for h, w in sizes:
            pairs = verification_pairs(h, w, args.real_pair)
            report = verify(torch_flow_fn(model, args.iters), onnx_flow_fn(tmp), pairs, args.tolerance)
            print(f"ONNX Runtime vs PyTorch at {h}x{w}, {args.iters} iterations:\n{report.summary()}")
            if not report.ok:
                raise VerificationError(f"{out}: ONNX flow differs from PyTorch (max EPE {report.max_epe:.2e} px > "
                                        f"{args.tolerance:g} px); no file written")
            checks[f"{h}x{w}"] = report.to_dict()
    record.update(file_size_bytes=out.stat().st_size, verification=checks)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2, default=str))
    print(f"wrote {out} ({record['file_size_bytes'] / 2**20:.1f} MiB, exported in {record['export_seconds']:.1f} s) "
          f"and {out.with_suffix('.json')}")
    return 0


def _export_lint(args: argparse.Namespace) -> int:
    from .lint import lint_onnx

    report = lint_onnx(args.onnx)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1


def _export_trt(args: argparse.Namespace) -> int:
    from .tensorrt import build_engine, engine_sidecar_path, profiles_from_specs

    if (args.opt_shapes or args.max_shapes) and not args.min_shapes:
        raise ValueError("--opt/--max shapes need --min shapes too")
    profiles = profiles_from_specs(args.min_shapes, args.opt_shapes, args.max_shapes) if args.min_shapes else None
    meta = read_metadata(args.onnx)
    record = build_engine(args.onnx, args.out, precision=args.precision, profiles=profiles,
                          workspace_mb=args.workspace_mb, timing_cache=args.timing_cache)
    height, width = meta.get("export_height", 384), meta.get("export_width", 512)
    tolerance = args.tolerance if args.precision == "fp32" else max(args.tolerance, 5e-2)
    report = verify(onnx_flow_fn(args.onnx), engine_flow_fn(args.out), verification_pairs(height, width, args.real_pair),
                    tolerance)
    print(f"TensorRT ({args.precision}) vs ONNX Runtime:\n{report.summary()}")
    if not report.ok:
        Path(args.out).unlink(missing_ok=True)
        engine_sidecar_path(args.out).unlink(missing_ok=True)
        raise VerificationError(f"{args.out}: engine flow differs from ONNX Runtime; engine removed")
    record["verification"] = {"reference": "onnxruntime-cpu", **report.to_dict()}
    atomic_write_text(engine_sidecar_path(args.out), json.dumps(record, indent=2, default=str))
    print(f"wrote {args.out} (built in {record['build_time_s']:.1f} s) and {engine_sidecar_path(args.out)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = {}
    for path in (args.a, args.b):
        if not os.path.exists(path):
            raise VerificationError(f"{path}: file not found")
        if artifact_kind(path) == "onnx":
            meta = meta or read_metadata(path)
    iters = args.iters or meta.get("export_iters", 12)
    height, width = (parse_resolution(args.resolution) if args.resolution
                     else (meta.get("export_height", 384), meta.get("export_width", 512)))
    fns = [_flow_fn(path, iters, args.arch) for path in (args.a, args.b)]
    report = verify(fns[0], fns[1], verification_pairs(height, width, args.real_pair), args.tolerance)
    print(f"{args.a} vs {args.b} at {height}x{width}, {iters} iterations:\n{report.summary()}")
    return 0 if report.ok else 1


def _flow_fn(path: str, iters: int, arch: str | None):
    kind = artifact_kind(path)
    if kind == "onnx":
        return onnx_flow_fn(path)
    if kind == "engine":
        return engine_flow_fn(path)
    from flownas.weights import load_model

    return torch_flow_fn(load_model(path, arch=arch), iters)
