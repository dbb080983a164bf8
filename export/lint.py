"""Static TensorRT-compatibility linter for ONNX models (pure `onnx`, no TensorRT needed).

It flags what TensorRT 10/11's ONNX parser cannot import, plus known pitfalls for RAFT-style flow networks,
before anyone spends GPU time on `trtexec`. Operator table and restrictions: repository onnx/onnx-tensorrt,
path docs/operators.md, TensorRT 10.15 revision ("supports operators in the inclusive range of opset 9 to
opset 24"; the 10.0 revision says 9 to 20). TensorRT 11's maximum opset (25): NVIDIA's ONNX Opset Guide
(docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html). GridSample's opset>=20
pitfall: the project's FACTS.md section 5.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import onnx
from onnx import TensorProto, helper, numpy_helper
from flownas.errors import ToolkitError

TRT10_OPSET_MIN = 9
TRT10_OPSET_MAX = 24  # operators.md, TensorRT 10.15
TRT10_0_OPSET_MAX = 20  # operators.md, TensorRT 10.0
TRT11_OPSET_MAX = 25  # ONNX Opset Guide, TensorRT 11.x
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DEFAULT_DOMAINS = ("", "ai.onnx")

# Rows marked "Y" in onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15).
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Rows marked "N" in the same table, grouped under the reason we give users.
_UNSUPPORTED_BY_REASON = {
    "sequence/optional values have no TensorRT tensor equivalent": "ConcatFromSequence SequenceAt SequenceConstruct "
    "SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SplitToSequence Optional "
    "OptionalGetElement OptionalHasElement",
    "TensorRT has no string type": "StringConcat StringNormalizer StringSplit RegexFullMatch TfIdfVectorizer",
    "integer-arithmetic quantized op: express quantization as QuantizeLinear/DequantizeLinear pairs":
    "QLinearConv QLinearMatMul ConvInteger MatMulInteger DynamicQuantizeLinear",
    "training-only op": "NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss",
    "bitwise ops are not implemented": "BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor",
    "random sampling op is not implemented": "Bernoulli Multinomial",
    "not implemented by the parser": "AffineGrid CenterCropPad Col2Im Compress DFT Det ImageDecoder MaxRoiPool "
    "MaxUnpool MelWeightMatrix Unique",
}
TRT_UNSUPPORTED_OPS: dict[str, str] = {op: why for why, ops in _UNSUPPORTED_BY_REASON.items() for op in ops.split()}
# Added in TensorRT 10.15 (onnx-tensorrt CHANGELOG.md): older TensorRT 10 parsers reject them.
TRT_RECENT_OPS = frozenset({"RMSNormalization", "RotaryEmbedding", "TensorScatter"})

# "TensorRT supports the following ONNX data types" (operators.md); DOUBLE is cast down to FLOAT.
_TRT_DTYPES = frozenset(getattr(TensorProto, n) for n in (
    "FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "INT8", "UINT8", "BOOL", "FLOAT8E4M3FN", "INT4",
    "FLOAT4E2M1") if hasattr(TensorProto, n))

# Resize row of operators.md.
RESIZE_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
RESIZE_MODES = ("nearest", "linear")
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
TOPK_MAX_K = 3840  # TopK row: "K input must be less than 3840"
# Inputs the parser needs as build-time constants (an initializer or a Constant node's output):
# op -> (input index, input name, first opset with that input). operators.md (TensorRT 10.x): Slice, Squeeze
# and Pad "`axes` must be an initializer", Unsqueeze "`axes` must be a constant tensor", CumSum "`axis` must be
# an initializer"; the importers (onnxOpImporters.cpp) stop with "does not support dynamic axes" otherwise.
# Slice starts/ends/steps and Pad pads are imported as runtime shape tensors, so they may be computed.
_CONSTANT_INPUTS: dict[str, tuple[int, str, int]] = {
    "Slice": (3, "axes", 10), "Squeeze": (1, "axes", 13), "Unsqueeze": (1, "axes", 13), "Pad": (3, "axes", 18),
    "CumSum": (1, "axis", 11), **{o: (1, "axes", 13) for o in TRT_SUPPORTED_OPS if o.startswith("Reduce")},
}


class LintError(ToolkitError, ValueError):
    """The model file cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class Finding:
    """One problem or note about one node or tensor."""

    severity: str  # "error" | "warning" | "info"
    code: str
    node: str
    op_type: str
    message: str


