"""Latency-table keys: every unit the two encoders run, keyed as the runtime executes it (pure Python, no torch).

A `Key` names one measured unit of a FlowNAS network at one resolution and batch:
- "stem": 7x7 stride-2 conv + norm + ReLU (the feature encoder's stem also normalises and concatenates both frames);
- "block": one MBConv block (`flownas.nn.mbconv.MBBlock`): [1x1 expand] -> kxk depthwise -> 1x1 project, plus its
  shortcut (identity when stride 1 and in == out, else avg-pool and/or 1x1 conv);
- "head": the bias-free 1x1 conv to the decoder's width;
- "prologue" and "step": the decoder, which the search does not change except for the iteration count.

The feature encoder ("fnet") runs on both frames concatenated (batch 2B, as `FlowModel.encode` and the exported
model run it); the context encoder ("cnet") on the first frame (batch B). latency = sum(encoder keys) + prologue +
iters * step. `all_keys` lists every key a search space can produce, per stage from its choices and the widths that
can feed each stage, never by enumerating architectures.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Iterator, Mapping

from flownas.arch import ArchConfig, BlockSpec, SearchSpace, mid_channels

KINDS = ("stem", "block", "head", "prologue", "step")
ENCODERS = {"fnet": "instance", "cnet": "batch"}  # encoder -> its norm (FlowNASNet builds them so)
STEM_KERNEL, STEM_STRIDE = 7, 2
UPSAMPLE = 8  # encoder output stride = decoder's upsampling factor
DEFAULT_PRECISION = "fp32"
# The precision-plan group (export.precision_plan.GROUPS) of each encoder key kind; decoder keys hold several.
KIND_GROUPS = {"stem": ("stem",), "block": ("encoder_blocks",), "head": ("encoder_head",),
               "prologue": ("motion_encoder", "gru", "flow_head", "mask_head"),
               "step": ("motion_encoder", "gru", "flow_head", "mask_head")}


@dataclass(frozen=True)
class Key:
    """One measured unit. `height`/`width`: the unit's input size (the image size for stem and decoder keys);
    `batch`: the batch the unit runs at (2B for fnet); `shortcut`: True when a block adds its input unchanged.

    Decoder keys ("prologue", "step") use in_channels = feature_dim, mid_channels = hidden_dim, out_channels =
    context_dim of the decoder; stage is -1 for every non-block key.
    """

    kind: str
    encoder: str  # "fnet" | "cnet" | "decoder"
    stage: int
    first: bool
    in_channels: int
    out_channels: int
    kernel: int
    expand: int
    mid_channels: int
    has_expand: bool
    stride: int
    norm: str  # "instance" | "batch" | "none"
    height: int
    width: int
    shortcut: bool
    batch: int
    precision: str = "fp32"  # what the unit's convolutions run in (fp32, fp16, int8): export.precision_plan

    @property
    def id(self) -> str:
        """A stable readable string that determines the key (every field is in it; fp32 adds nothing)."""
        suffix = "" if self.precision == DEFAULT_PRECISION else f".{self.precision}"
        return self.unit_id + suffix

    @property
    def unit_id(self) -> str:
        """The id without the precision: the unit itself, as an architecture's keys name it. One table holds one
        precision, so the predictor looks rows up by this."""
        size = f"{self.height}x{self.width}.b{self.batch}"
        if self.kind in ("prologue", "step"):
            return f"decoder.{self.kind}.f{self.in_channels}.h{self.mid_channels}.c{self.out_channels}.{size}"
        if self.kind != "block":
            return f"{self.encoder}.{self.kind}.c{self.in_channels}-{self.out_channels}.k{self.kernel}.s{self.stride}." \
                   f"{self.norm}.{size}"
        role = "first" if self.first else "rep"
        expand = f"e{self.expand}" + ("x" if self.has_expand else "")
        residual = ".res" if self.shortcut else ""
        return (f"{self.encoder}.block.s{self.stage}.{role}.c{self.in_channels}-{self.mid_channels}-{self.out_channels}"
                f".k{self.kernel}.{expand}.s{self.stride}.{self.norm}.{size}{residual}")

    @property
    def output_hw(self) -> tuple[int, int]:
        """Spatial size of the unit's output (padding k//2 keeps ceil(size / stride), as the convs run)."""
        if self.kind in ("prologue", "step"):
            return self.height, self.width
        return -(-self.height // self.stride), -(-self.width // self.stride)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Named input shapes of the key's graph (NCHW)."""
        if self.kind == "stem":
            shape = (self.batch // 2 if self.encoder == "fnet" else self.batch, 3, self.height, self.width)
            return {"image1": shape, "image2": shape} if self.encoder == "fnet" else {"x": shape}
        if self.kind in ("prologue", "step"):
            h, w = self.height // UPSAMPLE, self.width // UPSAMPLE
            return {"fmaps": (2 * self.batch, self.in_channels, h, w),
                    "context": (self.batch, self.mid_channels + self.out_channels, h, w)}
        return {"x": (self.batch, self.in_channels, self.height, self.width)}

    def output_shape(self) -> tuple[int, ...]:
        """Shape of the graph's one output `y`: the encoder tensor after this unit, or the flow `[B,2,H,W]`."""
        if self.kind in ("prologue", "step"):
            return (self.batch, 2, self.height, self.width)
        return (self.batch, self.out_channels, *self.output_hw)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Key":
        """Inverse of `to_dict` (also accepts CSV strings: ints and "True"/"False"). Records written before
        precision was a field are fp32."""
        values = {}
        for f in fields(cls):
            if f.name == "precision" and f.name not in d:
                values[f.name] = DEFAULT_PRECISION
                continue
            raw = d[f.name]
            if f.type == "bool":
                values[f.name] = raw if isinstance(raw, bool) else str(raw) == "True"
            elif f.type == "int":
                values[f.name] = int(raw)
            else:
                values[f.name] = str(raw)
        return cls(**values)


def decoder_widths(decoder: Any = None) -> tuple[int, int, int]:
    """(feature_dim, hidden_dim, context_dim) of a DecoderSpec-like object (default: RAFT large's)."""
    if decoder is None:
        from flownas.models import RAFT_LARGE  # torch: only when no decoder is given

        decoder = RAFT_LARGE
    return int(decoder.feature_dim), int(decoder.hidden_dim), int(decoder.context_dim)


def key_precision(kind: str, plan_groups: Mapping[str, str]) -> str:
    """The precision a key of `kind` runs in under a plan (group -> precision): its group's, or "mixed" when the
    decoder's groups differ."""
    found = {plan_groups.get(group, DEFAULT_PRECISION) for group in KIND_GROUPS[kind]}
    return found.pop() if len(found) == 1 else "mixed"


def with_precision(keys: Iterable[Key], plan_groups: Mapping[str, str] | None) -> list[Key]:
    """`keys` with each key's precision set from the plan (None: all fp32, unchanged)."""
    if not plan_groups:
        return list(keys)
    return [replace(key, precision=key_precision(key.kind, plan_groups)) for key in keys]


def _stem(encoder: str, space: SearchSpace, height: int, width: int, batch: int) -> Key:
    return Key("stem", encoder, -1, False, 3, space.stem_channels, STEM_KERNEL, 1, 0, False, STEM_STRIDE,
               ENCODERS[encoder], height, width, False, batch)


def _head(encoder: str, in_channels: int, out_channels: int, hw: tuple[int, int], batch: int) -> Key:
    return Key("head", encoder, -1, False, in_channels, out_channels, 1, 1, 0, False, 1, "none", *hw, False, batch)


def _block(encoder: str, b: BlockSpec, hw: tuple[int, int], batch: int) -> Key:
    shortcut = b.stride == 1 and b.in_channels == b.out_channels  # mbconv.BlockShape.identity_shortcut
    return Key("block", encoder, b.stage, b.index == 0, b.in_channels, b.out_channels, b.kernel_size, b.expand_ratio,
               b.mid_channels, b.has_expand, b.stride, ENCODERS[encoder], *hw, shortcut, batch)


def encoder_batch(encoder: str, batch: int) -> int:
    """The batch an encoder runs at: the feature encoder sees both frames concatenated."""
    return 2 * batch if encoder == "fnet" else batch


def _check_size(height: int, width: int) -> None:
    if height % UPSAMPLE or width % UPSAMPLE or height <= 0 or width <= 0:
        raise ValueError(f"key resolution {height}x{width} must be positive multiples of {UPSAMPLE}")


def encoder_keys(arch: ArchConfig, space: SearchSpace, height: int, width: int, batch: int = 1,
                 decoder: Any = None) -> list[Key]:
    """The keys of both encoders of `arch` at image size `height` x `width`, in execution order (fnet, cnet).

    One key per executed unit: stem, every block of `arch.blocks(space)`, head, for each encoder.
    """
    _check_size(height, width)
    feature_dim, hidden_dim, context_dim = decoder_widths(decoder)
    outputs = {"fnet": feature_dim, "cnet": hidden_dim + context_dim}
    blocks = arch.blocks(space)
    keys = []
    for encoder, out_channels in outputs.items():
        n = encoder_batch(encoder, batch)
        keys.append(_stem(encoder, space, height, width, n))
        hw = keys[-1].output_hw
        for b in blocks:
            keys.append(_block(encoder, b, hw, n))
            hw = keys[-1].output_hw
        keys.append(_head(encoder, blocks[-1].out_channels, out_channels, hw, n))
    return keys


def fixed_keys(height: int, width: int, batch: int = 1, decoder: Any = None) -> list[Key]:
    """The two decoder keys of a table: "prologue" (correlation pyramid, last step's upsampling) and "step"."""
    _check_size(height, width)
    feature_dim, hidden_dim, context_dim = decoder_widths(decoder)
    return [Key(kind, "decoder", -1, False, feature_dim, context_dim, 0, 0, hidden_dim, False, 1, "none", height,
                width, False, batch) for kind in ("prologue", "step")]


def _stage_keys(encoder: str, space: SearchSpace, stage: int, in_widths: tuple[int, ...], hw: tuple[int, int],
                batch: int) -> Iterator[Key]:
    """Every block key stage `stage` can produce, given the widths that can feed its first block."""
    has_expand = max(space.expand_ratios[stage]) > 1  # as ArchConfig.blocks decides
    stride = space.strides[stage]
    first_hw = hw
    rep_hw = (-(-hw[0] // stride), -(-hw[1] // stride))
    for out in space.widths[stage]:
        for kernel in space.kernel_sizes[stage]:
            for expand in space.expand_ratios[stage]:
                for cin in in_widths:
                    mid = mid_channels(cin, expand, has_expand)
                    b = BlockSpec(stage, 0, 0, cin, out, kernel, expand, mid, stride, has_expand)
                    yield _block(encoder, b, first_hw, batch)
                if max(space.depths[stage]) > 1:
                    b = BlockSpec(stage, 1, 0, out, out, kernel, expand, mid_channels(out, expand, has_expand), 1,
                                  has_expand)
                    yield _block(encoder, b, rep_hw, batch)


def all_keys(space: SearchSpace, height: int, width: int, batch: int = 1, decoder: Any = None) -> list[Key]:
    """Every distinct key the whole space can produce (encoders of every architecture) plus the two fixed keys.

    Enumerated per stage: the first block of stage s takes any width of stage s-1 (the stem's for stage 0; every
    depth choice is at least 1, so the previous stage always ends with one of its widths); repeats map width to
    itself. Cost: sum over stages of |widths| x |kernels| x |expands| x (|previous widths| + 1).
    """
    _check_size(height, width)
    if min(min(d) for d in space.depths) < 1:
        raise ValueError("all_keys assumes every stage runs at least one block (depth choices >= 1)")
    feature_dim, hidden_dim, context_dim = decoder_widths(decoder)
    outputs = {"fnet": feature_dim, "cnet": hidden_dim + context_dim}
    keys: dict[str, Key] = {}
    for encoder, out_channels in outputs.items():
        n = encoder_batch(encoder, batch)
        stem = _stem(encoder, space, height, width, n)
        keys[stem.id] = stem
        hw, in_widths = stem.output_hw, (space.stem_channels,)
        for stage in range(space.num_stages):
            for key in _stage_keys(encoder, space, stage, in_widths, hw, n):
                keys.setdefault(key.id, key)
            hw = (-(-hw[0] // space.strides[stage]), -(-hw[1] // space.strides[stage]))
            in_widths = tuple(space.widths[stage])
        for cin in in_widths:
            head = _head(encoder, cin, out_channels, hw, n)
            keys[head.id] = head
    for key in fixed_keys(height, width, batch, decoder):
        keys[key.id] = key
    return list(keys.values())
