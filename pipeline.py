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
import re
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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
    video: str | None = None  # the side-by-side video (frame | colour flow), when asked for
    metrics: dict[str, float] | None = None  # EPE, px1, px3, px5, fl_all against --gt, when given


def frame_pairs(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """Two images, or one folder of frames -> its consecutive pairs; one-line errors otherwise."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        frames = sorted(p for p in Path(paths[0]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(frames) < 2:
            raise UserInputError(f"{paths[0]}: need at least two image frames ({'/'.join(IMAGE_SUFFIXES)}), "
                                 f"found {len(frames)}")
        return list(zip(frames[:-1], frames[1:]))
    if len(paths) != 2:
        raise UserInputError(f"give two images, one folder of frames or one video file, got {len(paths)} path(s)")
    for path in paths:
        if not Path(path).is_file():
            raise UserInputError(f"{path}: image file not found")
    return [(Path(paths[0]), Path(paths[1]))]


@dataclass
class _Frames:
    """What `infer` reads: image files (as pairs) or one video (streamed); checked before the model loads."""
    pairs: list[tuple[Path, Path]] | None = None
    video: Any = None  # flownas.data.video.VideoInfo

    @property
    def many(self) -> bool:
        return self.video is not None or len(self.pairs) > 1

    @property
    def fps(self) -> float:
        from flownas.data.video import DEFAULT_FPS

        return self.video.fps if self.video is not None else DEFAULT_FPS

    def __iter__(self) -> Iterator[tuple[str, str, str, Any, Any]]:
        """(stem for output names, first's name, second's name, image1, image2), uint8 RGB [H,W,3] each."""
        if self.video is not None:
            yield from _video_pairs(self.video.path)
            return
        from flownas.data.flow_io import read_image

        for first, second in self.pairs:
            image1, image2 = read_image(first), read_image(second)
            if image1.shape != image2.shape:
                raise UserInputError(f"images differ in size (HxW): {first} is {image1.shape[0]}x{image1.shape[1]}, "
                                     f"{second} is {image2.shape[0]}x{image2.shape[1]}")
            yield first.stem, first.name, second.name, image1, image2


def _video_pairs(path: str) -> Iterator[tuple[str, str, str, Any, Any]]:
    from flownas.data.video import iter_video_frames

    frames = iter_video_frames(path)
    previous = next(frames)
    for index, frame in enumerate(frames):
        yield f"{index:06d}", f"frame {index}", f"frame {index + 1}", previous, frame
        previous = frame


def _read_frames(images: Sequence[str]) -> _Frames:
    """One video file -> its frames (OpenCV), else `frame_pairs`."""
    from flownas.data.video import is_video, probe_video

    if len(images) == 1 and is_video(images[0]):
        return _Frames(video=probe_video(images[0]))
    return _Frames(pairs=frame_pairs(images))


def _check_outputs(out: str, viz: str | None, many: bool) -> None:
    """Output names fit the input (a folder for several pairs, a file for one); checked before inference so
    nothing is half written."""
    if many and Path(out).suffix.lower() in FLOW_SUFFIXES:
        raise UserInputError(f"--out {out}: a video or folder of frames gives one flow per pair; give a folder "
                             "for --out")
    if many and viz and Path(viz).suffix.lower() in VIZ_SUFFIXES:
        raise UserInputError(f"--viz {viz}: a video or folder of frames gives one picture per pair; give a folder "
                             "for --viz")
    if not many and Path(out).suffix.lower() not in FLOW_SUFFIXES:
        raise UserInputError(f"--out {out}: unsupported flow file type (expected {', '.join(FLOW_SUFFIXES)})")
    if not many and viz and Path(viz).suffix.lower() not in VIZ_SUFFIXES:
        raise UserInputError(f"--viz {viz}: unsupported picture type (expected {', '.join(VIZ_SUFFIXES)})")


def _targets(stem: str, out: str, viz: str | None, many: bool) -> tuple[Path, Path | None]:
    if not many:
        return Path(out), Path(viz) if viz else None
    return Path(out) / f"{stem}.flo", Path(viz) / f"{stem}.png" if viz else None


def _read_ground_truth(gt: str, frames: _Frames) -> tuple[Any, Any]:
    """(flow, valid) of `--gt`, for a single pair only: one flow file cannot score several pairs."""
    from flownas.data.flow_io import read_flow, read_image

    if frames.many:
        raise UserInputError(f"--gt {gt}: ground truth scores one image pair; give two images, not a folder "
                             "or a video")
    if not Path(gt).is_file():
        raise UserInputError(f"--gt {gt}: ground-truth flow file not found")
    flow, valid = read_flow(gt)
    first = frames.pairs[0][0]
    height, width = read_image(first).shape[:2]
    if flow.shape[:2] != (height, width):
        raise UserInputError(f"--gt {gt}: ground truth is {flow.shape[0]}x{flow.shape[1]}, {first} is "
                             f"{height}x{width} (HxW)")
    if not valid.any():
        raise UserInputError(f"--gt {gt}: no valid pixel in the ground truth, metrics are undefined")
    return flow, valid


def _check_inference_options(iters: int, max_side: int | None, scale: float | None, precision: str,
                             device: str) -> None:
    from flownas.inference import check_precision, scaled_by
    from flownas.loading import check_device

    if iters < 1:
        raise UserInputError(f"--iters {iters}: the number of update iterations must be at least 1")
    if max_side is not None and scale is not None:
        raise UserInputError("--max-side and --scale both resize the input: give one of them, not both")
    if max_side is not None and max_side < 128:
        raise UserInputError(f"--max-side {max_side}: must be at least 128 px (the correlation pyramid's minimum)")
    scaled_by(1, 1, scale)  # a bad factor is refused here, before the model loads
    check_device(device)
    check_precision(precision, device)


def run_inference(images: Sequence[str], *, weights: str | None = None, arch: str | None = None,
                  out: str = "flow.flo", viz: str | None = None, iters: int = 12, device: str = "cpu",
                  max_side: int | None = None, scale: float | None = None, corr: str = "all-pairs",
                  precision: str = "fp32", video: str | None = None, gt: str | None = None,
                  log: Log = _quiet) -> InferenceRecord:
    """Flow for an image pair, every consecutive pair of a folder of frames, or of a video file (OpenCV), written
    as flow files and pictures; optionally a side-by-side video (frame | colour flow) and, for one pair, the
    metrics against a ground-truth flow file.

    scale / max_side resize the frames for the model (flow returned at the input size); precision "fp16" / "bf16"
    runs under autocast (fp16 on CUDA only). Everything is checked before the model is loaded.
    """
    from flownas.data.flow_io import write_flow
    from flownas.data.video import check_video_target
    from flownas.data.viz import save_flow_image
    from flownas.inference import estimate_flow

    _check_inference_options(iters, max_side, scale, precision, device)
    frames = _read_frames(images)
    _check_outputs(out, viz, frames.many)
    ground_truth = _read_ground_truth(gt, frames) if gt else None
    if video:
        check_video_target(video)
    model = load_or_untrained(weights, arch, device, log)
    record = InferenceRecord(video=video)
    checked: set[tuple[int, ...]] = set()  # the memory estimate probes the encoders: once per frame size
    with _side_by_side(video, frames.fps) as add_to_video:
        for stem, first, second, image1, image2 in frames:
            flow = estimate_flow(model, image1, image2, iters=iters, device=device, max_side=max_side, scale=scale,
                                 corr=corr, precision=precision, check_memory=image1.shape not in checked)
            checked.add(image1.shape)
            flow_path, viz_path = _targets(stem, out, viz, frames.many)
            write_flow(flow_path, flow)
            if viz_path is not None:
                save_flow_image(viz_path, flow)
            add_to_video(image1, flow)
            record.pairs.append({"first": first, "second": second, "flow": str(flow_path),
                                 "picture": str(viz_path) if viz_path else None})
            log(f"{first} -> {second}: flow {flow_path}" + (f", picture {viz_path}" if viz_path else ""))
    if video:
        log(f"side-by-side video ({len(record.pairs)} frames): {video}")
    if ground_truth is not None:
        record.metrics = _score_against(flow, *ground_truth)
        log(_format_metrics(record.metrics, gt))
    return record


@contextmanager
def _side_by_side(video: str | None, fps: float) -> Iterator[Callable[[Any, Any], None]]:
    """A function adding (frame, flow) to the side-by-side video `video` (frame | colour flow, each flow on its
    own scale), written atomically when the block ends; a no-op without `video`."""
    if not video:
        yield lambda image, flow: None
        return
    import numpy as np

    from flownas.data.video import video_writer
    from flownas.data.viz import flow_to_color

    state: dict[str, Any] = {}
    with ExitStack() as stack:
        def add(image: Any, flow: Any) -> None:
            if "writer" not in state:  # the size is known at the first frame
                height, width = image.shape[:2]
                state["writer"] = stack.enter_context(video_writer(video, fps, height, 2 * width))
            state["writer"].write(np.concatenate([image, flow_to_color(flow)], axis=1))

        yield add


def _score_against(flow: Any, gt_flow: Any, valid: Any) -> dict[str, float]:
    from flownas.metrics import flow_metrics

    return {**flow_metrics(flow, gt_flow, valid, layout="hwc"), "n_valid": int(valid.sum())}


def _format_metrics(metrics: dict[str, float], gt: str) -> str:
    return (f"against {gt} ({metrics['n_valid']} valid px): EPE {metrics['epe']:.3f} px, "
            f"1px {100 * metrics['px1']:.1f}%, 3px {100 * metrics['px3']:.1f}%, 5px {100 * metrics['px5']:.1f}%")


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
                   write_outputs: str | None = None, log: Log = _quiet) -> dict[str, Any]:
    """Metrics of a model on a dataset: per-pair CSV + JSON summary with provenance; returns the summary record.

    With `supernet` (and `arch`), the subnet is evaluated with BN statistics re-estimated on `calibrate_bn` pairs
    of the dataset (`flownas.evaluate.evaluate_subnet`, the search's fitness).
    With `write_outputs` (a folder), each pair also gets a picture of prediction | ground truth on one shared
    scale and an EPE error map (`EvaluationPictures`), with the colour-wheel legend once as legend.png.
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
    pictures = EvaluationPictures(write_outputs) if write_outputs else None
    data = build_dataset(dataset, root, split=split)
    if supernet is not None:
        model, summary, rows = _evaluate_supernet(supernet, arch, weights, data, iters, device, max_samples, calibrate_bn,
                                                  pictures)
    else:
        model = load_or_untrained(weights, arch, device, log)
        summary, rows = evaluate(model, data, iters=iters, device=device, max_samples=max_samples, on_sample=pictures)
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False))
    from export.onnx_export import model_identity

    record = {"dataset": dataset, "root": root, "split": split, "iters": iters, "weights": weights or supernet,
              "arch": arch, "bn_calibration_pairs": calibrate_bn if supernet else None,
              "pairs": len(rows), "summary": summary, "per_pair_csv": str(csv_path), "model": model.config(),
              "outputs": pictures.record() if pictures else None,
              "provenance": provenance("evaluation", arch_id=model_identity(model), iters=iters,
                                       precision="fp32", backend=f"torch-{device}")}
    atomic_write_text(json_path, json.dumps(record, indent=2, default=str))
    record["summary_json"] = str(json_path)
    return record


