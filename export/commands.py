"""`python cli.py export ...` and `verify`: argument handling around the export package."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flownas.fileio import parse_resolution
from flownas.logs import progress

from .spec import DEFAULT_OPSET, DEFAULT_TOLERANCE_EPE, ExportError, ExportSpec


def _model_source_args(p: argparse.ArgumentParser) -> None:
    """The model an export starts from (checkpoint, or supernet + arch) and the graph's size and iterations."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="checkpoint (RAFT, FlowNAS subnet or supernet with --arch)")
    source.add_argument("--supernet", help="FlowNAS supernet checkpoint (needs --arch)")
    p.add_argument("--arch", help="architecture to extract from a supernet (name, id or JSON file)")
    p.add_argument("--resolution", default="384x512", help="HxW, multiples of 8 (default 384x512)")
    p.add_argument("--iters", type=int, default=12, help="update iterations unrolled in the graph (default 12)")


def add_export_parsers(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="ONNX / TensorRT export, verified against PyTorch")
    export_sub = export.add_subparsers(dest="export_command", metavar="TARGET", required=True,
                                       help="onnx, lint, trt or precision-sweep")
    p = export_sub.add_parser("onnx", help="export a checkpoint or a subnet to ONNX and verify it on ONNX Runtime")
    _model_source_args(p)
    p.add_argument("--out", required=True, help="output .onnx (a .json record is written beside it)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (multiples of 8)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 16-19 for TensorRT (default 17)")
    p.add_argument("--no-tensorrt", action="store_true", help="allow opset >= 20 (not for TensorRT)")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torchscript (default: torch.onnx's tracer) or dynamo (torch.export + onnxscript, its "
                        "successor; needs --opset 18 or 19 and pip install onnxscript)")
    _verify_args(p)
    p.add_argument("--precision", default="fp32", metavar="fp32|fp16|bf16|int8|PLAN.json",
                   help="graph precision: uniform, or a per-group plan file (from `export precision-sweep`); "
                        "correlation, coordinates, gathers and softmax stay fp32 (default fp32)")
    p.add_argument("--max-epe-delta", type=float,
                   help="max flow change (px) against fp32 PyTorch for a reduced-precision graph, else nothing is "
                        "written (default 5e-2 fp16, 5e-1 int8)")
    _calibration_args(p)

    p = export_sub.add_parser("precision-sweep", help="lower one layer group at a time (int8, fp16), measure the "
                                                      "flow change and latency, propose the fastest plan")
    _model_source_args(p)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 16-19 for TensorRT (default 17)")
    p.add_argument("--out", required=True, help="plan file to write (.json; `export onnx --precision` reads it)")
    p.add_argument("--max-epe-delta", type=float, default=0.5,
                   help="flow change budget (px) against fp32 PyTorch for the proposed plan (default 0.5)")
    p.add_argument("--candidates", default="int8,fp16", help="precisions to try per group (default int8,fp16)")
    p.add_argument("--groups", help="comma-separated groups to sweep (default: every group in the graph)")
    p.add_argument("--no-timing", action="store_true",
                   help="skip the ONNX Runtime CPU timing (rank by accuracy only; lower everything that fits)")
    p.add_argument("--real-pair", metavar="DIR", help="also validate on a real pair (frame10.png, frame11.png)")
    _calibration_args(p)

    p = export_sub.add_parser("lint", help="check an ONNX file against TensorRT's parser and known pitfalls")
    p.add_argument("onnx", help="ONNX file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = export_sub.add_parser("trt", help="build a TensorRT engine from an ONNX file and verify it")
    p.add_argument("onnx", help="ONNX file made by `export onnx`")
    p.add_argument("--out", required=True, help="engine file (.engine/.plan); a .json sidecar is written beside it")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp32 (IEEE, TF32 off) or fp16 (strongly typed: correlation and coordinates stay fp32)")
    p.add_argument("--min", dest="min_shapes", help="trtexec-style shapes, e.g. image1:1x3x256x320,image2:1x3x256x320")
    p.add_argument("--opt", dest="opt_shapes", help="optimisation shapes of a dynamic engine (default: --min)")
    p.add_argument("--max", dest="max_shapes", help="largest shapes of a dynamic engine (default: --min)")
    p.add_argument("--workspace-mb", type=int, default=4096, help="builder workspace in MiB (default 4096)")
    p.add_argument("--timing-cache", help="timing cache file (read and updated)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="verify the engine replayed as a CUDA graph (trtexec 11's default; needs cuda-python)")
    _verify_args(p, "max EPE in px against ONNX Runtime (default 1e-3 for fp32, 5e-2 for fp16)")

    p = sub.add_parser("verify", help="compare the flow of two artifacts (checkpoint, ONNX file, engine), or of "
                                      "one artifact with outputs saved on another machine")
    p.add_argument("a", help="reference artifact (.pt/.pth checkpoint, .onnx, .engine/.plan); the only one with "
                             "--save-outputs / --load-outputs")
    p.add_argument("b", nargs="?", help="candidate artifact (not with --save-outputs / --load-outputs)")
    p.add_argument("--save-outputs", metavar="F.npz",
                   help="run A on the verification inputs and write one .npz with the inputs, every output and "
                        "a provenance record; take it to the target machine and run --load-outputs there")
    p.add_argument("--load-outputs", metavar="F.npz",
                   help="run A on the inputs stored in F and compare with F's outputs (made elsewhere); "
                        "exit status 1 when they differ")
    p.add_argument("--backend", help="backend that runs A with --save-outputs / --load-outputs (default: "
                                     "torch-cpu for a checkpoint, ort-cpu for ONNX, trt for an engine)")
    p.add_argument("--arch", help="architecture for a supernet checkpoint")
    p.add_argument("--iters", type=int, help="iterations for checkpoints (default: the ONNX/engine record's, with "
                                             "--load-outputs the saved file's, else 12)")
    p.add_argument("--resolution", help="HxW of the test pairs (default: the artifact's export resolution)")
    p.add_argument("--input-shape", dest="input_shapes", metavar="NAME:DIMS[,...]",
                   help="shapes for dynamic inputs of graphs that are not flow models (trtexec syntax)")
    _verify_args(p)


def _verify_args(p: argparse.ArgumentParser, tolerance_help: str = "max EPE in px (default 1e-3)") -> None:
    default = DEFAULT_TOLERANCE_EPE if "default 1e-3" in tolerance_help else None
    p.add_argument("--tolerance", type=float, default=default, help=tolerance_help)
    p.add_argument("--real-pair", metavar="DIR",
                   help="also verify on a real pair: a folder with frame10.png and frame11.png (e.g. a Middlebury "
                        "sequence); default: seeded synthetic pairs only")


def _calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", metavar="DATASET[:ROOT]", default="synthetic",
                   help="INT8 calibration pairs: a dataset name, with its root folder for real data "
                        "(e.g. middlebury:data/middlebury; default synthetic)")
    p.add_argument("--calibration-pairs", type=int, default=8, help="pairs drawn (seeded) for calibration (default 8)")
    p.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="INT8 range calibration (default minmax)")
    p.add_argument("--int8-format", choices=("tensorrt", "ort-cpu"), default="tensorrt",  # quantize.INT8_FORMATS
                   help="how INT8 is written: tensorrt (signed symmetric Q/DQ on conv inputs; TensorRT and ONNX "
                        "Runtime run it) or ort-cpu (unsigned activations, quantized conv outputs: ONNX Runtime CPU "
                        "fuses QLinearConv, faster there; TensorRT refuses it). Default tensorrt")
    p.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",  # quantize.REDUCE_RANGE
                   help="7-bit INT8 weights (onnxruntime's reduce_range), so the u8s8 kernels of CPUs without "
                        "VNNI/AMX do not saturate: auto (default) = on for --int8-format ort-cpu when this CPU has "
                        "no integer dot products; the record says what was applied")


