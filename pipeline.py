"""Workflows that span the packages, as library calls: inference on files, evaluation, extraction, the demo.

    import pipeline
    pipeline.run_inference(["frame10.png", "frame11.png"], weights="raft-things.pth", out="flow.flo")
    pipeline.run_evaluation("synthetic", weights=None, out="eval.csv")
    pipeline.run_demo("outputs/demo")

Each returns a record (a dataclass or dict) and writes its files atomically; `cli.py` only parses arguments and
calls these. Arguments are checked before any slow work (model loading, inference).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from flownas.errors import UserInputError
from flownas.fileio import atomic_write_text

Log = Callable[[str], None]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
FLOW_SUFFIXES = (".flo", ".png", ".npy", ".pfm")
VIZ_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


def _quiet(_: str) -> None:
    """Library calls print nothing unless given a log function."""


# --------------------------------------------------------------------------------------------- models
def load_or_untrained(weights: str | None, arch: str | None = None, device: str = "cpu", log: Log = _quiet) -> Any:
    """The model in `weights` (+ `arch` for a supernet), or a seeded untrained RAFT with a warning."""
    from flownas.loading import check_device, load_flow_model

    if weights:
        return load_flow_model(weights, arch=arch, device=device)
    if arch:
        raise UserInputError("--arch chooses a subnet of a supernet checkpoint: it needs --weights")
    check_device(device)
    log("warning: no --weights given: using an untrained RAFT (random weights)")
    from flownas.weights import untrained_model

    return untrained_model("raft").to(device)


# --------------------------------------------------------------------------------------------- inference
@dataclass
class InferenceRecord:
    pairs: list[dict[str, Any]] = field(default_factory=list)  # first, second, flow, picture per pair


def frame_pairs(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """Two images, or one folder of frames -> its consecutive pairs; one-line errors otherwise."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        frames = sorted(p for p in Path(paths[0]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(frames) < 2:
            raise UserInputError(f"{paths[0]}: need at least two image frames ({'/'.join(IMAGE_SUFFIXES)}), "
                                 f"found {len(frames)}")
        return list(zip(frames[:-1], frames[1:]))
    if len(paths) != 2:
        raise UserInputError(f"give two images or one folder of frames, got {len(paths)} path(s)")
    for path in paths:
        if not Path(path).is_file():
            raise UserInputError(f"{path}: image file not found")
    return [(Path(paths[0]), Path(paths[1]))]


def _outputs(pairs: list[tuple[Path, Path]], out: str, viz: str | None) -> list[tuple[Path, Path | None]]:
    """Where each pair's flow and picture go; checked before inference so nothing is half written."""
    many = len(pairs) > 1
    if many and Path(out).suffix.lower() in FLOW_SUFFIXES:
        raise UserInputError(f"--out {out}: a folder of frames gives one flow per pair; give a folder for --out")
    if many and viz and Path(viz).suffix.lower() in VIZ_SUFFIXES:
        raise UserInputError(f"--viz {viz}: a folder of frames gives one picture per pair; give a folder for --viz")
    if not many and Path(out).suffix.lower() not in FLOW_SUFFIXES:
        raise UserInputError(f"--out {out}: unsupported flow file type (expected {', '.join(FLOW_SUFFIXES)})")
    if not many and viz and Path(viz).suffix.lower() not in VIZ_SUFFIXES:
        raise UserInputError(f"--viz {viz}: unsupported picture type (expected {', '.join(VIZ_SUFFIXES)})")
    if not many:
        return [(Path(out), Path(viz) if viz else None)]
    return [(Path(out) / f"{first.stem}.flo", Path(viz) / f"{first.stem}.png" if viz else None) for first, _ in pairs]


