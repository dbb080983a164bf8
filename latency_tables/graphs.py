"""The module and the small ONNX graph of one latency-table key, built from the runtime's own classes.

Blocks are `flownas.nn.mbconv.MBBlock`s, stems and heads the same convs/norms `StaticEncoder` runs, and the
decoder keys run `FlowModel._iterate` itself (gather lookup, update block, convex upsampling) on encoder outputs,
so a measured unit is the code the exported model runs. Weights are random: latency does not depend on them.

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

    def encode(self, fmaps: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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


def export_module(module: nn.Module, inputs: dict[str, Tensor], path: Path) -> None:
    """Trace `module` to ONNX at `path` (atomic): named inputs, one output `y`, opset 17, legacy exporter, then
    simplified by onnxslim as `export.onnx_export` does for whole models (so units see the same graph rewrites)."""
    import onnx
    import onnxslim

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints from shapes are expected
        torch.onnx.export(module, tuple(inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=[OUTPUT_NAME], do_constant_folding=True)
    graph = onnxslim.slim(onnx.load_from_string(buffer.getvalue()))
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))


def export_key(key: Key, path: Path, decoder: DecoderSpec | None = None, seed: int = 0) -> None:
    """The key's graph as ONNX at `path`."""
    torch.manual_seed(seed)
    export_module(build_module(key, decoder), example_inputs(key, seed), path)


def empty_signature(key: Key) -> str:
    """Name of the empty graph shared by every key with the same I/O shapes."""
    ins = "_".join(f"{n}{'x'.join(map(str, s))}" for n, s in key.input_shapes().items())
    return f"empty.{ins}.y{'x'.join(map(str, key.output_shape()))}"


def export_empty(key: Key, path: Path) -> None:
    export_module(Empty(key.output_shape()).eval(), example_inputs(key), path)