def run_export(args: argparse.Namespace) -> int:
    return {"onnx": _export_onnx, "lint": _export_lint, "trt": _export_trt,
            "precision-sweep": _export_precision_sweep}[args.export_command](args)


def _export_onnx(args: argparse.Namespace) -> int:
    from flownas.loading import load_flow_model

    from .workflow import export_verified_onnx

    from .precision_plan import parse_precision
    from .quantize import check_plan_writable, parse_calibration

    if args.supernet and not args.arch:
        raise ExportError("--supernet needs --arch (the subnet to export)")
    height, width = parse_resolution(args.resolution)
    spec = ExportSpec(height, width, args.iters, args.opset, dynamic=args.dynamic, for_tensorrt=not args.no_tensorrt,
                      exporter=args.exporter)
    spec.validate()
    plan = parse_precision(args.precision)  # a bad plan file fails before the model loads
    check_plan_writable(plan)
    if args.dynamic and plan.precisions() != {"fp32"}:
        raise ExportError("reduced-precision exports are static (calibrated and verified at --resolution); "
                          "drop --dynamic")
    calibration = parse_calibration(args.calibration, args.calibration_pairs, args.calibration_method,
                                    int8_format=args.int8_format, reduce_range=args.reduce_range)
    if args.real_pair:
        from .verify import real_pair_images  # cv2: imported when used, not for --help

        real_pair_images(args.real_pair, 128, 128)  # a missing real pair fails before the model loads
    model = load_flow_model(args.supernet or args.weights, arch=args.arch)
    if plan.precisions() != {"fp32"}:
        return _export_reduced(args, model, spec, plan, calibration)
    result = export_verified_onnx(model, args.out, spec, real_pair=args.real_pair, tolerance_epe=args.tolerance,
                                  source=str(args.supernet or args.weights), log=progress)
    record = result.record
    print(f"wrote {result.path} ({record['file_size_bytes'] / 2**20:.1f} MiB, exported in "
          f"{record['export_seconds']:.1f} s) and {result.path.with_suffix('.json')}")
    return 0


