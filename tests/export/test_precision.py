"""Mixed-precision ONNX rewrite for strongly typed TensorRT networks (export/precision.py), on CPU."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper
from torch import nn

from export.precision import (
    KEPT_FP32_KEY, PRECISION_KEY, PRECISION_VALUE, coordinate_convs, fp16_summary, to_fp16_strongly_typed,
)

ort = pytest.importorskip("onnxruntime")


class TinyFlowLike(nn.Module):
    """conv -> relu -> conv features, a conv that moves sampling coordinates, GridSample and a correlation MatMul."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.flow = nn.Conv2d(8, 2, 3, padding=1)   # its output is added to the grid: a coordinate conv

    def forward(self, image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.conv2(torch.relu(self.conv1(image)))
        coords = grid + 0.1 * self.flow(feat).permute(0, 2, 3, 1)
        sampled = F.grid_sample(feat, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        flat = feat.flatten(2)
        corr = torch.matmul(flat.transpose(1, 2), flat) / math.sqrt(flat.shape[1])
        return sampled, corr


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The tiny model exported at opset 17 and its example inputs."""
    torch.manual_seed(0)
    model = TinyFlowLike().eval()
    image = torch.randn(1, 3, 16, 16)
    grid = torch.rand(1, 16, 16, 2) * 2 - 1
    path = tmp_path_factory.mktemp("precision") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings are expected
        torch.onnx.export(model, (image, grid), str(path), dynamo=False, opset_version=17,
                          input_names=["image", "grid"], output_names=["sampled", "corr"])
    return path, {"image": image.numpy(), "grid": grid.numpy()}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {init.name: init.data_type for init in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)})
    return types


def _nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == op]


def test_rewrite_passes_full_check_and_records_metadata(exported) -> None:
    path, _ = exported
    half = to_fp16_strongly_typed(onnx.load(str(path)))
    onnx.checker.check_model(half, full_check=True)
    onnx.shape_inference.infer_shapes(half, strict_mode=True)
    meta = {prop.key: prop.value for prop in half.metadata_props}
    assert meta[PRECISION_KEY] == PRECISION_VALUE
    assert list(json.loads(meta[KEPT_FP32_KEY]).values()) == ["feeds sampling coordinates"]


def test_conv_weights_become_fp16_except_the_coordinate_conv(exported) -> None:
    path, _ = exported
    fp32 = onnx.load(str(path))
    half = to_fp16_strongly_typed(fp32)
    inits = {init.name: init for init in half.graph.initializer}
    convs = _nodes(half, "Conv")
    coordinate = [c for c in convs if c.output[0] in coordinate_convs(fp32)]
    assert len(convs) == 3 and len(coordinate) == 1
    for conv in convs:
        expected = TensorProto.FLOAT if conv in coordinate else TensorProto.FLOAT16
        assert [inits[name].data_type for name in conv.input[1:]] == [expected, expected]


def test_gridsample_matmul_and_io_stay_fp32(exported) -> None:
    path, _ = exported
    half = to_fp16_strongly_typed(onnx.load(str(path)))
    types = _types(half)
    for op in ("GridSample", "MatMul", "Div", "Add"):
        for node in _nodes(half, op):
            assert {types[name] for name in (*node.input, *node.output) if name} == {TensorProto.FLOAT}, op
    assert {v.type.tensor_type.elem_type for v in (*half.graph.input, *half.graph.output)} == {TensorProto.FLOAT}


def test_relu_runs_fp16_between_convs_with_one_cast_per_source(exported) -> None:
    path, _ = exported
    half = to_fp16_strongly_typed(onnx.load(str(path)))
    types = _types(half)
    (relu,) = _nodes(half, "Relu")
    assert types[relu.input[0]] == types[relu.output[0]] == TensorProto.FLOAT16
    cast_sources = [node.input[0] for node in _nodes(half, "Cast") if node.attribute[0].i == TensorProto.FLOAT16]
    assert len(cast_sources) == len(set(cast_sources)) == 1   # only the image; conv2 reads relu's fp16 twin


def test_summary_counts_fp16_and_fp32_compute(exported) -> None:
    path, _ = exported
    fp32 = onnx.load(str(path))
    before, after = fp16_summary(fp32), fp16_summary(to_fp16_strongly_typed(fp32))
    assert before["precision"] == "fp32" and before["fp16_nodes"] == 0 and before["casts"] == 0
    assert after["precision"] == PRECISION_VALUE
    assert after["fp16_ops"] == {"Conv": 2, "Relu": 1}
    assert after["fp32_ops"]["Conv"] == 1 and after["fp32_ops"]["GridSample"] == 1 and after["fp32_ops"]["MatMul"] == 1
    assert after["fp16_nodes"] + after["fp32_nodes"] == before["fp32_nodes"]


def test_fp16_graph_matches_fp32_within_fp16_tolerance(exported) -> None:
    path, feeds = exported
    fp32 = onnx.load(str(path))
    for got, want in zip(_run(to_fp16_strongly_typed(fp32), feeds), _run(fp32, feeds)):
        assert got.dtype == np.float32
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-2
        assert not np.array_equal(got, want)  # fp16 really ran somewhere


def test_keep_everything_fp32_is_a_no_op_numerically(exported) -> None:
    path, feeds = exported
    fp32 = onnx.load(str(path))
    same = to_fp16_strongly_typed(fp32, keep_fp32=lambda node: True)
    assert fp16_summary(same)["fp16_nodes"] == 0 and not _nodes(same, "Cast")
    for got, want in zip(_run(same, feeds), _run(fp32, feeds)):
        np.testing.assert_array_equal(got, want)


def test_custom_policy_replaces_the_default(exported) -> None:
    path, _ = exported
    half = to_fp16_strongly_typed(onnx.load(str(path)), keep_fp32=lambda node: False)
    assert fp16_summary(half)["fp16_ops"]["Conv"] == 3


def test_rewriting_twice_is_refused(exported) -> None:
    path, _ = exported
    half = to_fp16_strongly_typed(onnx.load(str(path)))
    with pytest.raises(ValueError, match="already rewritten"):
        to_fp16_strongly_typed(half)


def test_conv_weights_that_overflow_fp16_stay_fp32(exported) -> None:
    path, feeds = exported
    fp32 = onnx.load(str(path))
    for i, init in enumerate(fp32.graph.initializer):
        if init.name == "conv1.weight":
            big = numpy_helper.to_array(init) * 1e6
            fp32.graph.initializer[i].CopyFrom(numpy_helper.from_array(big, init.name))
    half = to_fp16_strongly_typed(fp32)
    kept = fp16_summary(half)["kept_fp32_convs"]
    assert any("conv1.weight overflows float16" in reason for reason in kept.values())
    onnx.checker.check_model(half, full_check=True)
    assert all(np.isfinite(out).all() for out in _run(half, feeds))
