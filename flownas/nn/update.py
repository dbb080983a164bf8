"""RAFT's recurrent update operators and flow upsampling.

Module and parameter names follow the princeton-vl release so its checkpoints load without renaming.
Every width comes from an `UpdateSpec`; `RAFT_LARGE_UPDATE` and `RAFT_SMALL_UPDATE` reproduce the published
blocks exactly (FACTS §3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ToolkitError

# Convex upsampling predicts a 3x3 softmax per fine pixel of an 8x8 cell: the encoders' output stride, not a width.
UPSAMPLE_FACTOR = 8
MAX_WIDTH = 4096  # a sanity bound on every channel count read from a file


class DecoderSpecError(ToolkitError, ValueError):
    """A malformed decoder/update-block description (one-line message naming the key)."""


@dataclass(frozen=True)
class UpdateSpec:
    """Channel widths of RAFT's update operator.

    corr_dims: the motion encoder's correlation branch, a 1x1 conv (`convc1`) then optionally a 3x3 (`convc2`).
    flow_dims: its flow branch, a 7x7 (`convf1`) then a 3x3 conv (`convf2`).
    motion_dim: motion features fed to the GRU, including the 2 raw flow channels (`conv` outputs motion_dim-2).
    flow_head_dim: hidden width of the flow head (3x3 -> ReLU -> 3x3 to 2 channels).
    mask_dim: hidden width of the convex-upsampling mask head; 0 = no mask head, bilinear upsampling.
    separable_gru: a 1x5 + 5x1 GRU (RAFT large) instead of one 3x3 GRU (RAFT small).
    """

    corr_dims: tuple[int, ...]
    flow_dims: tuple[int, int]
    motion_dim: int
    flow_head_dim: int
    mask_dim: int
    separable_gru: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "corr_dims", _int_tuple(self.corr_dims, "update.corr_dims", (1, 2)))
        object.__setattr__(self, "flow_dims", _int_tuple(self.flow_dims, "update.flow_dims", (2,)))
        _check_int(self.motion_dim, "update.motion_dim", 3)
        _check_int(self.flow_head_dim, "update.flow_head_dim", 1)
        _check_int(self.mask_dim, "update.mask_dim", 0)
        if not isinstance(self.separable_gru, bool):
            raise DecoderSpecError(f"update.separable_gru must be true or false, got {self.separable_gru!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "corr_dims": list(self.corr_dims), "flow_dims": list(self.flow_dims), "motion_dim": self.motion_dim,
            "flow_head_dim": self.flow_head_dim, "mask_dim": self.mask_dim, "separable_gru": self.separable_gru,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UpdateSpec":
        """Inverse of `to_dict`; every key is required and checked (DecoderSpecError names the key)."""
        check_spec_keys(d, UPDATE_KEYS, "update")
        return cls(**{key: d[key] for key in UPDATE_KEYS})


UPDATE_KEYS = ("corr_dims", "flow_dims", "motion_dim", "flow_head_dim", "mask_dim", "separable_gru")


def check_spec_keys(d: Any, keys: tuple[str, ...], what: str) -> None:
    """Refuse a non-mapping, a missing key or an unknown key, naming it."""
    if not isinstance(d, Mapping):
        raise DecoderSpecError(f"{what} must be a dict with keys {', '.join(keys)}, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    unknown = sorted(str(k) for k in d if k not in keys)
    if missing or unknown:
        problem = f"missing key {what}.{missing[0]}" if missing else f"unknown key {what}.{unknown[0]}"
        raise DecoderSpecError(f"{problem} (expected keys: {', '.join(keys)})")


def _check_int(value: Any, key: str, minimum: int, maximum: int = MAX_WIDTH) -> int:
    # bools are ints in Python but never a width; floats such as 2.0 are refused as well (JSON gives ints)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise DecoderSpecError(f"{key} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _int_tuple(value: Any, key: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) not in lengths:
        raise DecoderSpecError(f"{key} must be a list of {' or '.join(map(str, lengths))} integers, got {value!r}")
    return tuple(_check_int(v, key, 1) for v in value)


RAFT_LARGE_UPDATE = UpdateSpec(corr_dims=(256, 192), flow_dims=(128, 64), motion_dim=128, flow_head_dim=256,
                               mask_dim=256, separable_gru=True)
RAFT_SMALL_UPDATE = UpdateSpec(corr_dims=(96,), flow_dims=(64, 32), motion_dim=82, flow_head_dim=128,
                               mask_dim=0, separable_gru=False)


class FlowHead(nn.Module):
    """3x3 conv -> ReLU -> 3x3 conv to the 2 flow channels (the per-step flow update, 1/8 resolution)."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class ConvGRU(nn.Module):
    """3x3 convolutional GRU (RAFT small)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return _gru_step(h, x, self.convz, self.convr, self.convq)


class SepConvGRU(nn.Module):
    """Separable GRU: a 1x5 (horizontal) step followed by a 5x1 (vertical) step (RAFT large)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        channels = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = _gru_step(h, x, self.convz1, self.convr1, self.convq1)
        return _gru_step(h, x, self.convz2, self.convr2, self.convq2)


