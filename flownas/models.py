"""Optical-flow models with one forward contract: RAFT (large, small) and the FlowNAS networks.

Contract: images `[B,3,H,W]` with values in [0,255]. In eval mode `model(image1, image2, iters=12)` returns
the final full-resolution flow `[B,2,H,W]` float32; in train mode it returns the list of per-iteration
full-resolution predictions. Sizes that are not multiples of 8 are replicate-padded and cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from .arch import ArchConfig, SearchSpace
from .nn.corr import coords_grid, correlation_lookup
from .nn.dynamic import SuperEncoder
from .nn.encoders import basic_encoder, small_encoder
from .nn.mbconv import StaticEncoder, static_encoder
from .nn.padding import InputPadder
from .nn.update import (
    RAFT_LARGE_UPDATE, RAFT_SMALL_UPDATE, UPSAMPLE_FACTOR, DecoderSpecError, UpdateBlock, UpdateSpec,
    bilinear_upsample, check_spec_keys, convex_upsample,
)

# The coarsest correlation level must keep at least 2 pixels per side for the align_corners lookup.
MIN_SIDE_PX = 128
# `corr=` of the forward -> the correlation lookup of `_iterate` (both give the same samples).
CORR_MODES = {"all-pairs": "grid_sample", "lean": "lean"}
DECODER_KEYS = ("hidden_dim", "context_dim", "feature_dim", "corr_levels", "corr_radius", "update")
_DECODER_LIMITS = {"hidden_dim": 4096, "context_dim": 4096, "feature_dim": 4096, "corr_levels": 6, "corr_radius": 16}


@dataclass(frozen=True)
class DecoderSpec:
    """Hyper-parameters of RAFT's decoder: encoder output widths, correlation lookup, update operator.

    The feature encoder outputs `feature_dim` channels, the context encoder `hidden_dim + context_dim`.
    """

    hidden_dim: int
    context_dim: int
    feature_dim: int
    corr_levels: int
    corr_radius: int
    update: UpdateSpec

    def __post_init__(self) -> None:
        for key, maximum in _DECODER_LIMITS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
                raise DecoderSpecError(f"decoder.{key} must be an integer in [1, {maximum}], got {value!r}")
        if not isinstance(self.update, UpdateSpec):
            raise DecoderSpecError(f"decoder.update must be an UpdateSpec, got {type(self.update).__name__}")

    @property
    def corr_channels(self) -> int:
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2

    @property
    def small(self) -> bool:
        """True for RAFT small's upsampling: bilinear, no mask head."""
        return self.update.mask_dim == 0

    @property
    def min_side_px(self) -> int:
        """Smallest padded input side: the coarsest correlation level keeps 2 px (128 px for 4 levels)."""
        return UPSAMPLE_FACTOR * 2**self.corr_levels

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {key: getattr(self, key) for key in DECODER_KEYS[:-1]}
        d["update"] = self.update.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecoderSpec":
        """Inverse of `to_dict`; every key is required and checked (DecoderSpecError names the key)."""
        check_spec_keys(d, DECODER_KEYS, "decoder")
        fields = {key: d[key] for key in DECODER_KEYS[:-1]}
        return cls(**fields, update=UpdateSpec.from_dict(d["update"]))


RAFT_LARGE = DecoderSpec(hidden_dim=128, context_dim=128, feature_dim=256, corr_levels=4, corr_radius=4,
                         update=RAFT_LARGE_UPDATE)
RAFT_SMALL = DecoderSpec(hidden_dim=96, context_dim=64, feature_dim=128, corr_levels=4, corr_radius=3,
                         update=RAFT_SMALL_UPDATE)
# For tests and tiny registered configurations: a RAFT-large-shaped decoder with a fraction of the widths.
TINY_DECODER = DecoderSpec(
    hidden_dim=32, context_dim=32, feature_dim=64, corr_levels=4, corr_radius=3,
    update=UpdateSpec(corr_dims=(64, 48), flow_dims=(32, 16), motion_dim=48, flow_head_dim=64, mask_dim=64,
                      separable_gru=True),
)


