"""Mixed precision for strongly typed TensorRT networks: an fp32 ONNX graph rewritten with explicit casts.

TensorRT 11 removed the FP16/BF16/INT8 builder flags: reduced precision now comes only from the types
written in the network itself (a "strongly typed" network; NVIDIA points to ModelOpt AutoCast for the
ONNX rewrite: docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html).
This module does that rewrite with one simple, safe rule instead of a tuned autocast:

* only ``Conv`` nodes (and a ``Relu``/``Sigmoid``/``Tanh``/``LeakyRelu`` directly after one) compute in fp16:
  a ``Cast(to=FLOAT16)`` feeds their data input (one per source tensor), their weights and bias become fp16
  initializers and a ``Cast(to=FLOAT)`` turns the result back into the original fp32 tensor;
* everything else is untouched, so GridSample, the correlation MatMul and what follows it up to the next
  Conv, pooling of the pyramid, the upsampling Softmax and the final upsampling all stay fp32, and so do the
  graph inputs and outputs;
* by default a Conv whose output reaches sampling positions (GridSample's grid, Gather indices) through
  non-Conv nodes also stays fp32: in RAFT that is the flow head's last conv, whose output is added to the
  coordinates (see `coordinate_convs`).

Only the top-level graph is rewritten (tracing unrolls RAFT's loop, so there are no subgraphs to visit).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRECISION_KEY = "flownas.precision"
PRECISION_VALUE = "fp16-strongly-typed"
KEPT_FP32_KEY = "flownas.precision.kept_fp32_convs"
FP16_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu"})
# Inputs that hold sampling positions: (op_type, input index).
_POSITION_INPUTS = {"GridSample": 1, "Gather": 1, "GatherElements": 1, "GatherND": 1}
# Nodes that only read their input's shape: walking through them would wrongly reach the data's producer.
_SHAPE_READERS = frozenset({"Shape", "Size"})
_FP16_MAX = float(np.finfo(np.float16).max)

KeepPredicate = Callable[[onnx.NodeProto], bool]


def coordinate_convs(model: onnx.ModelProto) -> frozenset[str]:
    """Output names of the Conv nodes whose result reaches a sampling position through non-Conv nodes.

    Walks backwards from every GridSample grid / Gather index input, through any node except Conv and
    shape readers; the Convs met at the border are returned (by their first output's name, since ONNX
    node names are optional).
    """
    starts = [node.input[idx] for node in model.graph.node
              for op, idx in _POSITION_INPUTS.items() if node.op_type == op and len(node.input) > idx]
    return convs_reaching(model, starts, _SHAPE_READERS)


def convs_reaching(model: onnx.ModelProto, tensors: Iterable[str], stop_ops: Iterable[str]) -> frozenset[str]:
    """Output names of the Convs met walking back from `tensors` through any node but Conv and `stop_ops`:
    the Convs whose result reaches those tensors without passing another Conv."""
    producer = {out: node for node in model.graph.node for out in node.output}
    stop = frozenset(stop_ops)
    stack, seen, convs = list(tensors), set(), set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor not in producer:
            continue
        seen.add(tensor)
        node = producer[tensor]
        if node.op_type == "Conv":
            convs.add(node.output[0])
        elif node.op_type not in stop:
            stack.extend(name for name in node.input if name)
    return frozenset(convs)


def default_keep_fp32(model: onnx.ModelProto) -> KeepPredicate:
    """The default policy: keep the Convs that produce coordinates (`coordinate_convs`) in fp32."""
    protected = coordinate_convs(model)
    return lambda node: node.output[0] in protected


def to_fp16_strongly_typed(model: onnx.ModelProto, *, keep_fp32: KeepPredicate | None = None) -> onnx.ModelProto:
    """Return a copy of an fp32 graph whose Conv (+ following activation) nodes compute in fp16.

    `keep_fp32(conv_node) -> bool` decides which Convs stay fp32; it replaces the default
    (`default_keep_fp32(model)`), so compose with it to extend rather than replace the default.
    Convs that cannot be converted safely (non-fp32 data input, weights that are not initializers or that
    overflow fp16) stay fp32; every kept Conv is listed with its reason in the metadata entry
    `flownas.precision.kept_fp32_convs`. The result records `flownas.precision = fp16-strongly-typed`.
    """
    if _metadata(model).get(PRECISION_KEY) == PRECISION_VALUE:
        raise ValueError(f"model already rewritten ({PRECISION_KEY} = {PRECISION_VALUE}); rewrite the fp32 original")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if keep_fp32 is None:
        keep, reason = default_keep_fp32(out), "feeds sampling coordinates"
    else:
        keep, reason = keep_fp32, "kept by keep_fp32"
    converted, kept = _plan_convs(out, keep, reason)
    fused = _plan_activations(out.graph, converted)
    _Rewriter(out.graph).apply(converted, fused)
    _set_metadata(out, {PRECISION_KEY: PRECISION_VALUE, KEPT_FP32_KEY: json.dumps(kept, sort_keys=True)})
    return out


def fp16_summary(model: onnx.ModelProto) -> dict:
    """Count compute nodes by the float type they run in (from shape inference), plus inserted casts.

    Returns `{"precision", "fp16_nodes", "fp32_nodes", "other_nodes", "casts", "fp16_ops", "fp32_ops",
    "kept_fp32_convs"}` where the `*_ops` entries map op types to counts.
    """
    types = _elem_types(model)
    ops: dict[str, Counter] = {"fp16": Counter(), "fp32": Counter(), "other": Counter()}
    casts = 0
    for node in model.graph.node:
        if node.op_type == "Cast":
            casts += 1
            continue
        float_inputs = [types.get(name) for name in node.input if types.get(name) in _FLOAT_NAMES]
        kind = _FLOAT_NAMES[float_inputs[0]] if float_inputs else "other"
        ops[kind][node.op_type] += 1
    meta = _metadata(model)
    return {
        "precision": meta.get(PRECISION_KEY, "fp32"),
        "fp16_nodes": sum(ops["fp16"].values()),
        "fp32_nodes": sum(ops["fp32"].values()),
        "other_nodes": sum(ops["other"].values()),
        "casts": casts,
        "fp16_ops": dict(sorted(ops["fp16"].items())),
        "fp32_ops": dict(sorted(ops["fp32"].items())),
        "kept_fp32_convs": json.loads(meta.get(KEPT_FP32_KEY, "{}")),
    }


_FLOAT_NAMES = {TensorProto.FLOAT16: "fp16", TensorProto.FLOAT: "fp32"}


def _plan_convs(model: onnx.ModelProto, keep: KeepPredicate,
                keep_reason: str) -> tuple[set[str], dict[str, str]]:
    """Split Conv nodes (by first output) into those to convert and those kept fp32 with a reason."""
    graph = model.graph
    types = _elem_types(model)
    inits = {init.name: init for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input}
    converted: set[str] = set()
    kept: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        reason = keep_reason if keep(node) else _why_fp32(node, types, inits, graph_inputs)
        if reason is None:
            converted.add(node.output[0])
        else:
            kept[node.name or node.output[0]] = reason
    return converted, kept


def _why_fp32(node: onnx.NodeProto, types: dict[str, int], inits: dict[str, TensorProto],
              graph_inputs: set[str]) -> str | None:
    """Why this Conv cannot safely run in fp16, or None when it can."""
    if types.get(node.input[0]) != TensorProto.FLOAT:
        return "data input is not float32"
    for name in node.input[1:]:
        if not name:
            continue
        if name not in inits or name in graph_inputs:
            return f"parameter {name} is not a constant initializer"
        if inits[name].data_type != TensorProto.FLOAT:
            return f"parameter {name} is not float32"
        if np.abs(numpy_helper.to_array(inits[name])).max(initial=0.0) > _FP16_MAX:
            return f"parameter {name} overflows float16"
    return None


def _plan_activations(graph: onnx.GraphProto, converted: set[str]) -> dict[str, str]:
    """Map converted Conv outputs to the activation output fused after them (sole consumer, not an output)."""
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in set(node.input):
            consumers[name].append(node)
    outputs = {value.name for value in graph.output}
    fused = {}
    for conv_out in converted:
        users = consumers.get(conv_out, [])
        if len(users) == 1 and users[0].op_type in FP16_ACTIVATIONS and conv_out not in outputs:
            fused[conv_out] = users[0].output[0]
    return fused


class _Rewriter:
    """Rebuilds a graph's node list with fp16 Convs, shared input casts and fp16 initializers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.used = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        self.used |= {init.name for init in graph.initializer} | {v.name for v in graph.input}
        self.fp16_of: dict[str, str] = {}       # fp32 tensor -> its fp16 twin
        self.fp16_init: dict[str, str] = {}     # fp32 initializer -> fp16 copy
        self.cast_back: set[str] = set()        # outputs of the Cast(to=FLOAT) nodes we add
        self.nodes: list[onnx.NodeProto] = []

    def apply(self, converted: set[str], fused: dict[str, str]) -> None:
        fused_acts = {act_out: conv_out for conv_out, act_out in fused.items()}
        for node in self.graph.node:
            if node.op_type == "Conv" and node.output[0] in converted:
                self._emit_conv(node, cast_back=node.output[0] not in fused)
            elif node.op_type in FP16_ACTIVATIONS and node.output[0] in fused_acts:
                self._emit_fp16_node(node, [self.fp16_of[fused_acts[node.output[0]]]], cast_back=True)
            else:
                self.nodes.append(node)
        self._drop_dead_casts()
        self._replace_nodes()
        self._drop_unused_initializers_and_stale_value_info()

    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def _fp16_input(self, tensor: str) -> str:
        # Reusing the fp16 twin skips a Cast(fp16->fp32)->Cast(fp32->fp16) pair, which is exact anyway.
        if tensor not in self.fp16_of:
            twin = self._unique(f"{tensor}_fp16")
            self.nodes.append(helper.make_node("Cast", [tensor], [twin], name=self._unique(f"{tensor}/to_fp16"),
                                               to=TensorProto.FLOAT16))
            self.fp16_of[tensor] = twin
        return self.fp16_of[tensor]

    def _fp16_initializer(self, name: str) -> str:
        if name not in self.fp16_init:
            init = next(i for i in self.graph.initializer if i.name == name)
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), self._unique(f"{name}_fp16"))
            self.graph.initializer.append(half)
            self.fp16_init[name] = half.name
        return self.fp16_init[name]

    def _emit_conv(self, node: onnx.NodeProto, cast_back: bool) -> None:
        inputs = [self._fp16_input(node.input[0])]
        inputs += [self._fp16_initializer(name) if name else "" for name in node.input[1:]]
        self._emit_fp16_node(node, inputs, cast_back)

    def _emit_fp16_node(self, node: onnx.NodeProto, inputs: list[str], cast_back: bool) -> None:
        """Append a copy of `node` on fp16 inputs; its fp32 output comes back through a Cast if asked."""
        fp32_out = node.output[0]
        half = onnx.NodeProto()
        half.CopyFrom(node)
        del half.input[:]
        half.input.extend(inputs)
        half.output[0] = self._unique(f"{fp32_out}_fp16")
        self.nodes.append(half)
        self.fp16_of[fp32_out] = half.output[0]
        if cast_back:
            self.nodes.append(helper.make_node("Cast", [half.output[0]], [fp32_out],
                                               name=self._unique(f"{fp32_out}/to_fp32"), to=TensorProto.FLOAT))
            self.cast_back.add(fp32_out)

    def _drop_dead_casts(self) -> None:
        """Remove back-casts whose fp32 result nobody reads any more (all readers took the fp16 twin)."""
        read = {name for node in self.nodes for name in node.input} | {v.name for v in self.graph.output}
        self.nodes = [n for n in self.nodes
                      if not (n.op_type == "Cast" and n.output[0] in self.cast_back and n.output[0] not in read)]

    def _replace_nodes(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)

    def _drop_unused_initializers_and_stale_value_info(self) -> None:
        read = {name for node in self.graph.node for name in node.input} | {v.name for v in self.graph.output}
        keep = [init for init in self.graph.initializer if init.name in read]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        produced = {name for node in self.graph.node for name in node.output}
        infos = [info for info in self.graph.value_info if info.name in produced]
        del self.graph.value_info[:]
        self.graph.value_info.extend(infos)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type (inputs, initializers, intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:  # Constant outputs are not always listed in value_info
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            types.setdefault(node.output[0], node.attribute[0].t.data_type)
    return types


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    merged = {**_metadata(model), **values}
    del model.metadata_props[:]
    helper.set_model_props(model, merged)
