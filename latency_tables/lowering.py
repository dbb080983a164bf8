"""Key graphs at reduced precision: the same rewrite a whole network gets from its precision plan, per unit.

A table built with `--precision int8` (or fp16, or a plan file) times each key graph as the exported network
would run it: the key's FP32 graph is rewritten by `export.quantize.lower_nodes` with

- encoder keys (stem, block, head): every Conv in the precision of the key's group (`keys.KIND_GROUPS`);
- decoder keys (prologue, step): the nodes placed by name exactly as in a whole flow graph
  (`export.precision_plan.node_precisions`), so correlation, coordinates, gathers, softmax and the flow-head
  output conv stay FP32 there too.

INT8 needs calibration inputs: seeded random inputs of the key's own shapes (images in [0, 255], activations
N(0, 1)), written in the INT8 format of the table's backend (`int8_format_for`: ort-cpu's u8 activations for ONNX
Runtime CPU, TensorRT's signed symmetric Q/DQ otherwise). Ranges from random data differ from a trained network's, but the graph, and so its speed, is the same:
a latency table measures speed, never accuracy. The empty (overhead) graphs stay FP32: their inputs and outputs
are FP32 in every plan.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from export.precision_plan import PrecisionPlan, node_precisions
from export.quantize import lower_nodes, save_model

from .keys import KIND_GROUPS, Key

CALIBRATION_SAMPLES = 4


def key_node_precisions(model: onnx.ModelProto, key: Key, plan_groups: Mapping[str, str]) -> dict[str, str]:
    """Node name -> precision for one key graph under a plan (group -> precision)."""
    if key.kind in ("prologue", "step"):
        return node_precisions(model, PrecisionPlan(dict(plan_groups)))
    precision = dict(plan_groups).get(KIND_GROUPS[key.kind][0], "fp32")
    return {node.name: precision if node.op_type == "Conv" else "fp32" for node in model.graph.node if node.name}


def calibration_feeds(key: Key, samples: int = CALIBRATION_SAMPLES, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs of the key's graph, as `graphs.example_inputs` draws them (numpy, no torch)."""
    rng = np.random.default_rng(seed)
    images = key.kind == "stem" and key.encoder == "fnet"  # raw frames, normalised inside the graph
    return [{name: (rng.random(shape, dtype=np.float32) * 255.0 if images else
                    rng.standard_normal(shape, dtype=np.float32))
             for name, shape in key.input_shapes().items()} for _ in range(samples)]


def int8_format_for(backend: str) -> str:
    """How INT8 key graphs are written for `backend`: the format its runtime runs fastest (export.quantize)."""
    return "ort-cpu" if backend == "ort-cpu" else "tensorrt"


def lower_key_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, key: Key,
                    plan_groups: Mapping[str, str], seed: int = 0, int8_format: str = "tensorrt") -> Path:
    """Write `key`'s graph at `out_path` (atomic): the FP32 graph at `fp32_path` rewritten by the plan, INT8 in
    `int8_format` (export.quantize.INT8_FORMATS)."""
    model = onnx.load(str(fp32_path))
    precisions = key_node_precisions(model, key, plan_groups)
    lowered = lower_nodes(model, precisions, calibration_feeds(key, seed=seed), plan_groups=plan_groups,
                          int8_format=int8_format)
    # The record `export trt` and `inspect` read: a plan graph is built strongly typed, as written.
    props = {prop.key: prop.value for prop in lowered.metadata_props}
    props.update(precision=key.precision, precision_plan=json.dumps(dict(plan_groups)), latency_key=key.id)
    onnx.helper.set_model_props(lowered, props)
    save_model(lowered, out_path)
    return Path(out_path)