def run_inference(images: Sequence[str], *, weights: str | None = None, arch: str | None = None,
                  out: str = "flow.flo", viz: str | None = None, iters: int = 12, device: str = "cpu",
                  max_side: int | None = None, corr: str = "all-pairs", log: Log = _quiet) -> InferenceRecord:
    """Flow for an image pair (or every consecutive pair of a folder), written as flow files and pictures."""
    from flownas.data.flow_io import read_image, write_flow
    from flownas.data.viz import save_flow_image
    from flownas.inference import estimate_flow

    if iters < 1:
        raise UserInputError(f"--iters {iters}: the number of update iterations must be at least 1")
    if max_side is not None and max_side < 128:
        raise UserInputError(f"--max-side {max_side}: must be at least 128 px (the correlation pyramid's minimum)")
    pairs = frame_pairs(images)
    targets = _outputs(pairs, out, viz)
    model = load_or_untrained(weights, arch, device, log)
    record = InferenceRecord()
    for (first, second), (flow_path, viz_path) in zip(pairs, targets):
        image1, image2 = read_image(first), read_image(second)
        if image1.shape != image2.shape:
            raise UserInputError(f"images differ in size (HxW): {first} is {image1.shape[0]}x{image1.shape[1]}, "
                                 f"{second} is {image2.shape[0]}x{image2.shape[1]}")
        flow = estimate_flow(model, image1, image2, iters=iters, device=device, max_side=max_side, corr=corr)
        write_flow(flow_path, flow)
        if viz_path is not None:
            save_flow_image(viz_path, flow)
        record.pairs.append({"first": str(first), "second": str(second), "flow": str(flow_path),
                             "picture": str(viz_path) if viz_path else None})
        log(f"{first.name} -> {second.name}: flow {flow_path}" + (f", picture {viz_path}" if viz_path else ""))
    return record


# --------------------------------------------------------------------------------------------- evaluation
def evaluation_paths(out: str | None, dataset: str) -> tuple[Path, Path]:
    """(per-pair CSV, JSON summary): `--out x.csv` puts the JSON beside it, `--out x.json` the CSV beside it."""
    path = Path(out or f"outputs/eval_{dataset}.csv")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise UserInputError(f"--out {path}: expected a .csv (per-pair metrics) or .json (summary) file name")
    return (path, path.with_suffix(".json")) if suffix == ".csv" else (path.with_suffix(".csv"), path)


def run_evaluation(dataset: str, *, root: str | None = None, split: str | None = None, weights: str | None = None,
                   arch: str | None = None, iters: int = 12, device: str = "cpu", max_samples: int | None = None,
                   out: str | None = None, supernet: str | None = None, calibrate_bn: int = 8,
                   log: Log = _quiet) -> dict[str, Any]:
    """Metrics of a model on a dataset: per-pair CSV + JSON summary with provenance; returns the summary record.

    With `supernet` (and `arch`), the subnet is evaluated with BN statistics re-estimated on `calibrate_bn` pairs
    of the dataset (`flownas.evaluate.evaluate_subnet`, the search's fitness).
    """
    import pandas as pd

    from flownas.data.datasets import build_dataset
    from flownas.evaluate import evaluate
    from flownas.provenance import provenance

    if iters < 1:
        raise UserInputError(f"--iters {iters}: the number of update iterations must be at least 1")
    if max_samples is not None and max_samples < 1:
        raise UserInputError(f"--max-samples {max_samples}: must be at least 1")
    csv_path, json_path = evaluation_paths(out, dataset)
    data = build_dataset(dataset, root, split=split)
    if supernet is not None:
        model, summary, rows = _evaluate_supernet(supernet, arch, weights, data, iters, device, max_samples, calibrate_bn)
    else:
        model = load_or_untrained(weights, arch, device, log)
        summary, rows = evaluate(model, data, iters=iters, device=device, max_samples=max_samples)
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False))
    from export.onnx_export import model_identity

    record = {"dataset": dataset, "root": root, "split": split, "iters": iters, "weights": weights or supernet,
              "arch": arch, "bn_calibration_pairs": calibrate_bn if supernet else None,
              "pairs": len(rows), "summary": summary, "per_pair_csv": str(csv_path), "model": model.config(),
              "provenance": provenance("evaluation", arch_id=model_identity(model), iters=iters,
                                       precision="fp32", backend=f"torch-{device}")}
    atomic_write_text(json_path, json.dumps(record, indent=2, default=str))
    record["summary_json"] = str(json_path)
    return record


def _evaluate_supernet(supernet: str, arch: str | None, weights: str | None, data: Any, iters: int, device: str,
                       max_samples: int | None, calibrate_bn: int) -> tuple[Any, dict[str, float], list[dict]]:
    from flownas.arch import resolve_arch
    from flownas.evaluate import evaluate_subnet
    from flownas.loading import check_device
    from flownas.models import FlowNASSupernet
    from flownas.weights import load_model

    if weights is not None:
        raise UserInputError("give either --weights (a model) or --supernet (with --arch), not both")
    if arch is None:
        raise UserInputError("--supernet needs --arch: the subnet to evaluate (name, id or JSON file)")
    check_device(device)
    model = load_model(supernet)
    if not isinstance(model, FlowNASSupernet):
        raise UserInputError(f"{supernet}: not a FlowNAS supernet checkpoint (holds {model.config()['family']})")
    choice = resolve_arch(arch, model.space)
    summary, rows = evaluate_subnet(model, choice, data, iters=iters, max_samples=max_samples,
                                    calibrate_bn=calibrate_bn, device=device, progress=True)
    return model.extract(choice), summary, rows