def _export_reduced(args: argparse.Namespace, model: object, spec: ExportSpec, plan: object,
                    calibration: object) -> int:
    from .precision_export import export_precision_onnx

    result = export_precision_onnx(model, args.out, spec, plan, calibration, max_epe_delta=args.max_epe_delta,
                                   real_pair=args.real_pair, source=str(args.supernet or args.weights), log=progress)
    record = result.record
    print(f"wrote {result.path} ({record['precision']}: {json.dumps(record['precision_plan'])}; max EPE delta "
          f"{result.check.max_epe_delta:.2e} px <= {record['verification']['tolerance_epe_delta']:g} px) and "
          f"{result.path.with_suffix('.json')}")
    return 0


def _export_precision_sweep(args: argparse.Namespace) -> int:
    from flownas.loading import load_flow_model

    from .precision_sweep import precision_sweep, write_sweep
    from .quantize import parse_calibration

    if args.supernet and not args.arch:
        raise ExportError("--supernet needs --arch (the subnet to export)")
    if Path(args.out).suffix.lower() != ".json":
        raise ExportError(f"--out {args.out}: expected a .json plan file")
    height, width = parse_resolution(args.resolution)
    spec = ExportSpec(height, width, args.iters, args.opset)
    spec.validate()
    calibration = parse_calibration(args.calibration, args.calibration_pairs, args.calibration_method,
                                    int8_format=args.int8_format, reduce_range=args.reduce_range)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    if args.real_pair:
        from .verify import real_pair_images  # cv2: imported when used, not for --help

        real_pair_images(args.real_pair, 128, 128)
    model = load_flow_model(args.supernet or args.weights, arch=args.arch)
    result = precision_sweep(model, spec, calibration, max_epe_delta=args.max_epe_delta, candidates=candidates,
                             groups=groups, real_pair=args.real_pair, timer=None if args.no_timing else
                             _default_timer(), work_dir=Path(args.out).parent, log=progress)
    print(result.table())
    print(f"wrote {write_sweep(result, args.out)}")
    return 0


def _default_timer():  # noqa: ANN202  (a Timer; imported lazily with the sweep)
    from .precision_export import median_ort_latency_ms

    return median_ort_latency_ms