def _evaluate_supernet(supernet: str, arch: str | None, weights: str | None, data: Any, iters: int, device: str,
                       max_samples: int | None, calibrate_bn: int,
                       pictures: "EvaluationPictures | None" = None) -> tuple[Any, dict[str, float], list[dict]]:
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
                                    calibrate_bn=calibrate_bn, device=device, progress=True, on_sample=pictures)
    return model.extract(choice), summary, rows


class EvaluationPictures:
    """`evaluate --write-outputs DIR`: called once per scored pair (`flownas.evaluate.evaluate`'s on_sample).

    Per pair, `<id>_flow.png` (prediction | ground truth, both on the ground truth's largest valid magnitude, so
    equal colours are equal flow; pixels without ground truth black on its side) and `<id>_epe_0-<M>px.png`
    (end-point error clipped to M px, blue 0 to red M, black where the truth is invalid); `legend.png`, the colour
    wheel, once. The scale of each flow picture is in the record (`record()`, in the evaluation JSON).
    """

    LEGEND_SIZE = 151

    def __init__(self, folder: str | Path, max_epe: float = 5.0) -> None:
        if Path(folder).suffix.lower() in VIZ_SUFFIXES:
            raise UserInputError(f"--write-outputs {folder}: a folder is expected (one picture per pair goes in it)")
        if Path(folder).exists() and not Path(folder).is_dir():
            raise UserInputError(f"--write-outputs {folder}: exists and is not a folder")
        self.folder, self.max_epe = Path(folder), float(max_epe)
        self.scales: dict[str, float] = {}

    def _name(self, sample_id: str) -> str:
        # dataset ids are relative paths (alley_1/frame_0001): one flat, filesystem-safe name per pair
        return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("._") or "pair"

    @property
    def epe_suffix(self) -> str:
        return f"_epe_0-{self.max_epe:g}px.png"

    def __call__(self, sample_id: str, image1: Any, flow: Any, flow_gt: Any, valid: Any) -> None:
        from flownas.data.viz import colour_wheel_legend, epe_error_map, flow_comparison, save_rgb_png

        pred = flow.permute(1, 2, 0).numpy()
        gt = flow_gt.permute(1, 2, 0).numpy()
        mask = valid.numpy().astype(bool)
        if not self.scales:
            save_rgb_png(self.folder / "legend.png", colour_wheel_legend(self.LEGEND_SIZE))
        name = self._name(sample_id)
        if name in self.scales:  # two ids that flatten to one name keep both pictures
            name = f"{name}_{len(self.scales)}"
        picture, scale = flow_comparison(pred, gt, mask)
        save_rgb_png(self.folder / f"{name}_flow.png", picture)
        save_rgb_png(self.folder / f"{name}{self.epe_suffix}", epe_error_map(pred, gt, mask, self.max_epe))
        self.scales[name] = scale

    def record(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "legend": str(self.folder / "legend.png"), "max_epe_px": self.max_epe,
                "flow_scale_px": dict(self.scales)}


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