# --------------------------------------------------------------------------------------------- architectures
def describe_architecture(spec: str, space: Any = None, resolution: str = "384x512", iters: int = 12) -> dict[str, Any]:
    """Id, configuration, parameters and MACs of a named model, an architecture id or a JSON/YAML file."""
    import torch

    from flownas.arch import ArchConfig, SearchSpace
    from flownas.complexity import count_macs, count_parameters
    from flownas.fileio import parse_resolution
    from flownas.weights import build_model, named_config

    if Path(spec).suffix.lower() in (".json", ".yaml", ".yml") and not Path(spec).is_file():
        raise UserInputError(f"{spec}: architecture file not found")
    height, width = parse_resolution(resolution)
    config = named_config(spec, space)
    arch = ArchConfig.from_dict(config["arch"], SearchSpace.from_dict(config["space"])) if "arch" in config else None
    with torch.device("meta"):
        params = count_parameters(build_model(config))
    return {"name": spec, "id": arch.id if arch else spec, "arch": arch.to_dict() if arch else None,
            "resolution": [height, width], "iters": iters, "parameters": params,
            "macs": count_macs(config, height, width, iters)}


# --------------------------------------------------------------------------------------------- extraction
def run_extract(supernet: str, arch: str, out: str, *, calibrate_bn: int = 0, resolution: str = "256x320",
                log: Log = _quiet) -> dict[str, Any]:
    """Cut a static subnet out of a supernet checkpoint (optionally re-estimating BN statistics); its record."""
    from flownas.arch import resolve_arch
    from flownas.fileio import parse_resolution
    from flownas.models import FlowNASSupernet
    from flownas.weights import load_model, save_checkpoint

    if calibrate_bn < 0:
        raise UserInputError(f"--calibrate-bn {calibrate_bn}: must be 0 (off) or a positive number of pairs")
    height, width = parse_resolution(resolution)
    start = time.perf_counter()
    model = load_model(supernet)
    if not isinstance(model, FlowNASSupernet):
        raise UserInputError(f"{supernet}: not a FlowNAS supernet checkpoint (holds {model.config()['family']})")
    choice = resolve_arch(arch, model.space)
    t0 = time.perf_counter()
    subnet = model.extract(choice)
    extract_ms = (time.perf_counter() - t0) * 1e3
    if calibrate_bn:
        log(f"re-estimating BN statistics on {calibrate_bn} synthetic {height}x{width} pairs")
        _calibrate(subnet, calibrate_bn, height, width)
    save_checkpoint(out, subnet, {"arch_id": choice.id, "source": str(supernet), "bn_calibration_batches": calibrate_bn})
    return {"arch_id": choice.id, "out": str(out), "parameters": sum(p.numel() for p in subnet.parameters()),
            "extract_ms": extract_ms, "bn_calibration_batches": calibrate_bn,
            "total_s": time.perf_counter() - start}


def _calibrate(model: Any, batches: int, height: int, width: int) -> None:
    """BN statistics of the context encoder re-estimated on synthetic pairs."""
    from flownas.data.synthetic import SyntheticFlow
    from flownas.evaluate import recalibrate_bn

    data = SyntheticFlow(length=batches, size=(height, width), seed=7)
    recalibrate_bn(model, ((s[0][None], s[1][None]) for s in (data[i] for i in range(batches))))