def _export_lint(args: argparse.Namespace) -> int:
    from .lint import lint_onnx

    report = lint_onnx(args.onnx)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1


def _export_trt(args: argparse.Namespace) -> int:
    from .tensorrt import build_verified_engine, profiles_from_specs

    if Path(args.onnx).suffix.lower() != ".onnx" or not Path(args.onnx).is_file():
        raise ExportError(f"{args.onnx}: expected an existing .onnx file made by `export onnx`")
    if (args.opt_shapes or args.max_shapes) and not args.min_shapes:
        raise ExportError("--opt/--max shapes need --min shapes too")
    profiles = profiles_from_specs(args.min_shapes, args.opt_shapes, args.max_shapes) if args.min_shapes else None
    record = build_verified_engine(args.onnx, args.out, precision=args.precision, profiles=profiles,
                                   workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
                                   tolerance_epe=args.tolerance, real_pair=args.real_pair,
                                   cuda_graph=args.cuda_graph)
    for shape, check in record["verification"]["shapes"].items():
        print(f"TensorRT ({args.precision}) vs ONNX Runtime at {shape}: max EPE {check['max_epe']:.2e} px")
    print(f"wrote {args.out} (built in {record['build_time_s']:.1f} s) and {args.out}.json")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from flownas.errors import UserInputError

    from .workflow import verify_artifacts

    if args.save_outputs or args.load_outputs:
        return _verify_saved(args)
    if args.b is None:
        raise UserInputError("verify needs two artifacts (verify A B), or one with --save-outputs F.npz or "
                             "--load-outputs F.npz")
    if args.backend:
        raise UserInputError("--backend chooses how A runs with --save-outputs / --load-outputs; verify A B runs "
                             "a checkpoint on torch-cpu, ONNX on ort-cpu and an engine on trt")
    report = verify_artifacts(args.a, args.b, arch=args.arch, iters=args.iters, resolution=args.resolution,
                              real_pair=args.real_pair, tolerance_epe=args.tolerance, input_shapes=args.input_shapes)
    print(f"{args.a} vs {args.b}:\n{report.summary()}")
    return 0 if report.ok else 1


def _verify_saved(args: argparse.Namespace) -> int:
    """`verify A --save-outputs F` (here) or `verify A --load-outputs F` (on the target machine)."""
    from flownas.errors import UserInputError

    from .saved_outputs import save_artifact_outputs, verify_saved_outputs

    if args.save_outputs and args.load_outputs:
        raise UserInputError("--save-outputs and --load-outputs together: save on the reference machine, load on "
                             "the target one (give one of them)")
    if args.b is not None:
        flag = "--save-outputs" if args.save_outputs else "--load-outputs"
        raise UserInputError(f"{flag} takes one artifact; got two ({args.a} and {args.b})")
    if args.save_outputs:
        record = save_artifact_outputs(args.a, args.save_outputs, backend=args.backend, arch=args.arch,
                                       iters=args.iters, resolution=args.resolution, real_pair=args.real_pair,
                                       input_shapes=args.input_shapes)
        names = ", ".join(c["name"] for c in record["cases"])
        print(f"wrote {args.save_outputs}: {args.a} on {record['backend']} ({record['device']}), "
              f"{len(record['cases'])} case(s): {names}")
        print(f"on the target machine: flownas verify ARTIFACT --load-outputs {Path(args.save_outputs).name}")
        return 0
    given = [o for o, v in (("--resolution", args.resolution), ("--real-pair", args.real_pair),
                            ("--input-shape", args.input_shapes)) if v]
    if given:
        raise UserInputError(f"--load-outputs runs the inputs stored in {args.load_outputs}; "
                             f"{' and '.join(given)} cannot be used with it")
    report = verify_saved_outputs(args.a, args.load_outputs, backend=args.backend, arch=args.arch,
                                  iters=args.iters, tolerance_epe=args.tolerance)
    print(f"{args.a} vs {args.load_outputs}:\n{report.summary()}")
    return 0 if report.ok else 1
