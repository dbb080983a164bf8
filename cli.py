#!/usr/bin/env python
"""FlowNAS toolkit command line: `python cli.py <command> --help` (also installed as `flownas`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.commands import add_bench_parser, run_bench
from export.commands import add_export_parsers, run_export, run_verify
from flownas.fileio import atomic_write_text, parse_resolution

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return register


# --------------------------------------------------------------------------------------------- helpers
def _load(args: argparse.Namespace):
    """The model named by --weights/--arch (or an untrained RAFT, with a warning)."""
    from flownas.models import RAFT
    from flownas.weights import load_model

    if args.weights:
        return load_model(args.weights, arch=getattr(args, "arch", None), device=args.device)
    print("warning: no --weights given: using an untrained RAFT (random weights)", file=sys.stderr)
    import torch

    torch.manual_seed(0)
    return RAFT().to(args.device).eval()


def _frame_pairs(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        frames = sorted(p for p in Path(paths[0]).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".ppm", ".bmp"})
        if len(frames) < 2:
            raise ValueError(f"{paths[0]}: need at least two image frames (.png/.jpg/.ppm/.bmp), found {len(frames)}")
        return list(zip(frames[:-1], frames[1:]))
    if len(paths) != 2:
        raise ValueError(f"give two images or one folder of frames, got {len(paths)} paths")
    return [(Path(paths[0]), Path(paths[1]))]


# --------------------------------------------------------------------------------------------- commands
@command("infer")
def cmd_infer(args: argparse.Namespace) -> int:
    from flownas.data.flow_io import read_image, write_flow
    from flownas.data.viz import save_flow_image
    from flownas.inference import estimate_flow

    pairs = _frame_pairs(args.images)
    model = _load(args)
    many = len(pairs) > 1
    for first, second in pairs:
        image1, image2 = read_image(first), read_image(second)
        if image1.shape != image2.shape:
            raise ValueError(f"images differ in size (HxW): {first} is {image1.shape[0]}x{image1.shape[1]}, "
                             f"{second} is {image2.shape[0]}x{image2.shape[1]}")
        flow = estimate_flow(model, image1, image2, iters=args.iters, device=args.device)
        out = Path(args.out) / f"{first.stem}.flo" if many else Path(args.out)
        write_flow(out, flow)
        viz = (Path(args.viz) / f"{first.stem}.png" if many else Path(args.viz)) if args.viz else None
        if viz is not None:
            save_flow_image(viz, flow)
        print(f"{first.name} -> {second.name}: flow {out}" + (f", picture {viz}" if viz else ""))
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from flownas.data.datasets import build_dataset
    from flownas.evaluate import evaluate
    from flownas.weights import provenance

    if args.root is None and args.dataset != "synthetic":
        raise ValueError(f"--root is required for dataset {args.dataset!r}")
    dataset = build_dataset(args.dataset, args.root, split=args.split)
    model = _load(args)
    summary, rows = evaluate(model, dataset, iters=args.iters, device=args.device, max_samples=args.max_samples)
    table = pd.DataFrame(rows)
    print(f"{args.dataset}: {len(rows)} pairs, {args.iters} iterations")
    print(pd.DataFrame([summary]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    out = Path(args.out or f"outputs/eval_{args.dataset}.csv")
    atomic_write_text(out, table.to_csv(index=False))
    record = {"dataset": args.dataset, "root": str(args.root), "split": args.split, "iters": args.iters,
              "weights": args.weights, "arch": args.arch, "summary": summary,
              **provenance(model, {"model": model.config()})}
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2, default=str))
    print(f"per-pair metrics: {out}; summary and provenance: {out.with_suffix('.json')}")
    return 0


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    """The workflow end to end on CPU: flow on a synthetic pair, then supernet -> subnet -> ONNX -> benchmark."""
    out = Path(args.out)
    _demo_flow(args, out)
    size, iters = f"{args.height}x{args.width}", str(args.iters)
    supernet = _demo_supernet(out / "supernet.pt", args.seed)
    steps = [
        ("extract the raft-k subnet", ["extract", "--supernet", supernet, "--arch", "raft-k",
                                       "--out", str(out / "raft-k.pt"), "--calibrate-bn", "2", "--resolution", size]),
        ("export it to ONNX and verify", ["export", "onnx", "--weights", str(out / "raft-k.pt"), "--resolution", size,
                                          "--iters", iters, "--out", str(out / "raft-k.onnx")]),
        ("lint the ONNX file for TensorRT", ["export", "lint", str(out / "raft-k.onnx")]),
        ("benchmark PyTorch eager vs ONNX Runtime", ["bench", "--weights", str(out / "raft-k.pt"),
                                                      "--backend", "torch-cpu,ort-cpu", "--resolution", size,
                                                      "--iters", iters, "--runs", "3", "--out", str(out / "bench")]),
    ]
    for title, argv in steps:
        print(f"\n== {title}: flownas {' '.join(argv)}")
        code = COMMANDS[argv[0]](build_parser().parse_args(argv))
        if code:
            return code
    print(f"\ndemo done: everything is in {out}/")
    return 0


def _demo_flow(args: argparse.Namespace, out: Path) -> None:
    from flownas.data.flow_io import write_flow
    from flownas.data.synthetic import make_pair
    from flownas.data.viz import save_flow_image
    from flownas.inference import estimate_flow
    from flownas.metrics import flow_metrics

    print(f"== flow on a synthetic {args.height}x{args.width} pair with exact ground truth (seed {args.seed})")
    pair = make_pair(args.height, args.width, seed=args.seed)
    model = _load(args)
    flow = estimate_flow(model, pair["image1"], pair["image2"], iters=args.iters, device=args.device)
    write_flow(out / "flow.flo", flow)
    save_flow_image(out / "flow.png", flow)
    save_flow_image(out / "flow_gt.png", pair["flow"])
    print(f"EPE {flow_metrics(flow, pair['flow'], pair['valid'])['epe']:.3f} px; wrote {out / 'flow.flo'}, "
          f"{out / 'flow.png'} and the ground-truth picture {out / 'flow_gt.png'}")


def _demo_supernet(path: Path, seed: int) -> str:
    """An untrained FlowNAS supernet checkpoint (no weights can be downloaded here)."""
    import torch

    from flownas.models import FlowNASSupernet
    from flownas.weights import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, FlowNASSupernet(), {"note": "untrained supernet made by `flownas demo`"})
    print(f"\n== an untrained FlowNAS supernet: {path}")
    return str(path)


@command("arch")
def cmd_arch(args: argparse.Namespace) -> int:
    return {"show": _arch_show, "sample": _arch_sample}[args.arch_command](args)


def _arch_show(args: argparse.Namespace) -> int:
    import torch

    from flownas.arch import ArchConfig, SearchSpace
    from flownas.complexity import count_macs, count_parameters
    from flownas.weights import build_model, named_config

    space = SearchSpace.from_file(args.space) if args.space else SearchSpace.flownas()
    height, width = parse_resolution(args.resolution)
    config = named_config(args.spec, space)
    arch = ArchConfig.from_dict(config["arch"]) if "arch" in config else None
    with torch.device("meta"):
        params = count_parameters(build_model(config))
    macs = count_macs(config, height, width, args.iters)
    record = {"name": args.spec, "id": arch.id if arch else args.spec, "arch": arch.to_dict() if arch else None,
              "resolution": [height, width], "iters": args.iters, "parameters": params, "macs": macs}
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{args.spec}: {record['id']}")
    if arch:
        for key, values in arch.to_dict().items():
            print(f"  {key:<13}{values}")
    print(f"parameters: {params['total']:,} (fnet {params['fnet']:,}, cnet {params['cnet']:,}, "
          f"update {params['update_block']:,})")
    print(f"MACs at {height}x{width}, {args.iters} iterations: {macs['total'] / 1e9:.2f} G (fnet {macs['fnet'] / 1e9:.2f}, "
          f"cnet {macs['cnet'] / 1e9:.2f}, update {macs['update_block'] / 1e9:.2f}, correlation {macs['correlation'] / 1e9:.2f})")
    return 0


def _arch_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from flownas.arch import SearchSpace

    space = SearchSpace.from_file(args.space) if args.space else SearchSpace.flownas()
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        arch = space.sample(rng)
        print(json.dumps(arch.to_dict()) if args.json else arch.id)
    return 0


@command("extract")
def cmd_extract(args: argparse.Namespace) -> int:
    import time

    from flownas.arch import resolve_arch
    from flownas.models import FlowNASSupernet
    from flownas.weights import load_model, save_checkpoint

    supernet = load_model(args.supernet)
    if not isinstance(supernet, FlowNASSupernet):
        raise ValueError(f"{args.supernet}: not a FlowNAS supernet checkpoint (holds {supernet.config()['family']})")
    arch = resolve_arch(args.arch, supernet.space)
    start = time.perf_counter()
    subnet = supernet.extract(arch)
    extract_ms = (time.perf_counter() - start) * 1e3
    if args.calibrate_bn:
        _calibrate(subnet, args.calibrate_bn, args.resolution)
    save_checkpoint(args.out, subnet, {"arch_id": arch.id, "source": str(args.supernet),
                                       "bn_calibration_batches": args.calibrate_bn})
    params = sum(p.numel() for p in subnet.parameters())
    print(f"extracted {arch.id} ({params:,} parameters) in {extract_ms:.0f} ms -> {args.out}")
    return 0


def _calibrate(model, batches: int, resolution: str) -> None:
    """BN statistics of the context encoder re-estimated on synthetic pairs."""
    from flownas.data.synthetic import SyntheticFlow
    from flownas.evaluate import recalibrate_bn

    height, width = parse_resolution(resolution)
    data = SyntheticFlow(length=batches, size=(height, width), seed=7)
    recalibrate_bn(model, ((s[0][None], s[1][None]) for s in (data[i] for i in range(batches))))


# --------------------------------------------------------------------------------------------- parser
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="checkpoint: RAFT (princeton-vl/torchvision), FlowNAS release or toolkit format")
    p.add_argument("--arch", help="with a FlowNAS supernet: architecture name (raft-s, raft-k, largest, smallest), id or JSON file")
    p.add_argument("--iters", type=int, default=12, help="update iterations (default 12)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flownas", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("infer", help="estimate flow for an image pair or a folder of frames")
    p.add_argument("images", nargs="+", help="IMG1 IMG2, or one folder of frames (consecutive pairs)")
    p.add_argument("--out", default="flow.flo", help="output .flo/.png/.npy (a folder for frame folders)")
    p.add_argument("--viz", help="colour-coded flow picture (.png; a folder for frame folders)")
    _model_args(p)

    p = sub.add_parser("evaluate", help="metrics of a model on a dataset")
    p.add_argument("--dataset", required=True, help="sintel-clean, sintel-final, kitti, chairs, things-clean, things-final, middlebury, synthetic")
    p.add_argument("--root", help="dataset root folder (not needed for synthetic)")
    p.add_argument("--split", help="dataset split (dataset default if omitted)")
    p.add_argument("--max-samples", type=int, help="evaluate only the first N pairs")
    p.add_argument("--out", help="per-pair CSV (default outputs/eval_<dataset>.csv); a JSON summary sits beside it")
    _model_args(p)

    p = sub.add_parser("demo", help="the end-to-end demo on a synthetic pair with exact ground truth")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    _model_args(p)
    _arch_parsers(sub)
    add_export_parsers(sub)
    add_bench_parser(sub)

    p = sub.add_parser("extract", help="cut a static subnet out of a FlowNAS supernet checkpoint")
    p.add_argument("--supernet", required=True, help="FlowNAS supernet checkpoint (release or toolkit format)")
    p.add_argument("--arch", required=True, help="name (raft-s, raft-k, largest, smallest), id or JSON file")
    p.add_argument("--out", required=True, help="output checkpoint (toolkit format, records the architecture)")
    p.add_argument("--calibrate-bn", type=int, default=0, metavar="N",
                   help="re-estimate the context encoder's BN statistics on N synthetic pairs")
    p.add_argument("--resolution", default="256x320", help="pair size for BN calibration (HxW)")
    return parser


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    return run_export(args)


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    return run_bench(args)


@command("verify")
def cmd_verify(args: argparse.Namespace) -> int:
    return run_verify(args)


def _arch_parsers(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser("arch", help="inspect and sample architectures of the search space")
    arch_sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    p = arch_sub.add_parser("show", help="configuration, id, parameters and MACs of an architecture")
    p.add_argument("spec", help="raft, raft-small, raft-s, raft-k, largest, smallest, an id or a JSON file")
    p.add_argument("--resolution", default="384x512", help="HxW for the MAC count (default 384x512)")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--space", help="custom search space (JSON/YAML)")
    p.add_argument("--json", action="store_true", help="print one JSON record")
    p = arch_sub.add_parser("sample", help="uniformly sampled architectures, one id per line")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--space", help="custom search space (JSON/YAML)")
    p.add_argument("--json", action="store_true", help="published dict format instead of ids")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
