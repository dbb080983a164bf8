"""The module and the small ONNX graph of one latency-table key, built from the runtime's own classes.

Blocks are `flownas.nn.mbconv.MBBlock`s, stems and heads the same convs/norms `StaticEncoder` runs, and the
decoder keys run `FlowModel._iterate` itself (gather lookup, update block, convex upsampling) on encoder outputs,
so a measured unit is the code the exported model runs. Weights are random: latency does not depend on them.

Export speed: tracing runs the module's forward once, which for a wide block at 192x256 costs about a second on
a small CPU (instance norm in eager PyTorch), far more than the export itself. Encoder keys (stem, block, head)
are convolutions, norms, pools and element-wise ops whose ONNX attributes do not depend on the spatial size, so
they are traced at a small proxy size of the same parity (`PROXY_SIDE`) and the graph's input/output shapes are
then set to the real ones and re-inferred; a graph holding any shape-dependent node, or whose inferred output is
not the key's output shape, is traced again at full size. Decoder and empty graphs are always traced at full size.
`structure` names what determines a key's graph, so keys that differ only in their stage or block role share one
graph file and one measurement.

Decoder keys: the "prologue" graph is the decoder at `BASE_ITERS` iterations and the "step" graph at
`BASE_ITERS + STEP_SPAN`; `latency_tables.table.assemble` derives one step as their difference / STEP_SPAN and the
prologue as the first minus BASE_ITERS steps (one graph per key; no tensor leaves a graph that the model keeps
inside, so no artificial copies are timed). The "empty" graph of a key has the same inputs and output shape and
does next to nothing: its time is the per-call overhead (feeding, output allocation, session dispatch).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flownas.fileio import atomic_path
from flownas.models import DecoderSpec, FlowModel
from flownas.nn.mbconv import BlockShape, MBBlock, make_norm2d

from .keys import Key

OPSET = 17  # as export.onnx_export's default
BASE_ITERS, STEP_SPAN = 1, 2
OUTPUT_NAME = "y"
PROXY_SIDE = 16  # traced size of encoder keys (plus the real size's parity); 16 >= every kernel's reach
PROXY_KINDS = ("stem", "block", "head")
# Nodes whose result depends on a tensor's shape as traced: a graph holding one cannot be re-shaped safely.
SHAPE_DEPENDENT = {"Shape", "Reshape", "ConstantOfShape", "Expand", "Resize", "Upsample", "Slice", "Tile", "Size",
                   "Range", "Pad", "Split"}


class Stem(nn.Module):
    """`StaticEncoder`'s stem: 7x7 stride-2 conv + norm + ReLU. The feature encoder's stem also does what runs
    before it in the exported model: both frames normalised from [0,255] (`FlowExportWrapper`) and concatenated
    (`FlowModel.encode`); the context encoder reuses the normalised first frame."""

    def __init__(self, key: Key) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(3, key.out_channels, 7, stride=2, padding=3, bias=True)
        self.norm1 = make_norm2d(key.norm, key.out_channels)
        self.pair = key.encoder == "fnet"

    def forward(self, *images: Tensor) -> Tensor:
        if self.pair:
            image1, image2 = (image * (2.0 / 255.0) - 1.0 for image in images)
            x = torch.cat([image1, image2], dim=0)
        else:
            x = images[0]
        return F.relu(self.norm1(self.first_conv(x)))


class DecoderOnly(FlowModel):
    """`FlowModel._iterate` from encoder outputs: `encode` receives the feature encoder's `[2B,F,h,w]` output and
    the context encoder's `[B,hidden+context,h,w]` output and does what `FlowModel.encode` does after the encoders."""

    def __init__(self, spec: DecoderSpec, iters: int) -> None:
        super().__init__(nn.Identity(), nn.Identity(), spec)
        self.iters = iters

    def encode(self, fmaps: Tensor, context: Tensor, taps: object = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        fmap1, fmap2 = fmaps.float().chunk(2, dim=0)
        net, inp = torch.split(context, [self.spec.hidden_dim, self.spec.context_dim], dim=1)
        return fmap1, fmap2, torch.tanh(net), torch.relu(inp)

    def forward(self, fmaps: Tensor, context: Tensor) -> Tensor:
        return self._iterate(fmaps, context, self.iters, None, lookup="gather")[-1]


class Empty(nn.Module):
    """Same inputs, same output shape, almost no work: one element of each input, broadcast to the output."""

    def __init__(self, output_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.output_shape = output_shape

    def forward(self, *inputs: Tensor) -> Tensor:
        total = sum(x.reshape(-1)[:1] for x in inputs)  # every input is consumed, so none is pruned
        return total.reshape((1,) * len(self.output_shape)).expand(self.output_shape).contiguous()


def block_shape(key: Key) -> BlockShape:
    return BlockShape(key.in_channels, key.out_channels, key.kernel, key.mid_channels, key.stride, key.has_expand,
                      key.norm)


def build_module(key: Key, decoder: DecoderSpec | None = None) -> nn.Module:
    """A freshly initialised eval-mode module computing `key` (decoder keys need the table's `decoder`)."""
    if key.kind == "stem":
        module: nn.Module = Stem(key)
    elif key.kind == "block":
        module = MBBlock(block_shape(key))
    elif key.kind == "head":
        module = nn.Conv2d(key.in_channels, key.out_channels, 1, bias=False)  # StaticEncoder.last_conv
    elif key.kind in ("prologue", "step"):
        if decoder is None:
            raise ValueError(f"key {key.id} needs the decoder spec")
        iters = BASE_ITERS if key.kind == "prologue" else BASE_ITERS + STEP_SPAN
        module = DecoderOnly(decoder, iters)
    else:
        raise ValueError(f"unknown key kind {key.kind!r}")
    return module.eval()


def example_inputs(key: Key, seed: int = 0) -> dict[str, Tensor]:
    """Seeded inputs of the key's graph, by name (images in [0,255], activations ~ N(0,1))."""
    gen = torch.Generator().manual_seed(seed)
    images = key.kind == "stem" and key.encoder == "fnet"  # raw frames, normalised inside the graph
    return {name: torch.rand(shape, generator=gen) * 255.0 if images else torch.randn(shape, generator=gen)
            for name, shape in key.input_shapes().items()}


def _trace(module: nn.Module, inputs: dict[str, Tensor]) -> Any:
    """The legacy (TorchScript) export of `module` at `inputs`' shapes, as an onnx ModelProto."""
    import onnx

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints from shapes are expected
        torch.onnx.export(module, tuple(inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=[OUTPUT_NAME], do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _save(graph: Any, path: Path) -> None:
    import onnx
    import onnxslim

    graph = onnxslim.slim(graph)  # as export.onnx_export does for whole models: units see the same rewrites
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))


def export_module(module: nn.Module, inputs: dict[str, Tensor], path: Path) -> None:
    """Trace `module` to ONNX at `path` (atomic): named inputs, one output `y`, opset 17, legacy exporter, then
    simplified by onnxslim as `export.onnx_export` does for whole models (so units see the same graph rewrites)."""
    _save(_trace(module, inputs), path)


def proxy_key(key: Key) -> Key:
    """`key` at the small size it is traced at: PROXY_SIDE plus the real size's parity (pooling pads odd widths),
    never larger than the real size."""
    from dataclasses import replace

    side = lambda n: min(n, PROXY_SIDE + n % 2)  # noqa: E731
    return replace(key, height=side(key.height), width=side(key.width))


def reshape_graph(graph: Any, key: Key) -> Any | None:
    """`graph` (traced at `proxy_key(key)`) with the key's real input and output shapes, re-inferred; None when it
    holds a shape-dependent node or the inferred output shape is not `key.output_shape()`."""
    import onnx

    if any(node.op_type in SHAPE_DEPENDENT for node in graph.graph.node):
        return None
    shapes = key.input_shapes()
    for value in graph.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.dim_value = size
    del graph.graph.value_info[:]
    for value in graph.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        graph = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    except Exception:  # onnx raises InferenceError (and others) on graphs it cannot infer: trace at full size
        return None
    out = graph.graph.output[0].type.tensor_type.shape
    if tuple(d.dim_value for d in out.dim) != key.output_shape():
        return None
    return graph


def export_key(key: Key, path: Path, decoder: DecoderSpec | None = None, seed: int = 0) -> None:
    """The key's graph as ONNX at `path` (encoder keys traced at the proxy size, see the module docstring)."""
    torch.manual_seed(seed)
    module = build_module(key, decoder)
    graph = None
    if key.kind in PROXY_KINDS and proxy_key(key) != key:
        graph = reshape_graph(_trace(module, example_inputs(proxy_key(key), seed)), key)
    if graph is None:
        graph = _trace(module, example_inputs(key, seed))
    _save(graph, path)


def structure(key: Key) -> str:
    """What determines a key's graph: every field but the stage and block role, which only name where it runs."""
    from dataclasses import replace

    return replace(key, stage=-1, first=False).id


def record_module(record: Mapping[str, Any], decoder: DecoderSpec | Mapping[str, Any] | None = None,
                  seed: int = 0, empty: bool = False) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    """The eval-mode module of one manifest graph entry (`{"key": Key.to_dict(), ...}`) and its named input
    shapes, as `export_key` traced it (same seed); `empty=True`: the entry's empty graph instead. `decoder` is the
    manifest's decoder (a dict or DecoderSpec), needed for decoder keys. For torch backends, which time the module
    itself rather than the ONNX file."""
    key = Key.from_dict(record["key"])
    if empty:
        return Empty(key.output_shape()).eval(), key.input_shapes()
    if isinstance(decoder, Mapping):
        decoder = DecoderSpec.from_dict(decoder)
    torch.manual_seed(seed)
    return build_module(key, decoder), key.input_shapes()


def empty_signature(key: Key) -> str:
    """Name of the empty graph shared by every key with the same I/O shapes."""
    ins = "_".join(f"{n}{'x'.join(map(str, s))}" for n, s in key.input_shapes().items())
    return f"empty.{ins}.y{'x'.join(map(str, key.output_shape()))}"


def export_empty(key: Key, path: Path) -> None:
    export_module(Empty(key.output_shape()).eval(), example_inputs(key), path)