def _gru_step(h: Tensor, x: Tensor, convz: nn.Module, convr: nn.Module, convq: nn.Module) -> Tensor:
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class MotionEncoder(nn.Module):
    """Encodes correlation samples and the current flow into `motion_dim` channels (the last 2 are the flow)."""

    def __init__(self, corr_channels: int, spec: UpdateSpec) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, spec.corr_dims[0], 1, padding=0)
        # RAFT small has no second correlation conv; a None attribute owns no state-dict keys
        self.convc2 = nn.Conv2d(spec.corr_dims[0], spec.corr_dims[1], 3, padding=1) if len(spec.corr_dims) > 1 else None
        self.convf1 = nn.Conv2d(2, spec.flow_dims[0], 7, padding=3)
        self.convf2 = nn.Conv2d(spec.flow_dims[0], spec.flow_dims[1], 3, padding=1)
        self.conv = nn.Conv2d(spec.corr_dims[-1] + spec.flow_dims[1], spec.motion_dim - 2, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        cor = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            cor = F.relu(self.convc2(cor))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class UpdateBlock(nn.Module):
    """Motion encoder, GRU, flow head and (when `spec.mask_dim` > 0) the convex-upsampling mask head."""

    def __init__(self, corr_channels: int, hidden_dim: int, context_dim: int, spec: UpdateSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = MotionEncoder(corr_channels, spec)
        gru = SepConvGRU if spec.separable_gru else ConvGRU
        self.gru = gru(hidden_dim=hidden_dim, input_dim=context_dim + spec.motion_dim)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=spec.flow_head_dim)
        if spec.mask_dim:
            self.mask = nn.Sequential(
                nn.Conv2d(hidden_dim, spec.mask_dim, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(spec.mask_dim, UPSAMPLE_FACTOR**2 * 9, 1, padding=0),
            )

    def forward(
        self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor, compute_mask: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """One GRU step; the upsampling mask is skipped when the caller will not upsample this step."""
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        delta_flow = self.flow_head(net)
        if not (compute_mask and self.spec.mask_dim):
            return net, None, delta_flow
        # The 0.25 scale balances gradients (RAFT paper); it is part of the published weights' behaviour.
        return net, 0.25 * self.mask(net), delta_flow


class BasicUpdateBlock(UpdateBlock):
    """RAFT large: 324 -> 256 -> 192 correlation branch, separable GRU, convex-upsampling mask head."""

    def __init__(self, corr_channels: int, hidden_dim: int = 128, context_dim: int = 128) -> None:
        super().__init__(corr_channels, hidden_dim, context_dim, RAFT_LARGE_UPDATE)


class SmallUpdateBlock(UpdateBlock):
    """RAFT small: 3x3 GRU, no mask head (flow is upsampled bilinearly)."""

    def __init__(self, corr_channels: int, hidden_dim: int = 96, context_dim: int = 64) -> None:
        super().__init__(corr_channels, hidden_dim, context_dim, RAFT_SMALL_UPDATE)


def convex_upsample(flow: Tensor, mask: Tensor, factor: int = UPSAMPLE_FACTOR) -> Tensor:
    """`[B,2,H,W]` flow -> `[B,2,8H,8W]`: each fine pixel is a softmax-weighted 3x3 combination."""
    batch, _, ht, wd = flow.shape
    mask = torch.softmax(mask.view(batch, 1, 9, factor, factor, ht, wd), dim=2)
    up = F.unfold(factor * flow, [3, 3], padding=1).view(batch, 2, 9, 1, 1, ht, wd)
    up = torch.sum(mask * up, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(batch, 2, factor * ht, factor * wd)


def bilinear_upsample(flow: Tensor, factor: int = UPSAMPLE_FACTOR) -> Tensor:
    """RAFT small's upsampling: bilinear resize (align_corners=True) with values scaled by `factor`."""
    size = (factor * flow.shape[2], factor * flow.shape[3])
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
