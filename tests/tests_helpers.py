"""Small graphs shared by the export and bench tests (built here, so every test states what it runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flownas.arch import SearchSpace
from flownas.genes import STAGE, Gene

# Latency-table tests: two architectures (stage 1 runs one or two blocks), 14 keys, every path of a table build.
MICRO = SearchSpace(genes=(Gene("width", "w", STAGE, ((16,), (16,), (24,))),
                           Gene("kernel_size", "k", STAGE, ((3,), (3,), (3,))),
                           Gene("depth", "d", STAGE, ((1,), (1, 2), (1,))),
                           Gene("expand_ratio", "e", STAGE, ((1,), (2,), (2,)))),
                    strides=(1, 2, 2), stem_channels=16, head_channels=64)
WEIGHT = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)


def one_conv_onnx(path: Path, batch: int | str = 1, size: int = 8) -> Path:
    """A graph with one 3x3 Conv (padding 1, no bias): input `x` [B,3,S,S] -> output `y` [B,4,S,S]."""
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "one-conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, size, size])],
        [numpy_helper.from_array(WEIGHT, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def conv_by_hand(x: np.ndarray) -> np.ndarray:
    """3x3 cross-correlation with zero padding 1, written out as a sum over the nine taps."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], WEIGHT.shape[0], height, width))
    for dy in range(3):
        for dx in range(3):
            window = padded[:, :, dy:dy + height, dx:dx + width]
            out += np.einsum("bchw,oc->bohw", window, WEIGHT[:, :, dy, dx].astype(np.float64))
    return out