# --------------------------------------------------------------------------------------------- demo
@dataclass
class DemoRecord:
    out: str
    flow_epe: float
    steps: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_demo(out: str | Path = "outputs/demo", *, height: int = 256, width: int = 320, iters: int = 12,
             seed: int = 0, weights: str | None = None, device: str = "cpu", runs: int = 3,
             log: Log = _quiet) -> DemoRecord:
    """The workflow end to end on CPU: flow on a synthetic pair with exact ground truth, then an (untrained)
    supernet -> the raft-k subnet with BN recalibration -> a verified ONNX export -> TensorRT lint -> a
    PyTorch-vs-ONNX-Runtime benchmark. Writes everything under `out`; returns what each step produced."""
    out = Path(out)
    record = DemoRecord(str(out), _demo_flow(out, height, width, iters, seed, weights, device, log))
    supernet = _demo_supernet(out / "supernet.pt", seed, log)
    log("\n== extract the raft-k subnet and re-estimate its BN statistics")
    record.steps["extract"] = run_extract(str(supernet), "raft-k", str(out / "raft-k.pt"), calibrate_bn=2,
                                          resolution=f"{height}x{width}", log=log)
    record.steps["export"] = _demo_export(out, height, width, iters, log)
    record.steps["lint"] = _demo_lint(out / "raft-k.onnx", log)
    record.steps["bench"] = _demo_bench(out, height, width, iters, runs, log)
    from flownas.provenance import provenance

    made = provenance("demo", arch_id="raft-k", resolution=(height, width), iters=iters, precision="fp32",
                      backend=f"torch-{device}")
    atomic_write_text(out / "demo.json", json.dumps({**record.to_dict(), "provenance": made}, indent=2, default=str))
    log(f"\ndemo done: everything is in {out}/")
    return record


def _demo_flow(out: Path, height: int, width: int, iters: int, seed: int, weights: str | None, device: str,
               log: Log) -> float:
    from flownas.data.flow_io import write_flow
    from flownas.data.synthetic import make_pair
    from flownas.data.viz import save_flow_image
    from flownas.inference import estimate_flow
    from flownas.metrics import flow_metrics

    log(f"== flow on a synthetic {height}x{width} pair with exact ground truth (seed {seed})")
    pair = make_pair(height, width, seed=seed)
    model = load_or_untrained(weights, None, device, log)
    flow = estimate_flow(model, pair["image1"], pair["image2"], iters=iters, device=device)
    write_flow(out / "flow.flo", flow)
    save_flow_image(out / "flow.png", flow)
    save_flow_image(out / "flow_gt.png", pair["flow"])
    epe = float(flow_metrics(flow, pair["flow"], pair["valid"])["epe"])
    log(f"EPE {epe:.3f} px; wrote {out / 'flow.flo'}, {out / 'flow.png'} and the ground truth {out / 'flow_gt.png'}")
    return epe


def _demo_supernet(path: Path, seed: int, log: Log) -> Path:
    """An untrained FlowNAS supernet checkpoint (no weights can be downloaded here)."""
    import torch

    from flownas.models import FlowNASSupernet
    from flownas.weights import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, FlowNASSupernet(), {"note": "untrained supernet made by `flownas demo`"})
    log(f"\n== an untrained FlowNAS supernet: {path}")
    return path


def _demo_export(out: Path, height: int, width: int, iters: int, log: Log) -> dict[str, Any]:
    from export.onnx_export import ExportSpec
    from export.workflow import export_verified_onnx
    from flownas.loading import load_flow_model

    log("\n== export it to ONNX and verify it against PyTorch")
    model = load_flow_model(out / "raft-k.pt")
    result = export_verified_onnx(model, out / "raft-k.onnx", ExportSpec(height, width, iters),
                                  source=str(out / "raft-k.pt"), log=log)
    return {"path": str(result.path), "file_size_bytes": result.record["file_size_bytes"],
            "max_epe_px": max(r.max_epe for r in result.reports.values())}


def _demo_lint(path: Path, log: Log) -> dict[str, Any]:
    from export.lint import lint_onnx

    log("\n== lint the ONNX file for TensorRT")
    report = lint_onnx(path)
    log(report.format_table())
    return {"ok": report.ok}


def _demo_bench(out: Path, height: int, width: int, iters: int, runs: int, log: Log) -> dict[str, Any]:
    from bench.protocol import TimingConfig
    from bench.session import BenchRequest, run_benchmark

    log("\n== benchmark PyTorch eager vs ONNX Runtime")
    request = BenchRequest(backends="torch-cpu,ort-cpu", onnx=str(out / "raft-k.onnx"), weights=str(out / "raft-k.pt"),
                           resolution=(height, width), iters=iters, timing=TimingConfig(runs=runs),
                           out=out / "bench")
    session = run_benchmark(request, log=log)
    log(session.paths["markdown"].read_text())
    return {name: round(r.stats.median_ms, 2) for name, r in session.results.items()}