class FlowModel(nn.Module):
    """RAFT's iterative pipeline around a feature encoder `fnet` and a context encoder `cnet`."""

    def __init__(self, fnet: nn.Module, cnet: nn.Module, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.fnet = fnet
        self.cnet = cnet
        self.update_block = UpdateBlock(spec.corr_channels, spec.hidden_dim, spec.context_dim, spec.update)

    def config(self) -> dict[str, Any]:
        """A JSON-able description from which `flownas.weights.build_model` rebuilds this model."""
        raise NotImplementedError(f"{type(self).__name__} must describe itself")

    def encode(self, image1: Tensor, image2: Tensor, taps: dict[str, list[Tensor]] | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Normalised images -> (fmap1, fmap2, hidden state, context), all at 1/8 resolution.

        `taps`, when given, receives the FAD feature taps (FACTS §1) of both encoders: `taps["fnet"]` (both frames
        stacked on the batch axis, frame 1 first) and `taps["cnet"]` (frame 1), five tensors each.
        """
        fnet_taps = cnet_taps = None
        if taps is not None:
            fnet_taps, cnet_taps = taps.setdefault("fnet", []), taps.setdefault("cnet", [])
        fmaps = self.fnet(torch.cat([image1, image2], dim=0), fnet_taps).float()
        fmap1, fmap2 = fmaps.chunk(2, dim=0)
        net, inp = torch.split(self.cnet(image1, cnet_taps), [self.spec.hidden_dim, self.spec.context_dim], dim=1)
        return fmap1, fmap2, torch.tanh(net), torch.relu(inp)

    def forward(
        self,
        image1: Tensor,
        image2: Tensor,
        iters: int = 12,
        flow_init: Tensor | None = None,
        pad_mode: str = "sintel",
        corr: str = "all-pairs",
        taps: dict[str, list[Tensor]] | None = None,
    ) -> Tensor | list[Tensor]:
        """`corr`: "all-pairs" (the volume, as published) or "lean" (same samples on demand, memory linear in H*W).

        `taps`: a dict that receives the encoders' FAD feature taps (see `encode`); for distillation.
        """
        _check_pair(image1, image2)
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        if corr not in CORR_MODES:
            raise ValueError(f"corr must be one of {', '.join(CORR_MODES)}, got {corr!r}")
        padder = InputPadder(image1.shape, mode=pad_mode)
        _check_size(padder, self.spec.min_side_px)
        image1, image2 = padder.pad(image1, image2)
        image1, image2 = 2 * (image1 / 255.0) - 1.0, 2 * (image2 / 255.0) - 1.0
        predictions = self._iterate(image1, image2, iters, flow_init, lookup=CORR_MODES[corr], taps=taps)
        predictions = [padder.unpad(p) for p in predictions]
        return predictions if self.training else predictions[-1]

    def _iterate(self, image1: Tensor, image2: Tensor, iters: int, flow_init: Tensor | None,
                 lookup: str = "grid_sample", taps: dict[str, list[Tensor]] | None = None) -> list[Tensor]:
        """Normalised images -> upsampled predictions (every step in training, the last one otherwise).

        `lookup`: "grid_sample" (reference), "gather" (export) or "lean" (no volume), see `flownas.nn.corr`.
        """
        fmap1, fmap2, net, inp = self.encode(image1, image2, taps)
        corr_fn = correlation_lookup(fmap1, fmap2, self.spec.corr_levels, self.spec.corr_radius, lookup=lookup)
        batch, _, ht, wd = fmap1.shape
        coords0 = coords_grid(batch, ht, wd, device=image1.device)
        coords1 = coords0.clone() if flow_init is None else coords0 + flow_init
        predictions = []
        for step in range(iters):
            # At inference only the last step is upsampled: its mask head and upsampling are the only ones run.
            upsample = self.training or step == iters - 1
            coords1 = coords1.detach()
            corr = corr_fn(coords1)
            flow = coords1 - coords0
            net, mask, delta_flow = self.update_block(net, inp, corr, flow, compute_mask=upsample)
            coords1 = coords1 + delta_flow
            if upsample:
                predictions.append(self.upsample(coords1 - coords0, mask))
        return predictions

    def upsample(self, flow: Tensor, mask: Tensor | None) -> Tensor:
        return bilinear_upsample(flow) if mask is None else convex_upsample(flow, mask)


class RAFT(FlowModel):
    """RAFT (Teed & Deng 2020): `RAFT()` is the large model, `RAFT(small=True)` the small one."""

    def __init__(self, small: bool = False) -> None:
        spec = RAFT_SMALL if small else RAFT_LARGE
        build = small_encoder if small else basic_encoder
        fnet = build(spec.feature_dim, "instance")
        cnet = build(spec.hidden_dim + spec.context_dim, "none" if small else "batch")
        super().__init__(fnet, cnet, spec)
        self.variant = "small" if small else "large"

    def config(self) -> dict[str, Any]:
        return {"family": "raft", "variant": self.variant}


def _check_pair(image1: Tensor, image2: Tensor) -> None:
    if image1.dim() != 4 or image1.shape[1] != 3:
        raise ValueError(f"expected images [B,3,H,W], got image1 of shape {tuple(image1.shape)}")
    if image1.shape != image2.shape:
        raise ValueError(f"image shapes differ: image1 {tuple(image1.shape)} vs image2 {tuple(image2.shape)}")


def _check_size(padder: InputPadder, min_side_px: int) -> None:
    _, _, top, bottom = padder.pad_lrtb
    left, right = padder.pad_lrtb[:2]
    padded = (padder.height + top + bottom, padder.width + left + right)
    if min(padded) < min_side_px:
        levels = min_side_px.bit_length() - UPSAMPLE_FACTOR.bit_length()
        raise ValueError(
            f"input {padder.height}x{padder.width} is too small: each side must be at least {min_side_px} px "
            f"after padding to a multiple of 8 ({levels}-level correlation pyramid), got {padded[0]}x{padded[1]}"
        )


class FlowNASSupernet(FlowModel):
    """Weight-sharing supernet: both encoders are `SuperEncoder`s over one search space; RAFT-large decoder
    unless `decoder` says otherwise."""

    def __init__(self, space: SearchSpace | None = None, decoder: DecoderSpec = RAFT_LARGE) -> None:
        space = space or SearchSpace.flownas()
        fnet = SuperEncoder(space, "instance", decoder.feature_dim)
        cnet = SuperEncoder(space, "batch", decoder.hidden_dim + decoder.context_dim)
        super().__init__(fnet, cnet, decoder)
        self.space = space
        self.active_arch = space.largest()

    def set_active(self, arch: ArchConfig) -> None:
        self.space.validate(arch)
        self.fnet.set_active(arch)
        self.cnet.set_active(arch)
        self.active_arch = arch

    def extract(self, arch: ArchConfig | None = None) -> "FlowNASNet":
        """A static `FlowNASNet` for `arch` (default: the active one) with its weights copied out."""
        if arch is not None:
            self.set_active(arch)
        encoders = (self.fnet.extract(), self.cnet.extract())
        net = FlowNASNet(self.active_arch, self.space, encoders=encoders, decoder=self.spec)
        net.update_block.load_state_dict(self.update_block.state_dict())
        return net.train(self.training)

    def config(self) -> dict[str, Any]:
        return _with_decoder({"family": "flownas-supernet", "space": self.space.to_dict()}, self.spec)


class FlowNASNet(FlowModel):
    """A static FlowNAS network for one architecture: plain convolutions only, ready for export."""

    def __init__(self, arch: ArchConfig, space: SearchSpace | None = None,
                 encoders: tuple[StaticEncoder, StaticEncoder] | None = None,
                 decoder: DecoderSpec = RAFT_LARGE) -> None:
        space = space or SearchSpace.flownas()
        space.validate(arch)
        if encoders is None:
            encoders = (
                static_encoder(arch, space, "instance", decoder.feature_dim),
                static_encoder(arch, space, "batch", decoder.hidden_dim + decoder.context_dim),
            )
        super().__init__(encoders[0], encoders[1], decoder)
        self.arch, self.space = arch, space

    def config(self) -> dict[str, Any]:
        return _with_decoder({"family": "flownas", "arch": self.arch.to_dict(), "space": self.space.to_dict()},
                             self.spec)


def _with_decoder(config: dict[str, Any], spec: DecoderSpec) -> dict[str, Any]:
    # Only a non-default decoder is recorded, so configs (and checkpoints) written before it existed still match.
    if spec != RAFT_LARGE:
        config["decoder"] = spec.to_dict()
    return config


def model_identity(model: FlowModel) -> str:
    """What a model is, for records: the architecture id of a FlowNAS subnet, else its family (and variant)."""
    arch = getattr(model, "arch", None)
    if arch is not None:  # a FlowNAS subnet knows its architecture (genes of its own space included)
        return arch.id
    config = model.config()
    return "-".join(str(config[k]) for k in ("family", "variant") if k in config)