_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class LintReport:
    """All findings for one model; `ok` means TensorRT should at least be able to parse it."""

    path: str
    opset: int | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary plus every finding."""
        return {"path": self.path, "opset": self.opset, "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), "findings": [asdict(f) for f in self.findings]}

    def format_table(self) -> str:
        """A plain-text table, errors first, for the CLI."""
        head = (f"{self.path} (opset {self.opset}): {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s), {len(self.findings) - len(self.errors) - len(self.warnings)} info")
        if not self.findings:
            return head + "\nno findings"
        rows = [("SEVERITY", "CODE", "NODE", "OP", "MESSAGE")]
        rows += [(f.severity, f.code, f.node or "-", f.op_type or "-", f.message)
                 for f in sorted(self.findings, key=lambda f: _ORDER.get(f.severity, 3))]
        widths = [min(40, max(len(r[i]) for r in rows)) for i in range(4)]
        lines = ["  ".join(c[:w].ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
        return "\n".join([head, *lines])


@dataclass
class _Ctx:
    """What node rules need to know about the whole model."""

    opset: int | None
    consts: set[str]  # names of initializers and Constant outputs (TensorRT "weights")
    values: dict[str, Any]  # small constant values, for K / is_training checks
    ranks: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    align_corners: dict[int, list[str]] = field(default_factory=dict)  # value -> GridSample nodes

    def add(self, severity: str, code: str, where: str, node: onnx.NodeProto | None, msg: str) -> None:
        self.findings.append(Finding(severity, code, where, node.op_type if node else "", msg))


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Attribute values with byte strings decoded."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _enum(ctx: _Ctx, node: onnx.NodeProto, where: str, attr: str, default: Any, allowed: tuple, code: str) -> None:
    """Error when an enum-like attribute takes a value TensorRT does not implement."""
    value = _attrs(node).get(attr, default)
    if value not in allowed:
        allowed_text = ", ".join(map(str, allowed))
        ctx.add("error", code, where, node, f"{attr}={value!r} is not supported by TensorRT (allowed: {allowed_text})")


# ------------------------------------------------------------------------------------ node rules
def _rule_gridsample(ctx: _Ctx, node: onnx.NodeProto, where: str) -> None:
    """GridSample: opset window, modes, 4-D input (operators.md: 'Input must be 4D input')."""
    opset = ctx.opset or 0
    if opset < 16:
        ctx.add("error", "gridsample-opset", where, node, f"GridSample does not exist before opset 16 (opset {opset})")
    elif opset >= 20:
        ctx.add("error", "gridsample-opset", where, node,
                "TensorRT's ONNX parser mishandles opset>=20 GridSample modes ('linear' silently becomes nearest); "
                "export at opset 16-19")
    # Opset 16-19 spell modes bilinear/bicubic, opset 20+ linear/cubic. TensorRT's layer has a CUBIC mode, but
    # this deployment only validates bilinear (RAFT's lookup/warp) and nearest, so cubic is rejected here.
    _enum(ctx, node, where, "mode", "linear" if opset >= 20 else "bilinear", ("bilinear", "linear", "nearest"),
          "gridsample-mode")
    _enum(ctx, node, where, "padding_mode", "zeros", ("zeros", "border", "reflection"), "gridsample-padding")
    ctx.align_corners.setdefault(int(_attrs(node).get("align_corners", 0)), []).append(where)
    rank = ctx.ranks.get(node.input[0]) if node.input else None
    if rank not in (None, 4):
        ctx.add("error", "gridsample-rank", where, node, f"TensorRT GridSample needs a 4-D input, got rank {rank}")


def _rule_resize(ctx: _Ctx, node: onnx.NodeProto, where: str) -> None:
    """Resize: only the transformation/interpolation modes listed in operators.md."""
    attrs = _attrs(node)
    _enum(ctx, node, where, "coordinate_transformation_mode", "half_pixel", RESIZE_COORD_MODES, "resize-coord-mode")
    _enum(ctx, node, where, "mode", "nearest", RESIZE_MODES, "resize-mode")
    if attrs.get("mode", "nearest") == "nearest":
        _enum(ctx, node, where, "nearest_mode", "round_prefer_floor", RESIZE_NEAREST_MODES, "resize-nearest-mode")
    _enum(ctx, node, where, "keep_aspect_ratio_policy", "stretch", ("stretch",), "resize-aspect-policy")
    _enum(ctx, node, where, "antialias", 0, (0,), "resize-antialias")


def _rule_pool(ctx: _Ctx, node: onnx.NodeProto, where: str) -> None:
    """Pooling: 2D/3D only, no dilations, no MaxPool Indices output."""
    attrs = _attrs(node)
    kernel = attrs.get("kernel_shape", [])
    if node.op_type in ("MaxPool", "AveragePool") and len(kernel) not in (2, 3):
        ctx.add("error", "pool-rank", where, node, f"TensorRT pools in 2D or 3D only (kernel_shape={list(kernel)})")
    if any(d != 1 for d in attrs.get("dilations", [])):
        ctx.add("error", "pool-dilations", where, node, "pooling dilations must be empty or all ones in TensorRT")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        ctx.add("error", "maxpool-indices", where, node, "MaxPool's Indices output is unsupported by TensorRT")


def _rule_attr_values(ctx: _Ctx, node: onnx.NodeProto, where: str) -> None:
    """Single-attribute restrictions from operators.md (ScatterND, TopK, LSTM, Constant)."""
    attrs = _attrs(node)
    if node.op_type == "ScatterND":
        _enum(ctx, node, where, "reduction", "none", ("none",), "scatternd-reduction")
    elif node.op_type == "TopK":
        _enum(ctx, node, where, "sorted", 1, (1,), "topk-sorted")
        k = ctx.values.get(node.input[1]) if len(node.input) > 1 else attrs.get("k")
        if k is not None and int(k.max() if hasattr(k, "max") else k) >= TOPK_MAX_K:
            ctx.add("error", "topk-k", where, node, f"TopK K must be less than {TOPK_MAX_K} in TensorRT")
    elif node.op_type == "LSTM":
        _enum(ctx, node, where, "input_forget", 0, (0,), "lstm-attr")
        _enum(ctx, node, where, "layout", 0, (0,), "lstm-attr")
    elif node.op_type == "Constant":
        for bad in ("sparse_value", "value_string", "value_strings"):
            if bad in attrs:
                ctx.add("error", "constant-attr", where, node, f"Constant attribute {bad!r} is unsupported")


def _rule_inputs(ctx: _Ctx, node: onnx.NodeProto, where: str) -> None:
    """Inputs that TensorRT needs as build-time constants (axes, Dropout's is_training)."""
    index, what, since = _CONSTANT_INPUTS.get(node.op_type, (-1, "", 0))
    name = node.input[index] if 0 <= index < len(node.input) else ""
    if name and (ctx.opset or 0) >= since and name not in ctx.consts:
        ctx.add("error", "axes-not-constant", where, node, f"{node.op_type} {what} '{name}' must be an initializer "
                "or a Constant output for TensorRT; fold constants first (onnxslim or polygraphy surgeon sanitize "
                "--fold-constants)")
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        value = ctx.values.get(node.input[2])
        if value is None or bool(value.any()):
            ctx.add("error", "dropout-training", where, node, "Dropout training_mode must be a False initializer")
    if node.op_type == "LayerNormalization" and any(node.output[1:]):
        ctx.add("error", "layernorm-outputs", where, node, "only LayerNormalization's first output Y is supported")


_RULES: dict[str, Callable[[_Ctx, onnx.NodeProto, str], None]] = {
    "GridSample": _rule_gridsample, "Resize": _rule_resize, "MaxPool": _rule_pool, "AveragePool": _rule_pool,
    "LpPool": _rule_pool, "ScatterND": _rule_attr_values, "TopK": _rule_attr_values, "LSTM": _rule_attr_values,
    "Constant": _rule_attr_values, "Dropout": _rule_inputs, "LayerNormalization": _rule_inputs,
    **dict.fromkeys(_CONSTANT_INPUTS, _rule_inputs),
}


def _check_node(ctx: _Ctx, node: onnx.NodeProto, where: str, functions: set[tuple[str, str]]) -> None:
    """Operator support (table, custom domains, local functions) then the op's own rules."""
    op = node.op_type
    if node.domain not in DEFAULT_DOMAINS:
        if (node.domain, op) not in functions:  # local functions are inlined by the parser; bodies linted separately
            ctx.add("error", "custom-op", where, node, f"custom op {op} (domain {node.domain}) needs a TensorRT plugin")
        return
    if op in TRT_UNSUPPORTED_OPS:
        ctx.add("error", "unsupported-op", where, node, f"{op} is not supported by TensorRT's ONNX parser: "
                f"{TRT_UNSUPPORTED_OPS[op]}")
    elif op not in TRT_SUPPORTED_OPS:
        ctx.add("error", "unsupported-op", where, node, f"{op} is not in TensorRT's ONNX operator table "
                "(importable only through a plugin of the same name)")
    elif op in TRT_RECENT_OPS:
        ctx.add("info", "op-needs-recent-trt", where, node, f"{op} needs TensorRT >= 10.15's ONNX parser")
    if op == "Cast":
        _check_dtype(ctx, _attrs(node).get("to", 0), f"Cast output '{node.output[0]}'", where, node)
    if op in _RULES:
        _RULES[op](ctx, node, where)


# ------------------------------------------------------------------------------------ graph walking
def _subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The If/Loop/Scan bodies held by one attribute."""
    return [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)


def _iter_nodes(nodes: Any, prefix: str) -> Iterator[tuple[onnx.NodeProto, str]]:
    """Every node with a readable path, descending into If/Loop/Scan bodies."""
    for i, node in enumerate(nodes):
        where = prefix + (node.name or f"{node.op_type}#{i}")
        yield node, where
        for a in node.attribute:
            for sub in _subgraphs(a):
                yield from _iter_nodes(sub.node, f"{where}/{a.name}/")


def _iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The main graph and all nested subgraphs."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            for sub in _subgraphs(a):
                yield from _iter_graphs(sub)


def _all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of the graph, its subgraphs and the model-local functions."""
    return [n for g in _iter_graphs(model.graph) for n in g.node] + [n for f in model.functions for n in f.node]


def _weights(model: onnx.ModelProto) -> list[tuple[str, TensorProto, bool]]:
    """(name, tensor, only-used-as-Slice-bounds) for every initializer and Constant value."""
    graphs, nodes = list(_iter_graphs(model.graph)), _all_nodes(model)
    # Slice starts/ends of INT64_MAX mean "to the end"; clamping them to int32 keeps that meaning.
    slice_bounds = {n.input[i] for n in nodes if n.op_type == "Slice" for i in (1, 2) if len(n.input) > i}
    other_uses = {name for n in nodes for i, name in enumerate(n.input) if n.op_type != "Slice" or i not in (1, 2)}
    tensors = [(t.name, t) for g in graphs for t in g.initializer]
    tensors += [(n.output[0], a.t) for n in nodes if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return [(name, t, name in slice_bounds and name not in other_uses) for name, t in tensors]


def _check_dtype(ctx: _Ctx, dtype: int, what: str, where: str, node: onnx.NodeProto | None) -> None:
    """DOUBLE is cast down with a warning; types outside TensorRT's list are errors."""
    name = TensorProto.DataType.Name(dtype) if dtype in TensorProto.DataType.values() else str(dtype)
    if dtype == TensorProto.DOUBLE:
        ctx.add("warning", "double-dtype", where, node, f"{what} is DOUBLE: TensorRT casts it to FLOAT (clamped)")
    elif dtype != TensorProto.UNDEFINED and dtype not in _TRT_DTYPES:
        ctx.add("error", "unsupported-dtype", where, node, f"{what} has type {name}, which TensorRT does not support")


def _check_weights(ctx: _Ctx, weights: list[tuple[str, TensorProto, bool]]) -> None:
    """Weight dtypes and the int64 range: TensorRT may narrow int64 weights to int32."""
    fitting = 0
    for name, tensor, slice_only in weights:
        _check_dtype(ctx, tensor.data_type, f"weight '{name}'", name, None)
        if tensor.data_type != TensorProto.INT64:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # external data not loaded: the range cannot be checked
            continue
        if values.size and not slice_only and (values.min() < INT32_MIN or values.max() > INT32_MAX):
            ctx.add("error", "int64-overflow", name, None, f"int64 weight '{name}' holds values outside the int32 "
                    f"range [{values.min()}, {values.max()}]; TensorRT may clamp them when narrowing to int32")
        else:
            fitting += 1
    if fitting:
        ctx.add("info", "int64-weights", "", None, f"{fitting} int64 weight tensor(s) fit in int32 "
                "(safe if TensorRT narrows them)")


def _check_io(ctx: _Ctx, model: onnx.ModelProto) -> None:
    """Graph inputs/outputs: dtypes, int64 I/O and dynamic dimensions."""
    graph = model.graph
    weights = {t.name for t in graph.initializer}  # old IR versions list initializers as inputs too
    for kind, values in (("input", [v for v in graph.input if v.name not in weights]), ("output", graph.output)):
        for v in values:
            ttype = v.type.tensor_type
            _check_dtype(ctx, ttype.elem_type, f"{kind} '{v.name}'", v.name, None)
            if ttype.elem_type == TensorProto.INT64:
                ctx.add("warning", "int64-io", v.name, None, f"{kind} '{v.name}' is int64: TensorRT 10 has INT64 "
                        "only in some layers (see the per-op type column); prefer int32 or float I/O")
            if kind != "input":
                continue
            if not ttype.HasField("shape"):
                ctx.add("warning", "dynamic-input", v.name, None, f"input {v.name} has unknown rank: build the "
                        "engine with an optimization profile (--min/--opt/--max)")
                continue
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
            if any(not isinstance(d, int) for d in dims):
                ctx.add("warning", "dynamic-input", v.name, None, f"input {v.name} has dynamic dims {dims}: build "
                        "the engine with an optimization profile (--min/--opt/--max)")


def _check_opset(ctx: _Ctx) -> None:
    """The default-domain opset against the parser's documented range."""
    op = ctx.opset
    if op is None:
        ctx.add("error", "missing-opset", "", None, "model imports no default-domain (ai.onnx) opset")
    elif op > TRT10_OPSET_MAX:
        ctx.add("warning", "opset-too-new", "", None, f"opset {op} is above TensorRT 10's documented range "
                f"({TRT10_OPSET_MIN}-{TRT10_OPSET_MAX}); TensorRT 11 documents up to {TRT11_OPSET_MAX}")
    elif op > TRT10_0_OPSET_MAX:
        ctx.add("info", "opset-needs-recent-trt", "", None, f"opset {op} needs a TensorRT 10 release newer "
                f"than 10.0 (10.0 documents opsets up to {TRT10_0_OPSET_MAX})")
    elif op < TRT10_OPSET_MIN:
        ctx.add("warning", "opset-too-old", "", None, f"opset {op} is below TensorRT's minimum ({TRT10_OPSET_MIN})")


# ------------------------------------------------------------------------------------ entry points
def _load(path: str) -> onnx.ModelProto:
    """Read a model file or raise LintError with one line naming it."""
    if not Path(path).is_file():
        raise LintError(f"{path}: ONNX file not found (or not a regular file)")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf, OSError and external-data errors all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LintError(f"{path}: not a readable ONNX model ({first})") from None
    if not model.opset_import and not model.graph.node:  # protobuf happily parses arbitrary bytes
        raise LintError(f"{path}: not an ONNX model (no opset imports and no nodes)")
    return model


def _context(model: onnx.ModelProto, weights: list[tuple[str, TensorProto, bool]]) -> _Ctx:
    """Opset, constant names/values and known ranks for the node rules."""
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    values, ranks = {}, {}
    for name, tensor, _ in weights:
        if tensor.data_type in (TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL) and len(tensor.dims) < 2:
            try:
                values[name] = numpy_helper.to_array(tensor)
            except Exception:  # unloaded external data: value stays unknown
                pass
    for g in _iter_graphs(model.graph):
        for v in [*g.input, *g.output, *g.value_info]:
            if v.type.tensor_type.HasField("shape"):
                ranks[v.name] = len(v.type.tensor_type.shape.dim)
        for t in g.initializer:
            ranks[t.name] = len(t.dims)
    # Every Constant output counts (value_ints etc. too): the parser imports Constant nodes as weights.
    consts = {name for name, _, _ in weights}
    consts |= {o for n in _all_nodes(model) if n.op_type == "Constant" for o in n.output}
    return _Ctx(opset=opset, consts=consts, values=values, ranks=ranks)


def lint_onnx(model: str | os.PathLike | onnx.ModelProto, *, profile_shapes: bool = False) -> LintReport:
    """Check an ONNX model (path or ModelProto) against what TensorRT 10/11 can parse.

    profile_shapes=True first runs ONNX shape inference, so rank- and dtype-dependent checks (GridSample's
    4-D input, unsupported intermediate types) also see tensors between nodes, not just graph I/O.
    """
    if isinstance(model, onnx.ModelProto):
        path, proto = "<in-memory model>", model
    else:
        path = os.fspath(model)
        proto = _load(path)
    notes: list[Finding] = []
    if profile_shapes:
        try:
            proto = onnx.shape_inference.infer_shapes(proto)
        except Exception as exc:  # custom ops without schemas make inference fail; lint what we have
            notes.append(Finding("info", "shape-inference", "", "", f"shape inference failed: {str(exc)[:200]}"))
    weights = _weights(proto)
    ctx = _context(proto, weights)
    ctx.findings.extend(notes)
    _check_opset(ctx)
    _check_io(ctx, proto)
    _check_weights(ctx, weights)
    functions = {(f.domain, f.name) for f in proto.functions}
    for node, where in _iter_nodes(proto.graph.node, ""):
        _check_node(ctx, node, where, functions)
    for func in proto.functions:
        for node, where in _iter_nodes(func.node, f"{func.domain}.{func.name}/"):
            _check_node(ctx, node, where, functions)
    # One note per align_corners value, not per node: RAFT has a GridSample per pyramid level and iteration.
    for align, nodes in sorted(ctx.align_corners.items()):
        ctx.findings.append(Finding("info", "gridsample-align-corners", nodes[0] if len(nodes) == 1 else
                                    f"{len(nodes)} nodes", "GridSample", f"align_corners={align} on {len(nodes)} "
                                    "GridSample node(s): must match the training-time grid_sample call (RAFT: True)"))
    if profile_shapes:
        for g in _iter_graphs(proto.graph):
            for v in g.value_info:
                _check_dtype(ctx, v.type.tensor_type.elem_type, f"tensor '{v.name}'", v.name, None)
    return LintReport(path=path, opset=ctx.opset, findings=ctx.findings)
