"""Calibration data and the graph rewrites of a precision plan: INT8 Q/DQ (ONNX Runtime), FP16 casts.

* Calibration pairs come from any dataset of `flownas.data.datasets` (synthetic by default, a real folder when
  given), resized to the export resolution. The choice is a seeded draw without replacement, so the same
  arguments always calibrate on the same pairs, in the same order, and give the same scales.
* INT8 uses `onnxruntime.quantization` (`quant_pre_process`, then `quantize_static` in QDQ format) with the
  symmetric settings TensorRT's explicit quantization needs (FACTS §8): signed INT8 activations and weights,
  zero points 0, per-channel weights. Only Convs of the plan's INT8 groups are quantized; every other node is
  passed in `nodes_to_exclude`, so correlation, coordinates, gathers and softmax never see a Q/DQ pair.
  NVIDIA ModelOpt (`modelopt.onnx.quantization`) writes the same kind of graph but is not installable here;
  `modelopt_available()` says whether it could be used (it is imported lazily and not required).
* FP16 groups go through `export.precision.to_fp16_strongly_typed` restricted to their Convs: explicit
  Cast nodes around each, graph inputs and outputs FP32.
* BF16 is refused: ONNX gives Conv a bfloat16 type only from opset 22, TensorRT needs opset <= 19 for
  GridSample (FACTS §5), and ONNX Runtime's CPU provider has no bfloat16 Conv kernel (checked with 1.32).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import onnx

from flownas.errors import ToolkitError

from .precision_plan import GROUPS, PrecisionPlan, PrecisionPlanError, always_fp32_nodes, node_precisions
from .verify import Pair, flow_feeds

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# How INT8 is written, by the runtime that runs it (FACTS §8; measured on RAFT 384x512, 12 iterations, 2 threads):
# - "tensorrt": signed symmetric activations (zero point 0), Q/DQ on conv inputs only, so no DequantizeLinear
#   ever feeds the correlation MatMul or the Softmax. TensorRT's explicit quantization needs exactly this; ONNX
#   Runtime CPU runs it, but cannot fuse a conv without a quantized output, so it is no faster there.
# - "ort-cpu": unsigned asymmetric activations (x86's u8s8 kernels) and quantized conv outputs, so ONNX Runtime
#   fuses DQ -> Conv -> Q into QLinearConv (1.8x on this CPU). FP32 readers still get the FP32 tensor
#   (`bypass_qdq_for_fp32_readers`). TensorRT has no UINT8 Q/DQ: `export trt` refuses these graphs.
INT8_FORMATS = ("tensorrt", "ort-cpu")
# 7-bit weights (onnxruntime's `reduce_range`). On x86 without VNNI, ONNX Runtime's u8s8 convolutions multiply
# pairs with vpmaddubsw, whose int16 sums saturate for 8-bit weights: on an AVX2 EPYC an untrained RAFT's INT8
# flow moved 1.14-1.19 px from FP32 with 8-bit weights and 0.33-0.45 px with 7-bit ones, raft-k's 0.086-0.087 and
# 0.050-0.061 px (384x512, 12 iterations, 2 synthetic pairs); fused and unfused runs of the same 8-bit RAFT graph
# differed by 1.07 px, of the 7-bit graph by 0.12 px. "auto" turns it on for the ort-cpu format when the exporting
# CPU lacks integer dot products.
REDUCE_RANGE = ("auto", "on", "off")
DEFAULT_CALIBRATION_PAIRS = 8
CALIBRATION_SEED = 0
QUANTIZED_OPS = ("Conv",)  # TensorRT fuses Q/DQ around convolutions; elementwise ops stay FP32
PLAN_KEY = "flownas.precision_plan"
INT8_FORMAT_KEY = "int8_format"


class CalibrationError(ToolkitError, ValueError):
    """The calibration set cannot be built as asked (dataset, root, count, method); one line."""


@dataclass(frozen=True)
class CalibrationSet:
    """Which pairs calibrate: `dataset` (a `flownas.data.datasets` name) at `root`, `pairs` of them drawn with
    `seed`, resized to the export resolution. `method`: minmax | percentile | entropy."""

    dataset: str = "synthetic"
    root: str | None = None
    split: str | None = None
    pairs: int = DEFAULT_CALIBRATION_PAIRS
    seed: int = CALIBRATION_SEED
    method: str = "minmax"
    int8_format: str = "tensorrt"  # INT8_FORMATS: how the Q/DQ graph is written, for which runtime
    reduce_range: str = "auto"     # REDUCE_RANGE: 7-bit weights, for CPUs without VNNI

    def validate(self) -> None:
        if self.int8_format not in INT8_FORMATS:
            raise CalibrationError(f"--int8-format {self.int8_format!r} is not one of {', '.join(INT8_FORMATS)}")
        if self.reduce_range not in REDUCE_RANGE:
            raise CalibrationError(f"--reduce-range {self.reduce_range!r} is not one of {', '.join(REDUCE_RANGE)}")
        if self.pairs < 1:
            raise CalibrationError(f"--calibration-pairs must be at least 1, got {self.pairs}")
        if self.method not in CALIBRATION_METHODS:
            raise CalibrationError(f"calibration method {self.method!r} is not one of {', '.join(CALIBRATION_METHODS)}")

    def weights_7bit(self) -> bool:
        """Whether INT8 weights are written with 7 bits: "on", or "auto" for the ort-cpu format on a CPU without
        integer dot-product instructions (where 8-bit weights saturate ONNX Runtime's u8s8 kernels)."""
        if self.reduce_range == "auto":
            from flownas.provenance import has_int8_dot_product

            return self.int8_format == "ort-cpu" and not has_int8_dot_product()
        return self.reduce_range == "on"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights_7bit": self.weights_7bit()}


def parse_calibration(value: str | None, pairs: int = DEFAULT_CALIBRATION_PAIRS, method: str = "minmax",
                      seed: int = CALIBRATION_SEED, int8_format: str = "tensorrt",
                      reduce_range: str = "auto") -> CalibrationSet:
    """`--calibration DATASET[:ROOT]` (default synthetic), e.g. `synthetic`, `middlebury:data/middlebury`."""
    dataset, _, root = (value or "synthetic").partition(":")
    calibration = CalibrationSet(dataset, root or None, None, int(pairs), int(seed), method, int8_format,
                                 reduce_range)
    calibration.validate()
    return calibration


def calibration_pairs(calibration: CalibrationSet, height: int, width: int) -> list[Pair]:
    """The calibration pairs (name, image1, image2 uint8 [H,W,3]) at HxW: a seeded draw, sorted by index."""
    from flownas.data.datasets import build_dataset

    calibration.validate()
    if calibration.dataset == "synthetic" and calibration.root is None:
        dataset: Any = _synthetic_at(height, width, calibration.split)
    else:
        dataset = build_dataset(calibration.dataset, calibration.root, calibration.split)
    if len(dataset) < calibration.pairs:
        raise CalibrationError(f"calibration dataset {calibration.dataset!r} has {len(dataset)} pairs, "
                               f"{calibration.pairs} asked")
    rng = np.random.default_rng(calibration.seed)
    indices = sorted(int(i) for i in rng.choice(len(dataset), size=calibration.pairs, replace=False))
    return [(_sample_id(dataset, i), *_pair_at(dataset, i, height, width)) for i in indices]


def _synthetic_at(height: int, width: int, split: str | None) -> Any:
    """The synthetic training pairs generated at the export size (no resize): exact flow, no download."""
    from flownas.data.synthetic import SyntheticFlow

    if split not in (None, "train", "val"):
        raise CalibrationError(f"synthetic split {split!r} is not one of ('train', 'val')")
    # The `train` seeds (0) are disjoint from the verification pairs' (1000+), so validation is held out.
    return SyntheticFlow(length=10_000 if split in (None, "train") else 32, size=(height, width),
                         seed=0 if split in (None, "train") else 1)


def _sample_id(dataset: Any, index: int) -> str:
    return dataset.sample_id(index) if hasattr(dataset, "sample_id") else f"{type(dataset).__name__}/{index}"


def _pair_at(dataset: Any, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(dataset, "load_numpy"):  # files on disk: no augmentation, uint8 as stored
        image1, image2 = dataset.load_numpy(index)[:2]
    else:
        image1, image2 = (t.permute(1, 2, 0).numpy().round().clip(0, 255).astype(np.uint8) for t in dataset[index][:2])
    if image1.shape[:2] != (height, width):
        image1, image2 = (cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in (image1, image2))
    return np.ascontiguousarray(image1), np.ascontiguousarray(image2)


def calibration_reader(feeds: Sequence[Mapping[str, np.ndarray]]) -> Any:
    """An `onnxruntime.quantization.CalibrationDataReader` feeding each input dict once, in order
    (`flow_feeds(image1, image2)` for flow graphs)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._feeds, None)
            return None if feed is None else dict(feed)

    return _Feeds()


def modelopt_available() -> bool:
    """Whether NVIDIA ModelOpt's ONNX quantizer could be imported (not installable on this machine)."""
    return importlib.util.find_spec("modelopt") is not None


# --------------------------------------------------------------------------------------------- rewrites
def apply_plan(model: onnx.ModelProto, plan: PrecisionPlan, pairs: Sequence[Pair] | None = None,
               method: str = "minmax", int8_format: str = "tensorrt", weights_7bit: bool = False) -> onnx.ModelProto:
    """The FP32 flow graph rewritten by `plan`: INT8 groups with Q/DQ (calibrated on `pairs`), FP16 groups cast.

    Returns a new model; `model` is not changed. INT8 needs calibration `pairs`.
    """
    check_plan_writable(plan)
    if "int8" in plan.precisions() and not pairs:
        raise CalibrationError(f"plan {plan.name}: INT8 groups need calibration pairs, none given")
    feeds = [flow_feeds(a, b) for _, a, b in pairs or ()]
    return lower_nodes(model, node_precisions(model, plan), feeds, method, plan.to_dict()["groups"], int8_format,
                       weights_7bit)


def lower_nodes(model: onnx.ModelProto, precisions: Mapping[str, str], feeds: Sequence[Mapping[str, np.ndarray]],
                method: str = "minmax", plan_groups: Mapping[str, str] | None = None,
                int8_format: str = "tensorrt", weights_7bit: bool = False) -> onnx.ModelProto:
    """`model` with the nodes `precisions` names as "int8" quantized (Q/DQ, calibrated on `feeds`, one dict of
    graph inputs each) and those named "fp16" cast; every other node stays FP32. The graph's metadata records
    `plan_groups`. Any FP32 graph works (whole flow models, latency-table key graphs); returns a new model."""
    wanted = set(precisions.values())
    if "bf16" in wanted:
        raise PrecisionPlanError("bf16 nodes cannot be written: use fp16 (see export.quantize)")
    result = model
    if "int8" in wanted:
        if not feeds:
            raise CalibrationError("INT8 nodes need calibration inputs, none given")
        result = quantize_int8(result, precisions, feeds, method, int8_format, weights_7bit)
    if "fp16" in wanted:
        result = convert_fp16(result, precisions)
    out = onnx.ModelProto()
    out.CopyFrom(result)
    _set_props(out, {PLAN_KEY: dict(plan_groups or {}), **({INT8_FORMAT_KEY: int8_format} if "int8" in wanted else {})})
    return out


def check_plan_writable(plan: PrecisionPlan) -> None:
    """Refuse, before any export work, plans this toolkit cannot write (BF16 groups; see the module notes)."""
    if "bf16" in plan.precisions():
        raise PrecisionPlanError(
            f"plan {plan.name}: bf16 groups {sorted(plan.groups_in('bf16'))} cannot be written: ONNX Conv takes "
            "bfloat16 only from opset 22, TensorRT needs opset <= 19, and ONNX Runtime CPU has no bf16 Conv; use fp16")


def quantize_int8(model: onnx.ModelProto, precisions: Mapping[str, str], feeds: Sequence[Mapping[str, np.ndarray]],
                  method: str = "minmax", int8_format: str = "tensorrt", weights_7bit: bool = False) -> onnx.ModelProto:
    """INT8 Q/DQ on the Convs `precisions` marks "int8" (ONNX Runtime static quantization), written for
    `int8_format`'s runtime (INT8_FORMATS); `weights_7bit`: weights in [-64, 64] (see REDUCE_RANGE)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if int8_format not in INT8_FORMATS:
        raise CalibrationError(f"int8 format {int8_format!r} is not one of {', '.join(INT8_FORMATS)}")
    for_ort = int8_format == "ort-cpu"
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    names = {node.name for node in model.graph.node if node.name}
    exclude = sorted(name for name in names if precisions.get(name, "fp32") != "int8")
    with tempfile.TemporaryDirectory(prefix="flownas-quant-") as tmp:
        src, pre, out = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        # Shape inference only: the optimiser would fuse and rename nodes, and the plan places nodes by name.
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_onnx_shape=False, skip_symbolic_shape=False)
        options = {
            "ActivationSymmetric": not for_ort, "WeightSymmetric": True, "CalibMovingAverage": False,
            "CalibTensorRangeSymmetric": not for_ort,
            # One Q/DQ pair per consumer, so `bypass_qdq_for_fp32_readers` can give FP32 readers the original.
            "DedicatedQDQPair": True,
        }
        if not for_ort:
            # No Q/DQ on conv outputs: a DequantizeLinear feeding the correlation MatMul or the Softmax would
            # let TensorRT run them in INT8. The pairs sit on the conv inputs.
            options["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
        with contextlib.redirect_stdout(io.StringIO()):  # ONNX Runtime prints histogram progress; we stay quiet
            quantize_static(str(pre), str(out), calibration_reader(feeds), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, reduce_range=weights_7bit,
                            activation_type=QuantType.QUInt8 if for_ort else QuantType.QInt8,
                            weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=calibrate, extra_options=options)
        quantized = onnx.load(str(out))
    return bypass_qdq_for_fp32_readers(quantized, {n for n, p in precisions.items() if p == "int8"})


def bypass_qdq_for_fp32_readers(model: onnx.ModelProto, int8_nodes: set[str]) -> onnx.ModelProto:
    """Rewire every node outside `int8_nodes` that reads a DequantizeLinear output to the FP32 tensor before
    the QuantizeLinear, then drop the Q/DQ nodes nobody reads.

    ONNX Runtime puts the Q/DQ pair on a tensor for its quantized consumer, and its other readers (a Concat of
    the two images, say) would otherwise read the INT8-rounded copy -- and TensorRT would be free to run them
    in INT8. Afterwards only INT8-group Convs read dequantized activations.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    original: dict[str, str] = {}
    for node in model.graph.node:
        source = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear":
            original[node.output[0]] = source.input[0]
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name in int8_nodes:
            continue
        for i, name in enumerate(node.input):
            if name in original:
                node.input[i] = original[name]
    _drop_dead(model, ("QuantizeLinear", "DequantizeLinear"))
    return model


def _drop_dead(model: onnx.ModelProto, op_types: tuple[str, ...]) -> None:
    """Remove nodes of `op_types` whose outputs nobody reads, repeatedly (a dead DQ leaves its Q dead)."""
    graph = model.graph
    while True:
        read = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
        dead = [node for node in graph.node if node.op_type in op_types and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
    keep = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def convert_fp16(model: onnx.ModelProto, precisions: Mapping[str, str]) -> onnx.ModelProto:
    """The Convs (and their following activation) `precisions` marks "fp16", in FP16 with explicit casts."""
    from .precision import to_fp16_strongly_typed

    lowered = {name for name, precision in precisions.items() if precision == "fp16"}
    # Convs fed by a DequantizeLinear are INT8; keep_fp32 also keeps every Conv outside the FP16 groups.
    return to_fp16_strongly_typed(model, keep_fp32=lambda node: node.name not in lowered)


def _set_props(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    import json

    merged = {prop.key: prop.value for prop in model.metadata_props}
    merged.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, merged)


# --------------------------------------------------------------------------------------------- inspection
def precision_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """What a rewritten graph computes in: INT8 / FP16 / FP32 Convs per group, Q/DQ and Cast counts, and the
    always-FP32 nodes found reading INT8 or FP16 data (must be empty: `always_fp32_lowered`)."""
    from .precision import _elem_types
    from .precision_plan import node_group

    types = _elem_types(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    per_group: dict[str, dict[str, int]] = {g: {"int8": 0, "fp16": 0, "fp32": 0} for g in (*GROUPS, "other")}
    fixed = always_fp32_nodes(model)
    lowered_fixed = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue
        kind = _node_kind(node, producer, types)
        if node.op_type == "Conv":
            per_group[node_group(node.name) or "other"][kind] += 1
        if kind != "fp32" and node.name in fixed:
            lowered_fixed.append(node.name)
    ops = [node.op_type for node in model.graph.node]
    return {"convs": {g: c for g, c in per_group.items() if sum(c.values())},
            "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "casts": ops.count("Cast"), "always_fp32_lowered": sorted(lowered_fixed)}


def _node_kind(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], types: dict[str, int]) -> str:
    """int8 when a data input comes from a DequantizeLinear, fp16 when one is an FP16 tensor, else fp32."""
    data = [name for name in node.input if name and name in producer]
    if any(producer[name].op_type == "DequantizeLinear" for name in data):
        return "int8"
    if any(types.get(name) == onnx.TensorProto.FLOAT16 for name in node.input if name):
        return "fp16"
    return "fp32"


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Check the graph fully (shape and type inference included) and write it atomically."""
    from flownas.fileio import atomic_path

    onnx.checker.check_model(model, full_check=True)
    with atomic_path(Path(path)) as tmp:
        onnx.save(model, str(tmp))
